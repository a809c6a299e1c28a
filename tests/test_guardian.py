"""The guardian process: whoever dies, nothing stays frozen (issue 4)."""
from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional

import pytest

from tests.helpers.cli import ROOT
from tests.helpers.loopfs import LoopFS, is_frozen, run
from tests.helpers.wait import wait_until
from vmsnapshot.freeze import native
from vmsnapshot.freeze.guardian import Guardian

# A supervisor in miniature: guardian + FreezeRun, then sleeps frozen.
SUPERVISOR = r"""
import json, os, sys, time
sys.path.insert(0, %r)
from vmsnapshot.freeze import native
from vmsnapshot.freeze.guardian import Guardian
timeout, waves = float(sys.argv[1]), [int(w) for w in sys.argv[2].split(",")]
paths = sys.argv[3:]
fds = [os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in paths]
g = Guardian.start(fds, waves, grace_s=0.5)
r = native.FreezeRun(fds, waves, paths, timeout, notify_fd=g.notify_fd)
print(json.dumps({"guardian": g.pid}), flush=True)
r.freeze()
print(json.dumps({"states": [o.state for o in r.outcomes()]}), flush=True)
time.sleep(600)
""" % ROOT


class Supervisor:
    """SUPERVISOR as a child process; always killed at the end."""

    def __init__(self, paths: List[str], timeout: float = 60,
                 waves: Optional[List[int]] = None,
                 wait_frozen: bool = True) -> None:
        waves = waves or [0] * len(paths)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, str(timeout),
             ",".join(map(str, waves)), *paths],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.guardian: int = self._line()["guardian"]
        self.started = time.monotonic()
        if wait_frozen:
            self.states: List[str] = self._line()["states"]

    def _line(self) -> Dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.kill()
            raise AssertionError("supervisor failed: %s"
                                 % self.proc.stderr.read())
        return json.loads(line)

    def kill(self) -> float:
        killed_at = time.monotonic()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        return killed_at


@pytest.fixture
def supervisors() -> Iterator[List[Supervisor]]:
    made: List[Supervisor] = []
    yield made
    for s in made:
        s.kill()
    for s in made:
        wait_gone(s.guardian)


def gone(pid: int) -> bool:
    """Exited (reaped, or a zombie of a parent that has not reaped it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 5) -> None:
    wait_until(lambda: gone(pid), timeout, "guardian %d gone" % pid,
               interval=0.01)


def start_writer(lfs: LoopFS) -> subprocess.Popen:
    """A writer that blocks while lfs is frozen; prints when it is done."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, time\n"
         "with open(sys.argv[1], 'w') as f:\n"
         "    f.write('payload'); f.flush(); os.fsync(f.fileno())\n"
         "print(time.monotonic())",
         os.path.join(lfs.mountpoint, "written")],
        stdout=subprocess.PIPE, text=True)


def finished_at(w: subprocess.Popen) -> float:
    out, _ = w.communicate(timeout=20)
    return float(out)


def fds_of(pid: int) -> List[str]:
    return sorted(os.readlink("/proc/%d/fd/%s" % (pid, fd))
                  for fd in os.listdir("/proc/%d/fd" % pid))


def test_sigkill_of_supervisor_thaws_within_a_second(loopfs_factory,
                                                     supervisors):
    a = loopfs_factory("ext4")
    sup = Supervisor([a.mountpoint])
    supervisors.append(sup)
    assert sup.states == ["frozen"]
    w = start_writer(a)
    time.sleep(0.3)
    assert w.poll() is None, "the writer was not blocked"
    killed_at = sup.kill()
    assert finished_at(w) - killed_at < 1.0
    assert not is_frozen(a.mountpoint)
    wait_gone(sup.guardian)
    with open(os.path.join(a.mountpoint, "written")) as f:
        assert f.read() == "payload"


def test_guardian_never_thaws_a_foreign_freeze(loopfs_factory, supervisors):
    foreign, ours = loopfs_factory("ext4"), loopfs_factory("xfs")
    run("fsfreeze", "-f", foreign.mountpoint)
    try:
        sup = Supervisor([foreign.mountpoint, ours.mountpoint])
        supervisors.append(sup)
        assert sup.states == ["failed", "frozen"]
        w = start_writer(ours)
        killed_at = sup.kill()
        assert finished_at(w) - killed_at < 1.0
        wait_gone(sup.guardian)
        assert is_frozen(foreign.mountpoint), "a foreign freeze was thawed"
    finally:
        run("fsfreeze", "-u", foreign.mountpoint, check=False)


