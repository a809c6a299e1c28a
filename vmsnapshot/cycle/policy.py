"""Consistency levels and the failure policy (design.md, "Consistency
levels"), as pure functions so every combination is testable."""
from __future__ import annotations


# The levels are spelled once, in vmsnapshot.levels; the decisions are here.
from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.levels import (APPLICATION, CRASH, FAILED, FILESYSTEM,
                               LEVELS, at_least)

__all__ = ["APPLICATION", "CRASH", "FAILED", "FILESYSTEM", "LEVELS",
           "at_least", "PreOutcome", "FreezeOutcome", "may_proceed", "level"]


@frozen_record
class PreOutcome:
    """What the pre phase and the configuration allow."""

    scripts_configured: bool   # at least one pre-script (or held hook)
    scripts_ok: bool           # every pre-script succeeded (vacuous if none)
    config_ok: bool            # configuration and trust checks passed
    continue_on_failure: bool
    freeze_enabled: bool


def may_proceed(pre: PreOutcome) -> bool:
    """Whether the freeze and the snapshot go ahead after the pre phase."""
    if pre.scripts_ok and pre.config_ok:
        return True
    if not pre.continue_on_failure:
        return False
    # Without a freeze a failed pre-script leaves nothing quiesced at all;
    # Azure stops there too rather than take an unquiesced snapshot.
    return pre.freeze_enabled


@frozen_record
class FreezeOutcome:
    """How the freeze held through the snapshot."""

    all_frozen: bool           # every selected mount frozen by this run
    held_through_snapshot: bool  # no thaw before the snapshot finished
    hooks_held: bool           # no held hook died while frozen


def level(pre: PreOutcome, freeze: FreezeOutcome) -> str:
    """The level of a run that went ahead (may_proceed was true)."""
    if pre.freeze_enabled and not (freeze.all_frozen
                                   and freeze.held_through_snapshot):
        return CRASH
    app_quiesced = (pre.scripts_configured and pre.scripts_ok
                    and pre.config_ok and freeze.hooks_held)
    if app_quiesced:
        return APPLICATION
    if not pre.freeze_enabled:
        return CRASH          # neither scripts nor a freeze quiesced anything
    return FILESYSTEM
