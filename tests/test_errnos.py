"""The one errno policy (vmsnapshot.freeze.errnos), row by row, with errnos
produced for real on loop filesystems and a tmpfs, and the C core's one
status snapshot (vms_status)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from typing import Callable, Iterator, List

import pytest

from tests.helpers.loopfs import LoopFS, is_frozen, run
from tests.helpers.wait import wait_until
from vmsnapshot.cycle.freezerows import judge_freeze
from vmsnapshot.errors import Catalogue
from vmsnapshot.freeze import errnos, native
from vmsnapshot.freeze.records import RunStatus
from vmsnapshot.freeze.result import SessionResult, TargetResult

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def opened() -> Iterator[Callable[[str], int]]:
    """Open mount fds; all closed at the end."""
    fds: List[int] = []

    def open_(path: str) -> int:
        fds.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        return fds[-1]

    yield open_
    for fd in fds:
        os.close(fd)


@pytest.fixture
def tmpfs(root_loop: None, tmp_path) -> Iterator[str]:
    """A tmpfs of our own under the guard's prefix: it has no freeze
    support, so FIFREEZE fails with EOPNOTSUPP. Unmounted even on failure."""
    path = str(tmp_path / "tmpfs")
    os.mkdir(path)
    run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path)
    try:
        yield path
    finally:
        if run("umount", path, check=False).returncode != 0:
            run("umount", "-l", path, check=False)


def _judge(outcomes, fstype: str = "ext4", stopped_early: bool = False):
    return judge_freeze(SessionResult(
        tuple(TargetResult(o.path, fstype, 0, o) for o in outcomes),
        None, False, False, 30.0, stopped_early))


def _names(f) -> List[str]:
    return [e.entry.error_name for e in f.errors]


def test_ebusy_frozen_by_another_is_reported_and_left_frozen(
        loopfs_factory, opened):
    a = loopfs_factory("ext4")
    run("fsfreeze", "-f", a.mountpoint)
    try:
        with native.FreezeRun([opened(a.mountpoint)], [0], [a.mountpoint],
                              30) as fr:
            fr.freeze()
            fr.thaw()
        (o,) = fr.outcomes()
        assert (o.state, o.freeze_errno) == ("failed", errno.EBUSY)
        assert is_frozen(a.mountpoint), "a foreign freeze was thawed"
    finally:
        run("fsfreeze", "-u", a.mountpoint, check=False)
    rule = errnos.freeze_rule(o.freeze_errno)
    assert rule.meaning is errnos.Meaning.FROZEN_BY_ANOTHER
    assert o.frozen_by_another
    f = _judge([o])
    assert _names(f) == ["FrozenByAnotherProcess"]
    assert not f.all_frozen and not f.any_frozen
    assert f.mounts[0].error == ("%s was already frozen by another process; "
                                 "left frozen" % a.mountpoint)


def test_eopnotsupp_cannot_freeze_is_skipped_without_error(tmpfs, opened):
    with native.FreezeRun([opened(tmpfs)], [0], [tmpfs], 30) as fr:
        fr.freeze()
        fr.thaw()
    (o,) = fr.outcomes()
    assert (o.state, o.freeze_errno) == ("failed", errno.EOPNOTSUPP)
    assert not o.frozen_by_another
    assert errnos.freeze_rule(o.freeze_errno).meaning is \
        errnos.Meaning.CANNOT_FREEZE
    f = _judge([o], "tmpfs")
    # Skipped and said so, with no error of its own: it does not count
    # against "every mount frozen".
    assert _names(f) == [] and f.all_frozen and not f.any_frozen
    assert f.mounts[0].error == ("%s: this filesystem cannot be frozen; "
                                 "skipped" % tmpfs)


def test_einval_on_thaw_is_a_foreign_thaw_not_a_thaw_failure(
        loopfs_factory, opened):
    a = loopfs_factory("ext4")
    with native.FreezeRun([opened(a.mountpoint)], [0], [a.mountpoint],
                          30) as fr:
        fr.freeze()
        run("fsfreeze", "-u", a.mountpoint)   # behind our back
        fr.thaw()
    (o,) = fr.outcomes()
    assert (o.state, o.thaw_errno) == ("thawed", errno.EINVAL)
    assert errnos.thawed_by_another(o.thaw_errno)
    assert not errnos.thaw_failed(o.thaw_errno)
    assert o.thawed_early
    f = _judge([o])
    assert _names(f) == ["ThawedByAnotherProcess"]
    assert f.thawed_early and f.any_frozen


def test_ebadf_and_enotdir_fail_their_mount(loopfs_factory, opened,
                                           monkeypatch):
    a = loopfs_factory("ext4")
    monkeypatch.setattr(native, "check_guard", lambda fds, paths: None)
    with open(os.path.join(a.mountpoint, "file"), "w") as f:
        with native.FreezeRun([999999, f.fileno()], [0, 0],
                              [a.mountpoint] * 2, 30) as fr:
            fr.freeze()
        outcomes = fr.outcomes()
    assert [o.freeze_errno for o in outcomes] == [errno.EBADF, errno.ENOTDIR]
    judged = _judge(outcomes)
    assert _names(judged) == ["FsFreezeFailed"] * 2
    assert not judged.all_frozen


def test_every_freeze_rule_has_its_wording():
    for err, rule in errnos.FREEZE.items():
        text = errnos.freeze_text("/m", err)
        assert text.startswith("/m"), (err, text)
        assert (rule.entry is None) == (rule.meaning
                                        is errnos.Meaning.CANNOT_FREEZE)
    # Unknown errnos fail the mount.
    assert errnos.freeze_rule(errno.EIO).entry is Catalogue.FS_FREEZE_FAILED


def _consistent(st: RunStatus) -> None:
    busy = any(o.state in ("freezing", "thawing") for o in st.outcomes)
    if st.idle:
        assert not busy, st
        # A fired watchdog is idle only once its thaws are done (a mount
        # reading frozen then means the watchdog still owes its thaw).
        if st.fired:
            assert not any(o.state == "frozen" for o in st.outcomes), st
    else:
        # Not idle: a worker is inside an ioctl, or the fired watchdog is
        # still thawing.
        assert busy or st.fired, st
    assert (st.fired_after_s is None) == (not st.fired), st
    if any(o.thawed_by_watchdog for o in st.outcomes):
        assert st.fired, st


def test_status_is_one_snapshot_while_the_watchdog_fires(loopfs_factory,
                                                         opened):
    """Read vms_status() without pause while three mounts freeze (with
    dirty data, so FIFREEZE takes a while) and the watchdog thaws them:
    every snapshot agrees with itself (idle only when no mount is inside
    an ioctl and a fired watchdog has done its thaws; a watchdog thaw only
    once it fired). Getters read one
    after the other could say idle while a mount still read "freezing"."""
    lfs: List[LoopFS] = [loopfs_factory("ext4") for _ in range(3)]
    for a in lfs:
        with open(os.path.join(a.mountpoint, "dirty"), "wb") as f:
            f.write(os.urandom(1024 * 1024) * 4)
    fds = [opened(a.mountpoint) for a in lfs]
    paths = [a.mountpoint for a in lfs]
    fr = native.FreezeRun(fds, [0, 0, 0], paths, 0.3)
    seen: List[RunStatus] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(fr.status())

    t = threading.Thread(target=watch)
    t.start()
    try:
        fr.freeze()
        wait_until(lambda: (lambda s: s.fired and s.idle)(fr.status()),
                   20, "the watchdog fired and every worker returned",
                   interval=0.01)
    finally:
        done.set()
        t.join()
        fr.close()
    final = fr.status()
    assert final.fired and final.idle
    assert [o.state for o in final.outcomes] == ["thawed"] * 3
    assert all(o.thawed_by_watchdog for o in final.outcomes)
    assert len(seen) > 10
    for st in seen:
        _consistent(st)
    # After the fire every mount the watchdog thawed reads thawed in the
    # same snapshot that says it thawed it, and the run settles.
    assert final.settled
    for a in lfs:
        assert not is_frozen(a.mountpoint)


def test_the_freeze_session_never_imports_the_report():
    """freeze/ hands back its own records; the rows are the cycle's
    (an arrow upward before: freeze/session.py imported cycle/report.py)."""
    code = ("import sys, vmsnapshot.freeze.session; "
            "print(sorted(m for m in sys.modules if m.startswith("
            "('vmsnapshot.cycle.report', 'vmsnapshot.cycle.outcome', "
            "'vmsnapshot.commands'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout
    assert out.strip() == "[]"
