"""Keep log records in memory while filesystems are frozen.

A log line written to a file (or to a stderr redirected to a file) on a
frozen filesystem would block the supervisor until the thaw, which may be
exactly what the watchdog is waiting on. Records are held and replayed to
the real handlers after the thaw.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, List


class _Holding(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def logs_held_in_memory() -> Iterator[None]:
    root = logging.getLogger()
    real = list(root.handlers)
    holder = _Holding()
    root.handlers = [holder]
    try:
        yield
    finally:
        root.handlers = real
        for record in holder.records:
            for handler in real:
                if record.levelno >= handler.level:
                    handler.handle(record)
