"""A pool of loop filesystems (ext4 and xfs alternating) made for the bench.

Every mount lives under the bench's own work directory; nothing else is
ever frozen.  The filesystems come from the shared loopfs module (also the
tests' and the demo's); ``LoopPool.destroy`` thaws, unmounts and detaches
everything it made and never raises, so it can run from any exit path.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Sequence

import loopfs

log = logging.getLogger(__name__)

# Sparse images: xfsprogs refuses filesystems below 300 MiB, and both types
# get the same size so ext4 and xfs hold the same data file.
IMAGE_MB = 320
DATA_FILE = "dirty.dat"
WRITER_FILE = "writer.dat"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LoopMount:
    fstype: str
    image: str
    device: str
    path: str
    direct_io: bool

    @property
    def data_file(self) -> str:
        return os.path.join(self.path, DATA_FILE)

    @property
    def writer_file(self) -> str:
        return os.path.join(self.path, WRITER_FILE)


def written_mib(devices: Sequence[str]) -> float:
    """MiB written so far to DEVICES (sysfs stat, field 7: sectors
    written).  Deltas of this show whether the dirty data reached the disk
    inside the freeze or leaked out before it."""
    sectors = 0
    for device in devices:
        with open("/sys/block/%s/stat" % os.path.basename(device)) as f:
            sectors += int(f.read().split()[6])
    return sectors * 512 / 2**20


def write_mib(path: str, mib: int, pattern: bytes, sync: bool) -> None:
    """Overwrite the first MIB MiB of PATH in place.  Never truncates:
    ext4 flushes a truncated-and-rewritten file on close (auto_da_alloc),
    which would write the bench's dirty data back before the freeze."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        for i in range(mib):
            os.pwrite(fd, pattern, i * CHUNK)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


class LoopPool:
    """N loop filesystems under workdir; destroy() undoes everything."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.mounts: List[LoopMount] = []
        self._made: List[loopfs.LoopFS] = []

    def create(self, prefill_mib: Sequence[int], pattern: bytes) -> None:
        """One filesystem per entry of PREFILL_MIB (its data file size).
        direct-io loops write to the disk, not to the page cache of the
        filesystem holding the images, like a VM's disk."""
        for i in range(len(self.mounts), len(prefill_mib)):
            fstype = "ext4" if i % 2 == 0 else "xfs"
            lfs = loopfs.make_loopfs(self.workdir, fstype,
                                     "%s%02d" % (fstype, i), IMAGE_MB,
                                     direct_io=True)
            self._made.append(lfs)
            lm = LoopMount(fstype, lfs.image, lfs.device, lfs.mountpoint,
                           loopfs.direct_io_active(lfs.device))
            # Written and synced once, so every cycle overwrites allocated
            # blocks (in the filesystem and in the sparse image) and
            # flushes the same data with no allocation.
            write_mib(lm.data_file, max(prefill_mib[i], 1), pattern, True)
            write_mib(lm.writer_file, 1, pattern, True)
            self.mounts.append(lm)
            log.debug("made %s on %s (dio=%s)", lm.path, lm.device,
                      lm.direct_io)

    def thaw_all(self) -> None:
        """A mount here is only ever frozen by this bench."""
        for lfs in reversed(self._made):
            loopfs.thaw(lfs.mountpoint)

    def destroy(self) -> List[str]:
        """Thaw, unmount, detach and delete, newest first; never raises."""
        problems: List[str] = []
        for lfs in reversed(self._made):
            problems += loopfs.destroy_loopfs(lfs)
        self._made.clear()
        self.mounts.clear()
        return problems
