"""The one call every command makes after the thaw: journal entries, the
history file and the metrics, from the report's JSON alone.

Never while frozen: the history, the metrics and journald's own files may
all live on a filesystem the run froze. Never raising for I/O: a full
disk must not turn a good snapshot into a failed command.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any, Dict, List

from vmsnapshot.results import history, journal, metrics

log = logging.getLogger(__name__)

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
_PRIORITY = {"application": journal.INFO, "filesystem": journal.NOTICE,
             "crash": journal.WARNING, "failed": journal.ERR}


def publish(report: Dict[str, Any]) -> List[str]:
    """Journal, history, metrics for one finished run; returns the
    problems (also logged)."""
    problems: List[str] = []
    for what, step in (("history", history.save),
                       ("journal", journal_entries),
                       ("metrics", metrics.write)):
        try:
            step(report)
        except Exception as e:     # noqa: BLE001 - a result is best effort
            problems.append("could not write the %s: %s" % (what, e))
    for problem in problems:
        log.warning("%s", problem)
    return problems


def journal_entries(report: Dict[str, Any]) -> str:
    """One entry for the run, one per error; returns the sink used."""
    import json
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
    text = "".join(traceback.format_exception(type(exc), exc,
                                              exc.__traceback__))
    return journal.send(
        "internal error%s: %s: %s\n%s" % (" in " + context if context else "",
                                           type(exc).__name__, exc, text),
        journal.ERR, MESSAGE_ID=INTERNAL_ERROR_MESSAGE_ID,
        VMSNAPSHOT_EXCEPTION=type(exc).__name__, VMSNAPSHOT_TRACEBACK=text)
