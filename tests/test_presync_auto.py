"""Presync "auto" per filesystem, and the pass on libc's syncfs (issue 15):
a clean filesystem is not synced because another one is dirty, a failing
mount is reported on its own, and a hung device meets the deadline."""
from __future__ import annotations

import glob
import os
import threading
import time

import pytest

from tests.helpers.cli import run_json
from tests.helpers.hungdev import HungDevice
from tests.helpers.wait import wait_until
from vmsnapshot.freeze import dirty as kdirty
from vmsnapshot.freeze import presync

MIB = 1 << 20


def dirty(path, mib):
    with open(path, "wb") as f:
        f.write(b"x" * (mib * MIB))


def dev_of(path):
    st = os.stat(path)
    return (os.major(st.st_dev), os.minor(st.st_dev))


def by_mount(sync_pass):
    return {m["mount_point"]: m for m in sync_pass.get("mounts", [])}


@pytest.mark.parametrize("fstype", ["ext4", "btrfs"])
def test_auto_syncs_only_the_dirty_filesystem(loopfs_factory, no_config,
                                              fstype):
    """Before: auto read /proc/meminfo only, so the clean filesystem was
    synced too (and its writers stalled) whenever any device was dirty.
    Other activity on the machine may leave data no counter places; then
    every mount is synced, and the report says why: try a few times."""
    a = loopfs_factory(fstype, name="dirty")
    b = loopfs_factory(fstype, name="clean")
    per_mount = []
    for i in range(4):
        # A new file each try: truncating the last one would make ext4
        # (auto_da_alloc) and btrfs start its writeback at once, leaving
        # nothing for the counters to see.
        for old in glob.glob(a.mountpoint + "/data*"):
            os.unlink(old)
        dirty(a.mountpoint + "/data%d" % i, 24)
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--mount", str(b), "--json", "--", "true")
        assert report["consistency"] == "filesystem", report["errors"]
        sync = report["freeze"]["presync"]
        assert sync["mode"] == "auto"
        last = sync["passes"][-1]
        assert last["stage"] == "before-freeze" and last["ran"] is True
        mounts = by_mount(last)
        assert set(mounts) == {a.mountpoint, b.mountpoint}, last
        assert mounts[a.mountpoint]["dirty_bytes"] >= 16 * MIB
        assert mounts[a.mountpoint]["synced"] is True
        assert mounts[b.mountpoint]["dirty_bytes"] < presync.MOUNT_MIN_BYTES
        if last["unplaced_bytes"] < presync.UNPLACED_MIN_BYTES:
            per_mount.append(last)
            break
        assert "no per-filesystem counter places" in last["reason"]
        time.sleep(1)
    assert per_mount, "never a quiet moment: unplaced dirty data each time"
    last = per_mount[0]
    assert by_mount(last)[b.mountpoint]["synced"] is False
    assert last["reason"] == "auto: 1 of 2 filesystems dirty"
    assert last["flushed_bytes"] >= 16 * MIB


def test_auto_syncs_every_mount_when_dirty_data_is_not_placed(
        loopfs_factory):
    """xfs has no per-filesystem counter: its dirty data is "unplaced" and
    may be anywhere, so every mount is synced (the safe side)."""
    x = loopfs_factory("xfs")
    e = loopfs_factory("ext4")
    dirty(x.mountpoint + "/data", 32)
    items = [(x.mountpoint, None), (e.mountpoint, None)]
    p = presync.sync_pass("before-freeze", "auto", items,
                          [dev_of(x.mountpoint), dev_of(e.mountpoint)], 30)
    assert p.ran and "no per-filesystem counter places" in p.reason, p
    assert p.unplaced_bytes >= presync.UNPLACED_MIN_BYTES
    mounts = {m.mount_point: m for m in p.mounts}
    assert mounts[x.mountpoint].dirty_bytes is None
    assert mounts[x.mountpoint].synced and mounts[e.mountpoint].synced
    assert p.flushed_bytes >= 16 * MIB


def test_other_ext4_filesystems_count_with_their_own_block_size(
        loopfs_factory):
    """ext4 counts delayed allocation in blocks; another filesystem's
    count, multiplied by a guessed 4 KiB where it has 1 KiB blocks, made
    the unplaced data look smaller than it is (so a dirty xfs could be
    skipped)."""
    a = loopfs_factory("ext4")
    bsize = os.statvfs(a.mountpoint).f_bsize
    dirty(a.mountpoint + "/data", 8)
    name = kdirty.device_name(*dev_of(a.mountpoint))
    key = "ext4/" + name
    with open("/sys/fs/ext4/%s/delayed_allocation_blocks" % name) as f:
        blocks = int(f.read())
    assert blocks * bsize >= 4 * MIB
    counted = kdirty.machine_placed({}) - kdirty.machine_placed({key: 0})
    # Other filesystems' counters move in between: a few blocks of slack.
    assert abs(counted - blocks * bsize) < MIB, (counted, blocks, bsize)


def test_the_pass_reports_errors_per_mount(loopfs_factory, tmp_path):
    """One mount that cannot be synced does not hide the others."""
    a = loopfs_factory("ext4")
    dirty(a.mountpoint + "/data", 8)
    missing = str(tmp_path / "gone")
    afile = str(tmp_path / "a-file")
    open(afile, "w").close()
    items = [(missing, None), (a.mountpoint, None), (afile, None)]
    p = presync.sync_pass("before-freeze", "true", items,
                          [(0, 0), dev_of(a.mountpoint), (0, 0)], 30)
    assert p.ran and not p.timed_out
    assert sorted(p.failed) == sorted([
        "%s: %s" % (missing, os.strerror(2)),
        "%s: %s" % (afile, os.strerror(20))])
    assert p.flushed_bytes >= 4 * MIB   # meminfo's drop: no device for (0, 0)


def test_the_pass_meets_its_deadline_on_a_hung_device(loopfs_factory):
    """syncfs on a device that cannot write blocks in the kernel; the pass
    returns at its deadline, names the mount, and the thread left behind
    finishes once the device recovers."""
    base = loopfs_factory("ext4", name="hung-base")
    hd = HungDevice(base, loopfs_factory("ext4", name="hung-upper",
                                         image_dir=base.mountpoint))
    try:
        _hang_and_sync(hd)
    finally:
        problems = hd.teardown()
        assert not problems, problems


def _hang_and_sync(hd: HungDevice) -> None:
    """auto: reading the counters of a hung filesystem does not block (no
    I/O), its dirty data is seen, and the syncfs meets the deadline."""
    upper = hd.upper.mountpoint
    dirty(upper + "/data", 12)
    hd.hang()
    start = time.monotonic()
    p = presync.sync_pass("before-pre", "auto", [(upper, None)],
                          [dev_of(upper)], 1.5)
    took = time.monotonic() - start
    assert p.timed_out == (upper,) and p.ran, p
    assert p.mounts[0].synced and p.mounts[0].dirty_bytes >= 8 * MIB, p
    assert 1.0 < took < 10, took
    assert 1000 < p.duration_ms < 10000
    hd.recover()
    # The thread closes its own fd once syncfs returns: the mount can go.
    wait_until(lambda: not any(t.name == "presync"
                               for t in threading.enumerate()),
               30, "presync's blocked thread returned", interval=0.05)
