"""`vmsnapshot hook freeze|thaw`: qemu-guest-agent's fsfreeze hook.

qemu-ga runs its hook with ``freeze`` before it freezes every filesystem
itself and with ``thaw`` after it thawed them (libvirt's and Proxmox's
"quiesce"). Here ``freeze`` runs the pre phase and ``thaw`` the post phase,
with the same configuration, trust rules, timeouts and policy as ``run``.

Held pre-scripts must stay held from one call to the other, and a held
script is released by EOF on a pipe whose write end dies with its holder.
So ``freeze`` forks a holder first: the holder takes the run lock, runs the
pre phase, tells ``freeze`` the outcome and keeps the held scripts (and the
lock) until ``thaw`` connects to its socket in the run directory, or until
the freeze timeout passes. Then it runs the post phase, writes the report
to ``hook-status.json`` in the run directory and sends it to ``thaw``.

Exit status of ``freeze``: 0 when the freeze may go ahead; 3 when the
policy stops it (continueBackupOnFailure false and a pre-script failed), so
qemu-ga refuses the freeze and tells the host. ``thaw``: as ``run``.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from typing import Any, Dict, List, Optional

from vmsnapshot import exitstatus
from vmsnapshot.cycle import RunOptions, load_run_config, post_phase, pre_phase
from vmsnapshot.errors import ErrorRecord, VmsnapshotError
from vmsnapshot.held import HeldHook
from vmsnapshot.outcome import Outcomes, judge
from vmsnapshot.report import Report, write_status_file
from vmsnapshot.runlock import RunLock, run_dir
from vmsnapshot.signals import SignalTrap

log = logging.getLogger(__name__)

SOCKET_NAME = "hook.sock"
STATUS_NAME = "hook-status.json"
UNCLAIMED_NAME = "hook-unclaimed.json"


def hook_command(action: str, config_path: Optional[str]) -> int:
    if action == "freeze":
        return _freeze(config_path)
    if action == "thaw":
        return _thaw()
    raise ValueError(action)


# ---------------------------------------------------------------- freeze

def _freeze(config_path: Optional[str]) -> int:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the holder
        os.close(rfd)
        status = exitstatus.INTERNAL
        try:
            _detach()
            status = _hold(config_path, wfd)
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    if not data:
        _, st = os.waitpid(pid, 0)
        log.error("the hook holder ended before its pre phase (status %s)",
                  os.waitstatus_to_exitcode(st))
        return exitstatus.FAILED
    outcome = json.loads(data.decode())
    for error in outcome["errors"]:
        print("error: %s (%d): %s" % (error["name"], error["code"],
                                      error["message"]), file=sys.stderr)
    if not outcome["proceed"]:
        print("vmsnapshot hook: refusing the freeze (errors above)",
              file=sys.stderr)
        return exitstatus.FAILED
    return exitstatus.OK


def _detach() -> None:
    """Outlive the hook process: qemu-ga waits only for that one."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.chdir("/")


def _tell(wfd: int, proceed: bool, errors: List[ErrorRecord]) -> None:
    data = json.dumps({"proceed": proceed,
                       "errors": [e.to_json() for e in errors]}).encode()
    while data:
        data = data[os.write(wfd, data):]
    os.close(wfd)


def _hold(config_path: Optional[str], wfd: int) -> int:
    try:
        lock = RunLock()
        lock.acquire()
    except VmsnapshotError as e:
        _tell(wfd, False, [e.record()])
        return exitstatus.FAILED
    try:        # a new cycle: an older unclaimed report is history now
        os.unlink(os.path.join(run_dir(), UNCLAIMED_NAME))
    except FileNotFoundError:
        pass
    o = Outcomes()
    held: List[HeldHook] = []
    conn = None
    try:
        with SignalTrap() as trap:
            try:
                o.config, errors = load_run_config(
                    RunOptions(config_path=config_path))
                o.config_errors = tuple(errors)
                held = pre_phase(o.config, trap, o)
                listener = _listen() if o.proceeded else None
                _tell(wfd, o.proceeded,
                      list(o.config_errors) + o.pre_errors)
                if listener is not None:
                    # qemu-ga freezes; we hold until its thaw hook comes.
                    o.agent_timeout_s = o.config.freeze.timeout
                    conn = _wait_thaw(listener, o.config.freeze.timeout,
                                      trap)
                    o.hooks_alive = all(h.alive() for h in held)
                    o.agent_thaw_in_time = conn is not None
                    if trap.received:
                        o.interrupt(trap.received, "while holding")
            finally:
                post_phase(o.config, held, o)
    except Exception as e:  # a bug: keep what was gathered, log the rest
        log.error("internal error", exc_info=True)
        o.internal_error = "%s: %s" % (type(e).__name__, e)
    finally:
        lock.release()
    report = judge(o)
    _finish(report, conn)
    return exitstatus.of_report(report.to_json())


def _listen() -> socket.socket:
    path = os.path.join(run_dir(), SOCKET_NAME)
    try:
        os.unlink(path)          # stale: we hold the lock, nobody else does
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)              # run_dir() is 0700 root: root only
    sock.listen(1)
    return sock


def _wait_thaw(listener: socket.socket, timeout: float, trap: SignalTrap
               ) -> Optional[socket.socket]:
    deadline = time.monotonic() + timeout
    try:
        while not trap.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            listener.settimeout(min(left, 0.1))
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(10)
            try:
                if conn.recv(64).strip() == b"thaw":
                    return conn
            except OSError:
                pass
            conn.close()
        return None
    finally:
        listener.close()
        try:
            os.unlink(os.path.join(run_dir(), SOCKET_NAME))
        except OSError:
            pass


def _finish(report: Report, conn: Optional[socket.socket]) -> None:
    names = [STATUS_NAME]
    if conn is None and report.consistency != "failed":
        # Nobody collected this report (the thaw hook came too late or not
        # at all): the next `hook thaw` answers with it, not with success.
        names.append(UNCLAIMED_NAME)
    for name in names:
        try:
            write_status_file(report, os.path.join(run_dir(), name))
        except OSError as e:
            log.error("could not write %s: %s", name, e)
    if conn is not None:
        try:
            conn.sendall(report.dumps().encode())
        except OSError:
            pass
        conn.close()


# ---------------------------------------------------------------- thaw

def _thaw_unclaimed() -> int:
    """No holder is listening: either no freeze hook ran (nothing to say),
    or the holder gave up before this thaw came, and its report, left
    unclaimed, decides the exit status (crash: FsFreezeTimeout)."""
    path = os.path.join(run_dir(), UNCLAIMED_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            report: Dict[str, Any] = json.load(f)
        os.unlink(path)
    except FileNotFoundError:
        print("vmsnapshot hook: no freeze hook is holding anything",
              file=sys.stderr)
        return exitstatus.OK
    print("vmsnapshot hook: the freeze hook's holder gave up before this "
          "thaw (report below, also in %s)"
          % os.path.join(run_dir(), STATUS_NAME), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return exitstatus.of_report(report)


def _thaw() -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(run_dir(), SOCKET_NAME))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            raise
        return _thaw_unclaimed()
    with sock:
        sock.sendall(b"thaw\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    if not chunks:
        print("vmsnapshot hook: the holder ended without a report (see %s)"
              % os.path.join(run_dir(), STATUS_NAME), file=sys.stderr)
        return exitstatus.FAILED
    report: Dict[str, Any] = json.loads(b"".join(chunks).decode())
    print(json.dumps(report, indent=2))
    return exitstatus.of_report(report)
