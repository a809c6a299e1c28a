"""loopfs, the loop filesystems of the tests, the bench and the demo: a
failed set-up leaves nothing behind, and a sweep undoes whatever is left
under a directory (frozen, read-only, stacked) with no record of it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.cli import ROOT
from tests.helpers.loopfs import (destroy_loopfs, is_frozen, make_loopfs,
                                  mount_image, ours_under, run, sweep_under)
from tests.helpers.require import need_mkfs

pytestmark = pytest.mark.root


@pytest.fixture
def base(root_loop, tmp_path):
    """A directory swept at teardown, whatever a test left in it."""
    path = str(tmp_path / "base")
    os.mkdir(path)
    yield path
    problems = sweep_under(path)
    assert not problems, problems


def test_failed_mkfs_leaves_no_device_mount_or_image(base):
    need_mkfs("xfs")
    with pytest.raises(subprocess.CalledProcessError):
        make_loopfs(base, "xfs", "tiny", size_mb=8)   # below xfs's minimum
    assert ours_under(base) == ([], [])
    assert not os.path.exists(os.path.join(base, "tiny.img"))


def test_sweep_undoes_frozen_stacked_and_read_only_mounts(base):
    need_mkfs("ext4")
    a = make_loopfs(base, "ext4", "a")
    inner = make_loopfs(a.mountpoint, "ext4", "inner")   # image on a
    copy = os.path.join(base, "copy.img")
    run("cp", "--sparse=always", inner.image, copy)
    ro = mount_image(copy, os.path.join(base, "ro"), "ro,noload", "ext4")
    run("fsfreeze", "-f", inner.mountpoint)
    assert is_frozen(inner.mountpoint)
    mounts, devices = ours_under(base)
    assert set(mounts) == {a.mountpoint, inner.mountpoint, ro.mountpoint}
    assert {d for d, _ in devices} == {a.device, inner.device, ro.device}
    assert sweep_under(base) == []
    assert ours_under(base) == ([], [])
    assert os.path.exists(copy)          # a sweep deletes no image


def test_destroy_keeps_a_mounted_image_on_request(base):
    need_mkfs("ext4")
    a = make_loopfs(base, "ext4", "a")
    assert destroy_loopfs(a) == []
    run("truncate", "-s", "64M", a.image)
    run("mkfs.ext4", "-q", "-F", a.image)
    ro = mount_image(a.image, a.mountpoint, "ro")
    assert os.path.ismount(a.mountpoint)
    assert destroy_loopfs(ro, keep_image=True) == []
    assert os.path.exists(a.image) and not os.path.ismount(a.mountpoint)


def test_is_frozen_probes_only_a_loop_devices_mount_point(base):
    """The probe freezes. On a plain directory fsfreeze froze the
    filesystem holding it (here: /) before this check existed."""
    with pytest.raises(AssertionError, match="refusing to probe"):
        is_frozen(base)
    tmpfs = os.path.join(base, "tmpfs")
    os.mkdir(tmpfs)
    run("mount", "-t", "tmpfs", "vms-test", tmpfs)
    with pytest.raises(AssertionError, match="refusing to probe"):
        is_frozen(tmpfs)


def test_shell_door_make_then_sweep(base):
    """What demo/demo.sh does: make through python -m loopfs, and sweep
    in its exit trap."""
    need_mkfs("ext4")

    def door(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "loopfs", *args],
                              cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    res = door("make", os.path.join(base, "mnt"), "app", "ext4",
               "--image-dir", base)
    assert res.returncode == 0, res.stderr
    device = res.stdout.strip()
    assert ours_under(base) == ([os.path.join(base, "mnt", "app")],
                                [(device, os.path.join(base, "app.img"))])
    res = door("make", os.path.join(base, "mnt"), "bad", "xfs",
               "--size-mb", "8")
    assert res.returncode == 1 and "mkfs.xfs" in res.stderr, res.stderr
    res = door("sweep", base)
    assert res.returncode == 0, res.stderr
    assert ours_under(base) == ([], [])
