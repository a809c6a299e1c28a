"""The snapshot command, run while the filesystems are frozen.

It is bounded by the watchdog: if it outlives the deadline by GRACE_S, its
process group is killed, and a trapped signal (SIGTERM, SIGINT, SIGHUP)
stops it early, so the run can thaw, post-process and report.

The process runner (scripts.spawn: subprocess, selectors, cgroups) is
imported by prepare(), before the freeze, and only when there is a
command: a freeze-only run does not pay for it (issue 15).
"""
from __future__ import annotations

import os
import time
from types import ModuleType
from typing import Optional, Sequence

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8
    Protocol = object  # type: ignore[assignment]

from vmsnapshot import logs
from vmsnapshot.cycle.report import SnapshotReport
from vmsnapshot.cycle.signals import SignalTrap

log = logs.get(__name__)

GRACE_S = 5.0       # after the watchdog deadline, before SIGTERM
STOP_GRACE_S = 2.0  # SIGTERM to SIGKILL
_STEP_S = 0.05      # how often signals and the deadline are checked


class Window(Protocol):
    """What the snapshot needs to know of the freeze (FreezeSession, or
    None when nothing is frozen)."""

    def deadline(self) -> float: ...
    def fired_at(self) -> Optional[float]: ...
    def paths(self) -> Sequence[str]: ...
    def watch_child(self, pgid: int, gone: bool = False) -> None: ...


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"


def prepare(argv: Sequence[str]) -> Optional[ModuleType]:
    """Import the process runner when ARGV names a command. Call it before
    the freeze: an import while frozen may read a frozen filesystem."""
    if not argv:
        return None
    from vmsnapshot.scripts import spawn
    return spawn


def run_snapshot(argv: Sequence[str], window: Optional[Window],
                 trap: SignalTrap) -> SnapshotReport:
    spawn = prepare(argv)      # loaded already: the caller prepared it
    if spawn is None:
        return SnapshotReport((), None, None,
                              window is not None and window.fired_at() is None)
    env = dict(os.environ)
    env["VMSNAPSHOT_FROZEN_MOUNTS"] = ":".join(window.paths() if window
                                               else ())
    try:
        handle = spawn.start_process(argv, env=env, cwd=_cwd(),
                                     grace=STOP_GRACE_S)
    except OSError as e:
        log.error("snapshot command %s could not be started: %s",
                  argv[0], e.strerror or e)
        return SnapshotReport(tuple(argv), None, 0.0, False)
    if window:
        window.watch_child(handle.pid)
    kill_at = window.deadline() + GRACE_S if window else None
    killed = False
    while True:
        result = handle.wait(_STEP_S)
        if result is not None:
            break
        if trap.received:
            result = handle.stop(STOP_GRACE_S)
            break
        if kill_at is not None and time.monotonic() > kill_at:
            log.error("snapshot command outlived the watchdog by %gs: "
                      "killing it", GRACE_S)
            killed = True
            result = handle.stop(STOP_GRACE_S)
            break
    if window:
        window.watch_child(handle.pid, gone=True)
    for line in result.output_tail:
        log.info("snapshot: %s", line)
    fired = window.fired_at() if window else None
    exited_at = handle.exited_at or time.monotonic()
    held = (window is not None and not killed and not trap.received
            and (fired is None or exited_at < fired))
    return SnapshotReport(tuple(argv), result.returncode, result.duration_ms,
                          held, killed, result.output_tail)
