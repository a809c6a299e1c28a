"""The holder: the process that keeps a split cycle alive between `pre` and
`post` (and qemu-ga's `hook freeze` / `hook thaw`).

Held pre-scripts are released by EOF on a pipe that dies with its holder,
and frozen mounts are thawed by the guardian when their holder dies, so
whoever holds them must outlive the `pre` command. The holder takes the run
lock, runs the pre phase, freezes (unless the agent freezes itself), tells
`pre` whether the snapshot may go ahead, then waits for `post` on a socket
in the run directory until the freeze deadline. Then it thaws, releases,
runs the post phase and sends the report to `post` (or, if `post` never
came, leaves it unclaimed for the next one). `post`'s side of this is
vmsnapshot.cycle.collect.

Backup agents run under systemd, and a restart of the agent's unit kills
everything in its cgroup; the holder (with its guardian) must not be in
it. Where systemd runs, the holder is a transient unit of its own; where it
does not, it moves itself into a cgroup of its own in the unified hierarchy.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any, List, Optional, Sequence, Tuple

from vmsnapshot import exitstatus, logs
from vmsnapshot.freeze import state
from vmsnapshot.cycle.phases import (FreezeStep, RunOptions, load_run_config,
                                     plan_mounts, post_phase, pre_phase)
from vmsnapshot.errors import Catalogue, ErrorRecord, VmsnapshotError
from vmsnapshot.scripts.held import HeldHook
from vmsnapshot.cycle.frozenlog import logs_held_in_memory
from vmsnapshot.cycle.outcome import Outcomes, judge
from vmsnapshot.cycle.report import Report, SnapshotReport, write_status_file
from vmsnapshot.cycle.lock import RunLock
from vmsnapshot.rundir import run_dir
from vmsnapshot.cycle.signals import SignalTrap

log = logs.get(__name__)

SOCKET_NAME = "holder.sock"
STATUS_NAME = "split-status.json"        # the last split cycle's report
UNCLAIMED_NAME = "split-unclaimed.json"  # ... when no post collected it
MARKER_NAME = "holder.json"              # a holder is alive: its pid


@dataclass(frozen=True)
class HolderArgs:
    config_path: Optional[str] = None
    mounts: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()
    freeze_timeout: Optional[float] = None
    no_freeze: bool = False
    trigger: str = "pre/post"

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> "HolderArgs":
        d = json.loads(text)
        return cls(d["config_path"], tuple(d["mounts"]), tuple(d["exclude"]),
                   d["freeze_timeout"], d["no_freeze"], d["trigger"])


def path(name: str) -> str:
    return os.path.join(run_dir(), name)


def hold(args: HolderArgs, notify_path: str) -> int:
    """The holder's whole life; returns its exit status."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    notify.connect(notify_path)         # first: `pre` knows we started
    lock = RunLock()
    try:
        lock.acquire()
    except VmsnapshotError as e:
        _tell(notify, False, [e.record()])
        return exitstatus.FAILED
    try:
        forget(UNCLAIMED_NAME)         # a new cycle: that one is history
        write_status_file({"pid": os.getpid(), "args": args.dumps()},
                          path(MARKER_NAME))
        o = Outcomes(trigger=args.trigger, split=True,
                     agent_froze=args.no_freeze)
        conn = _cycle(args, notify, o)
        report = judge(o)
        _finish(report, conn)       # before the lock goes: one cycle's end
        from vmsnapshot.results import publish   # after the thaw
        publish(report.to_json())
    finally:
        forget(MARKER_NAME)
        lock.release()
    return exitstatus.OK


