"""Parsing /proc/self/mountinfo: real lines, escapes, odd entries."""
from __future__ import annotations

import logging
import os
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.mounter import Mounter
from vmsnapshot.mounts.mountinfo import (MountInfo, hidden_mounts, parse_line,
                                  parse_mountinfo, read_mountinfo)

EXAMPLE = ("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root "
           "rw,errors=continue")


def find(mounts: List[MountInfo], mount_point: str) -> List[MountInfo]:
    return [m for m in mounts if m.mount_point == mount_point]


def test_example_from_proc5() -> None:
    m = parse_line(EXAMPLE)
    assert m == MountInfo(36, 35, 98, 0, "/mnt1", "/mnt2",
                          ("rw", "noatime"), ("master:1",), "ext3",
                          "/dev/root", ("rw", "errors=continue"))
    assert m.dev == (98, 0)
    assert not m.read_only


def test_real_mountinfo_every_line_parses(caplog) -> None:
    with open("/proc/self/mountinfo") as f:
        lines = [line for line in f.read().splitlines() if line]
    with caplog.at_level(logging.WARNING):
        mounts = read_mountinfo()
    assert not caplog.records
    assert len(mounts) == len(lines)
    assert len({m.mount_id for m in mounts}) == len(mounts)
    root = [m for m in mounts if m.mount_point == "/"][-1]
    st = os.stat("/")
    if root.fstype != "btrfs":  # btrfs: st_dev is per subvolume
        assert root.dev == (os.major(st.st_dev), os.minor(st.st_dev))


def test_escaped_paths_in_real_mountinfo(mounter: Mounter, tmp_path) -> None:
    target = str(tmp_path / "a b\tc\\d\ne")
    mounter.tmpfs(target, source="my src\\x")
    with open("/proc/self/mountinfo") as f:
        raw = f.read()
    assert "a\\040b\\011c\\134d\\012e" in raw
    assert "my\\040src\\134x" in raw
    [m] = find(read_mountinfo(), target)
    assert m.fstype == "tmpfs"
    assert m.source == "my src\\x"
    assert os.path.ismount(m.mount_point)


def test_optional_fields_real(mounter: Mounter, tmp_path) -> None:
    shared = mounter.tmpfs(str(tmp_path / "shared"))
    mounter("--make-shared", shared)
    slave = str(tmp_path / "slave")
    os.mkdir(slave)
    mounter("--bind", shared, slave)
    mounter("--make-slave", slave)
    mounts = read_mountinfo()
    [s] = find(mounts, shared)
    [b] = find(mounts, slave)
    assert len(s.optional) == 1 and s.optional[0].startswith("shared:")
    peer_group = s.optional[0].split(":")[1]
    assert b.optional == ("master:" + peer_group,)
    assert (s.fstype, b.fstype) == ("tmpfs", "tmpfs")
    assert s.dev == b.dev


@pytest.mark.parametrize("line, optional", [
    ("1 0 8:1 / / rw - ext4 /dev/sda1 rw", ()),
    ("1 0 8:1 / / rw shared:1 master:2 - ext4 /dev/sda1 rw",
     ("shared:1", "master:2")),
    ("1 0 8:1 / / rw shared:1 master:2 propagate_from:3 unbindable - ext4 "
     "/dev/sda1 rw", ("shared:1", "master:2", "propagate_from:3",
                      "unbindable")),
])
def test_optional_fields(line: str, optional) -> None:
    m = parse_line(line)
    assert m.optional == optional
    assert (m.fstype, m.source, m.super_options) == ("ext4", "/dev/sda1",
                                                      ("rw",))


def test_odd_but_valid_entries() -> None:
    fuse = parse_line("50 27 0:45 / /home/u/remote rw,nosuid,nodev - "
                      "fuse.sshfs u@host:/srv rw,user_id=0,group_id=0")
    assert (fuse.fstype, fuse.source) == ("fuse.sshfs", "u@host:/srv")
    empty = parse_line("51 27 0:46 / /mnt/x rw - tmpfs  rw,size=4k")
    assert empty.source == ""
    nsfs = parse_line("52 27 0:4 net:[4026531840] /run/netns/a rw - nsfs "
                      "nsfs rw")
    assert nsfs.root == "net:[4026531840]"
    ro = parse_line("53 27 7:0 / /media/cd ro,relatime - iso9660 /dev/sr0 ro")
    assert ro.read_only
    super_ro = parse_line("54 27 8:2 / /b rw - ext4 /dev/sda2 ro")
    assert super_ro.read_only
    # A "-" inside a path is escaped-free text, not the separator.
    dash = parse_line("55 27 8:3 / /a-b rw - ext4 /dev/sda3 rw")
    assert dash.mount_point == "/a-b"
    # Only \ooo of the four escaped characters is decoded.
    odd = parse_line("56 27 8:4 / /x\\101\\400\\1 rw - ext4 /dev/sda4 rw")
    assert odd.mount_point == "/xA\\400\\1"


