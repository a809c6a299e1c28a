"""The guardian: a tiny process forked by the C core before the freeze that
thaws what the run froze if the supervisor dies (SIGKILL, OOM, segfault)
or stays stuck past the deadline, so that only the simultaneous death of
both can leave a freeze behind (the state file covers that case).

Use::

    g = Guardian.start(fds, waves)
    run = FreezeRun(fds, waves, paths, timeout_s, notify_fd=g.notify_fd)
    try:
        run.freeze(); ...; run.thaw()
    finally:
        run.close()
        result = g.stop(run)

If the guardian dies first, the run notices (its socket closes) and the
watchdog thaws at once: FreezeRun.guardian_lost() then says so.
"""
from __future__ import annotations

import os
import signal
from typing import Any, Optional, Sequence

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.childwait import ChildWatch
from vmsnapshot.freeze import native
from vmsnapshot.errors import Catalogue, FreezeError

DEFAULT_GRACE_S = 1.0


@frozen_record
class GuardianExit:
    """How the guardian ended: its exit code, or the signal that killed it,
    or neither when it could not be reaped in time."""

    code: Optional[int]
    signal: Optional[int]

    @property
    def clean(self) -> bool:
        """Ended on the run's clean end message, having thawed nothing."""
        return self.code == native.load().lib.VMS_GUARDIAN_CLEAN

    @property
    def thawed(self) -> bool:
        """It found the run unfinished and thawed what was left."""
        return self.code is not None and not self.clean

    def describe(self) -> str:
        if self.signal is not None:
            return "killed by %s" % signal.Signals(self.signal).name
        if self.code is None:
            return "still running"
        lib = native.load().lib
        return {
            lib.VMS_GUARDIAN_CLEAN: "clean end, thawed nothing",
            lib.VMS_GUARDIAN_EOF:
                "the supervisor vanished; thawed what was left",
            lib.VMS_GUARDIAN_DEADLINE:
                "the deadline passed; thawed what was left",
            lib.VMS_GUARDIAN_PROTOCOL:
                "unreadable record; thawed what was left",
        }.get(self.code, "exited with status %d" % self.code)


class Guardian:
    """A running guardian process; stop() exactly once."""

    def __init__(self, lib: Any, pid: int, sock: int) -> None:
        self._lib = lib
        self.pid = pid
        self.notify_fd = sock
        self._watch = ChildWatch(pid)   # its exit, without a polling sleep
        self._exit: Optional[GuardianExit] = None
        self._stopped = False

    @classmethod
    def start(cls, fds: Sequence[int], waves: Sequence[int],
              grace_s: float = DEFAULT_GRACE_S,
              state_path: Optional[str] = None) -> "Guardian":
        """Fork the guardian over these mount fds (the same fds and waves,
        in the same order, as the FreezeRun it will watch). It thaws on
        its own grace_s after the run's watchdog deadline. After thawing
        for a vanished supervisor it removes state_path, if given."""
        if len(fds) != len(waves):
            raise ValueError("fds and waves differ in length")
        mod = native.load()
        ffi, lib = mod.ffi, mod.lib
        sock = ffi.new("int *")
        pid = lib.vms_guardian_spawn(ffi.new("int[]", list(fds) or [0]),
                                     ffi.new("int[]", list(waves) or [0]),
                                     len(fds), int(grace_s * 1000),
                                     state_path.encode() if state_path
                                     else ffi.NULL, sock)
        if pid < 0:
            raise FreezeError("cannot start the guardian process: %s"
                              % os.strerror(ffi.errno),
                              Catalogue.FS_FREEZE_FAILED)
        return cls(lib, pid, sock[0])

    def watch_child(self, pgid: int, gone: bool = False) -> None:
        """Have the guardian SIGKILL process group pgid if the supervisor
        dies (gone=True withdraws it). Best effort: a guardian that is gone
        already is noticed by the run itself."""
        self._lib.vms_guardian_child(self.notify_fd, pgid, int(gone))

    def alive(self) -> bool:
        return self._reap() is None

    def _reap(self) -> Optional[GuardianExit]:
        if self._exit is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                if os.WIFSIGNALED(status):
                    self._exit = GuardianExit(None, os.WTERMSIG(status))
                else:
                    self._exit = GuardianExit(os.WEXITSTATUS(status), None)
        return self._exit

    def stop(self, run: Optional[native.FreezeRun],
             timeout_s: float = 5.0) -> GuardianExit:
        """End the guardian after run.close() and reap it. With run=None
        (no freeze happened) or a run with nothing left frozen and no
        worker inside an ioctl, the guardian exits without thawing;
        otherwise it sees its socket close once the run is freed, and
        thaws what is left.

        It is never killed: while a worker is stuck inside FIFREEZE (a
        hung device) the run's own copy of the socket stays open until
        that ioctl returns -- which may be after this process exited, when
        the thread returning from FIFREEZE dies before it can thaw.  Only
        the guardian is left then to thaw the mount, on EOF.  So with a
        worker still inside an ioctl this returns at once, and otherwise
        waits up to timeout_s; a guardian still running is left running
        (GuardianExit(None, None)): it ends by itself on EOF."""
        if self._stopped:
            return self._exit or GuardianExit(None, None)
        self._stopped = True
        # One snapshot of the run for both decisions.
        status = None if run is None else run.status()
        idle = status is None or status.idle
        clean = status is None or status.settled
        if clean:
            # Fails only if it is already gone; its exit status says why.
            self._lib.vms_guardian_end(self.notify_fd)
        os.close(self.notify_fd)
        try:
            if idle:
                # It exits within a millisecond of a clean end.
                self._watch.wait(timeout_s)
            return self._reap() or GuardianExit(None, None)
        finally:
            self._watch.close()
