"""Real filesystems on loop devices, for the tests, the bench and the demo.

Everything made here lives under a directory its caller owns; teardown
thaws, unmounts, detaches and deletes, never raises, and returns what it
could not undo, so it can run on any exit path. ``sweep_under`` undoes
whatever is left under a directory (a crashed caller's leftovers) without
any record of what was made. Only filesystems made here may ever be
frozen by the tests, the bench or the demo.

Needs only the standard library and util-linux: ``python -m loopfs`` is
the shell's door to it (see __main__.py).
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

# xfsprogs refuses filesystems below 300 MiB; images are sparse.
SIZE_MB = {"ext4": 64, "xfs": 320, "btrfs": 160}

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}


@dataclass(frozen=True)
class LoopFS:
    fstype: str
    image: str
    device: str
    mountpoint: str

    def __str__(self) -> str:
        return self.mountpoint


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    # C locale: is_frozen() and detach() read util-linux's English errors.
    return subprocess.run(list(argv), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          errors="surrogateescape",
                          env=dict(os.environ, LC_ALL="C"))


def make_image(path: str, size_mb: int) -> None:
    """A sparse image of SIZE_MB MiB."""
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)


def attach(image: str, direct_io: bool = False,
           read_only: bool = False) -> str:
    """A new loop device for IMAGE (losetup makes one through
    /dev/loop-control when none is free). direct-io makes the loop write
    to the disk rather than to the page cache of the filesystem holding
    the image, like a VM's disk."""
    argv = ["losetup", "--find", "--show"]
    if direct_io:
        argv.append("--direct-io=on")
    if read_only:
        argv.append("--read-only")
    return run(*argv, image).stdout.strip()


def direct_io_active(device: str) -> bool:
    try:
        with open(_sys_loop(device, "dio")) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def make_loopfs(basedir: str, fstype: str, name: Optional[str] = None,
                size_mb: Optional[int] = None,
                image_dir: Optional[str] = None,
                direct_io: bool = False) -> LoopFS:
    """Create IMAGE_DIR/NAME.img, attach it, mkfs it and mount it on
    BASEDIR/NAME; undone at once if any step fails.

    image_dir (default basedir) lets the image live on another loop
    filesystem, for loop-on-loop dependency tests.
    """
    name = name or fstype
    image = os.path.join(image_dir or basedir, name + ".img")
    mountpoint = os.path.join(basedir, name)
    os.makedirs(mountpoint, exist_ok=True)
    make_image(image, size_mb or SIZE_MB[fstype])
    try:
        device = attach(image, direct_io=direct_io)
    except BaseException:
        os.unlink(image)
        raise
    lfs = LoopFS(fstype, image, device, mountpoint)
    try:
        run(*MKFS[fstype], device)
        run("mount", "-t", fstype, device, mountpoint)
    except BaseException:
        destroy_loopfs(lfs)
        raise
    return lfs


def mount_image(image: str, mountpoint: str, options: str = "",
                fstype: str = "") -> LoopFS:
    """Attach an existing IMAGE (read-only if OPTIONS has "ro") and mount
    it on MOUNTPOINT; destroy_loopfs(keep_image=True) undoes it."""
    read_only = "ro" in options.split(",")
    device = attach(image, read_only=read_only)
    lfs = LoopFS(fstype, image, device, mountpoint)
    argv = ["mount"] + (["-t", fstype] if fstype else []) \
        + (["-o", options] if options else []) + [device, mountpoint]
    try:
        os.makedirs(mountpoint, exist_ok=True)
        run(*argv)
    except BaseException:
        detach(device)
        raise
    return lfs


