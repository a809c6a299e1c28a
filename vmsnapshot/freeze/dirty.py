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
from typing import Dict, Optional, Sequence, Tuple

SYS_DEV_BLOCK = "/sys/dev/block"
SYS_EXT4 = "/sys/fs/ext4"
SYS_BTRFS = "/sys/fs/btrfs"
# ext4 reports blocks; other machines' ext4 filesystems are not ours to
# statfs, and 4 KiB is mkfs' default above 512 MiB.
EXT4_FOREIGN_BLOCK = 4096
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
            bsize = EXT4_FOREIGN_BLOCK
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


def machine_placed(own: Dict[str, int]) -> int:
    """What every ext4 and btrfs counter of the machine accounts for; OWN
    (key -> bytes) replaces the guess of a block size for our mounts."""
    total = 0
    for fs, base, leaf, scale in (
            ("ext4", SYS_EXT4, "delayed_allocation_blocks",
             EXT4_FOREIGN_BLOCK),
            ("btrfs", SYS_BTRFS, "allocation/data/bytes_may_use", 1)):
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
            if value is not None:
                total += value * scale
    return total
