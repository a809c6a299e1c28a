"""A pool of loop filesystems (ext4 and xfs alternating) made for the bench.

Every mount lives under the bench's own work directory; nothing else is
ever frozen.  ``LoopPool.destroy`` thaws, unmounts and detaches everything
it made and never raises, so it can run from any exit path.
"""
from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from typing import List, Sequence

log = logging.getLogger(__name__)

# Sparse images: xfsprogs refuses filesystems below 300 MiB, and both types
# get the same size so ext4 and xfs hold the same data file.
IMAGE_MB = 320
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"]}
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


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def attach(image: str) -> str:
    """losetup --find attaches on a new device via /dev/loop-control when
    none is free.  direct-io makes the loop write to the disk rather than to
    the page cache of the filesystem holding the image, like a VM's disk."""
    return _run("losetup", "--find", "--show", "--direct-io=on",
                image).stdout.strip()


def direct_io_active(device: str) -> bool:
    name = os.path.basename(device)
    try:
        with open("/sys/block/%s/loop/dio" % name) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def written_mib(devices: Sequence[str]) -> float:
    """MiB written so far to DEVICES (sysfs stat, field 7: sectors
    written).  Deltas of this show whether the dirty data reached the disk
    inside the freeze or leaked out before it."""
    sectors = 0
    for device in devices:
        with open("/sys/block/%s/stat" % os.path.basename(device)) as f:
            sectors += int(f.read().split()[6])
    return sectors * 512 / 2**20


def make_image(path: str, size_mb: int = IMAGE_MB) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)


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
        self._devices: List[str] = []      # attached, maybe not mounted yet
        self._mounted: List[str] = []

    def create(self, prefill_mib: Sequence[int], pattern: bytes) -> None:
        """One filesystem per entry of PREFILL_MIB (its data file size)."""
        for i in range(len(self.mounts), len(prefill_mib)):
            fstype = "ext4" if i % 2 == 0 else "xfs"
            name = "%s%02d" % (fstype, i)
            image = os.path.join(self.workdir, name + ".img")
            path = os.path.join(self.workdir, name)
            os.makedirs(path, exist_ok=True)
            make_image(image)
            device = attach(image)
            self._devices.append(device)
            _run(*MKFS[fstype], device)
            _run("mount", "-t", fstype, device, path)
            self._mounted.append(path)
            lm = LoopMount(fstype, image, device, path,
                           direct_io_active(device))
            # Written and synced once, so every cycle overwrites allocated
            # blocks (in the filesystem and in the sparse image) and
            # flushes the same data with no allocation.
            write_mib(lm.data_file, max(prefill_mib[i], 1), pattern, True)
            write_mib(lm.writer_file, 1, pattern, True)
            self.mounts.append(lm)
            log.debug("made %s on %s (dio=%s)", path, device, lm.direct_io)

    def thaw_all(self) -> None:
        """A mount here is only ever frozen by this bench; thawing one that
        is not frozen fails harmlessly with EINVAL."""
        for path in reversed(self._mounted):
            _run("fsfreeze", "-u", path, check=False)

    def destroy(self) -> List[str]:
        """Thaw, unmount, detach and delete, newest first; never raises."""
        problems: List[str] = []
        self.thaw_all()
        for path in reversed(self._mounted):
            res = _run("umount", path, check=False)
            if res.returncode != 0:
                problems.append("umount %s: %s" % (path, res.stderr.strip()))
                _run("umount", "-l", path, check=False)
        for device in reversed(self._devices):
            res = _run("losetup", "-d", device, check=False)
            if res.returncode != 0 and "No such device" not in res.stderr:
                problems.append("losetup -d %s: %s"
                                % (device, res.stderr.strip()))
        for lm in self.mounts:
            try:
                os.unlink(lm.image)
            except OSError:
                pass
        self._mounted.clear()
        self._devices.clear()
        self.mounts.clear()
        return problems