def is_frozen(mountpoint: str) -> bool:
    """A frozen filesystem refuses a second freeze with EBUSY; probe with
    fsfreeze -f and undo at once if it was not frozen. Any other failure
    is an error, not an answer.

    The probe freezes: it runs only on the mount point of a loop device.
    fsfreeze takes any directory and freezes the filesystem holding it, so
    a path left behind by an unmount would freeze (for a moment) the root
    filesystem."""
    source = _mount_sources().get(os.path.realpath(mountpoint))
    if source is None or not source.startswith("/dev/loop"):
        raise AssertionError("refusing to probe %s with fsfreeze: not the "
                             "mount point of a loop device (%s)"
                             % (mountpoint, source or "no mount"))
    res = run("fsfreeze", "-f", mountpoint, check=False)
    if res.returncode == 0:
        run("fsfreeze", "-u", mountpoint)
        return False
    if "busy" in res.stderr.lower():
        return True
    raise AssertionError("fsfreeze -f %s: %s" % (mountpoint, res.stderr))


def thaw(mountpoint: str) -> None:
    """Thawing a filesystem that is not frozen fails harmlessly (EINVAL)."""
    run("fsfreeze", "-u", mountpoint, check=False)


def _retry(argv: Sequence[str], seconds: float = 10.0
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


def _sys_loop(device: str, attr: str) -> str:
    return "/sys/block/%s/loop/%s" % (os.path.basename(device), attr)


def unmount(mountpoint: str) -> List[str]:
    """Thaw and unmount (lazily if it stays busy); returns problems."""
    thaw(mountpoint)
    if not os.path.ismount(mountpoint):
        return []
    res = _retry(["umount", mountpoint])
    if res.returncode == 0:
        return []
    run("umount", "-l", mountpoint, check=False)
    return ["umount %s: %s" % (mountpoint, res.stderr.strip())]


def detach(device: str, seconds: float = 10.0) -> List[str]:
    """losetup -d, then wait until the kernel has let go of the image."""
    res = run("losetup", "-d", device, check=False)
    if res.returncode != 0 and "No such device" not in res.stderr:
        return ["losetup -d %s: %s" % (device, res.stderr.strip())]
    deadline = time.monotonic() + seconds
    while (os.path.exists(_sys_loop(device, "backing_file"))
           and time.monotonic() < deadline):
        time.sleep(0.05)
    return []


def destroy_loopfs(lfs: LoopFS, keep_image: bool = False) -> List[str]:
    """Thaw, unmount, detach, delete; never raises, returns problems."""
    problems = unmount(lfs.mountpoint) + detach(lfs.device)
    if not keep_image:
        try:
            os.unlink(lfs.image)
        except OSError:
            pass
    return problems


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo.
    return os.fsdecode(field.encode("latin-1", "surrogateescape")
                       .decode("unicode_escape").encode("latin-1"))


def _mountinfo() -> List[Tuple[str, str]]:
    """(mount point, source) of every mount, oldest first."""
    found = []
    with open("/proc/self/mountinfo", encoding="latin-1") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            head, rest = fields.split(" "), tail.split(" ")
            if len(head) > 4 and len(rest) > 1:
                found.append((_unescape(head[4]), _unescape(rest[1])))
    return found


def _mount_sources() -> Dict[str, str]:
    """Mount point -> source of the mount on top."""
    return dict(_mountinfo())


def ours_under(base: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Mounts below BASE (newest first) and (loop device, image) pairs
    whose image is below BASE: by path, so other users' loop devices on
    the same machine never count."""
    real = os.path.realpath(base)
    mounts = [point for point, _ in _mountinfo()
              if point == real or point.startswith(real + "/")]
    devices = []
    for dev in sorted(os.listdir("/sys/block")):
        try:
            with open(_sys_loop(dev, "backing_file"), "rb") as f:
                image = os.fsdecode(f.read().rstrip(b"\n"))
        except OSError:
            continue
        if image.startswith(real + "/"):
            devices.append(("/dev/" + dev, image))
    return mounts[::-1], devices


def sweep_under(base: str) -> List[str]:
    """Undo every mount and loop device below BASE; returns problems."""
    mounts, devices = ours_under(base)
    problems: List[str] = []
    for point in mounts:
        # A loop device whose image lives on POINT keeps it busy; its own
        # mount is newer than POINT, so it is already gone.
        for device, image in list(devices):
            if image.startswith(point + "/"):
                problems += detach(device)
                devices.remove((device, image))
        problems += unmount(point)
    for device, _ in devices:
        problems += detach(device)
    return problems
