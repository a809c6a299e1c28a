"""The one way vmsnapshot waits for a child process to exit: a pidfd
(Linux 5.3+) polled for readability, or, where ``pidfd_open`` is missing
(older kernels, Python < 3.9), a poll of ``waitid`` with a backoff from
0.2 ms to 10 ms (fast for a child that is about to exit, cheap for a long
wait).

The child is never reaped here (``waitid(WNOWAIT)``): its owner reaps it
last, so a zombie keeps its pid (and process group id) from being reused
while the owner may still signal it. Used by the script spawner and by
the freeze guardian; a bottom module, importing nothing of vmsnapshot.
"""
from __future__ import annotations

import os
import select
import time
from typing import Callable, Optional

STOP_POLL = 0.03        # s between should_stop() checks while waiting
_FIRST_PAUSE = 0.0002   # s: the fallback's first sleep, doubled up to...
_MAX_PAUSE = 0.01       # ... this


def _open_pidfd(pid: int) -> Optional[int]:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:     # ENOSYS (kernel < 5.3), or already reaped
        return None


class ChildWatch:
    """Exit of one child of this process, observed without reaping it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = _open_pidfd(pid)
        self.exited_at: Optional[float] = None   # time.monotonic()

    def exited(self) -> bool:
        """True once the child has exited (it stays unreaped)."""
        if self.exited_at is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = True      # already reaped by its owner
        if info is None:
            return False
        self.exited_at = time.monotonic()
        return True

    def wait(self, timeout: Optional[float],
             should_stop: Optional[Callable[[], bool]] = None) -> bool:
        """Wait for the exit (None: no limit); False on timeout or as soon
        as ``should_stop()`` is true (asked every STOP_POLL s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_PAUSE
        while not self.exited():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if should_stop is not None:
                if should_stop():
                    return False
                left = STOP_POLL if left is None else min(left, STOP_POLL)
            if self.pidfd is not None:
                poller = select.poll()
                poller.register(self.pidfd, select.POLLIN)
                poller.poll(None if left is None else max(1, int(left * 1000)))
            else:
                time.sleep(pause if left is None else min(pause, left))
                pause = min(pause * 2, _MAX_PAUSE)
        return True

    def close(self) -> None:
        """Close the pidfd (idempotent); exited() still works after."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
