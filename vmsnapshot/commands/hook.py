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

from vmsnapshot import policy, runmeta
from vmsnapshot.cycle import RunOptions, load_run_config, post_phase
from vmsnapshot.errors import Catalogue, ErrorRecord, VmsnapshotError
from vmsnapshot.held import start_held
from vmsnapshot.report import Report, write_status_file
from vmsnapshot.runlock import RunLock, run_dir
from vmsnapshot.scripts import run_phase

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_CONSISTENT = 1
EXIT_FAILED = 3
SOCKET_NAME = "hook.sock"
STATUS_NAME = "hook-status.json"
_EXIT_BY_LEVEL = {policy.FAILED: EXIT_FAILED,
                  policy.CRASH: EXIT_NOT_CONSISTENT}


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
        status = 70
        try:
            _detach()
            status = _hold(config_path, wfd)
        except Exception as e:    # stdio is /dev/null: only the log keeps it
            from vmsnapshot.results import internal_error
            internal_error(e, "the hook holder")
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    if not data:
        _, st = os.waitpid(pid, 0)
        log.error("the hook holder ended before its pre phase (status %s)",
                  os.waitstatus_to_exitcode(st))
        return EXIT_FAILED
    outcome = json.loads(data.decode())
    for error in outcome["errors"]:
        print("error: %s (%d): %s" % (error["name"], error["code"],
                                      error["message"]), file=sys.stderr)
    if not outcome["proceed"]:
        print("vmsnapshot hook: refusing the freeze (errors above)",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


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
    started = runmeta.utcnow()
    try:
        lock = RunLock()
        lock.acquire()
    except VmsnapshotError as e:
        _tell(wfd, False, [e.record()])
        return EXIT_FAILED
    try:
        config, errors = load_run_config(RunOptions(config_path=config_path))
        held = [start_held(p) for p in config.plugins if p.hold and p.pre]
        held_errors = [e for e in (h.wait_ready() for h in held) if e]
        scripts = run_phase(config.plugins, "pre")
        pre_errors = held_errors + [s.error for s in scripts if s.error]
        pre = policy.PreOutcome(
            scripts_configured=any(p.pre for p in config.plugins),
            scripts_ok=not pre_errors, config_ok=not errors,
            continue_on_failure=config.continue_on_failure,
            freeze_enabled=True)          # qemu-ga freezes, not us
        report = Report(policy.FAILED, False, errors + pre_errors)
        proceed = policy.may_proceed(pre)
        listener = _listen() if proceed else None
        _tell(wfd, proceed, report.errors)
        conn = None
        if listener is not None:
            conn = _wait_thaw(listener, config.freeze.timeout)
            hooks_held = all(h.alive() for h in held)
            report.snapshot_taken = conn is not None
            if conn is None:
                report.errors.append(ErrorRecord(
                    Catalogue.FS_FREEZE_TIMEOUT,
                    "no thaw hook within %gs of the freeze hook: the held "
                    "pre-scripts were released" % config.freeze.timeout))
            report.consistency = policy.level(pre, policy.FreezeOutcome(
                True, conn is not None, hooks_held))
        post_phase(config, held, held_errors, scripts, report)
        report.meta = runmeta.finish("hook", started, config_path)
        _finish(report, conn)
        from vmsnapshot.results import publish    # qemu-ga thawed already
        publish(report.to_json())
        return _EXIT_BY_LEVEL.get(report.consistency, EXIT_OK)
    finally:
        lock.release()


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


def _wait_thaw(listener: socket.socket, timeout: float
               ) -> Optional[socket.socket]:
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            listener.settimeout(left)
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                return None
            conn.settimeout(10)
            try:
                if conn.recv(64).strip() == b"thaw":
                    return conn
            except OSError:
                pass
            conn.close()
    finally:
        listener.close()
        try:
            os.unlink(os.path.join(run_dir(), SOCKET_NAME))
        except OSError:
            pass


def _finish(report: Report, conn: Optional[socket.socket]) -> None:
    try:
        write_status_file(report, os.path.join(run_dir(), STATUS_NAME))
    except OSError as e:
        log.error("could not write %s: %s", STATUS_NAME, e)
    if conn is not None:
        try:
            conn.sendall(report.dumps().encode())
        except OSError:
            pass
        conn.close()


# ---------------------------------------------------------------- thaw

def _thaw() -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(run_dir(), SOCKET_NAME))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            raise
        print("vmsnapshot hook: no freeze hook is holding anything (none "
              "ran, or it gave up at its timeout: see %s)"
              % os.path.join(run_dir(), STATUS_NAME), file=sys.stderr)
        return EXIT_OK
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
        return EXIT_FAILED
    report: Dict[str, Any] = json.loads(b"".join(chunks).decode())
    print(json.dumps(report, indent=2))
    return _EXIT_BY_LEVEL.get(report["consistency"], EXIT_OK)
