"""Freeze waves from loop backing files and sysfs slaves: real loop-on-loop
filesystems (planning only, nothing is frozen) and fake sysfs trees."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Dict, List, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.require import skip_or_fail
from tests.helpers.mounter import Mounter
from vmsnapshot.mounts import waves as waves_mod
from vmsnapshot.mounts.mountinfo import MountInfo, parse_mountinfo, read_mountinfo
from vmsnapshot.mounts.plan import plan
from vmsnapshot.mounts.waves import (assign_waves, backing_files, dependencies,
                              waves_from_dependencies)


def planned_waves(selected: Sequence[str]) -> Dict[str, int]:
    """mount point -> wave of every frozen mount (nothing is frozen)."""
    return {d.info.mount_point: d.wave
            for d in plan(read_mountinfo(), selected=selected) if d.freeze}


def info_of(path: str) -> MountInfo:
    return [m for m in read_mountinfo() if m.mount_point == path][-1]


@pytest.mark.parametrize("holder", ["ext4", "xfs", "btrfs"])
def test_image_on_another_test_filesystem(loopfs_factory, holder) -> None:
    b = loopfs_factory(holder, name="b")
    a = loopfs_factory("ext4", name="a", image_dir=b.mountpoint)
    assert backing_files(info_of(a.mountpoint)) == [a.image]
    assert planned_waves([a.mountpoint, b.mountpoint]) == {
        a.mountpoint: 0, b.mountpoint: 1}
    # Selection order does not matter; unrelated mounts stay in wave 0.
    c = loopfs_factory("ext4", name="c")
    assert planned_waves([b.mountpoint, c.mountpoint, a.mountpoint]) == {
        a.mountpoint: 0, b.mountpoint: 1, c.mountpoint: 0}


def test_chain_of_three(loopfs_factory) -> None:
    c = loopfs_factory("ext4", name="c", size_mb=256)
    b = loopfs_factory("ext4", name="b", size_mb=128, image_dir=c.mountpoint)
    a = loopfs_factory("ext4", name="a", size_mb=32, image_dir=b.mountpoint)
    abc = [a.mountpoint, b.mountpoint, c.mountpoint]
    assert planned_waves(abc) == {a.mountpoint: 0, b.mountpoint: 1,
                                  c.mountpoint: 2}
    # B not frozen: A's sync still ends up in C's image, so A goes first.
    assert planned_waves([c.mountpoint, a.mountpoint]) == {
        a.mountpoint: 0, c.mountpoint: 1}


def test_image_in_a_btrfs_subvolume(loopfs_factory, mounter: Mounter,
                                    tmp_path) -> None:
    if shutil.which("btrfs") is None:
        skip_or_fail("btrfs (btrfs-progs) not installed")
    bt = loopfs_factory("btrfs", name="bt")
    subvol = os.path.join(bt.mountpoint, "sv")
    subprocess.run(["btrfs", "-q", "subvolume", "create", subvol],
                   check=True)
    a = loopfs_factory("ext4", name="a", image_dir=subvol)
    # The case the fallback exists for: st_dev of a file on btrfs names a
    # per-subvolume anonymous device that no mountinfo line shows.
    st = os.stat(a.image)
    devs = {m.dev for m in read_mountinfo()}
    assert (os.major(st.st_dev), os.minor(st.st_dev)) not in devs
    assert planned_waves([a.mountpoint, bt.mountpoint]) == {
        a.mountpoint: 0, bt.mountpoint: 1}
    # The same superblock frozen through a separate subvolume mount.
    sv = str(tmp_path / "sv")
    os.mkdir(sv)
    mounter("-o", "subvol=sv", bt.device, sv)
    assert planned_waves([a.mountpoint, sv]) == {a.mountpoint: 0, sv: 1}


def test_root_is_planned_last(loopfs_factory) -> None:
    """Planning only: '/' is selected here but never frozen."""
    b = loopfs_factory("ext4", name="b")
    a = loopfs_factory("ext4", name="a", image_dir=b.mountpoint)
    got = planned_waves(["/", a.mountpoint, b.mountpoint])
    assert got[a.mountpoint] < got[b.mountpoint]
    assert got["/"] == max(got.values())
    # B's image is wherever the test's temporary directory lives; if that
    # is "/", B must come before it.
    root, bi = info_of("/"), info_of(b.mountpoint)
    if root.mount_id in dependencies([root, bi], read_mountinfo())[bi.mount_id]:
        assert got["/"] > got[b.mountpoint]


# --- fake sysfs trees: layouts this machine cannot make (no dm, no md) ---

def fake_sysfs(root, layout: Dict[str, str]) -> str:
    """layout: relative path -> file content, or "->target" for a symlink,
    or "/" for a directory."""
    base = str(root / "sys")
    for rel, content in layout.items():
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if content == "/":
            os.makedirs(path, exist_ok=True)
        elif content.startswith("->"):
            os.symlink(content[2:], path)
        else:
            with open(path, "w") as f:
                f.write(content)
    return base


MACHINE = """\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 8:2 / /b rw - ext4 /dev/sdb rw
3 1 8:3 / /c rw - xfs /dev/sdc rw
4 1 253:0 / /a rw - ext4 /dev/mapper/vg-a rw
5 1 0:44 / /net rw - nfs4 srv:/export rw
"""


def waves_of(mounts: List[MountInfo], sysfs: str,
             frozen: Sequence[str] = ("/a", "/b", "/c")) -> Dict[str, int]:
    chosen = [m for m in mounts if m.mount_point in frozen]
    got = assign_waves(chosen, mounts, sysfs)
    return {m.mount_point: got[m.mount_id] for m in chosen}


DM_OVER_LOOP = {
    "dev/block/253:0": "->../../block/dm-0",
    "block/dm-0/slaves/loop0": "/",
    "block/loop0/loop/backing_file": "/b/images/a.img\n",
}
MD_OVER_LOOP_PARTITION_AND_LOOP = {
    "dev/block/253:0": "->../../block/md0",
    "block/md0/slaves/loop0p1": "/",
    "block/md0/slaves/loop1": "/",
    "class/block/loop0p1": "->../../devices/virtual/block/loop0/loop0p1",
    "devices/virtual/block/loop0/loop0p1/partition": "1\n",
    "devices/virtual/block/loop0/loop/backing_file": "/b/x.img (deleted)\n",
    "block/loop1/loop/backing_file": "/c/y.img\n",
}


@pytest.mark.parametrize("layout, files, expected", [
    (DM_OVER_LOOP, ["/b/images/a.img"], {"/a": 0, "/b": 1, "/c": 0}),
    (MD_OVER_LOOP_PARTITION_AND_LOOP, ["/b/x.img", "/c/y.img"],
     {"/a": 0, "/b": 1, "/c": 1}),
])
def test_fake_device_stacks(tmp_path, layout, files, expected) -> None:
    sysfs = fake_sysfs(tmp_path, layout)
    mounts = parse_mountinfo(MACHINE)
    assert sorted(backing_files(mounts[3], sysfs)) == files
    assert waves_of(mounts, sysfs) == expected


def test_fake_btrfs_spanning_two_loops(tmp_path) -> None:
    sysfs = fake_sysfs(tmp_path, {
        "fs/btrfs/1234-abcd/devices/loop1": "/",
        "fs/btrfs/1234-abcd/devices/loop2": "/",
        "fs/btrfs/other/devices/loop3": "/",
        "block/loop1/loop/backing_file": "/b/one.img\n",
        "block/loop2/loop/backing_file": "/c/two.img\n",
        "block/loop3/loop/backing_file": "/c/unrelated.img\n",
    })
    mounts = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                             "2 1 8:2 / /b rw - ext4 /dev/sdb rw\n"
                             "3 1 8:3 / /c rw - xfs /dev/sdc rw\n"
                             "4 1 0:50 / /a rw - btrfs /dev/loop1 rw\n"
                             "5 1 0:51 / /d rw - ext4 /dev/loop3 rw\n")
    assert waves_of(mounts, sysfs) == {"/a": 0, "/b": 1, "/c": 1}


def test_cycle_is_broken_with_a_warning(tmp_path, caplog) -> None:
    sysfs = fake_sysfs(tmp_path, {
        "block/loop0/loop/backing_file": "/b/a.img\n",
        "block/loop1/loop/backing_file": "/a/b.img\n",
    })
    mounts = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                             "2 1 7:0 / /a rw - ext4 /dev/loop0 rw\n"
                             "3 1 7:1 / /b rw - ext4 /dev/loop1 rw\n")
    with caplog.at_level(logging.WARNING, logger="vmsnapshot.mounts.waves"):
        got = waves_of(mounts, sysfs, ("/b", "/a"))
    assert got == {"/a": 0, "/b": 1}
    [record] = caplog.records
    assert record.getMessage() == (
        "freeze order: dependency cycle among /a, /b; freezing /a without "
        "waiting for /b")


def test_image_inside_itself_is_ignored(tmp_path, caplog) -> None:
    sysfs = fake_sysfs(tmp_path, {
        "block/loop0/loop/backing_file": "/a/self.img\n"})
    mounts = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                             "2 1 7:0 / /a rw - ext4 /dev/loop0 rw\n")
    with caplog.at_level(logging.WARNING, logger="vmsnapshot.mounts.waves"):
        assert waves_of(mounts, sysfs, ("/", "/a")) == {"/": 1, "/a": 0}
    assert "lives on an image inside itself" in caplog.text


def test_network_holder_is_never_stat(tmp_path, monkeypatch) -> None:
    """A dead NFS server would hang stat() for ever."""
    sysfs = fake_sysfs(tmp_path, {
        "dev/block/253:0": "->../../block/loop0",
        "block/loop0/loop/backing_file": "/net/a.img\n"})
    real_stat = os.stat

    def guarded_stat(path, *args, **kw):
        assert not str(path).startswith("/net"), "stat on NFS"
        return real_stat(path, *args, **kw)

    monkeypatch.setattr(waves_mod.os, "stat", guarded_stat)
    mounts = parse_mountinfo(MACHINE)
    assert dependencies([mounts[3]], mounts, sysfs) == {4: set()}


def test_root_on_a_loop_image_goes_before_its_holder(tmp_path) -> None:
    """Live systems boot from an image: correctness beats "root last"."""
    sysfs = fake_sysfs(tmp_path, {
        "block/loop0/loop/backing_file": "/run/iso/root.img\n"})
    mounts = parse_mountinfo("1 0 7:0 / / rw - ext4 /dev/loop0 rw\n"
                             "2 1 8:1 / /run/iso rw - ext4 /dev/sda1 rw\n"
                             "3 1 8:2 / /data rw - ext4 /dev/sda2 rw\n")
    assert waves_of(mounts, sysfs, ("/", "/run/iso", "/data")) == {
        "/": 1, "/run/iso": 2, "/data": 0}


def test_no_sysfs_entries_means_one_wave_then_root(tmp_path) -> None:
    mounts = parse_mountinfo(MACHINE)
    assert waves_of(mounts, str(tmp_path), ("/", "/b", "/c")) == {
        "/": 1, "/b": 0, "/c": 0}
    assert waves_of(mounts, str(tmp_path), ("/",)) == {"/": 0}
    assert assign_waves([], mounts, str(tmp_path)) == {}


# --- the layering itself, on arbitrary graphs ---

def fake_mounts(n: int, root: int) -> List[MountInfo]:
    return [MountInfo(i, 0, 8, i, "/", "/" if i == root else "/m%02d" % i,
                      ("rw",), (), "ext4", "/dev/x", ("rw",))
            for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(-1, n - 1),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))))))
def test_waves_are_tight_and_respect_every_edge(case) -> None:
    n, root, edges = case
    deps: Dict[int, set] = {i: set() for i in range(n)}
    for i, j in edges:
        if i < j:                      # acyclic
            deps[i].add(j)
    got = waves_from_dependencies(fake_mounts(n, root), deps)
    assert set(got) == set(range(n))
    before = {j: {i for i in range(n) if j in deps[i]} for j in range(n)}
    for i in range(n):
        for j in deps[i]:
            assert got[i] < got[j]
    for j in range(n):                 # everything else as early as possible
        if j != root:
            assert got[j] == max([got[p] + 1 for p in before[j]], default=0)
    if root >= 0 and not deps[root]:
        assert got[root] == max(got.values())


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1),
                                   st.integers(0, n - 1))))))
def test_cycles_never_raise(case) -> None:
    n, edges = case
    deps: Dict[int, set] = {i: set() for i in range(n)}
    for i, j in edges:
        deps[i].add(j)
    got = waves_from_dependencies(fake_mounts(n, -1), deps)
    assert set(got) == set(range(n)) and min(got.values()) == 0
