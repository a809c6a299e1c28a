"""The one helper that starts programs: scripts, held hooks, the snapshot
command.

Every child gets its own session, so its process group holds everything it
forks. Output (stdout+stderr) is drained by a thread into a bounded buffer
(vmsnapshot.scripts.output); how it ended is a ProcessResult
(vmsnapshot.scripts.result). Ending a
child always escalates SIGTERM -> grace -> SIGKILL on the whole group, and
nothing returns before the child was reaped.

The group is signalled only while the leader is unreaped (exit is detected
by vmsnapshot.childwait, which never reaps; reaping comes last): a zombie leader pins
its pid, so the process group id cannot have been reused by another process.
After the leader exits, whatever is left of its group is killed: a script's
background children do not outlive it (nor hold its stdout open forever).

With ``cgroup=True`` (scripts, held hooks) the child also gets its own
cgroup v2 (vmsnapshot.scripts.cgroup) and every kill also writes its
``cgroup.kill``: a script that daemonized (setsid, double fork) left the
process group but not the cgroup. Without cgroup v2, the group alone.

This module runs while filesystems are frozen (the snapshot command, held
hooks): it imports everything up front and touches no disk.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from vmsnapshot.childwait import STOP_POLL, ChildWatch
from vmsnapshot.scripts import cgroup as cgroups
from vmsnapshot.scripts.env import ROOT_HOME, SCRIPT_PATH, clean_env
from vmsnapshot.scripts.output import Drain
from vmsnapshot.scripts.result import ProcessResult, signal_name

__all__ = ["DEVNULL", "PIPE", "OUTPUT_LIMIT", "TAIL_LINES", "STOP_POLL",
           "ShouldStop", "never", "SCRIPT_PATH", "ROOT_HOME", "clean_env",
           "signal_name", "ProcessResult", "ProcessHandle", "start_process",
           "run_process"]

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
OUTPUT_LIMIT = 64 * 1024
TAIL_LINES = 20
DRAIN_DELAY = 0.2       # s to wait for output after the leader exited

ShouldStop = Callable[[], bool]


def never() -> bool:
    """The default should_stop: nothing asks to stop."""
    return False


class ProcessHandle:
    """A running child in its own session. ``wait``/``stop`` return the
    ProcessResult once the child is reaped; both are idempotent."""

    def __init__(self, argv: Tuple[str, ...], proc: subprocess.Popen,
                 drain: Drain, stdin_fd: Optional[int], grace: float,
                 tail_lines: int, started: float,
                 cgroup: Optional[cgroups.ScriptCgroup] = None):
        self.argv = argv
        self.cgroup = cgroup     # None: the process group alone
        self.proc = proc
        self.pid = proc.pid
        self.drain = drain
        self.stdin_fd = stdin_fd
        self.grace = grace
        self.tail_lines = tail_lines
        self.started = started
        self.result: Optional[ProcessResult] = None
        self.watch = ChildWatch(self.pid)
        self._lock = threading.Lock()          # signals vs. the reap
        self._finishing = threading.Lock()     # fds are closed only once

    # -- state ---------------------------------------------------------
    @property
    def exited_at(self) -> Optional[float]:
        return self.watch.exited_at

    @property
    def pidfd(self) -> Optional[int]:
        return self.watch.pidfd

    def exited(self) -> bool:
        """True once the leader has exited (unreaped until the end)."""
        return self.watch.exited()

    def alive(self) -> bool:
        return not self.exited()

    def wait_exit(self, timeout: Optional[float],
                  should_stop: Optional[ShouldStop] = None) -> bool:
        """Wait for the leader to exit (not reaping it); False on timeout or
        as soon as ``should_stop()`` is true (polled every STOP_POLL s)."""
        return self.watch.wait(timeout, should_stop)

    def wait_line(self, timeout: float,
                  should_stop: Optional[ShouldStop] = None) -> bool:
        """Wait until the watched line (READY) arrived; False on timeout,
        when the output ended without it, or once ``should_stop()``."""
        deadline = time.monotonic() + timeout
        stop = should_stop or never
        while not self.drain.line_seen.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or stop():
                return False
            if self.exited() or not self.drain.is_alive():
                self.drain.join(DRAIN_DELAY)   # the line may be in flight
                return self.drain.line_seen.is_set()
            with self.drain.changed:
                self.drain.changed.wait(min(left, STOP_POLL))
        return True

    # -- signals -------------------------------------------------------
    def signal_group(self, signum: int) -> None:
        """Signal the whole group; a no-op once the leader was reaped."""
        with self._lock:
            if self.proc.returncode is not None:
                return
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate_group(self) -> None:
        self.signal_group(signal.SIGTERM)

    def kill_group(self) -> None:
        self.signal_group(signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()      # also what left the group (daemons)

    def close_stdin(self) -> None:
        """EOF on the child's stdin (a held hook's "release now")."""
        with self._lock:
            if self.stdin_fd is not None:
                os.close(self.stdin_fd)
                self.stdin_fd = None

    # -- ending --------------------------------------------------------
    def wait(self, timeout: Optional[float],
             should_stop: Optional[ShouldStop] = None
             ) -> Optional[ProcessResult]:
        """The result if the leader exits within ``timeout`` (and before
        ``should_stop()``), else None (the child keeps running)."""
        if self.result is not None:
            return self.result
        if not self.wait_exit(timeout, should_stop):
            return None
        return self._finish(timed_out=False)

    def stop(self, grace: Optional[float] = None, timed_out: bool = True,
             interrupted: bool = False) -> ProcessResult:
        """SIGTERM the group, wait ``grace``, SIGKILL; returns the result."""
        if self.result is not None:
            return self.result
        if not self.exited():
            self.terminate_group()
            self.wait_exit(self.grace if grace is None else grace)
        return self._finish(timed_out=timed_out, interrupted=interrupted)

    def _finish(self, timed_out: bool,
                interrupted: bool = False) -> ProcessResult:
        with self._finishing:
            if self.result is None:
                self.result = self._reap(timed_out, interrupted)
        return self.result

    def _reap(self, timed_out: bool, interrupted: bool) -> ProcessResult:
        if not self.exited():
            self.kill_group()
            self.wait_exit(None)
        exited_at = self.exited_at or time.monotonic()
        # Output normally ends with the leader; a background child holding
        # the pipe gets a moment, then the rest of the group is killed.
        self.drain.join(DRAIN_DELAY)
        self.kill_group()
        self.drain.join(DRAIN_DELAY)
        if self.drain.is_alive():      # a child outside the group holds it
            self.drain.stop()
            self.drain.join()
        with self._lock:
            returncode = self.proc.wait()
        if self.cgroup is not None:
            self.cgroup.remove()
        self.close_stdin()
        self.drain.close()
        self.watch.close()
        return ProcessResult(
            argv=self.argv, returncode=returncode,
            signal=signal_name(-returncode) if returncode < 0 else None,
            timed_out=timed_out,
            duration_ms=(exited_at - self.started) * 1000.0,
            output_tail=self.drain.tail(self.tail_lines),
            bytes_dropped=self.drain.dropped, interrupted=interrupted)


def start_process(argv: Sequence[str], *,
                  env: Optional[Mapping[str, str]] = None, cwd: str = "/",
                  stdin: int = DEVNULL, grace: float = 5.0,
                  output_limit: int = OUTPUT_LIMIT,
                  watch_line: Optional[bytes] = None,
                  tail_lines: int = TAIL_LINES,
                  cgroup: bool = False) -> ProcessHandle:
    """Start ``argv`` in a new session; OSError if it cannot be executed.

    ``argv[0]`` is executed as given (scripts: the trust-checked path; no fd
    on it is passed down, see vmsnapshot.trust). ``env`` None inherits
    ours. ``stdin`` DEVNULL or PIPE
    (then ``handle.close_stdin()`` sends EOF; our end is CLOEXEC so no other
    child holds it). ``watch_line``: keep stderr apart and let
    ``handle.wait_line`` report that line on stdout. ``cgroup``: run it in
    its own cgroup v2 where available (see module doc).
    """
    argv = tuple(argv)
    cg = cgroups.make() if cgroup else None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe() if watch_line is not None else (None, None)
    in_r, in_w = os.pipe() if stdin == PIPE else (None, None)
    to_close: List[Optional[int]] = [out_w, err_w, in_r]
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, stdin=in_r if in_r is not None else stdin, stdout=out_w,
            stderr=err_w if err_w is not None else subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True,
            preexec_fn=cg.join_fn() if cg is not None else None)
    except BaseException:
        to_close += [out_r, err_r, in_w]
        if cg is not None:
            cg.remove()
        raise
    finally:
        for fd in to_close:
            if fd is not None:
                os.close(fd)
    if cg is not None:
        cg.started()
        if not cg.contains(proc.pid):     # could not join: group alone
            cg.remove(timeout=0)
            cg = None
    reads = [out_r] + ([err_r] if err_r is not None else [])
    try:
        drain = Drain(reads, output_limit, watch_fd=out_r,
                       watch_line=watch_line or b"")
        drain.start()
    except BaseException:   # no thread to drain it: do not leave it running
        os.killpg(proc.pid, signal.SIGKILL)    # unreaped: the pgid is ours
        if cg is not None:
            cg.kill()
        proc.wait()
        if cg is not None:
            cg.remove()
        for fd in reads + ([in_w] if in_w is not None else []):
            os.close(fd)
        raise
    return ProcessHandle(argv, proc, drain, in_w, grace, tail_lines, started,
                         cg)


def run_process(argv: Sequence[str], *, timeout: float,
                env: Optional[Mapping[str, str]] = None,
                cwd: str = "/", stdin: int = DEVNULL, grace: float = 5.0,
                output_limit: int = OUTPUT_LIMIT,
                should_stop: Optional[ShouldStop] = None,
                cgroup: bool = False) -> ProcessResult:
    """Run ``argv`` to completion or ``timeout`` (then SIGTERM the group,
    ``grace``, SIGKILL), or until ``should_stop()`` (the same escalation;
    the result says ``interrupted``). Raises OSError only if it cannot be
    started."""
    handle = start_process(argv, env=env,
                           cwd=cwd, stdin=stdin, grace=grace,
                           output_limit=output_limit, cgroup=cgroup)
    try:
        result = handle.wait(timeout, should_stop)
    except BaseException:        # interrupted: leave nothing behind
        handle.stop(grace=0.0)
        raise
    if result is None:
        if should_stop is not None and should_stop():
            result = handle.stop(grace, timed_out=False, interrupted=True)
        else:
            result = handle.stop(grace)
    return result
