"""Structured log entries: the systemd journal's native protocol, else
syslog on /dev/log, else stderr.

The native protocol (systemd's "Native Journal Protocol" page) is a
datagram of KEY=value lines on /run/systemd/journal/socket; a value with a
newline is sent as KEY, newline, 64-bit little-endian length, bytes; a
datagram too large for the socket goes as a sealed memfd passed with
SCM_RIGHTS. Written here instead of depending on python3-systemd: the
runtime dependencies stay cffi/packaging/tomli, and a socket path that
tests can point at a journald namespace comes for free.

socket (and array, fcntl) are imported only once a socket exists: a
machine without journald or syslog (containers, minimal images) does not
pay for them (issue 15); send() runs only after the thaw.
"""
from __future__ import annotations

import errno
import os
import struct
import sys
from typing import TYPE_CHECKING, Dict, Mapping

from vmsnapshot import logs

if TYPE_CHECKING:
    import socket

log = logs.get(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"
IDENTIFIER = "vmsnapshot"
SEND_TIMEOUT = 2.0        # a stuck journald must not hang the run's end

# syslog(3) priorities and the daemon facility.
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6
_FACILITY_DAEMON = 3


def journal_socket() -> str:
    return os.environ.get("VMSNAPSHOT_JOURNAL_SOCKET", JOURNAL_SOCKET)


def syslog_socket() -> str:
    return os.environ.get("VMSNAPSHOT_SYSLOG_SOCKET", SYSLOG_SOCKET)


def encode(fields: Mapping[str, object]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode("utf-8", "surrogateescape")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data))
            out += data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def _socket_at(path: str) -> "socket.socket":
    """A datagram socket to send to PATH; FileNotFoundError (an OSError)
    before importing anything when PATH does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such socket", path)
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(SEND_TIMEOUT)
    return sock


def _send_journal(path: str, payload: bytes) -> None:
    with _socket_at(path) as sock:
        try:
            sock.sendto(payload, path)
            return
        except OSError as e:
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
        # Too large for one datagram: hand journald a sealed memfd.
        import array
        import fcntl
        import socket
        fd = os.memfd_create("vmsnapshot-journal",
                             os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,  # type: ignore[attr-defined]
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW  # type: ignore[attr-defined]
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)  # type: ignore[attr-defined]
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", [fd]))], 0, path)
        finally:
            os.close(fd)


def _send_syslog(path: str, priority: int, message: str) -> None:
    line = "<%d>%s[%d]: %s" % (_FACILITY_DAEMON * 8 + priority, IDENTIFIER,
                               os.getpid(), message)
    with _socket_at(path) as sock:
        sock.sendto(line.encode("utf-8", "replace")[:8192], path)


def send(message: str, priority: int, **fields: object) -> str:
    """Log one entry; returns where it went: "journal", "syslog" or
    "stderr". Never raises for I/O."""
    entry: Dict[str, object] = {"MESSAGE": message, "PRIORITY": priority,
                                "SYSLOG_IDENTIFIER": IDENTIFIER}
    entry.update(fields)
    try:
        _send_journal(journal_socket(), encode(entry))
        return "journal"
    except OSError as e:
        log.debug("no journal at %s (%s)", journal_socket(), e)
    # syslog has one line of text: keep the fields that find the run.
    extra = " ".join("%s=%s" % (k, v) for k, v in fields.items()
                     if k.startswith("VMSNAPSHOT_") and k != "VMSNAPSHOT_REPORT"
                     and "\n" not in str(v))
    text = message.replace("\n", " | ") + (" [%s]" % extra if extra else "")
    try:
        _send_syslog(syslog_socket(), priority, text)
        return "syslog"
    except OSError as e:
        log.debug("no syslog at %s (%s)", syslog_socket(), e)
    try:
        print("vmsnapshot: %s" % message, file=sys.stderr, flush=True)
    except OSError:
        pass
    return "stderr"
