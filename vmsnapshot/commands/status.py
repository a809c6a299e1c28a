"""`vmsnapshot status [--json] [-n N]`: the last runs from the history,
newest first."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

from vmsnapshot import exitstatus
from vmsnapshot.results import history


def _row(r: Dict[str, Any]) -> str:
    if "unreadable" in r:
        return "unreadable: %s" % r["unreadable"]
    window = (r.get("freeze") or {}).get("window_ms")
    errors = ", ".join(str(e.get("name")) for e in r.get("errors") or [])
    return "%-24s %-8s %-11s %-5s %10s  %s" % (
        r.get("ended_at") or r.get("started_at") or "?",
        r.get("trigger") or "?", r.get("consistency") or "?",
        "yes" if r.get("snapshot_taken") else "no",
        "-" if window is None else "%.1f ms" % window, errors or "-")


def status_command(json_output: bool, count: int) -> int:
    reports: List[Dict[str, Any]] = history.load(count)
    if json_output:
        print(json.dumps({"runs": reports}, indent=2))
        return exitstatus.OK if reports else exitstatus.PROBLEMS
    if not reports:
        print("no runs recorded in %s" % history.runs_dir(), file=sys.stderr)
        return exitstatus.PROBLEMS
    print("%-24s %-8s %-11s %-5s %10s  %s" % (
        "WHEN (UTC)", "TRIGGER", "LEVEL", "SNAP", "FROZEN", "ERRORS"))
    for r in reports:
        print(_row(r))
    return exitstatus.OK
