"""The status report of one run: records, JSON (the design.md contract) and
the human summary."""
from __future__ import annotations

import json
from dataclasses import field
from typing import Any, Dict, Optional, Sequence, Tuple

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.atomicfile import write_atomic
from vmsnapshot.errors import ErrorRecord
from vmsnapshot.errtext import error_lines
from vmsnapshot.cycle.meta import RunMeta


@frozen_record
class MountReport:
    """One entry of the report's "mounts"."""

    path: str
    fstype: str
    frozen: bool
    freeze_ms: Optional[float] = None
    thaw_ms: Optional[float] = None
    error: Optional[str] = None
    wave: Optional[int] = None
    thawed_by_watchdog: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "fstype": self.fstype,
                "frozen": self.frozen, "freeze_ms": _ms(self.freeze_ms),
                "thaw_ms": _ms(self.thaw_ms), "error": self.error,
                "wave": self.wave,
                "thawed_by_watchdog": self.thawed_by_watchdog}


@frozen_record
class FreezeReport:
    """The report's "freeze"."""

    enabled: bool = True
    window_ms: Optional[float] = None   # first FIFREEZE to last FITHAW
    auto_thawed: bool = False
    timeout_s: float = 0.0
    presync: Optional[Any] = None       # presync.PresyncReport

    def to_json(self) -> Dict[str, Any]:
        out = {"window_ms": _ms(self.window_ms),
               "auto_thawed": self.auto_thawed,
               "timeout_s": self.timeout_s, "enabled": self.enabled}
        if self.presync is not None:
            out["presync"] = self.presync.to_json()
        return out


@frozen_record
class SnapshotReport:
    """The report's "snapshot"."""

    command: Sequence[str] = ()
    returncode: Optional[int] = None
    duration_ms: Optional[float] = None
    finished_while_frozen: bool = False
    killed: bool = False                 # outlived the watchdog + grace
    output: Sequence[str] = ()           # last lines of its output

    def to_json(self) -> Dict[str, Any]:
        return {"command": list(self.command), "returncode": self.returncode,
                "duration_ms": _ms(self.duration_ms),
                "finished_while_frozen": self.finished_while_frozen,
                "killed": self.killed, "output": list(self.output)}


@frozen_record
class Report:
    """Built once, at the end of a run (vmsnapshot.cycle.outcome.judge)."""

    consistency: str
    snapshot_taken: bool
    errors: Tuple[ErrorRecord, ...] = ()
    scripts: Tuple[Any, ...] = ()        # ScriptResult
    mounts: Tuple[MountReport, ...] = ()
    freeze: FreezeReport = field(default_factory=FreezeReport)
    snapshot: SnapshotReport = field(default_factory=SnapshotReport)
    internal_error: Optional[str] = None  # a bug cut the run short
    meta: Optional[RunMeta] = None

    def to_json(self) -> Dict[str, Any]:
        out = {
            **(self.meta.to_json() if self.meta else {}),
            "consistency": self.consistency,
            "snapshot_taken": self.snapshot_taken,
            "errors": [e.to_json() for e in self.errors],
            "scripts": [s.to_json() for s in self.scripts],
            "mounts": [m.to_json() for m in self.mounts],
            "freeze": self.freeze.to_json(),
            "snapshot": self.snapshot.to_json(),
        }
        if self.internal_error is not None:
            out["internal_error"] = self.internal_error
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    def summary(self) -> str:
        """Human summary; paths that are not UTF-8 are shown escaped, so a
        strict UTF-8 stdout can always print it."""
        lines = ["consistency: %s" % self.consistency,
                 "snapshot taken: %s" % ("yes" if self.snapshot_taken
                                         else "no")]
        for m in self.mounts:
            state = "frozen" if m.frozen else "not frozen"
            extra = ""
            if m.freeze_ms is not None:
                extra = " (freeze %.1f ms, thaw %.1f ms)" % (
                    m.freeze_ms, m.thaw_ms or 0.0)
            if m.error:
                extra += " - " + m.error
            lines.append("  %-30s %-6s %s%s" % (m.path, m.fstype, state,
                                                 extra))
        if self.freeze.window_ms is not None:
            lines.append("freeze window: %.1f ms%s" % (
                self.freeze.window_ms,
                " (thawed by the watchdog)" if self.freeze.auto_thawed
                else ""))
        for s in self.scripts:
            d = s.to_json()
            lines.append("  %s %s: %s" % (
                d["plugin"], d["phase"],
                "timed out" if d["timed_out"] else
                "exit %s after %d attempt(s)" % (d["returncode"],
                                                d["attempts"])))
        lines += error_lines(self.errors, prefix="error: ")
        if self.internal_error:
            lines.append("internal error: " + self.internal_error)
        return _console_safe("\n".join(lines))


def _console_safe(text: str) -> str:
    """TEXT with undecodable path bytes (os.fsdecode's surrogate escapes)
    shown as \\xNN, and any other lone surrogate escaped too."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def write_status_file(report: Any, path: str) -> None:
    """Atomically replace PATH with REPORT as JSON (a Report, or its JSON
    form): a temp file beside it, fsync, rename, so a reader never sees half
    a report. Mode 600: it holds script output and argv. Called only after
    the thaw."""
    data = report.to_json() if isinstance(report, Report) else report
    write_atomic(path, json.dumps(data, indent=2) + "\n")
