"""How a child process ended and what it printed: the record the spawner
returns for scripts, held hooks and the snapshot command."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

# Re-exported for the spawner and the script runners; its home is signames.
from vmsnapshot.signames import signal_name

__all__ = ["ProcessResult", "signal_name"]


@dataclass(frozen=True)
class ProcessResult:
    """How a child process ended and what it printed."""

    argv: Tuple[str, ...]
    returncode: int                # negative: killed by that signal
    signal: Optional[str]          # e.g. "SIGKILL" when returncode < 0
    timed_out: bool
    duration_ms: float
    output_tail: Tuple[str, ...]   # last lines of stdout+stderr
    bytes_dropped: int             # output beyond the buffer, discarded
    interrupted: bool = False      # stopped because should_stop() said so

    def describe(self) -> str:
        if self.signal is not None:
            status = "killed by signal %s" % self.signal
        else:
            status = "exit status %d" % self.returncode
        if self.interrupted:
            return "stopped after %.1f s: the run was interrupted (%s)" % (
                self.duration_ms / 1000, status)
        if self.timed_out:
            return "timed out after %.1f s (%s)" % (self.duration_ms / 1000,
                                                    status)
        return status
