"""Freezing rules on real loop filesystems (planning only: nothing here
freezes), plus the `vmsnapshot mounts` command."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import List, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.require import skip_or_fail
from tests.helpers.cli import run_vmsnapshot
from tests.helpers.mounter import Mounter
from vmsnapshot.commands.mounts import mounts_command
from vmsnapshot.errors import Catalogue, FreezeError
from vmsnapshot.mounts.mountinfo import parse_mountinfo, read_mountinfo
from vmsnapshot.mounts.plan import (SKIPPED_FSTYPES, MountDecision, format_table,
                               plan, to_json)


def decision(decisions: Sequence[MountDecision], path: str) -> MountDecision:
    """The visible (last) decision for a mount point."""
    found = [d for d in decisions if d.info.mount_point == path]
    assert found, "%s not in mountinfo" % path
    return found[-1]


def frozen_paths(decisions: Sequence[MountDecision]) -> List[str]:
    return [d.info.mount_point for d in decisions if d.freeze]


def test_one_decision_per_line_in_order(loopfs_factory) -> None:
    lfs = loopfs_factory("ext4")
    mounts = read_mountinfo()
    decisions = plan(mounts, selected=[lfs.mountpoint])
    assert [d.info for d in decisions] == mounts
    assert frozen_paths(decisions) == [lfs.mountpoint]
    for d in decisions:
        assert d.freeze == (d.reason is None) == (d.wave is not None)


def test_ext4_is_eligible(loopfs_factory) -> None:
    lfs = loopfs_factory("ext4")
    d = decision(plan(read_mountinfo()), lfs.mountpoint)
    assert (d.freeze, d.reason, d.wave) == (True, None, 0)
    d = decision(plan(read_mountinfo(), selected=[lfs.mountpoint]),
                 lfs.mountpoint)
    assert (d.freeze, d.reason, d.wave) == (True, None, 0)


def test_bind_mount_is_deduped(loopfs_factory, mounter: Mounter,
                               tmp_path) -> None:
    lfs = loopfs_factory("ext4", name="long-name-ext4")
    bind = str(tmp_path / "b")
    os.mkdir(bind)
    mounter("--bind", lfs.mountpoint, bind)

    # The selected mount freezes the superblock even if another is shorter.
    decisions = plan(read_mountinfo(), selected=[lfs.mountpoint])
    assert frozen_paths(decisions) == [lfs.mountpoint]
    assert decision(decisions, bind).reason == \
        "same superblock as %s" % lfs.mountpoint

    # Both selected: still one freeze, through the shorter one.
    decisions = plan(read_mountinfo(), selected=[lfs.mountpoint, bind])
    assert frozen_paths(decisions) == [bind]

    # Unselected: the shortest mount point freezes it.
    decisions = plan(read_mountinfo(), include=[str(tmp_path) + "/*"])
    assert frozen_paths(decisions) == [bind]
    assert decision(decisions, lfs.mountpoint).reason == \
        "same superblock as %s" % bind


def test_btrfs_subvolumes_share_one_freeze(loopfs_factory, mounter: Mounter,
                                           tmp_path) -> None:
    if shutil.which("btrfs") is None:
        skip_or_fail("btrfs (btrfs-progs) not installed")
    lfs = loopfs_factory("btrfs")
    subprocess.run(["btrfs", "-q", "subvolume", "create",
                    os.path.join(lfs.mountpoint, "sv")], check=True)
    sv = str(tmp_path / "sv")
    os.mkdir(sv)
    mounter("-o", "subvol=sv", lfs.device, sv)
    mounts = read_mountinfo()
    assert decision(plan(mounts), sv).info.dev == \
        decision(plan(mounts), lfs.mountpoint).info.dev
    decisions = plan(mounts, selected=[lfs.mountpoint, sv])
    assert frozen_paths(decisions) == [sv]    # the shorter path
    assert decision(decisions, lfs.mountpoint).reason == \
        "same superblock as %s" % sv
    # Selecting the subvolume alone still freezes the whole filesystem.
    decisions = plan(mounts, selected=[lfs.mountpoint])
    assert frozen_paths(decisions) == [lfs.mountpoint]
    assert decision(decisions, sv).reason == \
        "same superblock as %s" % lfs.mountpoint


def test_read_only_mounts_are_skipped(loopfs_factory, mounter: Mounter,
                                      tmp_path) -> None:
    rw, ro = loopfs_factory("ext4"), loopfs_factory("ext4")
    subprocess.run(["mount", "-o", "remount,ro", ro.mountpoint], check=True)
    robind = str(tmp_path / "robind")
    os.mkdir(robind)
    mounter("--bind", "-o", "ro", rw.mountpoint, robind)
    mounts = read_mountinfo()
    assert "ro" in decision(plan(mounts), ro.mountpoint).info.super_options
    decisions = plan(mounts, selected=[ro.mountpoint, robind])
    assert decision(decisions, ro.mountpoint).reason == "read-only"
    assert decision(decisions, robind).reason == "read-only"
    assert frozen_paths(decisions) == []


def test_tmpfs_is_skipped_as_pseudo(mounter: Mounter, tmp_path) -> None:
    t = mounter.tmpfs(str(tmp_path / "t"))
    d = decision(plan(read_mountinfo(), selected=[t]), t)
    assert (d.freeze, d.reason, d.wave) == (False,
                                            "pseudo filesystem (tmpfs)", None)


def test_exclude_glob(loopfs_factory, mounter: Mounter, tmp_path) -> None:
    a, b = loopfs_factory("ext4", name="a"), loopfs_factory("ext4", name="b")
    glob = str(tmp_path) + "/[a]*"
    decisions = plan(read_mountinfo(), selected=[a.mountpoint, b.mountpoint],
                     exclude=["/nothing", glob])
    assert decision(decisions, a.mountpoint).reason == "excluded by '%s'" % glob
    assert frozen_paths(decisions) == [b.mountpoint]
    # Exclusion is per mount: a non-excluded bind still freezes the
    # superblock, and says so.
    bind = str(tmp_path / "zbind")
    os.mkdir(bind)
    mounter("--bind", a.mountpoint, bind)
    decisions = plan(read_mountinfo(), include=[str(tmp_path) + "/*"],
                     exclude=[glob])
    assert frozen_paths(decisions) == [b.mountpoint, bind]
    assert decision(decisions, a.mountpoint).reason == "excluded by '%s'" % glob


def test_selected_limits_the_freeze(loopfs_factory) -> None:
    a, b = loopfs_factory("ext4"), loopfs_factory("xfs")
    decisions = plan(read_mountinfo(), selected=[b.mountpoint + "/"])
    assert frozen_paths(decisions) == [b.mountpoint]
    assert decision(decisions, a.mountpoint).reason == "not selected"
    assert decision(decisions, "/").reason == "not selected"


def test_symlink_to_a_mount_point_is_accepted(loopfs_factory,
                                              tmp_path) -> None:
    lfs = loopfs_factory("ext4")
    link = str(tmp_path / "link")
    os.symlink(lfs.mountpoint, link)
    assert frozen_paths(plan(read_mountinfo(), selected=[link])) == \
        [lfs.mountpoint]


@pytest.mark.parametrize("what, expected", [
    ("dir", "is not a mount point"),
    ("missing", "does not exist"),
    ("inside", "is not a mount point"),
])
def test_mount_option_needs_a_mount_point(loopfs_factory, tmp_path,
                                          what: str, expected: str) -> None:
    lfs = loopfs_factory("ext4")
    path = {"dir": str(tmp_path), "missing": str(tmp_path / "nope"),
            "inside": os.path.join(lfs.mountpoint, "lost+found")}[what]
    with pytest.raises(FreezeError) as info:
        plan(read_mountinfo(), selected=[lfs.mountpoint, path])
    err = info.value
    assert err.entry is Catalogue.UNABLE_TO_OPEN_MOUNT
    assert err.record().to_json()["name"] == "UnableToOpenMount"
    assert err.message == ("--mount %s: %s; give the directory a filesystem "
                           "is mounted on (see 'vmsnapshot mounts')"
                           % (path, expected))


def test_over_mounted_filesystem(loopfs_factory, mounter: Mounter) -> None:
    lfs = loopfs_factory("ext4")
    mounter.tmpfs(lfs.mountpoint)
    decisions = plan(read_mountinfo(), selected=[lfs.mountpoint])
    ext4, tmpfs = [d for d in decisions
                   if d.info.mount_point == lfs.mountpoint]
    assert (ext4.info.fstype, ext4.reason) == ("ext4", "over-mounted")
    assert tmpfs.reason == "pseudo filesystem (tmpfs)"
    assert frozen_paths(decisions) == []


SYNTHETIC = """\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 0:5 / /proc rw - proc proc rw
3 1 0:40 / /net rw - nfs4 srv:/export rw
4 1 0:41 / /home/u/remote rw - fuse.sshfs u@h:/ rw
5 1 0:42 / /tank rw - zfs tank rw
6 1 0:43 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw
7 1 7:0 / /media/cd ro - iso9660 /dev/sr0 ro
8 1 8:2 / /data rw - xfs /dev/sda2 rw
9 1 8:2 /sub /srv/sub rw - xfs /dev/sda2 rw
10 1 8:3 / /mnt/resource rw - ext4 /dev/sdb1 rw
11 1 259:1 / /weird rw - newfs /dev/nvme0n1p1 rw
"""


def test_reasons_on_a_synthetic_machine(tmp_path) -> None:
    sysfs = str(tmp_path)           # fake sysfs: only 259:1 has a device
    os.makedirs(os.path.join(sysfs, "dev", "block", "259:1"))
    decisions = plan(parse_mountinfo(SYNTHETIC), exclude=["/mnt/*"],
                     sysfs=sysfs)
    assert [(d.info.mount_point, d.reason, d.wave) for d in decisions] == [
        ("/", None, 1),
        ("/proc", "pseudo filesystem (proc)", None),
        ("/net", "network filesystem (nfs4)", None),
        ("/home/u/remote", "FUSE filesystem (fuse.sshfs)", None),
        ("/tank", "no block device (zfs on 'tank')", None),
        ("/var/lib/docker/overlay2/x/merged", "stacked filesystem (overlay)",
         None),
        ("/media/cd", "read-only filesystem (iso9660)", None),
        ("/data", None, 0),
        ("/srv/sub", "same superblock as /data", None),
        ("/mnt/resource", "excluded by '/mnt/*'", None),
        ("/weird", None, 0),
    ]
    assert {"proc", "sysfs", "tmpfs", "nfs", "cifs", "fuse", "overlay",
            "cgroup2", "squashfs"} <= SKIPPED_FSTYPES
    only = plan(parse_mountinfo(SYNTHETIC), include=["/d*", "/srv/*"],
                sysfs=sysfs)
    assert frozen_paths(only) == ["/data"]
    assert decision(only, "/").reason == "not selected"


def test_table_and_json(mounter: Mounter, tmp_path) -> None:
    odd = mounter.tmpfs(str(tmp_path / "a b"))
    decisions = plan(read_mountinfo())
    rows = to_json(decisions)
    assert len(rows) == len(decisions)
    [row] = [r for r in rows if r["path"] == odd]
    d = decision(decisions, odd)
    assert row == {"path": odd, "fstype": "tmpfs", "source": "vms-test",
                   "device": "%d:%d" % d.info.dev, "freeze": False,
                   "reason": "pseudo filesystem (tmpfs)", "wave": None}
    table = format_table(decisions).splitlines()
    assert table[0].split() == ["PATH", "FSTYPE", "SOURCE", "DEVICE",
                                "FREEZE", "WAVE", "REASON"]
    assert len(table) == len(decisions) + 1
    [line] = [t for t in table if t.startswith(odd.replace(" ", "\\040"))]
    assert line.split()[1:] == ["tmpfs", "vms-test", "%d:%d" % d.info.dev,
                                "no", "-", "pseudo", "filesystem", "(tmpfs)"]


def test_mounts_command(loopfs_factory, capsys) -> None:
    lfs = loopfs_factory("ext4")
    assert mounts_command(True, [lfs.mountpoint], []) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows if r["freeze"]] == [lfs.mountpoint]
    assert mounts_command(False, [lfs.mountpoint], ["/nothing"]) == 0
    out = capsys.readouterr().out
    [line] = [t for t in out.splitlines() if t.startswith(lfs.mountpoint)]
    device = "%d:%d" % decision(plan(read_mountinfo()), lfs.mountpoint).info.dev
    assert line.split()[1:] == ["ext4", lfs.device, device, "yes", "0"]


def test_mounts_command_bad_mount(tmp_path, capsys) -> None:
    assert mounts_command(False, [str(tmp_path)], []) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("vmsnapshot: UnableToOpenMount (123): --mount %s: "
                          "is not a mount point" % tmp_path)
    assert Catalogue.UNABLE_TO_OPEN_MOUNT.action in err


def test_mounts_cli(loopfs_factory, tmp_path) -> None:
    lfs = loopfs_factory("ext4")
    res = run_vmsnapshot("mounts", "--json", "--mount", lfs.mountpoint,
                         "--exclude", "/nothing")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["path"], r["fstype"], r["wave"]) for r in rows
            if r["freeze"]] == [(lfs.mountpoint, "ext4", 0)]
    res = run_vmsnapshot("mounts", "--mount", str(tmp_path))
    assert res.returncode == 2
    assert "UnableToOpenMount (123)" in res.stderr


ODD_LINE = st.builds(
    "{} {} {}:{} / {} {} - {} {} rw".format,
    st.integers(0, 6), st.integers(0, 6), st.integers(0, 2),
    st.integers(0, 3), st.sampled_from(["/", "/a", "/a/b", "a", "/a/"]),
    st.sampled_from(["rw", "ro"]),
    st.sampled_from(["ext4", "btrfs", "tmpfs", "zfs", "fuse.x"]),
    st.sampled_from(["/dev/x", "", "none"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(ODD_LINE, max_size=8), st.lists(
    st.sampled_from(["/a*", "*", "/"]), max_size=2))
def test_plan_is_consistent_on_odd_tables(lines: List[str],
                                          exclude: List[str]) -> None:
    """Duplicate ids and devices, self-parents, relative paths: one
    decision per line, a wave exactly for what is frozen, one freeze per
    superblock."""
    mounts = parse_mountinfo("\n".join(lines))
    decisions = plan(mounts, exclude=exclude, sysfs="/nonexistent-sysfs")
    assert [d.info for d in decisions] == mounts
    for d in decisions:
        assert d.freeze == (d.reason is None) == (d.wave is not None)
    devs = [d.info.dev for d in decisions if d.freeze]
    assert len(devs) == len(set(devs))
