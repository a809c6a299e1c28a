"""The exit statuses of `run`, `hook thaw` (and every command that ends a
cycle), in one table (design.md, "Command line")."""
from __future__ import annotations

import os
from typing import Any, Dict

from vmsnapshot import levels

OK = 0
NOT_CONSISTENT = 1   # below --require, snapshot failed, a post step failed
USAGE = 2
FAILED = 3           # stopped before the snapshot: policy, lock, signal
INTERNAL = os.EX_SOFTWARE   # a bug; the traceback is in the log

# Errors that make the status non-zero whatever the level: the snapshot
# does not exist or was cut short, or a post step failed (the application
# may not have resumed).
_NON_ZERO = frozenset((
    "SnapshotCommandFailed", "RunInterrupted", "Post-ScriptExecutionFailed",
    "Post-ScriptNotFound", "InsufficientPermissionforPost-Script",
    "Post-ScriptTimeout"))


def of_report(report: Dict[str, Any],
              require: str = levels.FILESYSTEM) -> int:
    """The exit status for a report (its JSON form, so the `hook thaw`
    client decides exactly as the holder that made it)."""
    if report.get("internal_error"):
        return INTERNAL
    level = report["consistency"]
    if level == levels.FAILED:
        return FAILED
    if not levels.at_least(level, require):
        return NOT_CONSISTENT
    if any(e["name"] in _NON_ZERO for e in report["errors"]):
        return NOT_CONSISTENT
    return OK