def test_guardian_thaws_at_the_deadline_if_the_supervisor_is_stuck(
        loopfs_factory, supervisors):
    """SIGSTOP stops the supervisor's watchdog too: only the guardian can
    thaw, at deadline (1 s) + grace (0.5 s) from the freeze."""
    a = loopfs_factory("ext4")
    sup = Supervisor([a.mountpoint], timeout=1.0)
    supervisors.append(sup)
    os.kill(sup.proc.pid, signal.SIGSTOP)
    w = start_writer(a)
    assert 1.2 <= finished_at(w) - sup.started <= 4
    assert not is_frozen(a.mountpoint)
    sup.kill()
    wait_gone(sup.guardian)


def test_sigkill_while_a_freeze_is_stuck(loopfs_factory, supervisors):
    """Wrong order forced: B (holding A's image) frozen first, A's FIFREEZE
    hangs. SIGKILL cannot end the supervisor while a thread is stuck in
    the ioctl, and its watchdog is dead: the guardian, at deadline + grace,
    thaws B, which lets A's freeze finish, then thaws A."""
    b = loopfs_factory("ext4", name="b")
    a = loopfs_factory("ext4", name="a", image_dir=b.mountpoint)
    with open(os.path.join(a.mountpoint, "dirty"), "wb") as f:
        f.write(os.urandom(8 << 20))
    sup = Supervisor([b.mountpoint, a.mountpoint], timeout=1.0,
                     waves=[0, 1], wait_frozen=False)
    supervisors.append(sup)
    time.sleep(0.4)
    w = start_writer(a)
    os.kill(sup.proc.pid, signal.SIGKILL)
    assert 1.2 <= finished_at(w) - sup.started <= 5
    sup.kill()
    wait_gone(sup.guardian)
    assert not is_frozen(b.mountpoint)
    assert not is_frozen(a.mountpoint)


