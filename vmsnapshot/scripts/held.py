"""Held pre-scripts (``hold = true``): the pre command keeps its application
quiesced (a lock held in its own database session) until the post phase.

Protocol: the hook prints a line ``READY`` on stdout once quiesced and then
stays running; EOF on its stdin means "release now". Our end of that pipe is
the only write end (CLOEXEC, never inherited by another child), so if the
supervisor dies the kernel closes it and the hook sees EOF too: a lock is
never held past the run. (Its stdout is then gone as well: a hook should
release its lock before it prints anything after EOF, or die of SIGPIPE
first.)

Order for the orchestrator: ``start_held`` every held plugin, ``wait_ready``
each (the default deadline counts from the start, so waiting one after the
other is as fast as waiting in parallel), freeze, snapshot, check ``alive()``
(False: the hook died and its lock was lost before the snapshot finished),
thaw, ``release()``, then run the post phase as usual.
"""
from __future__ import annotations

import os
import time
from typing import Optional

from vmsnapshot.config.model import Plugin
from vmsnapshot.errors import Catalogue, ErrorRecord, VmsnapshotError
from vmsnapshot.scripts.oneshot import (GRACE, ScriptResult, exec_failure_record,
                                failure_record, make_result, partner_problem,
                                retries_of, script_env)
from vmsnapshot.scripts.spawn import (PIPE, ProcessHandle, ProcessResult, ShouldStop,
                              never, start_process)
from vmsnapshot.trust import TrustedScript, open_trusted

READY = b"READY"


