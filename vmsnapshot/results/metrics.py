"""node-exporter textfile metrics: vmsnapshot.prom, rewritten atomically
after each run where the textfile directory exists.

Gauges describe the last run; counters (runs by level, errors by name,
watchdog thaws) and the streak of runs below `application` are kept in
counters.json in the state directory, so they survive between runs.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from vmsnapshot import levels
from vmsnapshot.atomicfile import write_atomic
from vmsnapshot.results import history

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
FILE_NAME = "vmsnapshot.prom"
COUNTERS_NAME = "counters.json"
# best first; the one spelling of the levels is vmsnapshot.levels
LEVELS = levels.BEST_FIRST

Labels = Tuple[Tuple[str, str], ...]


def textfile_dir() -> str:
    return os.environ.get("VMSNAPSHOT_METRICS_DIR", TEXTFILE_DIR)


def _escape(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("\"", "\\\"")
            .replace("\n", "\\n"))


def _timestamp(text: Optional[str]) -> Optional[float]:
    """meta.rfc3339's "2026-11-29T20:00:00.123Z" as Unix time. Not
    strptime: its first call imports _strptime and locale, ~10 ms of the
    wait at the end of every run (issue 15)."""
    if not text or not text.endswith("Z") or "." not in text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text[:-1])
    except ValueError:
        return None
    if when.tzinfo is not None:
        return None
    return when.replace(tzinfo=datetime.timezone.utc).timestamp()


class _Exposition:
    """Families in order, one HELP/TYPE each, no duplicate series."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Dict[Labels, float]) -> None:
        self.lines.append("# HELP %s %s" % (name, help_text))
        self.lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples.items():
            text = ",".join('%s="%s"' % (k, _escape(v)) for k, v in labels)
            self.lines.append("%s%s %s" % (name, "{%s}" % text if text
                                           else "", repr(float(value))))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def counters_path() -> str:
    return os.path.join(history.state_dir(), COUNTERS_NAME)


def update_counters(report: Dict[str, Any], durable: bool = True
                    ) -> Dict[str, Any]:
    """Add REPORT to counters.json (atomic; fsynced unless not DURABLE)
    and return the new counts."""
    path = counters_path()
    counters: Dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as f:
            counters = json.load(f)
    except (OSError, ValueError):
        pass
    if not isinstance(counters, dict):
        counters = {}
    level = str(report.get("consistency"))
    runs = counters.setdefault("runs", {})
    runs[level] = int(runs.get(level, 0)) + 1
    errors = counters.setdefault("errors", {})
    for e in report.get("errors") or []:
        key = "%s\t%s" % (e.get("name"), e.get("code"))
        errors[key] = int(errors.get(key, 0)) + 1
    if (report.get("freeze") or {}).get("auto_thawed"):
        counters["auto_thaws"] = int(counters.get("auto_thaws", 0)) + 1
    counters["below_application_streak"] = (
        0 if level == "application"
        else int(counters.get("below_application_streak", 0)) + 1)
    os.makedirs(history.state_dir(), mode=0o700, exist_ok=True)
    write_atomic(path, json.dumps(counters, indent=1) + "\n", 0o600,
                 durable=durable)
    return counters


def _seconds_by(rows: Optional[List[Dict[str, Any]]], ms_key: str,
                labels: Tuple[Tuple[str, str], ...]) -> Dict[Labels, float]:
    """Seconds of MS_KEY summed per label set (label name, row key): two
    rows with the same labels (a bind mount, a retried script) add up."""
    out: Dict[Labels, float] = {}
    for row in rows or []:
        if row.get(ms_key) is not None:
            key = tuple((name, str(row.get(field))) for name, field in labels)
            out[key] = out.get(key, 0.0) + row[ms_key] / 1000.0
    return out


def render(report: Dict[str, Any], counters: Dict[str, Any]) -> str:
    out = _Exposition()
    trigger = str(report.get("trigger") or "run")
    ended = _timestamp(report.get("ended_at"))
    if ended is not None:
        out.family("vmsnapshot_last_run_timestamp_seconds", "gauge",
                   "When the last run ended (Unix time).",
                   {(("trigger", trigger),): ended})
    level = report.get("consistency")
    out.family("vmsnapshot_level", "gauge",
               "Consistency level of the last run: 1 for its level, 0 for "
               "the others.",
               {(("level", lv),): float(lv == level) for lv in LEVELS})
    out.family("vmsnapshot_snapshot_taken", "gauge",
               "1 when the last run's snapshot command succeeded.",
               {(): float(bool(report.get("snapshot_taken")))})
    freeze = report.get("freeze") or {}
    if freeze.get("window_ms") is not None:
        out.family("vmsnapshot_freeze_window_seconds", "gauge",
                   "First FIFREEZE to last FITHAW in the last run.",
                   {(): freeze["window_ms"] / 1000.0})
    out.family("vmsnapshot_mount_freeze_seconds", "gauge",
               "Time FIFREEZE took per mount in the last run.",
               _seconds_by(report.get("mounts"), "freeze_ms",
                           (("mount", "path"), ("fstype", "fstype"))))
    out.family("vmsnapshot_script_duration_seconds", "gauge",
               "Duration of each plugin's script per phase in the last run.",
               _seconds_by(report.get("scripts"), "duration_ms",
                           (("plugin", "plugin"), ("phase", "phase"))))
    last: Dict[Labels, float] = {}
    for e in report.get("errors") or []:
        key = (("name", str(e.get("name"))), ("code", str(e.get("code"))))
        last[key] = last.get(key, 0.0) + 1
    out.family("vmsnapshot_last_run_errors", "gauge",
               "Errors of the last run by catalogue name.", last)
    out.family("vmsnapshot_runs_total", "counter",
               "Runs by consistency level.",
               {(("level", lv),): float(n) for lv, n in
                sorted((counters.get("runs") or {}).items())})
    totals: Dict[Labels, float] = {}
    for key, n in sorted((counters.get("errors") or {}).items()):
        name, _, code = key.partition("\t")
        totals[(("name", name), ("code", code))] = float(n)
    out.family("vmsnapshot_errors_total", "counter",
               "Errors by catalogue name, over all runs.", totals)
    out.family("vmsnapshot_auto_thaws_total", "counter",
               "Runs whose freeze the watchdog ended.",
               {(): float(counters.get("auto_thaws", 0))})
    out.family("vmsnapshot_runs_below_application", "gauge",
               "Consecutive runs, up to the last, below the application "
               "level.",
               {(): float(counters.get("below_application_streak", 0))})
    return out.text()


def write(report: Dict[str, Any], durable: bool = True) -> Optional[str]:
    """Update the counters and, where the textfile directory exists,
    vmsnapshot.prom; returns its path or None. Raises OSError."""
    counters = update_counters(report, durable)
    directory = textfile_dir()
    if not os.path.isdir(directory):
        return None
    path = os.path.join(directory, FILE_NAME)
    # node-exporter reads *.prom only: the temp name must not end so.
    # Derived from counters.json (fsynced) and rewritten by every run: no
    # fsync of its own (issue 15, ~1-5 ms of each run).
    write_atomic(path, render(report, counters), 0o644, durable=False)
    return path


