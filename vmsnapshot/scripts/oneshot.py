"""Running the plugins' pre- and post-scripts of one phase.

Each script is trust-checked once (vmsnapshot.trust: the whole chain is
root-only) and then executed by its configured path, so ``$0`` is what the
admin wrote and no fd on the script reaches it or its children; argv as
configured (no shell, empty strings kept), a clean environment, cwd / and
stdin /dev/null. ``retries`` really re-runs the script;
the plugin's timeout covers all attempts together. Plugins of one phase run in
parallel. Held pre-scripts (``hold = true``) are not run here: see
vmsnapshot.scripts.held.
"""
from __future__ import annotations

import errno
import os
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vmsnapshot import logs
from vmsnapshot.config.model import Plugin
from vmsnapshot.errors import ErrorRecord, VmsnapshotError
from vmsnapshot.scripts.spawn import (ProcessResult, ShouldStop, clean_env,
                              run_process)
from vmsnapshot.errors import phase_entries
from vmsnapshot.trust import TrustedScript, open_trusted

log = logs.get(__name__)

GRACE = 5.0   # s between SIGTERM and SIGKILL when a script times out

@dataclass(frozen=True)
class ScriptResult:
    """One script of one phase: attempts, exit, time, error."""

    plugin: str
    phase: str                 # "pre" | "post"
    path: str                  # argv[0] as configured
    attempts: int              # 0: never started (not found, untrusted)
    returncode: Optional[int]  # of the last attempt; negative = signal
    timed_out: bool
    duration_ms: float         # all attempts together
    error: Optional[ErrorRecord]
    output_tail: Tuple[str, ...]
    signal: Optional[str] = None
    # Stopped (or never started) because should_stop() said so; error is
    # None then: the run's RunInterrupted says why, once.
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.interrupted

    def to_json(self) -> Dict[str, Any]:
        return {"plugin": self.plugin, "phase": self.phase, "path": self.path,
                "attempts": self.attempts, "returncode": self.returncode,
                "timed_out": self.timed_out,
                "duration_ms": round(self.duration_ms, 1),
                "signal": self.signal, "interrupted": self.interrupted,
                "error": self.error.entry.error_name if self.error else None}


def script_argv(plugin: Plugin, phase: str) -> Optional[Tuple[str, ...]]:
    phase_entries(phase)     # ValueError unless "pre" or "post"
    return plugin.pre if phase == "pre" else plugin.post


def script_env(plugin: Plugin, phase: str, trusted: TrustedScript,
               **extra: str) -> Dict[str, str]:
    # VMSNAPSHOT_SCRIPT: the path with symlinks resolved ($0 is as
    # configured).
    env = {"VMSNAPSHOT_PHASE": phase, "VMSNAPSHOT_PLUGIN": plugin.name,
           "VMSNAPSHOT_SCRIPT": trusted.real_path}
    env.update(extra)
    return clean_env(env)


def _label(plugin: Plugin, phase: str, argv: Sequence[str]) -> str:
    return "%s-script %s (plugin %s)" % (phase.capitalize(), argv[0],
                                         plugin.name)


def _with_output(message: str, res: Optional[ProcessResult]) -> str:
    if res is None or not res.output_tail:
        return message + "; no output"
    return message + "; last output:\n  " + "\n  ".join(res.output_tail)


def failure_record(plugin: Plugin, phase: str, argv: Sequence[str],
                   res: ProcessResult, attempts: int,
                   what: str = "failed", unfinished: str = "did not finish",
                   limit: Optional[float] = None) -> ErrorRecord:
    """Pre/Post-ScriptExecutionFailed, or -Timeout when ``res`` timed out."""
    entries = phase_entries(phase)
    if res.timed_out:
        message = "%s %s within %g s (%d attempt%s): %s" % (
            _label(plugin, phase, argv), unfinished,
            plugin.timeout if limit is None else limit, attempts,
            "" if attempts == 1 else "s", res.describe())
        return ErrorRecord(entries.timeout, _with_output(message, res))
    message = "%s %s: %s (attempt %d of %d); command: %s" % (
        _label(plugin, phase, argv), what, res.describe(), attempts,
        1 + retries_of(plugin, phase), shlex.join(argv))
    return ErrorRecord(entries.failed, _with_output(message, res))


def exec_failure_record(plugin: Plugin, phase: str, argv: Sequence[str],
                        trusted: TrustedScript, exc: OSError) -> ErrorRecord:
    # The path was just checked: ENOENT means the #! interpreter is
    # missing, EACCES a noexec mount (root bypasses the mode bits).
    hint = {errno.ENOEXEC: " (no #! line?)",
            errno.EACCES: " (on a noexec mount?)",
            errno.ENOENT: " (is the #! interpreter missing?)"}.get(
                exc.errno or 0, "")
    return ErrorRecord(phase_entries(phase).failed,
                       "%s could not be executed: %s: %s%s"
                       % (_label(plugin, phase, argv), trusted.real_path,
                          exc.strerror or exc, hint))


def retries_of(plugin: Plugin, phase: str) -> int:
    return plugin.pre_retries if phase == "pre" else plugin.post_retries


