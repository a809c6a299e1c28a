"""What a native freeze run reports: immutable records read from one
vms_status() snapshot of the C core (vmsnapshot.freeze.native)."""
from __future__ import annotations

import os
from typing import Optional, Tuple

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.freeze import errnos

# enum vms_state, by value; "freezing"/"thawing" only show while a worker is
# inside the ioctl (a FIFREEZE stuck past the watchdog).
STATES = ("pending", "freezing", "frozen", "thawing", "thawed", "failed",
          "skipped")

# A worker may still change these; nothing of the run is settled while a
# mount is in one.
BUSY = ("frozen", "freezing", "thawing")


@frozen_record
class MountOutcome:
    """One mount's result, read back from the C core."""

    path: str
    state: str           # one of STATES
    freeze_errno: int
    thaw_errno: int
    thawed_by_watchdog: bool
    freeze_ms: float
    thaw_ms: float
    # Somebody else thawed it before our thaw: its probe saw it, or our
    # FITHAW found it not frozen (see errnos.thawed_by_another).
    thawed_early: bool = False

    @property
    def error(self) -> Optional[OSError]:
        """The FIFREEZE error, else the FITHAW error, as an OSError."""
        err = self.freeze_errno or self.thaw_errno
        if not err:
            return None
        return OSError(err, os.strerror(err), self.path)

    @property
    def frozen(self) -> bool:
        """Frozen by this run (and maybe thawed since)."""
        return self.state in ("frozen", "thawed")

    @property
    def frozen_by_another(self) -> bool:
        return (self.state == "failed"
                and errnos.frozen_by_another(self.freeze_errno))


@frozen_record
class RunStatus:
    """One consistent view of a run (vms_status); kept when it is closed."""

    fired: bool
    fired_after_s: Optional[float]
    guardian_lost: bool
    idle: bool
    outcomes: Tuple[MountOutcome, ...]

    @property
    def settled(self) -> bool:
        """Nothing of the run is left frozen and no worker is inside an
        ioctl: its state file may go and its guardian may end clean."""
        return self.idle and not any(o.state in BUSY
                                     for o in self.outcomes)
