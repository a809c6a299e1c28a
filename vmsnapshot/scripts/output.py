"""Draining a child's output: a thread reads its pipes into a bounded
buffer (a child printing megabytes neither blocks nor grows our memory)
and can report one given line on stdout (a held hook's READY)."""
from __future__ import annotations

import os
import select
import threading
from typing import Optional, Sequence, Tuple

_READ_SIZE = 65536


class Drain(threading.Thread):
    """Reads the child's output pipes until EOF or stop(); keeps the last
    ``limit`` bytes. Optionally reports a given line on one pipe (READY)."""

    def __init__(self, fds: Sequence[int], limit: int,
                 watch_fd: Optional[int] = None, watch_line: bytes = b""):
        super().__init__(name="vmsnapshot-drain", daemon=True)
        self.fds = list(fds)
        self.limit = limit
        self.buf = bytearray()
        self.dropped = 0
        self.watch_fd = watch_fd
        self.watch_line = watch_line
        self.partial = b""
        self.line_seen = threading.Event()
        self.changed = threading.Condition()
        self.wake_r, self.wake_w = os.pipe()   # CLOEXEC; wakes poll() on stop
        for fd in self.fds + [self.wake_r]:
            os.set_blocking(fd, False)

    def run(self) -> None:
        poller = select.poll()
        for fd in self.fds + [self.wake_r]:
            poller.register(fd, select.POLLIN)
        try:
            while self.fds:
                events = poller.poll()
                if any(fd == self.wake_r for fd, _ in events):
                    break
                for fd, _ in events:
                    self._read(fd, poller)
        finally:
            for fd in self.fds:
                os.close(fd)
            self.fds = []
            with self.changed:
                self.changed.notify_all()

    def _read(self, fd: int, poller: "select.poll") -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            poller.unregister(fd)
            self.fds.remove(fd)
            os.close(fd)
            return
        if fd == self.watch_fd and not self.line_seen.is_set():
            self._watch(data)
        self.buf += data
        over = len(self.buf) - self.limit
        if over > 0:
            del self.buf[:over]
            self.dropped += over

    def _watch(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()[-256:]
        if any(line.strip() == self.watch_line for line in lines):
            with self.changed:
                self.line_seen.set()
                self.changed.notify_all()

    def stop(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.wake_r)
        os.close(self.wake_w)

    def tail(self, lines: int) -> Tuple[str, ...]:
        text = bytes(self.buf).decode("utf-8", "replace").splitlines()
        if self.dropped and len(text) > 1:
            text = text[1:]     # its start was dropped
        return tuple(line.rstrip() for line in text[-lines:])
