"""The freeze phase: open the mounts, record the state file, freeze with the
C core (guarded by the watchdog), thaw, and turn per-mount outcomes into
report entries and catalogue errors.

Everything that touches a filesystem (opening mount fds, the state file on
/run) happens before the first FIFREEZE or after the last FITHAW.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from vmsnapshot.freeze import native
from vmsnapshot.freeze import presync
from vmsnapshot.freeze import state
from vmsnapshot.errors import Catalogue, ErrorRecord
from vmsnapshot.freeze.guardian import Guardian
from vmsnapshot.freeze.mountfd import MountChanged, open_mount
from vmsnapshot.mounts.plan import MountDecision
from vmsnapshot.cycle.report import FreezeReport, MountReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A mount to freeze and its open fd."""

    decision: MountDecision
    fd: int

    @property
    def path(self) -> str:
        return self.decision.info.mount_point


def open_targets(decisions: Sequence[MountDecision]
                 ) -> Tuple[List[Target], List[MountReport],
                            List[ErrorRecord]]:
    """Open every mount to freeze, as the mount that was discovered (see
    mountfd.open_mount), or refuse it."""
    targets: List[Target] = []
    failed: List[MountReport] = []
    errors: List[ErrorRecord] = []
    for d in decisions:
        if not d.freeze:
            continue
        path = d.info.mount_point
        try:
            targets.append(Target(d, open_mount(path, d.info.mount_id)))
            continue
        except MountChanged:
            problem = ("%s is no longer the mount that was discovered "
                       "(unmounted or over-mounted since)" % path)
        except OSError as e:
            problem = "%s: %s" % (path, e.strerror)
        failed.append(MountReport(path, d.info.fstype, False,
                                  error=problem, wave=d.wave))
        errors.append(ErrorRecord(Catalogue.UNABLE_TO_OPEN_MOUNT, problem))
    return targets, failed, errors


def close_targets(targets: Sequence[Target]) -> None:
    for t in targets:
        os.close(t.fd)


@dataclass(frozen=True)
class FreezeResult:
    """What a FreezeSession did, for the report and the level."""

    mounts: List[MountReport]
    freeze: FreezeReport
    errors: List[ErrorRecord]
    all_frozen: bool      # every target frozen by this run
    thawed_early: bool    # someone else thawed a mount before our thaw
    stopped_early: bool   # should_stop cut the freeze short


