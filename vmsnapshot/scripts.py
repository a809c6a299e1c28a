"""Running the plugins' pre- and post-scripts of one phase.

Each script is trust-checked and opened once (vmsnapshot.trust); every
attempt executes that open file, with argv as configured (no shell), a clean
environment, cwd / and stdin /dev/null. ``retries`` really re-runs the script;
the plugin's timeout covers all attempts together. Plugins of one phase run in
parallel. Held pre-scripts (``hold = true``) are not run here: see
vmsnapshot.held.
"""
from __future__ import annotations

import errno
import logging
import os
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vmsnapshot.config.model import Plugin
from vmsnapshot.errors import ErrorRecord, VmsnapshotError
from vmsnapshot.spawn import ProcessResult, clean_env, run_process
from vmsnapshot.trust import TrustedScript, open_trusted, phase_entries

log = logging.getLogger(__name__)

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

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> Dict[str, Any]:
        return {"plugin": self.plugin, "phase": self.phase, "path": self.path,
                "attempts": self.attempts, "returncode": self.returncode,
                "timed_out": self.timed_out,
                "duration_ms": round(self.duration_ms, 1),
                "signal": self.signal,
                "error": self.error.entry.error_name if self.error else None}


def script_argv(plugin: Plugin, phase: str) -> Optional[Tuple[str, ...]]:
    phase_entries(phase)     # ValueError unless "pre" or "post"
    return plugin.pre if phase == "pre" else plugin.post


def script_env(plugin: Plugin, phase: str, trusted: TrustedScript,
               **extra: str) -> Dict[str, str]:
    # $0 is /proc/self/fd/N (we execute the checked fd): give the real path.
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
    # We exec /proc/self/fd/N: ENOENT there means no /proc, EACCES a noexec
    # mount (root bypasses the mode bits, which trust checked already).
    hint = {errno.ENOEXEC: " (no #! line?)",
            errno.EACCES: " (on a noexec mount?)",
            errno.ENOENT: " (is /proc mounted? or the #! interpreter "
                          "missing?)"}.get(exc.errno or 0, "")
    return ErrorRecord(phase_entries(phase).failed,
                       "%s could not be executed: %s: %s%s"
                       % (_label(plugin, phase, argv), trusted.real_path,
                          exc.strerror or exc, hint))


def retries_of(plugin: Plugin, phase: str) -> int:
    return plugin.pre_retries if phase == "pre" else plugin.post_retries


def make_result(plugin: Plugin, phase: str, argv: Sequence[str],
                attempts: int, res: Optional[ProcessResult],
                error: Optional[ErrorRecord],
                duration_ms: float) -> ScriptResult:
    result = ScriptResult(
        plugin=plugin.name, phase=phase, path=argv[0], attempts=attempts,
        returncode=res.returncode if res else None,
        timed_out=res.timed_out if res else False, duration_ms=duration_ms,
        error=error, output_tail=res.output_tail if res else (),
        signal=res.signal if res else None)
    if error is not None:
        log.error("%s", error)
    else:
        log.info("%s: ok after %d attempt%s, %.0f ms",
                 _label(plugin, phase, argv), attempts,
                 "" if attempts == 1 else "s", duration_ms)
        for line in result.output_tail:
            log.debug("  %s", line)
    return result


def run_script(plugin: Plugin, phase: str,
               grace: float = GRACE) -> ScriptResult:
    """Check, then run one plugin's script of ``phase`` with its retries."""
    argv = script_argv(plugin, phase)
    assert argv, "plugin %s has no %s script" % (plugin.name, phase)
    start = time.monotonic()
    try:
        trusted = open_trusted(argv[0], phase)
    except VmsnapshotError as exc:
        return make_result(plugin, phase, argv, 0, None, exc.record(),
                           (time.monotonic() - start) * 1000)
    deadline = start + plugin.timeout
    env = script_env(plugin, phase, trusted)
    attempts = 0
    res: Optional[ProcessResult] = None
    error: Optional[ErrorRecord] = None
    try:
        while True:
            attempts += 1
            left = max(0.0, deadline - time.monotonic())
            try:
                res = run_process(argv, executable_fd=trusted.fd, env=env,
                                  timeout=left, grace=grace)
            except OSError as exc:   # permanent: retrying cannot help
                error = exec_failure_record(plugin, phase, argv, trusted, exc)
                break
            if res.returncode == 0 and not res.timed_out:
                error = None
                break
            error = failure_record(plugin, phase, argv, res, attempts)
            if (res.timed_out or attempts > retries_of(plugin, phase)
                    or time.monotonic() >= deadline):
                break
            log.warning("%s; retrying", error.message)
    finally:
        os.close(trusted.fd)
    return make_result(plugin, phase, argv, attempts, res, error,
                       (time.monotonic() - start) * 1000)


def run_phase(plugins: Sequence[Plugin], phase: str,
              grace: float = GRACE) -> List[ScriptResult]:
    """Run the ``phase`` script of every plugin that has one, in parallel;
    results in plugin order. Held pre-scripts are skipped (vmsnapshot.held)."""
    todo = [p for p in plugins if script_argv(p, phase)
            and not (phase == "pre" and p.hold)]
    results: List[Optional[ScriptResult]] = [None] * len(todo)

    def one(i: int) -> None:
        results[i] = run_script(todo[i], phase, grace)

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
