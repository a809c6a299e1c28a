"""Run history: every report saved as one JSON file under
/var/lib/vmsnapshot/runs/, newest kept, oldest pruned.

Files are named START-RUNID.json (START = compact UTC time) so that name
order is time order. Each is written to a temporary file, fsynced and
renamed (mode 600: reports name scripts and mounts), so a reader never
sees half a report. Only ever called after the thaw: the history may live
on a filesystem the run froze.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional

from vmsnapshot import logs
from vmsnapshot.atomicfile import write_atomic

log = logs.get(__name__)

STATE_DIR = "/var/lib/vmsnapshot"
DEFAULT_KEEP = 100
_NAME = re.compile(r"^\d{8}T\d{6}\d*Z-[0-9A-Za-z]+\.json$")


def state_dir() -> str:
    return os.environ.get("VMSNAPSHOT_STATE_DIR", STATE_DIR)


def runs_dir() -> str:
    return os.path.join(state_dir(), "runs")


def keep() -> int:
    """How many reports to keep: VMSNAPSHOT_HISTORY_KEEP (default 100,
    at least 1)."""
    raw = os.environ.get("VMSNAPSHOT_HISTORY_KEEP", "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_KEEP
    except ValueError:
        log.warning("VMSNAPSHOT_HISTORY_KEEP=%r is not a number: keeping %d",
                    raw, DEFAULT_KEEP)
        return DEFAULT_KEEP


def file_name(report: Dict[str, Any]) -> str:
    start = re.sub(r"[^0-9TZ]", "", str(report.get("started_at") or ""))
    if not re.match(r"^\d{8}T\d{6}\d*Z$", start):
        start = "19700101T000000Z"
    run_id = re.sub(r"[^0-9A-Za-z]", "", str(report.get("run_id") or "")) \
        or "unknown"
    return "%s-%s.json" % (start, run_id)


def save(report: Dict[str, Any], durable: bool = True,
         limit: Optional[int] = None) -> str:
    """Write REPORT atomically, keeping the newest LIMIT (default keep());
    returns its path. Raises OSError.  durable=False: visible (renamed
    into place) but not yet fsynced; the caller then makes durable() the
    file and its directory."""
    directory = runs_dir()
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)   # not 755 above
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, file_name(report))
    write_atomic(path, json.dumps(report, indent=2) + "\n", sync_dir=durable,
                 durable=durable)
    prune(keep() if limit is None else limit)
    return path


def _names() -> List[str]:
    try:
        return sorted(n for n in os.listdir(runs_dir()) if _NAME.match(n))
    except FileNotFoundError:
        return []


def prune(limit: int) -> List[str]:
    """Remove all but the newest LIMIT reports; returns the removed."""
    removed = []
    names = _names()
    for name in names[:max(0, len(names) - limit)]:
        try:
            os.unlink(os.path.join(runs_dir(), name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def load(n: Optional[int] = None) -> List[Dict[str, Any]]:
    """The last N reports (all when None), newest first. An unreadable
    file is listed with its problem instead of being hidden."""
    names = list(reversed(_names()))
    if n is not None:
        names = names[:n]
    reports = []
    for name in names:
        path = os.path.join(runs_dir(), name)
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            if not isinstance(report, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            report = {"unreadable": "%s: %s" % (path, e)}
        reports.append(report)
    return reports
