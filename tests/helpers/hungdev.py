"""A hung block device without device-mapper, for tests.

Filesystem `upper` (L) lives on a loop image stored on filesystem `base`
(B). Freezing B by hand makes L's device stall: every write L's loop device
sends to its image blocks. An O_DIRECT writer on L then holds L's
superblock write lock while it waits for that device, so a FIFREEZE of L
blocks in its first stage (waiting for writers) until B is thawed.

Use through the `hung_device` fixture (a plugin, tests/conftest.py), whose
teardown always thaws B first, then reaps the writer, then lets loopfs_factory
unmount and detach everything.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List

import pytest

from tests.helpers.loopfs import LoopFS, run
from tests.helpers.wait import wait_until


def _state(pid: int, task: str = "") -> str:
    path = "/proc/%d/task/%s/stat" % (pid, task) if task \
        else "/proc/%d/stat" % pid
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "X"


def sleeps_in_kernel(pid: int) -> bool:
    """A thread of PID sleeps uninterruptibly (state D): a FIFREEZE stuck
    behind the hung device."""
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return False
    return any(_state(pid, t) == "D" for t in tasks)


@dataclass
class HungDevice:
    base: LoopFS    # B: holds the image of upper; freezing it stalls upper
    upper: LoopFS   # L: the filesystem whose FIFREEZE will hang
    writers: List[subprocess.Popen] = field(default_factory=list)
    hung: bool = False

    def hang(self, settle_s: float = 0.3) -> None:
        """Freeze B, then start an O_DIRECT writer on L and wait until it
        sleeps in the kernel (state D): from now on FIFREEZE(L) blocks."""
        run("fsfreeze", "-f", self.base.mountpoint)
        self.hung = True
        w = subprocess.Popen(
            ["dd", "if=/dev/zero", "of=%s/hung-writer" % self.upper.mountpoint,
             "bs=64k", "count=64", "oflag=direct", "conv=fsync"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.writers.append(w)

        def blocked() -> bool:
            assert w.poll() is None, ("the O_DIRECT writer on %s finished: "
                                      "the device did not hang" % self.upper)
            return _state(w.pid) == "D"
        wait_until(blocked, 10, "the O_DIRECT writer blocked", 0.01)
        time.sleep(settle_s)
        assert blocked(), "the O_DIRECT writer did not stay blocked"

    def recover(self) -> None:
        """The device comes back: thaw B."""
        if self.hung:
            run("fsfreeze", "-u", self.base.mountpoint, check=False)
            self.hung = False

    def teardown(self) -> List[str]:
        """Thaw B first (nothing else can finish before), then reap the
        writers; loopfs_factory then destroys L and B."""
        problems = []
        self.hung = True
        self.recover()
        for w in self.writers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                # B is thawed, so L itself was left frozen: say so, and
                # thaw it so that everything can be cleaned up.
                problems.append("%s was left frozen (writer %d blocked)"
                                % (self.upper, w.pid))
                run("fsfreeze", "-u", self.upper.mountpoint, check=False)
                try:
                    w.wait(15)
                except subprocess.TimeoutExpired:
                    w.kill()
        return problems


def writer_completes(path: str, timeout: float = 20.0) -> bool:
    """Write and fsync a file at path in a child; True if that finished in
    time (the filesystem is not frozen), False otherwise (the child is left
    to finish on its own once it is thawed)."""
    w = subprocess.Popen(
        ["sh", "-c", 'echo probe > "$1" && sync "$1"', "w", path])
    try:
        return w.wait(timeout) == 0
    except subprocess.TimeoutExpired:
        return False


def process_gone(pid: int) -> bool:
    return _state(pid) in ("X", "Z")



@pytest.fixture
def hung_device(loopfs_factory: Callable[..., LoopFS]) -> Iterator[HungDevice]:
    """B and L (L's image on B), not hung yet: call hang(). A plugin
    fixture (tests/conftest.py): request it by name."""
    base = loopfs_factory("ext4", name="hung-base")
    upper = loopfs_factory("ext4", name="hung-upper",
                           image_dir=base.mountpoint)
    hd = HungDevice(base, upper)
    try:
        yield hd
    finally:
        problems = hd.teardown()
        assert not problems, problems