@pytest.fixture
def frozen_run(loopfs_factory) -> Iterator:
    """An in-process run guarded by a guardian, on two filesystems."""
    a, b = loopfs_factory("ext4"), loopfs_factory("btrfs")
    fds = [os.open(x.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
           for x in (a, b)]
    g: Optional[Guardian] = None
    r: Optional[native.FreezeRun] = None
    try:
        g = Guardian.start(fds, [0, 1])
        r = native.FreezeRun(fds, [0, 1], [a.mountpoint, b.mountpoint], 60,
                              notify_fd=g.notify_fd)
        r.freeze()
        yield g, r, (a, b)
    finally:
        if r is not None:
            r.close()
        if g is not None:
            g.stop(r)
            wait_gone(g.pid)
        for fd in fds:
            os.close(fd)


def test_sigkill_of_guardian_makes_the_supervisor_thaw(frozen_run):
    g, r, mounts = frozen_run
    assert [o.state for o in r.outcomes()] == ["frozen", "frozen"]
    os.kill(g.pid, signal.SIGKILL)
    # One status snapshot for every assertion: fired, idle and the mounts'
    # states read together.
    st = wait_until(lambda: (lambda s: s if s.fired and s.idle else None)(
        r.status()), 1.0, "the supervisor thawed", interval=0.01)
    assert st.guardian_lost
    assert [(o.state, o.thawed_by_watchdog, o.thaw_errno)
            for o in st.outcomes] == [("thawed", True, 0)] * 2
    for m in mounts:
        assert not is_frozen(m.mountpoint)
    r.thaw()
    result = g.stop(r)
    assert result.signal == signal.SIGKILL and not result.clean


def test_clean_run_guardian_exits_without_thawing(frozen_run):
    g, r, mounts = frozen_run
    # The guardian is alone: own session and name, only the mount fds
    # and its socket open.
    assert os.getsid(g.pid) == g.pid
    with open("/proc/%d/comm" % g.pid) as f:
        assert f.read().strip() == "vms-guardian"
    held = fds_of(g.pid)
    assert [p for p in held if not p.startswith("socket:")] == sorted(
        m.mountpoint for m in mounts)
    assert len(held) == 3
    # The one test the state file and the guardian's clean end both use.
    assert not r.status().settled
    r.thaw()
    assert r.status().settled
    r.close()
    result = g.stop(r)
    assert result.clean, result.describe()
    # Thawed once, by the run: a second FITHAW would have failed.
    assert [(o.state, o.thaw_errno, o.thawed_by_watchdog)
            for o in r.outcomes()] == [("thawed", 0, False)] * 2
    assert not r.guardian_lost()


def test_no_fd_or_process_leak(loopfs_factory):
    a = loopfs_factory("ext4")
    fd = os.open(a.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            g = Guardian.start([fd], [0])
            with native.FreezeRun([fd], [0], [a.mountpoint], 30,
                                   notify_fd=g.notify_fd) as r:
                r.freeze()
            assert g.stop(r).clean
            assert gone(g.pid)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(fd)


# The guardian's wire format (struct note in csrc/guardian_proto.h), spoken by
# hand so that a supervisor dying inside FIFREEZE -- its outcome record
# never sent -- can be replayed deterministically.
NOTE = struct.Struct("=IIIi")
NOTE_MAGIC, NOTE_START, NOTE_INTENT = 0x564D5346, 1, 2


def test_unconfirmed_freeze_is_thawed_only_if_it_was_not_frozen_before(
        loopfs_factory):
    """Two FIFREEZEs announced, neither outcome recorded (SIGKILL during
    the ioctls). A was already frozen by someone else (the run's probe
    said so: arg 0), so our FIFREEZE could only have failed with EBUSY:
    the guardian must leave A alone. B was not frozen before (arg 1): its
    freeze can only be ours, and is thawed (issue 11, defect 14)."""
    a, b = loopfs_factory("ext4"), loopfs_factory("xfs")
    fds = [os.open(x.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
           for x in (a, b)]
    try:
        g = Guardian.start(fds, [0, 0])
        run("fsfreeze", "-f", a.mountpoint)    # someone else's freeze
        run("fsfreeze", "-f", b.mountpoint)    # stands for our lost FIFREEZE
        os.write(g.notify_fd,
                 NOTE.pack(NOTE_MAGIC, NOTE_START, 0, 60000)
                 + NOTE.pack(NOTE_MAGIC, NOTE_INTENT, 0, 0)
                 + NOTE.pack(NOTE_MAGIC, NOTE_INTENT, 1, 1))
        os.close(g.notify_fd)                  # the supervisor is gone
        _, status = os.waitpid(g.pid, 0)
        assert os.WEXITSTATUS(status) == native.load().lib.VMS_GUARDIAN_EOF
        assert is_frozen(a.mountpoint), "the guardian thawed a foreign freeze"
        assert not is_frozen(b.mountpoint)
    finally:
        run("fsfreeze", "-u", a.mountpoint, check=False)
        run("fsfreeze", "-u", b.mountpoint, check=False)
        for fd in fds:
            os.close(fd)


def test_the_run_tells_the_guardian_a_mount_was_frozen_before(
        loopfs_factory, supervisors):
    """The real flow: A frozen by someone else, B not. The supervisor is
    SIGKILLed after its FIFREEZEs (EBUSY on A); whatever records got
    through, the guardian thaws B and never A."""
    a, b = loopfs_factory("ext4"), loopfs_factory("ext4")
    run("fsfreeze", "-f", a.mountpoint)
    try:
        sup = Supervisor([a.mountpoint, b.mountpoint], timeout=60)
        supervisors.append(sup)
        assert sup.states == ["failed", "frozen"]
        sup.kill()
        wait_gone(sup.guardian)
        assert is_frozen(a.mountpoint)
        assert not is_frozen(b.mountpoint)
    finally:
        run("fsfreeze", "-u", a.mountpoint, check=False)


def test_hundreds_of_mounts_through_the_record_flow(loopfs_factory,
                                                    supervisors):
    """300 mount fds (100 on each of 3 filesystems: one FIFREEZE per
    filesystem succeeds, 297 fail with EBUSY) send some 900 records
    through the guardian's socket; after SIGKILL it thaws exactly the 3
    confirmed freezes and never trips over the volume."""
    fss = [loopfs_factory("ext4", name="r%d" % i, size_mb=8)
           for i in range(3)]
    sup = Supervisor([f.mountpoint for f in fss] * 100, timeout=60)
    supervisors.append(sup)
    assert sup.states.count("frozen") == 3
    assert sup.states.count("failed") == 297
    assert all(is_frozen(f.mountpoint) for f in fss)
    sup.kill()
    wait_gone(sup.guardian)
    assert not any(is_frozen(f.mountpoint) for f in fss)
