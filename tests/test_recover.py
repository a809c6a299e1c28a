"""`thaw --recover` (vmsnapshot.freeze.recover) thaws only the superblock the killed run froze (issue
11, defect 9): never a filesystem that reuses its device number, never
through an over-mounted path, and it keeps what it could not thaw."""
from __future__ import annotations

import dataclasses
import errno
import json
import os

import pytest

from tests.helpers.cli import run_vmsnapshot
from tests.helpers.loopfs import MKFS, LoopFS, is_frozen, run
from vmsnapshot.mounts import mountinfo
from vmsnapshot.freeze import state
from vmsnapshot.freeze import recover
from vmsnapshot.freeze.mountfd import open_mount


def info_of(path: str) -> mountinfo.MountInfo:
    return [m for m in mountinfo.read_mountinfo() if m.mount_point == path][-1]


def entry_of(lfs: LoopFS) -> state.FrozenEntry:
    """The state entry a run freezing lfs writes."""
    info = info_of(lfs.mountpoint)
    fd = open_mount(lfs.mountpoint, info.mount_id)
    try:
        return state.entry_for(lfs.mountpoint, fd, info)
    finally:
        os.close(fd)


def recover_json():
    res = run_vmsnapshot("thaw", "--recover", "--json")
    return res.returncode, json.loads(res.stdout)["recovered"]


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_reused_device_number_is_not_thawed(loopfs_factory, fstype):
    """The run froze A on /dev/loopN and died with its guardian; A went
    away and another filesystem now lives on the same device, at the same
    path, frozen by someone else: recover must leave it frozen."""
    a = loopfs_factory(fstype)
    state.write_state([entry_of(a)], 1)
    run("umount", a.mountpoint)
    run(*MKFS[fstype], a.device)
    run("mount", "-t", fstype, a.device, a.mountpoint)
    run("fsfreeze", "-f", a.mountpoint)
    try:
        rc, results = recover_json()
        assert is_frozen(a.mountpoint), "recover thawed a foreign freeze"
        # "none" when the new mount got another mount id (the recorded
        # mount is gone), "skipped" when it got the same one back and the
        # filesystem's identity gave it away: both final, neither thawed.
        assert [r["action"] for r in results] in (["none"], ["skipped"]), \
            results
        assert rc == 0
        assert state.read_state() is None
    finally:
        run("fsfreeze", "-u", a.mountpoint, check=False)


def test_over_mounted_path_never_receives_the_fithaw(loopfs_factory):
    a, b = loopfs_factory("ext4"), loopfs_factory("ext4")
    state.write_state([entry_of(a)], 1)
    run("fsfreeze", "-f", a.mountpoint)        # left by the killed run
    run("mount", "--bind", b.mountpoint, a.mountpoint)
    try:
        run("fsfreeze", "-f", b.mountpoint)    # someone else's freeze
        rc, results = recover_json()
        assert is_frozen(b.mountpoint), "recover thawed through the path"
        assert [r["action"] for r in results] == ["unreachable"], results
        assert "over-mounted" in results[0]["detail"]
        assert rc == 1
        # Still frozen and unreachable: the record stays for a retry.
        assert [e.path for e in state.read_state()] == [a.mountpoint]
    finally:
        run("fsfreeze", "-u", b.mountpoint, check=False)
        run("umount", a.mountpoint, check=False)
    # Once the over-mount is gone, the retry thaws A.
    rc, results = recover_json()
    assert [r["action"] for r in results] == ["thawed"], results
    assert rc == 0 and not is_frozen(a.mountpoint)
    assert state.read_state() is None


def test_not_frozen_clears_the_record(loopfs_factory):
    a = loopfs_factory("btrfs")
    state.write_state([entry_of(a)], 1)
    rc, results = recover_json()
    assert [(r["action"], r["detail"]) for r in results] == \
        [("none", "was not frozen")]
    assert rc == 0
    assert state.read_state() is None


def test_frozen_entry_is_thawed(loopfs_factory):
    a = loopfs_factory("xfs")
    state.write_state([entry_of(a)], 1)
    run("fsfreeze", "-f", a.mountpoint)
    try:
        rc, results = recover_json()
    finally:
        run("fsfreeze", "-u", a.mountpoint, check=False)
    assert [r["action"] for r in results] == ["thawed"]
    assert rc == 0 and state.read_state() is None


def test_a_failed_fithaw_keeps_only_its_entry(loopfs_factory):
    """No honest way to make FITHAW fail with anything but EINVAL on a
    test filesystem: the decision is tested with an injected thaw."""
    a, b = loopfs_factory("ext4"), loopfs_factory("ext4")
    entries = [entry_of(a), entry_of(b)]
    state.write_state(entries, 1)
    result = {a.mountpoint: errno.EIO, b.mountpoint: errno.EINVAL}

    def fake_thaw(fd: int) -> int:
        return result[os.readlink("/proc/self/fd/%d" % fd)]

    results = recover.recover(entries, thaw_fd=fake_thaw)
    assert [r.action for r in results] == ["failed", "none"]
    assert "Input/output error" in results[0].detail
    assert [e.path for e in state.read_state()] == [a.mountpoint]


def test_thaw_decision():
    assert recover.thaw_decision(0) == "thawed"
    assert recover.thaw_decision(errno.EINVAL) == "none"
    for err in (errno.EIO, errno.EPERM, errno.EBUSY):
        assert recover.thaw_decision(err) == "failed"


@pytest.mark.parametrize("field,value", [
    ("uuid", "00" * 16), ("fsid", 12345), ("root_ino", 99999),
    ("mnt_id_unique", 1)])
def test_any_identity_difference_skips_without_fithaw(loopfs_factory,
                                                      field, value):
    """Same mount id, device, type, root and path, yet one identity field
    differs (the mount id came back for another filesystem): no FITHAW."""
    a = loopfs_factory("ext4")
    entry = dataclasses.replace(entry_of(a), **{field: value})

    def no_thaw(fd: int) -> int:
        raise AssertionError("FITHAW sent to another filesystem")

    r = recover.recover_one(entry, mountinfo.read_mountinfo(), no_thaw)
    assert r.action == "skipped" and not r.keep, r


def test_a_path_whose_mount_id_changed_is_refused_before_any_fithaw(
        loopfs_factory):
    """Recovery opens each mount as the freeze path does (mountfd's mount
    id check): once something is mounted over the recorded path, the fd
    lands on another mount and no FITHAW is sent through it."""
    a, b = loopfs_factory("ext4"), loopfs_factory("xfs")
    entry = entry_of(a)
    state.write_state([entry], 1)
    run("mount", "--bind", b.mountpoint, a.mountpoint)

    def no_thaw(fd: int) -> int:
        raise AssertionError("FITHAW sent through an over-mounted path")

    try:
        results = recover.recover([entry], thaw_fd=no_thaw)
    finally:
        run("umount", a.mountpoint, check=False)
    assert [r.action for r in results] == ["unreachable"], results
    assert "no longer the mount that was recorded" in results[0].detail
    assert "expected %d" % entry.mount_id in results[0].detail
    assert [e.path for e in state.read_state()] == [a.mountpoint]