def _cycle(args: HolderArgs, notify: socket.socket, o: Outcomes
           ) -> Optional[socket.socket]:
    conn = None
    held: List[HeldHook] = []
    told = False
    try:
        with SignalTrap() as trap:
            try:
                stale = state.read_state()
                if stale is not None:
                    raise VmsnapshotError(
                        "the state file %s lists filesystems a killed run "
                        "froze" % state.state_path(),
                        Catalogue.STALE_FREEZE_STATE)
                opts = RunOptions(args.config_path, args.mounts, args.exclude,
                                  args.freeze_timeout)
                o.config, errors = load_run_config(opts)
                o.config_errors = tuple(errors)
                decisions = ([] if args.no_freeze
                             else plan_mounts(args.mounts, o))
                held = pre_phase(o.config, trap, o)
                step = FreezeStep(decisions, args.mounts, o)
                try:
                    with logs_held_in_memory():
                        conn = _freeze_and_wait(args, step, held, trap, o,
                                                notify)
                        told = True
                        step.thaw()
                finally:
                    step.finish()
            finally:
                post_phase(o.config, held, o)
    except VmsnapshotError as e:
        o.refused = e.record()
    except Exception as e:  # a bug: keep what was gathered, log the rest
        # Everything is thawed by now (the finally blocks ran).
        from vmsnapshot.results import internal_error
        internal_error(e, "the holder")
        o.internal_error = "%s: %s" % (type(e).__name__, e)
    if not told:
        _tell(notify, False, [o.refused] if o.refused else
              list(o.config_errors) + o.pre_errors)
    return conn


def _freeze_and_wait(args: HolderArgs, step: FreezeStep,
                     held: Sequence[HeldHook], trap: SignalTrap, o: Outcomes,
                     notify: socket.socket) -> Optional[socket.socket]:
    if o.proceeded and not args.no_freeze:
        step.start(trap)
    if trap.received:
        o.interrupt(trap.received, "during the freeze")
    go = o.proceeded and not trap.received
    listener = _listen() if go else None
    errors = (list(o.config_errors) + o.pre_errors + list(o.open_errors)
              + ([o.no_session] if o.no_session else []))
    _tell(notify, go, errors)
    if listener is None:
        return None
    started = time.monotonic()
    session = step.session
    deadline = (session.deadline() if session is not None
                else started + o.config.freeze.timeout)
    conn, failed = _wait_post(listener, deadline, trap, session)
    o.post_in_time = conn is not None
    o.agent_failed = failed
    o.hooks_alive = all(h.alive() for h in held)
    fired = session is not None and session.watchdog_fired()
    o.snapshot = SnapshotReport(
        (), None if failed else 0, (time.monotonic() - started) * 1000,
        finished_while_frozen=conn is not None and not fired
        and (session is not None or args.no_freeze))
    if trap.received:
        o.interrupt(trap.received, "while holding")
    return conn


def _tell(notify: socket.socket, proceed: bool,
          errors: Sequence[ErrorRecord]) -> None:
    try:
        notify.sendall(json.dumps({
            "proceed": proceed,
            "errors": [e.to_json() for e in errors]}).encode())
    except OSError:
        pass      # `pre` is gone (killed by its agent): nothing to tell
    finally:
        notify.close()


def _listen() -> socket.socket:
    forget(SOCKET_NAME)         # stale: we hold the lock, nobody else does
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path(SOCKET_NAME))     # run_dir() is 0700 root: root only
    sock.listen(4)
    return sock


def _wait_post(listener: socket.socket, deadline: float, trap: SignalTrap,
               session: Any) -> Tuple[Optional[socket.socket], bool]:
    """(connection of `post`, whether it said --failed); (None, False) at
    the deadline, when the watchdog fired, or on a trapped signal."""
    try:
        while not trap.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or (session is not None
                             and session.watchdog_fired()):
                return None, False
            listener.settimeout(min(left, 0.1))
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(10)
            try:
                word = conn.recv(64).strip()
            except OSError:
                word = b""
            if word in (b"post", b"post-failed"):
                return conn, word == b"post-failed"
            conn.close()
        return None, False
    finally:
        listener.close()
        forget(SOCKET_NAME)


def _finish(report: Report, conn: Optional[socket.socket]) -> None:
    data = {"report": report.to_json(), "summary": report.summary()}
    files = {STATUS_NAME: data["report"]}
    if conn is None and report.consistency != "failed":
        # Nobody collected this report (post came too late or not at all):
        # the next post answers with it, not with success.
        files[UNCLAIMED_NAME] = data
    for name, content in files.items():
        try:
            write_status_file(content, path(name))
        except OSError as e:
            log.error("could not write %s: %s", name, e)
    if conn is not None:
        try:
            conn.sendall(json.dumps(data).encode())
        except OSError:
            pass
        conn.close()


def forget(name: str) -> None:
    try:
        os.unlink(path(name))
    except FileNotFoundError:
        pass
