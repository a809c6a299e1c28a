"""The one call every command makes after the thaw: journal entries, the
history file and the metrics, from the report's JSON alone.

Never while frozen: the history, the metrics and journald's own files may
all live on a filesystem the run froze. Never raising for I/O: a full
disk must not turn a good snapshot into a failed command.
"""
from __future__ import annotations

import json
import os
import select
import signal
import threading
from typing import Any, Dict, List, Tuple

from vmsnapshot import logs
from vmsnapshot.results import history, journal, metrics

log = logs.get(__name__)

# One stable MESSAGE_ID per outcome: `journalctl MESSAGE_ID=...` finds
# every such run of a fleet. Never change them.
MESSAGE_IDS = {
    "application": "52ff2f11edb7472d8b813e3ee0059a7e",
    "filesystem": "538b459b1ae342a88fb3bd56e213fdbc",
    "crash": "f9cd6fa85f4a49218525c29ab425741b",
    "failed": "7a323cd20c604cc0a279232a2df1c1db",
}
ERROR_MESSAGE_ID = "dad3bfc737344326854a4d54d325f45c"
INTERNAL_ERROR_MESSAGE_ID = "5ff8753800fa4023b4668dae9d9d06de"
FILE_DEADLINE = 10.0       # seconds the command waits for the files
_PRIORITY = {"application": journal.INFO, "filesystem": journal.NOTICE,
             "crash": journal.WARNING, "failed": journal.ERR}


def publish(report: Dict[str, Any]) -> List[str]:
    """Journal, history, metrics for one finished run; returns the
    problems (also logged)."""
    problems: List[str] = []
    try:
        journal_entries(report)
    except Exception as e:     # noqa: BLE001 - a result is best effort
        problems.append("could not write the journal entries: %s" % e)
    # Read here, not in the writer: its stderr is /dev/null, and a bad
    # setting must be said.
    keep = history.keep()
    problems += _files_with_deadline(report, FILE_DEADLINE, keep)
    for problem in problems:
        log.warning("%s", problem)
    return problems


def _write_files(report: Dict[str, Any], keep: int, durable: bool = True
                 ) -> Tuple[List[str], List[str]]:
    """The history and the metrics; returns the problems and, when not
    DURABLE, the paths still to fsync (files, then their directories)."""
    problems = []
    pending: List[str] = []
    try:
        path = history.save(report, durable, keep)
        pending += [path, os.path.dirname(path)]
    except Exception as e:     # noqa: BLE001
        problems.append("could not write the history: %s" % e)
    try:
        metrics.write(report, durable)
        pending.append(metrics.counters_path())
    except Exception as e:     # noqa: BLE001
        problems.append("could not write the metrics: %s" % e)
    return problems, ([] if durable else pending)


