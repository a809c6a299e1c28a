"""Every exit status vmsnapshot returns, in one table (design.md, "Command
line"), and the one level -> status decision of the commands that end a
cycle (`run`, `post`, `hook thaw`)."""
from __future__ import annotations

import os
from typing import Any, Dict

from vmsnapshot import levels

OK = 0
NOT_CONSISTENT = 1   # below --require, snapshot failed, a post step failed
PROBLEMS = 1         # check found problems, thaw --recover left some,
#                      status has no history, azure enable/disable failed
USAGE = 2
FAILED = 3           # stopped before the snapshot: policy, lock, signal
INTERNAL = os.EX_SOFTWARE   # 70: a bug; the traceback is in the log
INTERRUPTED = 130    # SIGINT (128 + 2), as a shell reports it
BROKEN_PIPE = 141    # stdout's reader left (128 + SIGPIPE)

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