class HeldHook:
    """One held pre-script. Never raises for expected failures: they end up
    in ``error`` and in the ScriptResult that ``release`` returns."""

    def __init__(self, plugin: Plugin, grace: float = GRACE):
        assert plugin.pre, "plugin %s has no pre command" % plugin.name
        self.plugin = plugin
        self.argv = plugin.pre
        self.grace = grace
        self.started = time.monotonic()
        self.deadline = self.started + plugin.timeout
        self.trusted: Optional[TrustedScript] = None
        self.handle: Optional[ProcessHandle] = None
        self.proc: Optional[ProcessResult] = None   # once reaped
        self.error: Optional[ErrorRecord] = None
        self.attempts = 0
        self.ready = False
        self.released = False
        self.interrupted = False
        self.result: Optional[ScriptResult] = None

    def _start(self) -> bool:
        assert self.trusted is not None
        self.attempts += 1
        try:
            self.handle = start_process(
                self.argv, stdin=PIPE,
                env=script_env(self.plugin, "pre", self.trusted,
                               VMSNAPSHOT_HOLD="1"),
                grace=self.grace, watch_line=READY, cgroup=True)
        except OSError as exc:
            self.error = exec_failure_record(self.plugin, "pre", self.argv,
                                             self.trusted, exc)
            return False
        return True

    def wait_ready(self, timeout: Optional[float] = None,
                   should_stop: Optional[ShouldStop] = None
                   ) -> Optional[ErrorRecord]:
        """Wait for READY (default: until the plugin's timeout, counted from
        the start). None when ready; else Pre-ScriptTimeout (the hook is
        stopped) or Pre-ScriptExecutionFailed (it exited first; retried while
        pre_retries and the timeout allow). ``should_stop`` is polled every
        ~30 ms: once true the hook is stopped at once (SIGTERM, grace,
        SIGKILL) and RunInterrupted is returned (never None: None means
        ready); its release() result then says ``interrupted``."""
        deadline = self.deadline if timeout is None else \
            time.monotonic() + timeout
        stop = should_stop or never
        while self.error is None and not self.ready:
            assert self.handle is not None
            if stop():
                self._interrupt()
                break
            if self.handle.wait_line(max(0.0, deadline - time.monotonic()),
                                     should_stop):
                self.ready = True
                break
            if stop():
                self._interrupt()
                break
            # No READY: output ended (the hook is exiting: its stdout closes
            # just before it becomes waitable) or the time is up.
            if not self.handle.wait_exit(max(0.0,
                                             deadline - time.monotonic()),
                                         should_stop):
                if stop():
                    self._interrupt()
                    break
                self.proc = self.handle.stop(self.grace, timed_out=True)
                self.error = failure_record(
                    self.plugin, "pre", self.argv, self.proc, self.attempts,
                    unfinished="did not print READY",
                    limit=deadline - self.started if timeout is None
                    else timeout)
                break
            self.proc = self.handle.stop(0.0, timed_out=False)
            self.error = failure_record(self.plugin, "pre", self.argv,
                                        self.proc, self.attempts,
                                        what="exited before printing READY")
            if (self.attempts <= retries_of(self.plugin, "pre")
                    and time.monotonic() < deadline):
                self.error = None
                self.proc = None
                self._start()
        return self.error

    def _interrupt(self) -> None:
        assert self.handle is not None
        self.proc = self.handle.stop(self.grace, timed_out=False,
                                     interrupted=True)
        self.interrupted = True
        self.error = ErrorRecord(
            Catalogue.RUN_INTERRUPTED,
            "held pre-script %s (plugin %s) stopped before READY: the run "
            "was interrupted" % (self.argv[0], self.plugin.name))

    def alive(self) -> bool:
        """Ready and still running (its lock still held). Safe while frozen."""
        return (self.ready and self.handle is not None
                and self.handle.alive())

    def release(self, timeout: Optional[float] = None) -> ScriptResult:
        """EOF on the hook's stdin; wait up to ``timeout`` for it to exit,
        then SIGTERM/SIGKILL its group. Returns the pre phase's
        ScriptResult; idempotent.

        The timeout counts from the EOF (default: the plugin's timeout; its
        pre budget was spent holding, and an unlock may legitimately wait,
        e.g. postgresql's pg_backup_stop for WAL archiving). The result's
        error: Pre-ScriptExecutionFailed when the hook exits non-zero after
        EOF (the shipped hooks: mariadb 3, postgresql 4, "the lock was
        lost") or died before it; Pre-ScriptTimeout when it does not exit
        in time."""
        if self.result is not None:
            return self.result
        self._release(self.plugin.timeout if timeout is None else timeout)
        # Interrupted: error None in the result, as run_phase's (the run's
        # own RunInterrupted says why, once).
        self.result = make_result(
            self.plugin, "pre", self.argv, self.attempts, self.proc,
            None if self.interrupted else self.error,
            (time.monotonic() - self.started) * 1000, self.interrupted)
        return self.result

    def _release(self, timeout: float) -> None:
        if self.handle is None or self.proc is not None:
            return                      # never started, or already ended
        if not self.ready:              # released without a successful wait
            self.proc = self.handle.stop(self.grace, timed_out=True)
            self.error = self.error or failure_record(
                self.plugin, "pre", self.argv, self.proc, self.attempts,
                unfinished="was released before it printed READY", limit=0)
            return
        died_early = self.handle.exited()
        self.handle.close_stdin()
        self.released = True
        proc = self.handle.wait(timeout)
        if proc is None:
            proc = self.handle.stop(self.grace, timed_out=True)
            self.error = failure_record(
                self.plugin, "pre", self.argv, proc, self.attempts,
                unfinished="did not exit after its release (stdin closed)",
                limit=timeout)
        elif died_early:
            self.error = failure_record(
                self.plugin, "pre", self.argv, proc, self.attempts,
                what="exited before it was released (its lock was not held "
                     "to the end)")
        elif proc.returncode != 0:
            self.error = failure_record(self.plugin, "pre", self.argv, proc,
                                        self.attempts,
                                        what="failed after its release")
        self.proc = proc


def start_held(plugin: Plugin, grace: float = GRACE) -> HeldHook:
    """Trust-check and start ``plugin``'s pre command with a pipe on stdin."""
    hook = HeldHook(plugin, grace)
    try:
        hook.trusted = open_trusted(hook.argv[0], "pre")
    except VmsnapshotError as exc:
        hook.error = exc.record()
        return hook
    os.close(hook.trusted.fd)   # executed by path: see vmsnapshot.trust
    hook.error = partner_problem(plugin, "pre")
    if hook.error is None:
        hook._start()
    return hook
