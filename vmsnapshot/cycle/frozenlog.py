"""Keep log records in memory while filesystems are frozen.

A log line written to a file (or to a stderr redirected to a file) on a
frozen filesystem would block the supervisor until the thaw, which may be
exactly what the watchdog is waiting on. Records are held and replayed to
the real handlers after the thaw.

`logging` may not be imported yet when the hold starts (vmsnapshot.logs
loads it at the first message). A verbose run loads it before the hold,
outside the frozen window; otherwise the hold takes effect the moment a
message (a warning) loads it, after the CLI's handlers are set up, so
that message is held too.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

from vmsnapshot import logs


class _Hold:
    """The root logger's handlers swapped for one that keeps records."""

    def __init__(self) -> None:
        self.root: Any = None
        self.real: List[Any] = []
        self.records: List[Any] = []

    def start(self, logging: Any) -> None:
        records = self.records

        class Holding(logging.Handler):   # logging is only known here
            def emit(self, record: Any) -> None:
                records.append(record)

        self.root = logging.getLogger()
        self.real = list(self.root.handlers)
        self.root.handlers = [Holding(logging.NOTSET)]

    def stop(self) -> None:
        if self.root is None:     # logging never loaded: nothing held
            return
        self.root.handlers = self.real
        for record in self.records:
            for handler in self.real:
                if record.levelno >= handler.level:
                    handler.handle(record)


@contextmanager
def logs_held_in_memory() -> Iterator[None]:
    logs.load_if_shown(logs.INFO)
    hold = _Hold()
    token: Optional[Any] = logs.when_loaded(hold.start)
    try:
        yield
    finally:
        logs.cancel(token)        # after this, start() never runs late
        hold.stop()
