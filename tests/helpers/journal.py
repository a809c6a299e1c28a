"""A stand-in for journald's socket: binds a datagram socket, drains it in
a thread (the kernel queues only max_dgram_qlen datagrams, often 10) and
decodes the native protocol, memfd-passed entries included."""
from __future__ import annotations

import array
import os
import socket
import struct
import threading
from typing import Dict, List


def decode(data: bytes) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[key.decode()] = value.decode("utf-8", "replace")
    return fields


class JournalSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: List[Dict[str, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        fds = array.array("i")
        while not self._stop:
            try:
                data, anc, _, _ = self._sock.recvmsg(
                    1 << 20, socket.CMSG_SPACE(fds.itemsize))
            except socket.timeout:
                continue
            except OSError:
                return
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fd = array.array("i", raw[:fds.itemsize])[0]
                    with os.fdopen(fd, "rb") as f:
                        f.seek(0)    # the sender's offset is at the end
                        data = f.read()
            self.entries.append(decode(data))

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._sock.close()