class FreezeSession:
    """One freeze of a set of targets, watched by a guardian process:
    freeze(), thaw(), close(), each once. close() must be called whatever
    happens (try/finally): it is what thaws and removes the state file."""

    def __init__(self, targets: Sequence[Target], timeout_s: float,
                 presync_mode: str = "false",
                 presync_first: Optional[presync.PassReport] = None) -> None:
        self.targets = list(targets)
        self.timeout_s = timeout_s
        self.presync_mode = presync_mode
        self.presync_first = presync_first
        self.presync_pass: Optional[presync.PassReport] = None
        fds = [t.fd for t in self.targets]
        waves = [t.decision.wave or 0 for t in self.targets]
        self.guardian: Optional[Guardian] = Guardian.start(
            fds, waves, state_path=state.state_path())
        try:
            self.run = native.FreezeRun(fds, waves, self.paths(), timeout_s,
                                         notify_fd=self.guardian.notify_fd)
        except BaseException:
            self.guardian.stop(None)
            raise
        self._started = 0.0
        self._ended: Optional[float] = None
        self.stopped_early = False

    def freeze(self, should_stop: Optional[Callable[[], bool]] = None
               ) -> None:
        """Freeze; with should_stop (asked every few ms while the C core
        freezes) the freeze is cut short and undone as soon as it says
        yes: stopped_early then tells the caller to skip the snapshot."""
        # What the pre-scripts dirtied goes to disk before FIFREEZE blocks
        # the writers; bounded by its own deadline (vmsnapshot.freeze.presync).
        self.presync_pass = presync.before_freeze(
            self.presync_mode, self.presync_first,
            [(t.path, t.fd) for t in self.targets],
            [t.decision.info.dev for t in self.targets], self.timeout_s)
        state.write_state(
            [state.entry_for(t.path, t.fd, t.decision.info)
             for t in self.targets], os.getpid())
        self._started = time.monotonic()
        try:
            self.stopped_early = self.run.freeze(should_stop)
        finally:
            # The deadline and the window count from the first FIFREEZE,
            # not from the probes' forks before it.
            self._started = self.run.started_at or self._started

    def watchdog_fired(self) -> bool:
        return self.run.watchdog_fired()

    def deadline(self) -> float:
        """time.monotonic() value of the watchdog's deadline."""
        return self._started + self.timeout_s

    def fired_at(self) -> Optional[float]:
        """time.monotonic() value at which the watchdog thawed, or None."""
        after = self.run.fired_after_s()
        return None if after is None else self._started + after

    def watch_child(self, pgid: int, gone: bool = False) -> None:
        """The snapshot command's process group dies with the supervisor."""
        if self.guardian is not None:
            self.guardian.watch_child(pgid, gone)

    def paths(self) -> List[str]:
        return [t.path for t in self.targets]

    def thaw(self) -> None:
        try:
            self.run.thaw()
        finally:
            self._ended = self.run.thawed_at or time.monotonic()
        self.run.collect()

    def close(self) -> None:
        """Thaw (if thaw() was not reached), release the run, end the
        guardian, and remove the state file once nothing of this run can
        be left frozen -- whatever path led here. A worker still stuck in
        FIFREEZE may yet freeze its mount: then the state file stays, and
        the guardian (which outlives us) thaws and removes it."""
        try:
            self.run.close()
        finally:
            if self._ended is None:
                self._ended = self.run.thawed_at or time.monotonic()
            if self.guardian is not None:
                ended = self.guardian.stop(self.run)
                if ended.code is None and ended.signal is None:
                    if not self.run.idle():
                        log.warning(
                            "a FIFREEZE is stuck in the kernel: guardian "
                            "process %d stays to thaw its mount once it "
                            "returns; this process cannot exit before "
                            "that", self.guardian.pid)
                    else:
                        log.warning("guardian process %d still running; "
                                    "it ends by itself", self.guardian.pid)
                elif ended.thawed or not ended.clean:
                    log.warning("guardian: %s", ended.describe())
                self.guardian = None
            if state.nothing_left_frozen(self.run):
                state.clear_state()

    def report(self) -> FreezeResult:
        mounts: List[MountReport] = []
        errors: List[ErrorRecord] = []
        all_frozen = True
        thawed_early = False
        for t, o in zip(self.targets, self.run.outcomes()):
            error = None
            frozen = o.state in ("frozen", "thawed")
            if o.state == "failed":
                error, entry = _freeze_failure(t.path, o.freeze_errno)
                if entry is not None:
                    errors.append(ErrorRecord(entry, error))
                    all_frozen = False
            elif o.state == "skipped":
                error = ("not attempted: the run was interrupted"
                         if self.stopped_early else
                         "not attempted: the watchdog fired first")
                all_frozen = False
            elif not frozen:
                error = "not frozen (%s)" % o.state
                all_frozen = False
            if frozen and o.thawed_early:
                # Our FITHAW then failed with EINVAL or, after a thaw and a
                # refreeze by the same third party, succeeded: either way
                # the snapshot was not taken under our freeze.
                thawed_early = True
                error = ("%s was thawed by another process before the "
                         "snapshot ended" % t.path)
                errors.append(ErrorRecord(
                    Catalogue.THAWED_BY_ANOTHER_PROCESS, error))
            if o.thaw_errno and o.thaw_errno != errno.EINVAL:
                msg = "%s: thaw failed: %s" % (t.path,
                                               os.strerror(o.thaw_errno))
                error = msg
                errors.append(ErrorRecord(Catalogue.FS_FREEZE_FAILED, msg))
            mounts.append(MountReport(
                t.path, t.decision.info.fstype, frozen,
                o.freeze_ms if frozen else None,
                o.thaw_ms if frozen else None, error, t.decision.wave,
                o.thawed_by_watchdog))
        window = None
        if self._ended is not None and self.targets:
            window = (self._ended - self._started) * 1000.0
        if self.run.guardian_lost():
            errors.append(ErrorRecord(
                Catalogue.FS_FREEZE_FAILED,
                "the guardian process died during the freeze; everything "
                "was thawed at once"))
        freeze = FreezeReport(True, window, self.run.watchdog_fired(),
                              self.timeout_s)
        return FreezeResult(mounts, freeze, errors, all_frozen,
                            thawed_early, self.stopped_early)


def _freeze_failure(path: str, err: int
                    ) -> Tuple[str, Optional[Catalogue]]:
    if err == errno.EBUSY:
        # The caller froze each superblock once, so EBUSY is someone
        # else's freeze: reported, and never thawed by us.
        return ("%s was already frozen by another process; left frozen"
                % path, Catalogue.FROZEN_BY_ANOTHER_PROCESS)
    if err in (errno.EOPNOTSUPP, errno.ENOTTY):
        return ("%s: this filesystem cannot be frozen; skipped" % path,
                None)
    return ("%s: FIFREEZE failed: %s" % (path, os.strerror(err)),
            Catalogue.FS_FREEZE_FAILED)
