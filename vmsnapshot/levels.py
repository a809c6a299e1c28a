"""The consistency levels (design.md, "Consistency levels"): their one
spelling, at the bottom of the package so the report, the metrics, the exit
statuses and the policy all take them from here."""
from __future__ import annotations

APPLICATION = "application"
FILESYSTEM = "filesystem"
CRASH = "crash"
FAILED = "failed"
LEVELS = (FAILED, CRASH, FILESYSTEM, APPLICATION)   # lowest first
BEST_FIRST = tuple(reversed(LEVELS))


def at_least(level: str, required: str) -> bool:
    """LEVEL is as good as REQUIRED or better (--require)."""
    return LEVELS.index(level) >= LEVELS.index(required)
