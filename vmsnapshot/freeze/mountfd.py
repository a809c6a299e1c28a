"""Opening a mount point as the mount it was found to be.

The freeze path and `thaw --recover` open mounts the same way: a path may
since have been unmounted (the open then lands on the directory underneath,
another filesystem) or over-mounted (it lands on the new mount); either way
the fd's mount id is not the one expected, and the fd is refused.
"""
from __future__ import annotations

import os
from typing import Optional


class MountChanged(OSError):
    """The path is no longer the expected mount."""


def mount_id_of(fd: int) -> Optional[int]:
    with open("/proc/self/fdinfo/%d" % fd, encoding="ascii") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    return None


def open_mount(path: str, mount_id: int) -> int:
    """An O_RDONLY|O_DIRECTORY fd on path, which must be mount mount_id;
    OSError if it cannot be opened, MountChanged if it is another mount.
    Opening a path on a frozen filesystem does not block (no write)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        found = mount_id_of(fd)
    except BaseException:
        os.close(fd)
        raise
    if found != mount_id:
        os.close(fd)
        raise MountChanged("%s is no longer the mount that was recorded "
                           "(unmounted or over-mounted since: mount id %s, "
                           "expected %d)" % (path, found, mount_id))
    return fd