def make_result(plugin: Plugin, phase: str, argv: Sequence[str],
                attempts: int, res: Optional[ProcessResult],
                error: Optional[ErrorRecord],
                duration_ms: float, interrupted: bool = False
                ) -> ScriptResult:
    result = ScriptResult(
        plugin=plugin.name, phase=phase, path=argv[0], attempts=attempts,
        returncode=res.returncode if res else None,
        timed_out=res.timed_out if res else False, duration_ms=duration_ms,
        error=error, output_tail=res.output_tail if res else (),
        signal=res.signal if res else None, interrupted=interrupted)
    if interrupted:
        log.warning("%s: stopped, the run was interrupted (%d attempt%s, "
                    "%.0f ms)", _label(plugin, phase, argv), attempts,
                    "" if attempts == 1 else "s", duration_ms)
    elif error is not None:
        log.error("%s", error)
    else:
        log.info("%s: ok after %d attempt%s, %.0f ms",
                 _label(plugin, phase, argv), attempts,
                 "" if attempts == 1 else "s", duration_ms)
        for line in result.output_tail:
            log.debug("  %s", line)
    return result


def partner_problem(plugin: Plugin, phase: str) -> Optional[ErrorRecord]:
    """Before a pre-script runs, its post-script (if any) must exist and be
    trusted, as Microsoft's extension checks both first: a pre-script whose
    post-script cannot run would leave the application quiesced. The
    post-script's error (Post-ScriptNotFound, InsufficientPermissionfor
    Post-Script), or None."""
    if phase != "pre" or not plugin.post:
        return None
    try:
        os.close(open_trusted(plugin.post[0], "post").fd)
    except VmsnapshotError as exc:
        message = exc.message
        if not message.endswith("; nothing of this plugin runs"):
            message += "; nothing of this plugin runs"
        return ErrorRecord(exc.entry, "%s (its pre-script %s was not "
                           "started)" % (message, plugin.pre[0]
                                         if plugin.pre else "-"))
    return None


def run_script(plugin: Plugin, phase: str, grace: float = GRACE,
               should_stop: Optional[ShouldStop] = None) -> ScriptResult:
    """Check, then run one plugin's script of ``phase`` with its retries;
    stopped at once (result ``interrupted``) when ``should_stop()``."""
    argv = script_argv(plugin, phase)
    assert argv, "plugin %s has no %s script" % (plugin.name, phase)
    start = time.monotonic()
    try:
        trusted = open_trusted(argv[0], phase)
    except VmsnapshotError as exc:
        return make_result(plugin, phase, argv, 0, None, exc.record(),
                           (time.monotonic() - start) * 1000)
    os.close(trusted.fd)     # executed by path: see vmsnapshot.trust
    partner = partner_problem(plugin, phase)
    if partner is not None:
        return make_result(plugin, phase, argv, 0, None, partner,
                           (time.monotonic() - start) * 1000)
    deadline = start + plugin.timeout
    env = script_env(plugin, phase, trusted)
    attempts = 0
    res: Optional[ProcessResult] = None
    error: Optional[ErrorRecord] = None
    interrupted = False
    while True:
        if should_stop is not None and should_stop():
            interrupted, error = True, None
            break
        attempts += 1
        left = max(0.0, deadline - time.monotonic())
        try:
            res = run_process(argv, env=env, timeout=left, grace=grace,
                              should_stop=should_stop, cgroup=True)
        except OSError as exc:   # permanent: retrying cannot help
            error = exec_failure_record(plugin, phase, argv, trusted, exc)
            break
        if res.interrupted:
            interrupted, error = True, None
            break
        if res.returncode == 0 and not res.timed_out:
            error = None
            break
        error = failure_record(plugin, phase, argv, res, attempts)
        if (res.timed_out or attempts > retries_of(plugin, phase)
                or time.monotonic() >= deadline):
            break
        log.warning("%s; retrying", error.message)
    return make_result(plugin, phase, argv, attempts, res, error,
                       (time.monotonic() - start) * 1000, interrupted)


def run_phase(plugins: Sequence[Plugin], phase: str, grace: float = GRACE,
              should_stop: Optional[ShouldStop] = None) -> List[ScriptResult]:
    """Run the ``phase`` script of every plugin that has one, in parallel;
    results in plugin order. Held pre-scripts are skipped (vmsnapshot.scripts.held).

    ``should_stop`` (e.g. "a SIGTERM arrived") is polled every ~30 ms while
    scripts run: once true, every running script is stopped at once
    (SIGTERM, ``grace``, SIGKILL, reaped), none is started, and their
    results say ``interrupted`` (error None: the caller reports
    RunInterrupted once)."""
    todo = [p for p in plugins if script_argv(p, phase)
            and not (phase == "pre" and p.hold)]
    results: List[Optional[ScriptResult]] = [None] * len(todo)

    def one(i: int) -> None:
        results[i] = run_script(todo[i], phase, grace, should_stop)

    threads = [threading.Thread(target=one, args=(i,),
                                name="vmsnapshot-%s-%s" % (phase, p.name))
               for i, p in enumerate(todo)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [todo[i].name for i, r in enumerate(results) if r is None]
    if missing:     # a thread died of a bug: surface it, do not drop it
        raise RuntimeError("script runner crashed for plugin(s) %s"
                           % ", ".join(missing))
    return [r for r in results if r is not None]
