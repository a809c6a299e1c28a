"""SIGTERM/SIGINT/SIGHUP during a run: remember the signal, never die while
frozen. The cycle polls `received` and cuts the run short: thaw, post-scripts,
report, non-zero exit."""
from __future__ import annotations

import signal
from types import FrameType
from typing import Dict, Optional

TRAPPED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalTrap:
    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._old: Dict[int, object] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.received is None:
            self.received = signum

    def is_set(self) -> bool:
        """For the phases' should_stop= polls."""
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def __enter__(self) -> "SignalTrap":
        for sig in TRAPPED:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
