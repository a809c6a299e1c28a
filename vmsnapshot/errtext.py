"""Errors as people read them: NAME (code): message, then the recommended
action, printed once for a run of errors that share it (ten scripts with
the same wrong mode need the fix said once, not ten times)."""
from __future__ import annotations

from typing import Iterable, List

from vmsnapshot.errors import ErrorRecord


def error_lines(records: Iterable[ErrorRecord], prefix: str = "") -> List[str]:
    lines: List[str] = []
    said = set()
    for r in records:
        lines.append("%s%s (%d): %s" % (prefix, r.entry.error_name,
                                        r.entry.code, r.message))
        if r.entry.action not in said:
            said.add(r.entry.action)
            lines.append("  action: " + r.entry.action)
    return lines
