"""What the freeze session did, as immutable records of its own: the cycle
(vmsnapshot.cycle.freezerows) turns them into report rows and errors, so
the freeze phase never imports the report."""
from __future__ import annotations

from typing import Optional, Tuple

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.freeze.records import MountOutcome


@frozen_record
class Unopened:
    """A mount to freeze that could not be opened (or is no longer the
    mount that was discovered): never attempted."""

    path: str
    fstype: str
    wave: Optional[int]
    problem: str


@frozen_record
class TargetResult:
    """One opened mount and what the C core did with it."""

    path: str
    fstype: str
    wave: Optional[int]
    outcome: MountOutcome


@frozen_record
class SessionResult:
    """The whole freeze, read from one status snapshot of the run."""

    targets: Tuple[TargetResult, ...]
    window_ms: Optional[float]   # first FIFREEZE to last FITHAW
    fired: bool                  # the watchdog thawed
    guardian_lost: bool          # the guardian died during the freeze
    timeout_s: float
    stopped_early: bool          # a signal cut the freeze short
