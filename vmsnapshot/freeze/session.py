"""The freeze phase: open the mounts, record the state file, freeze with the
C core (guarded by the watchdog and the guardian), thaw, and hand back what
happened as immutable records (vmsnapshot.freeze.result); what that means
for the report is the cycle's business (vmsnapshot.cycle.freezerows).

Everything that touches a filesystem (opening mount fds, the state file on
/run) happens before the first FIFREEZE or after the last FITHAW.
"""
from __future__ import annotations

import os
import time
from typing import Callable, List, Optional, Sequence, Tuple

from vmsnapshot import logs
from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.freeze import native
from vmsnapshot.freeze import presync
from vmsnapshot.freeze import state
from vmsnapshot.freeze.guardian import Guardian
from vmsnapshot.freeze.mountfd import MountChanged, open_mount
from vmsnapshot.freeze.result import SessionResult, TargetResult, Unopened
from vmsnapshot.mounts.plan import MountDecision

log = logs.get(__name__)


@frozen_record
class Target:
    """A mount to freeze and its open fd."""

    decision: MountDecision
    fd: int

    @property
    def path(self) -> str:
        return self.decision.info.mount_point


def open_targets(decisions: Sequence[MountDecision]
                 ) -> Tuple[List[Target], List[Unopened]]:
    """Open every mount to freeze, as the mount that was discovered (see
    mountfd.open_mount), or refuse it."""
    targets: List[Target] = []
    failed: List[Unopened] = []
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
        failed.append(Unopened(path, d.info.fstype, d.wave, problem))
    return targets, failed


def close_targets(targets: Sequence[Target]) -> None:
    for t in targets:
        os.close(t.fd)


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
            # One snapshot for both decisions (after close() it is final).
            final = self.run.status()
            if self.guardian is not None:
                ended = self.guardian.stop(self.run)
                if ended.code is None and ended.signal is None:
                    if not final.idle:
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
            if final.settled:
                state.clear_state()

    def result(self) -> SessionResult:
        """What this freeze did, from one status snapshot of the run."""
        status = self.run.status()
        window = None
        if self._ended is not None and self.targets:
            window = (self._ended - self._started) * 1000.0
        return SessionResult(
            tuple(TargetResult(t.path, t.decision.info.fstype,
                               t.decision.wave, o)
                  for t, o in zip(self.targets, status.outcomes)),
            window, status.fired, status.guardian_lost, self.timeout_s,
            self.stopped_early)
