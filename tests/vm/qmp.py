"""JSON-lines channels to a QEMU guest: QMP, the guest agents, plain lines.

Plain sockets and json, no extra dependency.  Every read has a deadline so
a hung guest fails a test instead of hanging it.
"""
from __future__ import annotations

import json
import socket
import time
from typing import Any, Dict, List


class ChannelTimeout(AssertionError):
    pass


class QMPError(AssertionError):
    pass


class LineChannel:
    """Newline-delimited text over a connected stream socket."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.buf = b""

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout("no line on %s within %.0f s" % (self.name, timeout))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise ChannelTimeout("%s closed by the other side" % self.name)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def send(self, obj: Dict[str, Any]) -> None:
        self.send_line(json.dumps(obj))

    def read(self, timeout: float) -> Dict[str, Any]:
        while True:
            line = self.read_line(timeout).strip()
            if line:
                return json.loads(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class QMP:
    """QEMU Machine Protocol: greeting, capabilities, commands; events that
    arrive between are kept in .events."""

    def __init__(self, channel: LineChannel, timeout: float = 30) -> None:
        self.chan = channel
        self.events: List[Dict[str, Any]] = []
        self._id = 0
        greeting = channel.read(timeout)
        if "QMP" not in greeting:
            raise QMPError("not a QMP greeting: %r" % greeting)
        self.command("qmp_capabilities")

    def command(self, name: str, timeout: float = 60, **arguments: Any) -> Any:
        self._id += 1
        request: Dict[str, Any] = {"execute": name, "id": self._id}
        if arguments:
            request["arguments"] = arguments
        self.chan.send(request)
        while True:
            reply = self.chan.read(timeout)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != self._id:
                continue
            if "error" in reply:
                raise QMPError("%s: %s" % (name, reply["error"]))
            return reply.get("return")

    def transaction(self, actions: List[Dict[str, Any]], timeout: float = 60) -> Any:
        return self.command("transaction", timeout=timeout, actions=actions)


class GuestAgent:
    """qemu-ga's protocol: no greeting and no ids, so each session starts
    with guest-sync to drop replies left over from an earlier client."""

    def __init__(self, channel: LineChannel) -> None:
        self.chan = channel
        self._sync = int(time.time()) % 1000000

    def sync(self, timeout: float = 60) -> None:
        self._sync += 1
        # 0xFF makes qemu-ga drop any partial request it was parsing.
        self.chan.sock.sendall(b"\xff")
        self.chan.send({"execute": "guest-sync", "arguments": {"id": self._sync}})
        deadline = time.monotonic() + timeout
        while True:
            reply = self.chan.read(max(0.1, deadline - time.monotonic()))
            if reply.get("return") == self._sync:
                return

    def command(self, name: str, timeout: float = 60, **arguments: Any) -> Any:
        request: Dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.chan.send(request)
        reply = self.chan.read(timeout)
        if "error" in reply:
            raise QMPError("%s: %s" % (name, reply["error"]))
        return reply.get("return")