def _fsync_paths(paths: List[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:     # durability is best effort here
            log.debug("fsync %s: %s", path, e)


def _files_with_deadline(report: Dict[str, Any], deadline: float,
                         keep: int) -> List[str]:
    """Write the files in a child and wait at most DEADLINE seconds.

    Our own freeze is over, but /var may be frozen by another process
    (FrozenByAnotherProcess leaves it so): a write there sleeps,
    unkillable, until that freeze ends. The run must still end with its
    report and exit status; the child finishes the files after the thaw.

    The command waits only until the files are visible (renamed into
    place: `vmsnapshot status` sees the run as soon as the command
    returns); the child does their fsyncs (~10-20 ms on a busy /var)
    after, reaped by a daemon thread, or by init once the command has
    exited (issue 15).  A crash within those few milliseconds may lose
    this run's record (an empty file, which `history.load` lists as
    unreadable) or reset counters.json to zero (Prometheus' rate() reads
    that as a counter reset); it never leaves a mix of two versions.
    """
    try:
        rfd, wfd = os.pipe()
        pid = os.fork()
    except OSError:
        return _write_files(report, keep)[0]
    if pid == 0:                                       # the writer
        status = 1
        try:
            # Hold nothing of the caller's: not its lock, not the pipes a
            # caller reads to EOF, not the terminal.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            for fd in _open_fds():
                if fd > 2 and fd != wfd:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            problems, pending = _write_files(report, keep, durable=False)
            data = json.dumps(problems).encode()
            while data:
                data = data[os.write(wfd, data):]
            os.close(wfd)      # the caller stops waiting here
            # The unit's stop (systemd's SIGTERM to what is left of its
            # cgroup once `run` exits) must not cut the fsyncs short.
            for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)
            _fsync_paths(pending)
            status = 0
        finally:
            os._exit(status)
    os.close(wfd)
    try:
        ready, _, _ = select.select([rfd], [], [], deadline)
        if not ready:
            return ["the history and metrics writes are still blocked after "
                    "%gs (is %s on a filesystem another process froze?): "
                    "they complete when it is thawed"
                    % (deadline, history.state_dir())]
        chunks = []
        while True:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            _, status = os.waitpid(pid, 0)
            return ["the history and metrics writer failed (status %d)"
                    % os.waitstatus_to_exitcode(status)]
        threading.Thread(target=_reap, args=(pid,), daemon=True).start()
        return list(json.loads(b"".join(chunks).decode()))
    finally:
        os.close(rfd)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _open_fds() -> List[int]:
    try:
        return [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def journal_entries(report: Dict[str, Any]) -> str:
    """One entry for the run, one per error; returns the sink used."""
    level = str(report.get("consistency"))
    errors = report.get("errors") or []
    run_fields = _common(report)
    priority = _PRIORITY.get(level, journal.ERR)
    window = (report.get("freeze") or {}).get("window_ms")
    message = "consistency %s, snapshot %s, %d error%s" % (
        level, "taken" if report.get("snapshot_taken") else "not taken",
        len(errors), "" if len(errors) == 1 else "s")
    if window is not None:
        message += ", frozen %.1f ms" % window
    message += " (run %s, trigger %s)" % (report.get("run_id") or "?",
                                         report.get("trigger") or "?")
    sink = journal.send(
        message, priority, MESSAGE_ID=MESSAGE_IDS.get(level, ERROR_MESSAGE_ID),
        VMSNAPSHOT_SNAPSHOT_TAKEN=int(bool(report.get("snapshot_taken"))),
        VMSNAPSHOT_ERRORS=len(errors),
        VMSNAPSHOT_REPORT=json.dumps(report, separators=(",", ":")),
        **run_fields)
    for e in errors:
        journal.send(
            "%s (%s): %s" % (e.get("name"), e.get("code"), e.get("message")),
            min(priority, journal.WARNING), MESSAGE_ID=ERROR_MESSAGE_ID,
            VMSNAPSHOT_ERROR_NAME=e.get("name"),
            VMSNAPSHOT_ERROR_CODE=e.get("code"),
            VMSNAPSHOT_ERROR_ACTION=e.get("action") or "", **run_fields)
    return sink


def _common(report: Dict[str, Any]) -> Dict[str, object]:
    fields: Dict[str, object] = {
        "VMSNAPSHOT_RUN_ID": report.get("run_id") or "",
        "VMSNAPSHOT_LEVEL": report.get("consistency"),
        "VMSNAPSHOT_TRIGGER": report.get("trigger") or ""}
    return fields


def internal_error(exc: BaseException, context: str = "") -> str:
    """An unexpected error's traceback to the journal (or syslog, or
    stderr), whatever the verbosity; returns the sink used."""
    import traceback        # only for a bug: not on every run's path
    text = "".join(traceback.format_exception(type(exc), exc,
                                              exc.__traceback__))
    return journal.send(
        "internal error%s: %s: %s\n%s" % (" in " + context if context else "",
                                           type(exc).__name__, exc, text),
        journal.ERR, MESSAGE_ID=INTERNAL_ERROR_MESSAGE_ID,
        VMSNAPSHOT_EXCEPTION=type(exc).__name__, VMSNAPSHOT_TRACEBACK=text)
