"""How much dirty data waits for writeback, machine-wide and per mount,
without debugfs, so that presync "auto" syncs only filesystems for which
a syncfs pays.

What the kernel exposes (measured on 6.x):
- /proc/meminfo Dirty + Writeback: exact, but machine-wide.
- per-bdi and per-wb counters (BdiDirtied, WbReclaimable): debugfs only.
- cgroup v2 memory.stat file_dirty/file_writeback: per cgroup, not per
  device (the applications' cgroups say nothing about where they write).
- /sys/block/*/stat in-flight requests: I/O already submitted, not the
  dirty pages behind it.
- ext4 /sys/fs/ext4/DEV/delayed_allocation_blocks and btrfs
  /sys/fs/btrfs/FSID/allocation/data/bytes_may_use: data written but not
  yet allocated (delayed allocation), per filesystem, one read each.  They
  miss overwrites of allocated blocks and pages already under writeback.
- xfs: nothing per filesystem (its stats count bytes ever written).

So a mount's own counter says "dirty" when it is; the machine-wide
figure minus every ext4/btrfs counter of the machine is what no counter
places ("unplaced"): it may sit on any mount, so when it is large every
mount is synced, as before per-device estimates existed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

SYS_DEV_BLOCK = "/sys/dev/block"
SYS_EXT4 = "/sys/fs/ext4"
SYS_BTRFS = "/sys/fs/btrfs"
# ext4 reports blocks, of 1 KiB at least.
EXT4_MIN_BLOCK = 1024
# BTRFS_IOC_FS_INFO = _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args):
# 1024 bytes, the fsid (16 bytes) at offset 16.
BTRFS_IOC_FS_INFO = 0x8400941F


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def device_name(major: int, minor: int) -> Optional[str]:
    """The kernel's name of a block device (loop3, dm-0, vda1): the name
    ext4's sysfs directory carries."""
    if major == 0:      # anonymous device (btrfs, nodev filesystems)
        return None
    try:
        return os.path.basename(
            os.readlink("%s/%d:%d" % (SYS_DEV_BLOCK, major, minor)))
    except OSError:
        return None


def sectors_written(devices: Sequence[Tuple[int, int]]) -> Optional[int]:
    """Sectors written so far to these block devices (field 7 of their
    stat, 512-byte units), or None if one has no stat (btrfs' anonymous
    device, nodev filesystems)."""
    total = 0
    for major, minor in devices:
        try:
            with open("%s/%d:%d/stat" % (SYS_DEV_BLOCK, major, minor),
                      encoding="ascii") as f:
                total += int(f.read().split()[6])
        except (OSError, ValueError, IndexError):
            return None
    return total


def _btrfs_fsid(path: str, fd: Optional[int]) -> Optional[str]:
    import fcntl     # here: uuid imports platform, ~4 ms of every run
    import uuid
    own = fd is None
    try:
        if own:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                         | os.O_NOFOLLOW)
        buf = bytearray(1024)
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf)
        return str(uuid.UUID(bytes=bytes(buf[16:32])))
    except OSError:     # not btrfs, or gone
        return None
    finally:
        if own and fd is not None:
            os.close(fd)


@dataclass(frozen=True)
class Estimate:
    """One mount's own counter: bytes waiting for allocation, or None when
    its filesystem type has none (xfs and the rest)."""

    bytes: Optional[int]
    counter: str = ""       # what was read, for the report
    key: str = ""           # "ext4/NAME" or "btrfs/FSID": one per superblock


def mount_estimate(path: str, fd: Optional[int], dev: Tuple[int, int]
                   ) -> Estimate:
    name = device_name(*dev)
    if name is not None:
        blocks = _read_int("%s/%s/delayed_allocation_blocks"
                           % (SYS_EXT4, name))
        if blocks is None:
            return Estimate(None)
        try:
            bsize = (os.fstatvfs(fd) if fd is not None
                     else os.statvfs(path)).f_bsize
        except OSError:
            bsize = EXT4_MIN_BLOCK
        return Estimate(blocks * bsize, "ext4 delayed_allocation_blocks",
                        "ext4/" + name)
    fsid = _btrfs_fsid(path, fd)
    if fsid is not None:
        used = _read_int("%s/%s/allocation/data/bytes_may_use"
                         % (SYS_BTRFS, fsid))
        if used is not None:
            return Estimate(used, "btrfs data bytes_may_use",
                            "btrfs/" + fsid)
    return Estimate(None)


def _ext4_block_size(name: str, mounts: Dict[Tuple[int, int], str]) -> int:
    """The block size of the ext4 filesystem on device NAME, from a mount
    of it (MOUNTS: device -> ext4 mount point); its smallest possible value
    when none is visible here, so that what no counter places is never
    underestimated."""
    try:
        with open("/sys/class/block/%s/dev" % name, encoding="ascii") as f:
            major, minor = (int(x) for x in f.read().split(":"))
        return os.statvfs(mounts[(major, minor)]).f_bsize
    except (OSError, ValueError, KeyError):
        return EXT4_MIN_BLOCK


def _ext4_mounts() -> Dict[Tuple[int, int], str]:
    """device -> mount point of the ext4 mounts whose path crosses no
    network or FUSE mount (a statvfs there may hang for ever)."""
    from vmsnapshot.mounts.mountinfo import (REMOTE_KINDS, fstype_kind,
                                             read_mountinfo)
    try:
        mounts = read_mountinfo()
    except OSError:
        return {}
    by_id = {m.mount_id: m for m in mounts}

    def reachable(m: Any) -> bool:
        seen = set()
        while m is not None and m.mount_id not in seen:
            if fstype_kind(m.fstype) in REMOTE_KINDS:
                return False
            seen.add(m.mount_id)
            m = by_id.get(m.parent_id)
        return True
    return {(m.major, m.minor): m.mount_point for m in mounts
            if m.fstype == "ext4" and reachable(m)}


def machine_placed(own: Dict[str, int]) -> int:
    """What every ext4 and btrfs counter of the machine accounts for; OWN
    (key -> bytes) gives our mounts' figures, already in bytes."""
    total = 0
    mounts: Optional[Dict[Tuple[int, int], str]] = None
    for fs, base, leaf in (
            ("ext4", SYS_EXT4, "delayed_allocation_blocks"),
            ("btrfs", SYS_BTRFS, "allocation/data/bytes_may_use")):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            key = "%s/%s" % (fs, name)
            if key in own:
                total += own[key]
                continue
            value = _read_int("%s/%s/%s" % (base, name, leaf))
            if value and fs == "ext4":
                if mounts is None:
                    mounts = _ext4_mounts()
                value *= _ext4_block_size(name, mounts)
            total += value or 0
    return total
