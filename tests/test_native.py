"""The C freeze core through vmsnapshot.freeze.native, on real loop filesystems."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, List

import pytest

from tests.helpers.loopfs import LoopFS, is_frozen, run
from tests.helpers.wait import wait_until
from vmsnapshot.freeze import native
from vmsnapshot.freeze import syncfs as freeze_syncfs
from vmsnapshot.errors import Catalogue, FreezeError

PAYLOAD = b"vmsnapshot-" * 100000   # ~1 MiB with a recognisable pattern

# A child that writes PAYLOAD, fsyncs and says when it finished.
WRITER = r"""
import os, sys, time
data = b"vmsnapshot-" * 100000
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data)
os.fsync(fd)
os.close(fd)
print(time.monotonic(), flush=True)
"""


@pytest.fixture
def opened() -> Iterator[Callable[[LoopFS], int]]:
    """Open mount fds; all closed at the end."""
    fds: List[int] = []

    def open_(lfs: LoopFS) -> int:
        fds.append(os.open(lfs.mountpoint,
                           os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        return fds[-1]

    yield open_
    for fd in fds:
        os.close(fd)


def start_writer(path: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, path],
                            stdout=subprocess.PIPE, text=True)


def writer_finished_at(w: subprocess.Popen, timeout: float = 20) -> float:
    out, _ = w.communicate(timeout=timeout)
    assert w.returncode == 0
    return float(out)


def dirty(lfs: LoopFS, mb: int = 8) -> None:
    """Leave unsynced data in the page cache, so that FIFREEZE must write."""
    with open(os.path.join(lfs.mountpoint, "dirty"), "wb") as f:
        f.write(os.urandom(1024 * 1024) * mb)


def wait_idle(fr: native.FreezeRun, timeout: float = 20) -> None:
    wait_until(fr.idle, timeout, "every worker returned")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_freeze_and_thaw(anyfs, opened):
    fd = opened(anyfs)
    with native.FreezeRun([fd], [0], [anyfs.mountpoint], 30) as fr:
        fr.freeze()
        (o,) = fr.outcomes()
        assert (o.state, o.freeze_errno, o.error) == ("frozen", 0, None)
        assert o.freeze_ms > 0
        assert is_frozen(anyfs.mountpoint)
        fr.thaw()
        (o,) = fr.outcomes()
        assert (o.state, o.thaw_errno, o.thawed_by_watchdog) == (
            "thawed", 0, False)
        assert not fr.watchdog_fired() and fr.fired_after_s() is None
    assert not is_frozen(anyfs.mountpoint)


def test_blocked_writer_completes_after_thaw(anyfs, opened):
    path = os.path.join(anyfs.mountpoint, "data")
    fd = opened(anyfs)
    with native.FreezeRun([fd], [0], [anyfs.mountpoint], 30) as fr:
        fr.freeze()
        w = start_writer(path)
        time.sleep(0.7)
        assert w.poll() is None, "writer was not blocked by the freeze"
        thawed_at = time.monotonic()
        fr.thaw()
    assert writer_finished_at(w) >= thawed_at
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD


def test_foreign_freeze_is_reported_and_left_alone(loopfs_factory, opened):
    a = loopfs_factory("ext4")
    run("fsfreeze", "-f", a.mountpoint)
    try:
        with native.FreezeRun([opened(a)], [0], [a.mountpoint], 30) as fr:
            fr.freeze()
            (o,) = fr.outcomes()
            assert (o.state, o.freeze_errno) == ("failed", errno.EBUSY)
            assert o.frozen_by_another
            assert isinstance(o.error, OSError)
            fr.thaw()
        (o,) = fr.outcomes()
        assert (o.state, o.thaw_errno) == ("failed", 0)
        assert is_frozen(a.mountpoint), "a foreign freeze was thawed"
    finally:
        run("fsfreeze", "-u", a.mountpoint, check=False)


def test_bad_fds_fail_only_their_mount(loopfs_factory, opened, monkeypatch):
    a, b = loopfs_factory("ext4"), loopfs_factory("ext4")
    # Past the guard (it would refuse them first): a stale fd number and
    # a regular file; the only real mount is b, which the guard allows.
    monkeypatch.setattr(native, "check_guard", lambda fds, paths: None)
    with open(os.path.join(a.mountpoint, "file"), "w") as f:
        fr = native.FreezeRun([999999, f.fileno(), opened(b)], [0, 0, 0],
                               [a.mountpoint] * 2 + [str(b)], 30)
        with fr:
            fr.freeze()
            assert [(o.state, o.freeze_errno) for o in fr.outcomes()] == [
                ("failed", errno.EBADF), ("failed", errno.ENOTDIR),
                ("frozen", 0)]
    assert not is_frozen(a.mountpoint) and not is_frozen(b.mountpoint)


def test_one_wave_freezes_in_parallel(loopfs_factory, opened):
    """A mount stuck in FIFREEZE (its loop image lives on a filesystem the
    test froze) must not hold back the other mount of its wave - unless
    max_threads=1 serialises them."""
    host = loopfs_factory("ext4", name="host")
    stuck = loopfs_factory("ext4", name="stuck", image_dir=host.mountpoint)
    other = loopfs_factory("ext4", name="other")
    fds = [opened(stuck), opened(other)]
    paths = [stuck.mountpoint, other.mountpoint]
    for threads, other_frozen_meanwhile in ((0, True), (1, False)):
        dirty(stuck)
        run("fsfreeze", "-f", host.mountpoint)
        fr = native.FreezeRun(fds, [0, 0], paths, 60, max_threads=threads)
        t = threading.Thread(target=fr.freeze)
        try:
            t.start()
            time.sleep(1.0)
            assert t.is_alive(), "FIFREEZE of the stuck mount did not block"
            assert is_frozen(other.mountpoint) == other_frozen_meanwhile
        finally:
            run("fsfreeze", "-u", host.mountpoint)
            t.join(30)
            fr.close()
        assert [o.state for o in fr.outcomes()] == ["thawed", "thawed"]
        assert not is_frozen(stuck.mountpoint)
        assert not is_frozen(other.mountpoint)


def test_watchdog_thaws_while_main_thread_is_blocked(anyfs, opened):
    """The deadline counts from the start of freeze(); the main thread
    itself blocks writing to the frozen filesystem, and the watchdog (pure
    C) still thaws at the deadline."""
    fd = opened(anyfs)
    fr = native.FreezeRun([fd], [0], [anyfs.mountpoint], 1.0)
    w = None
    try:
        started = time.monotonic()
        fr.freeze()
        w = start_writer(os.path.join(anyfs.mountpoint, "child"))
        with open(os.path.join(anyfs.mountpoint, "main"), "wb") as f:
            f.write(b"x")
            os.fsync(f.fileno())
        assert 0.8 <= time.monotonic() - started <= 3
        assert 0.8 <= writer_finished_at(w) - started <= 3
        assert fr.watchdog_fired()
        assert 0.95 <= fr.fired_after_s() <= 1.5
        (o,) = fr.outcomes()
        assert (o.state, o.thawed_by_watchdog) == ("thawed", True)
    finally:
        fr.close()
        if w is not None and w.poll() is None:
            w.kill()
            w.wait()
    assert not is_frozen(anyfs.mountpoint)


def test_wrong_order_is_rescued_by_the_watchdog(loopfs_factory, opened):
    """A's image lives on B. Freezing B first (forced here) makes A's
    FIFREEZE hang behind it; at the deadline the watchdog thaws B, A's
    freeze completes and its worker thaws A at once."""
    b = loopfs_factory("ext4", name="b")
    a = loopfs_factory("ext4", name="a", image_dir=b.mountpoint)
    dirty(a)
    fr = native.FreezeRun([opened(b), opened(a)], [0, 1],
                           [b.mountpoint, a.mountpoint], 1.5)
    try:
        started = time.monotonic()
        fr.freeze()
        returned = time.monotonic() - started
        assert 1.4 <= returned <= 2.5, "vms_freeze must return at the deadline"
        assert fr.watchdog_fired()
        wait_idle(fr)
        ob, oa = fr.outcomes()
        assert (ob.state, ob.thawed_by_watchdog) == ("thawed", True)
        assert (oa.state, oa.freeze_errno, oa.thawed_by_watchdog) == (
            "thawed", 0, True)
        assert oa.freeze_ms >= 1000
    finally:
        fr.close()
    assert not is_frozen(b.mountpoint)
    assert not is_frozen(a.mountpoint)


def test_right_order_freezes_without_deadlock(loopfs_factory, opened):
    b = loopfs_factory("ext4", name="b", size_mb=512)
    a = loopfs_factory("xfs", name="a", image_dir=b.mountpoint)
    dirty(a)
    with native.FreezeRun([opened(a), opened(b)], [0, 1],
                           [a.mountpoint, b.mountpoint], 10) as fr:
        fr.freeze()
        assert [o.state for o in fr.outcomes()] == ["frozen", "frozen"]
        fr.thaw()
        assert not fr.watchdog_fired()
        assert [o.state for o in fr.outcomes()] == ["thawed", "thawed"]
    assert not is_frozen(b.mountpoint)
    assert not is_frozen(a.mountpoint)


def test_no_fd_leak(loopfs_factory, opened):
    a = loopfs_factory("ext4")
    fd = opened(a)
    before = fd_count()
    for timeout in (30, 0.2):
        with native.FreezeRun([fd], [0], [a.mountpoint], timeout) as fr:
            fr.freeze()
            time.sleep(0.4)
        assert fd_count() == before
    freeze_syncfs.syncfs(fd)
    assert fd_count() == before


def test_syncfs_and_thaw_fd(loopfs_factory, opened):
    a = loopfs_factory("ext4")
    fd = opened(a)
    assert freeze_syncfs.syncfs(fd) == 0
    assert freeze_syncfs.syncfs(987654) == errno.EBADF
    assert native.thaw_fd(fd) == errno.EINVAL   # not frozen
    run("fsfreeze", "-f", a.mountpoint)
    assert native.thaw_fd(fd) == 0
    assert not is_frozen(a.mountpoint)


@pytest.fixture
def no_native(monkeypatch):
    """Make load() fail before any freeze could happen."""
    def fail():
        raise AssertionError("the native module must not be reached")
    monkeypatch.setattr(native, "load", fail)


@pytest.mark.parametrize("path", ["/", "/proc", "{base}/../outside"])
def test_guard_refuses_paths_outside(path, freeze_guard, no_native):
    path = path.format(base=freeze_guard)
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FreezeError) as e:
            native.FreezeRun([fd], [0], [path], 5)
    finally:
        os.close(fd)
    assert e.value.entry is Catalogue.FS_FREEZE_FAILED
    assert "refusing to freeze" in str(e.value)


def test_guard_judges_the_fd_not_only_the_path(loopfs_factory, tmp_path,
                                                no_native):
    a = loopfs_factory("ext4")
    plain = tmp_path / "plain"    # under the prefix, but on the host's disk
    plain.mkdir()
    for opened_path, claimed in ((str(plain), str(plain)),
                                 ("/", a.mountpoint)):
        fd = os.open(opened_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(FreezeError, match="refusing to freeze"):
                native.FreezeRun([fd], [0], [claimed], 5)
        finally:
            os.close(fd)


def test_guard_accepts_any_of_several_prefixes(loopfs_factory, opened,
                                                monkeypatch, freeze_guard):
    a = loopfs_factory("ext4")
    monkeypatch.setenv(native.GUARD_ENV, "/nonexistent:" + freeze_guard)
    native.check_guard([opened(a)], [a.mountpoint])
    monkeypatch.setenv(native.GUARD_ENV, "/nonexistent")
    with pytest.raises(FreezeError):
        native.check_guard([opened(a)], [a.mountpoint])


def test_module_missing_is_named(monkeypatch):
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setitem(sys.modules, "vmsnapshot._freeze", None)
    with pytest.raises(FreezeError) as e:
        native.load()
    assert e.value.entry.error_name == "FreezeModuleMissing"
    assert e.value.entry.code == 124
    assert "vmsnapshot._freeze" in e.value.message


def test_stale_module_is_named(monkeypatch):
    class Stale:
        class lib:
            vms_freeze = None
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setitem(sys.modules, "vmsnapshot._freeze", Stale)
    with pytest.raises(FreezeError, match="missing vms_thaw") as e:
        native.load()
    assert e.value.entry is Catalogue.FREEZE_MODULE_MISSING
