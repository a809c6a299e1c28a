"""Real scripts on disk for the trust, spawn, scripts and held tests.

Scripts live in a root-owned 0700 directory below the test's tmp dir. Above
it: pytest's basetemp (root, 0700), /tmp (root, 1777: accepted by the trust
walk as a sticky *ancestor*), / (root, 0755). So the whole chain is trusted
without touching any directory of the machine.

The fixtures `scripts` and `no_leaks` reach every test through the plugin
list in tests/conftest.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Set, Tuple, Union

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers.wait import poll, wait_until
from vmsnapshot.config.model import Plugin

NOBODY = 65534


def make_dir(path: Union[str, Path], mode: int = 0o700, uid: int = 0) -> str:
    """A directory with exactly ``mode`` (no umask) and owner ``uid``."""
    os.makedirs(str(path), exist_ok=True)
    os.chown(str(path), uid, 0)
    os.chmod(str(path), mode)
    return str(path)


class Scripts:
    """Writes scripts (root, 0700 unless told) and names data files."""

    def __init__(self, base: Path):
        self.dir = make_dir(base / "scripts", 0o700)
        self.data = make_dir(base / "data", 0o755)

    def write(self, name: str, body: str, mode: int = 0o700, uid: int = 0,
              shebang: Optional[str] = "#!/bin/sh", where: Optional[str] = None
              ) -> str:
        path = os.path.join(where or self.dir, name)
        with open(path, "w") as f:
            f.write((shebang + "\n" if shebang else "") + body)
        os.chown(path, uid, 0)
        os.chmod(path, mode)
        return path

    def subdir(self, name: str, mode: int = 0o755, uid: int = 0,
               where: Optional[str] = None) -> str:
        return make_dir(os.path.join(where or self.dir, name), mode, uid)

    def file(self, name: str) -> str:
        """A path for data a script writes (counter, pid, argv)."""
        return os.path.join(self.data, name)

    def plugin(self, name: str, pre: Optional[str] = None,
               post: Optional[str] = None, args: Sequence[str] = (),
               **kw) -> Plugin:
        """A Plugin whose pre/post scripts have the given bodies."""
        def argv(phase: str, body: Optional[str]) -> Optional[Tuple[str, ...]]:
            if body is None:
                return None
            return (self.write("%s-%s" % (name, phase), body),) + tuple(args)
        return Plugin(name, argv("pre", pre), argv("post", post), **kw)


# Shell snippets scripts use to report to the test.
def count_into(path: str) -> str:
    """Shell: add one to the counter in ``path``; $n holds the new value."""
    return ('n=$(cat %s 2>/dev/null || echo 0); n=$((n+1)); echo $n > %s\n'
            % (path, path))


def read_int(path: str, default: int = 0) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or default)
    except FileNotFoundError:
        return default


def _whole_lines(path: str) -> str:
    """PATH's text once it ends with a newline (written whole), else ""."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    return text if text.endswith("\n") else ""


def wait_for_file(path: str, timeout: float = 5.0) -> str:
    return wait_until(lambda: _whole_lines(path), timeout,
                      "%s written" % path)


def pid_gone(pid: int) -> bool:
    """Not running: no such process, or a zombie awaiting its reaper."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    return poll(lambda: pid_gone(pid), timeout)


def child_pids(parent: Optional[int] = None) -> List[int]:
    """Direct children of ``parent`` (default: this process), zombies too."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def open_fds() -> Set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture
def scripts(tmp_path: Path) -> Scripts:
    if os.geteuid() != 0:
        skip_or_fail("not root: scripts must be owned by root")
    return Scripts(tmp_path)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves an fd open or a child process behind."""
    fds = open_fds()
    children = set(child_pids())
    yield
    poll(lambda: not open_fds() - fds, 2.0)   # drain threads close theirs last
    leaked = sorted(open_fds() - fds)
    assert not leaked, "leaked fds: %s" % [
        (fd, _fd_target(fd)) for fd in leaked]
    left = set(child_pids()) - children
    assert not left, "child processes left: %s" % sorted(left)


def _fd_target(fd: int) -> str:
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return "?"