@pytest.mark.parametrize("bad", [
    "garbage",
    "1 0 8:1 / / rw ext4 /dev/sda1 rw",            # no separator
    "1 0 8:1 / / rw - ext4 /dev/sda1",             # field missing after -
    "1 0 8:1 / / rw - ext4 /dev/sda1 rw extra",    # one too many
    "x 0 8:1 / / rw - ext4 /dev/sda1 rw",          # mount id not a number
    "1 0 8-1 / / rw - ext4 /dev/sda1 rw",          # not MAJ:MIN
    "1 0 8:+1 / / rw - ext4 /dev/sda1 rw",
    "1 0 8:1 / / - - ext4 /dev/sda1 rw" + " x",    # separator too early
    "1 0 8:1 / / rw -  /dev/sda1 rw",              # empty fstype
])
def test_malformed_lines_skipped_with_warning(bad: str, caplog) -> None:
    good = "2 1 8:2 / /data rw - xfs /dev/sda2 rw"
    with caplog.at_level(logging.WARNING, logger="vmsnapshot.mounts.mountinfo"):
        mounts = parse_mountinfo("\n".join([good, bad, "", good]) + "\n")
    assert [m.mount_point for m in mounts] == ["/data", "/data"]
    [record] = caplog.records
    assert "line 2 skipped" in record.getMessage()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises_on_any_text(text: str) -> None:
    mounts = parse_mountinfo(text)
    assert all(isinstance(m, MountInfo) for m in mounts)
    hidden_mounts(mounts)


FIELD = st.sampled_from(["-", "", "1", "8:1", "/", "/a\\040b", "rw",
                         "shared:1", "ext4", "x:y", "\\", "٣", " "])


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELD, max_size=14))
def test_parse_never_raises_on_near_misses(fields: List[str]) -> None:
    hidden_mounts(parse_mountinfo(" ".join(fields)))


LINE = st.builds(
    "{} {} {}:{} / {} rw - ext4 /dev/x rw".format,
    st.integers(0, 5), st.integers(0, 5), st.integers(0, 3),
    st.integers(0, 3), st.sampled_from(["/", "/a", "/a/b", "a", "a/b", "//",
                                        "/a/", "\\040"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=8))
def test_hidden_mounts_terminates_on_odd_trees(lines: List[str]) -> None:
    """Duplicate ids, self-parents, cycles, relative paths: no hang, no
    exception, and what is hidden is a subset of what was given."""
    mounts = parse_mountinfo("\n".join(lines))
    assert set(hidden_mounts(mounts)) <= {m.mount_id for m in mounts}


def test_hidden_mounts_real(mounter: Mounter, tmp_path) -> None:
    low = mounter.tmpfs(str(tmp_path / "x"))
    inner = mounter.tmpfs(os.path.join(low, "in"))
    mounter.tmpfs(low)                     # stacked on x: hides x and x/in
    below = mounter.tmpfs(str(tmp_path / "a" / "b"))
    mounter.tmpfs(str(tmp_path / "a"))     # sibling above: hides a/b
    mounts = read_mountinfo()
    hidden = hidden_mounts(mounts)
    xs = find(mounts, low)
    assert len(xs) == 2
    assert hidden.get(xs[0].mount_id) == low
    assert xs[1].mount_id not in hidden
    [i] = find(mounts, inner)
    assert hidden[i.mount_id] == low
    [b] = find(mounts, below)
    assert hidden[b.mount_id] == str(tmp_path / "a")
    [a] = find(mounts, str(tmp_path / "a"))
    assert a.mount_id not in hidden
    root = [m for m in mounts if m.mount_point == "/"]
    assert root[-1].mount_id not in hidden


def test_hidden_mounts_ignores_mounts_over_root() -> None:
    mounts = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                             "2 1 8:2 / /data rw - ext4 /dev/sda2 rw\n"
                             "3 1 8:3 / / rw - ext4 /dev/sda3 rw\n")
    assert hidden_mounts(mounts) == {}


def test_hidden_mounts_stacks() -> None:
    mounts = parse_mountinfo(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "24 1 0:6 / /dev rw - devtmpfs devtmpfs rw\n"
        "26 24 0:24 / /dev/pts rw - devpts devpts rw\n"
        "29 26 0:26 / /dev/pts rw - devpts devpts rw\n"     # on top of 26
        "30 29 0:27 / /dev/pts rw - devpts devpts rw\n"     # on top of 29
        "31 30 0:28 / /dev/pts/x rw - tmpfs tmpfs rw\n"     # inside the top
        "32 26 0:29 / /dev/pts/y rw - tmpfs tmpfs rw\n"     # inside 26
        "40 1 8:2 / /data rw - ext4 /dev/sda2 rw\n"
        "41 1 8:3 / /data rw - ext4 /dev/sda3 rw\n")        # shadows 40
    assert hidden_mounts(mounts) == {26: "/dev/pts", 29: "/dev/pts",
                                     32: "/dev/pts", 40: "/data"}
