"""The steps every trigger shares: `run` (whole.py) and the split cycle's
holder (holder.py; `hook` is `pre --no-freeze` and `post`) load the
configuration, plan the mounts, run the pre phase, freeze, thaw and run the
post phase with these same functions, so no trigger has a copy that can
drift. Each writes what it did into the Outcomes record.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from vmsnapshot.config import load_config
from vmsnapshot.config.model import Config
from vmsnapshot.cycle import policy
from vmsnapshot.cycle.freezerows import judge_freeze, unopened_rows
from vmsnapshot.cycle.outcome import Outcomes
from vmsnapshot.cycle.report import MountReport
from vmsnapshot.cycle.signals import SignalTrap
from vmsnapshot.errors import Catalogue, ErrorRecord, VmsnapshotError
from vmsnapshot.freeze import presync
from vmsnapshot.freeze.session import FreezeSession, close_targets, open_targets
from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.mounts import mountinfo, plan

if TYPE_CHECKING:
    from vmsnapshot.scripts.held import HeldHook
# vmsnapshot.scripts (subprocess, cgroups, the script records) is imported
# only when a plugin is configured: ~10 ms of a freeze-only run (issue 15).


@frozen_record
class RunOptions:
    """What the command line asks of one `run`."""

    config_path: Optional[str] = None
    mounts: Sequence[str] = ()
    exclude: Sequence[str] = ()
    freeze_timeout: Optional[float] = None
    snapshot: Sequence[str] = ()


def load_run_config(opts: RunOptions) -> Tuple[Config, List[ErrorRecord]]:
    """A broken configuration runs no script but still freezes with the
    defaults: a filesystem-consistent snapshot beats none."""
    try:
        config = load_config(opts.config_path)
        errors: List[ErrorRecord] = []
    except VmsnapshotError as e:
        config = Config()
        errors = list(getattr(e, "records", ())) or [e.record()]
    settings = config.freeze
    if opts.freeze_timeout is not None:
        settings = replace(settings, timeout=opts.freeze_timeout)
    if opts.exclude:
        settings = replace(settings,
                           exclude=tuple(settings.exclude) + tuple(opts.exclude))
    return replace(config, freeze=settings), errors


def pre_phase(config: Config, trap: SignalTrap, o: Outcomes
              ) -> List[HeldHook]:
    """Held hooks first (they must be READY before the freeze; their
    deadlines run from their start, so waiting in turn is as fast as
    waiting in parallel), then the one-shot pre-scripts in parallel. A
    trapped signal stops every script at once. Returns the held hooks,
    which the caller must release (post_phase) whatever happens."""
    stop = trap.is_set
    held: List[HeldHook] = []
    if any(p.hold and p.pre for p in config.plugins):
        from vmsnapshot.scripts.held import start_held
        held = [start_held(p) for p in config.plugins if p.hold and p.pre]
    # A stopped wait says RunInterrupted: the run records that once itself.
    o.ready = tuple(None if e is not None and
                    e.entry is Catalogue.RUN_INTERRUPTED else e
                    for e in (h.wait_ready(should_stop=stop) for h in held))
    if not trap.is_set() and config.plugins:
        from vmsnapshot.scripts.oneshot import run_phase
        o.pre = tuple(run_phase(config.plugins, "pre", should_stop=stop))
    if trap.received:
        o.interrupt(trap.received, "in the pre phase")
    pre = policy.PreOutcome(
        scripts_configured=any(p.pre for p in config.plugins),
        scripts_ok=not o.pre_errors, config_ok=not o.config_errors,
        continue_on_failure=config.continue_on_failure,
        freeze_enabled=config.freeze.enabled)
    o.proceeded = policy.may_proceed(pre) and not trap.received
    return held


def plan_mounts(named: Sequence[str], o: Outcomes
                ) -> List[plan.MountDecision]:
    """The mounts to freeze, and presync's bulk pass over them while the
    applications still run (the second pass comes right before FIFREEZE)."""
    settings = o.config.freeze
    decisions = plan.plan(mountinfo.read_mountinfo(), selected=named,
                            include=settings.include,
                            exclude=settings.exclude)
    o.presync = (presync.before_pre(
        settings.presync, decisions, settings.enabled, settings.timeout,
        any(p.pre for p in o.config.plugins)),)
    return decisions


def post_phase(config: Config, held: Sequence[HeldHook],
               o: Outcomes) -> None:
    """After the thaw: release held hooks, then the post-scripts of every
    plugin whose pre-script ran (also when it failed), and of plugins that
    have only a post-script."""
    o.released = tuple(hook.release() for hook in held)
    if not config.plugins:
        return
    from vmsnapshot.scripts.oneshot import run_phase
    ran = {s.plugin for s in o.pre + o.released if s.attempts > 0}
    o.post = tuple(run_phase(
        [p for p in config.plugins if p.name in ran or not p.pre], "post"))


class FreezeStep:
    """The freeze of the selected mounts, as `run` and the split cycle's
    holder both do it: start() opens, freezes (stoppable by a signal),
    finish() thaws and records the outcome, whatever happened between."""

    def __init__(self, decisions: Sequence[plan.MountDecision],
                 named: Sequence[str], o: Outcomes) -> None:
        self.o = o
        self.session: Optional[FreezeSession] = None
        self.targets: list = []
        self._decisions = decisions
        self._named = named

    def start(self, trap: SignalTrap) -> None:
        o, settings = self.o, self.o.config.freeze
        if not settings.enabled:
            return
        self.targets, unopened = open_targets(self._decisions)
        o.unopened, o.open_errors = unopened_rows(unopened)
        o.skipped_named = tuple(_named_but_not_frozen(self._decisions,
                                                      self._named))
        if self.targets:
            try:
                self.session = FreezeSession(
                    self.targets, settings.timeout, settings.presync,
                    presync_first=o.presync[0] if o.presync else None)
            except VmsnapshotError as e:
                # No freeze is possible (module missing, guardian not
                # started, guard refusal): a crash-consistent snapshot
                # still beats none, and the report says so.
                o.no_session = e.record()
        if self.session is not None:
            self.session.freeze(should_stop=trap.is_set)

    def thaw(self) -> None:
        if self.session is not None:
            self.session.thaw()

    def finish(self) -> None:
        try:
            if self.session is not None:
                self.session.close()
                self.o.freeze = judge_freeze(self.session.result())
                if self.session.presync_pass is not None:
                    self.o.presync += (self.session.presync_pass,)
        finally:
            close_targets(self.targets)
            self.targets = []


def _named_but_not_frozen(decisions: Sequence[plan.MountDecision],
                          selected: Sequence[str]) -> List[MountReport]:
    """A --mount that is not frozen (pseudo, read-only, excluded...) is
    listed with the reason, so the report never hides it. One that shares
    a frozen superblock is covered by that freeze and not repeated."""
    named = {os.path.realpath(p) for p in selected}
    return [MountReport(d.info.mount_point, d.info.fstype, False,
                        error="not frozen: %s" % d.reason)
            for d in decisions
            if d.info.mount_point in named and not d.freeze and d.reason
            and not d.reason.startswith("same superblock")]
