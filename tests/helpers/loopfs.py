"""Real filesystems on loop devices for tests, always torn down.

Only filesystems made here may ever be frozen by the suite (see the freeze
guard in conftest.py).
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import List, Optional

# xfsprogs refuses filesystems below 300 MiB; images are sparse.
SIZE_MB = {"ext4": 64, "xfs": 320, "btrfs": 160}

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}


@dataclass
class LoopFS:
    fstype: str
    image: str
    device: str
    mountpoint: str

    def __str__(self) -> str:
        return self.mountpoint


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    # C locale: is_frozen() reads fsfreeze's English error text.
    return subprocess.run(list(argv), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          errors="surrogateescape",
                          env=dict(os.environ, LC_ALL="C"))


def make_loopfs(basedir: str, fstype: str, name: Optional[str] = None,
                size_mb: Optional[int] = None,
                image_dir: Optional[str] = None) -> LoopFS:
    """Create IMAGE, attach it, mkfs it and mount it under basedir/NAME.

    image_dir lets the image live on another test filesystem, for
    loop-on-loop dependency tests.
    """
    name = name or fstype
    image = os.path.join(image_dir or basedir, name + ".img")
    mountpoint = os.path.join(basedir, name)
    os.makedirs(mountpoint, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate((size_mb or SIZE_MB[fstype]) * 1024 * 1024)
    device = run("losetup", "--find", "--show", image).stdout.strip()
    lfs = LoopFS(fstype, image, device, mountpoint)
    try:
        run(*MKFS[fstype], device)
        run("mount", "-t", fstype, device, mountpoint)
    except BaseException:
        destroy_loopfs(lfs)
        raise
    return lfs


def is_frozen(mountpoint: str) -> bool:
    """A frozen filesystem refuses a second freeze with EBUSY; probe with
    fsfreeze -f and undo at once if it was not frozen."""
    res = run("fsfreeze", "-f", mountpoint, check=False)
    if res.returncode == 0:
        run("fsfreeze", "-u", mountpoint)
        return False
    if "busy" in res.stderr.lower():
        return True
    raise AssertionError("fsfreeze -f %s: %s" % (mountpoint, res.stderr))


def _retry(argv: List[str], seconds: float = 10.0
           ) -> subprocess.CompletedProcess:
    """Run until it succeeds or time is up. A loop device detached a moment
    ago may still hold its image (udev probing it, the kernel's deferred
    release), which makes the filesystem holding the image busy briefly."""
    deadline = time.monotonic() + seconds
    while True:
        res = run(*argv, check=False)
        if res.returncode == 0 or time.monotonic() > deadline:
            return res
        time.sleep(0.1)


def _wait_detached(device: str, seconds: float = 10.0) -> None:
    backing = "/sys/block/%s/loop/backing_file" % os.path.basename(device)
    deadline = time.monotonic() + seconds
    while os.path.exists(backing) and time.monotonic() < deadline:
        time.sleep(0.05)


def destroy_loopfs(lfs: LoopFS) -> List[str]:
    """Thaw, unmount, detach, delete; never raises, returns problems."""
    problems = []
    run("fsfreeze", "-u", lfs.mountpoint, check=False)
    if os.path.ismount(lfs.mountpoint):
        res = _retry(["umount", lfs.mountpoint])
        if res.returncode != 0:
            problems.append("umount %s: %s" % (lfs.mountpoint, res.stderr))
            run("umount", "-l", lfs.mountpoint, check=False)
    res = run("losetup", "-d", lfs.device, check=False)
    if res.returncode != 0 and "No such device" not in res.stderr:
        problems.append("losetup -d %s: %s" % (lfs.device, res.stderr))
    _wait_detached(lfs.device)
    try:
        os.unlink(lfs.image)
    except OSError:
        pass
    return problems
