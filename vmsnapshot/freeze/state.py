"""The state file: which superblocks the current run is freezing.

Written to /run/vmsnapshot (tmpfs, never frozen) before the first FIFREEZE
and removed once nothing of the run can be left frozen. If both the
supervisor and its guardian die, it is what `vmsnapshot thaw --recover`
thaws. Each entry records enough identity to tell the mount the run froze
from a later one: the device number alone is not enough (loop and dm
numbers are reused), nor the path (it may be over-mounted), nor the mount
id (ids are reused too). See freeze/recover.py for how they are checked.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import List, Optional, Sequence

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.freeze import native
from vmsnapshot.atomicfile import write_atomic
from vmsnapshot.rundir import run_dir


@frozen_record
class FsIdentity:
    """What an open fd on a mount root says about its mount and filesystem
    (0 / "" where the kernel or filesystem does not tell)."""

    fsid: int             # statfs f_fsid
    root_ino: int         # inode number of the mount's root
    mnt_id_unique: int    # statx STATX_MNT_ID_UNIQUE, never reused
    uuid: str             # FS_IOC_GETFSUUID, hex

    @classmethod
    def of_fd(cls, fd: int) -> "FsIdentity":
        unique, uuid = native.identity(fd)
        return cls(os.fstatvfs(fd).f_fsid, os.fstat(fd).st_ino, unique,
                   uuid)

    def differences(self, other: "FsIdentity") -> List[str]:
        """What differs, ignoring fields either side does not know."""
        pairs = (("filesystem id", self.fsid, other.fsid),
                 ("root inode", self.root_ino, other.root_ino),
                 ("unique mount id", self.mnt_id_unique,
                  other.mnt_id_unique),
                 ("UUID", self.uuid, other.uuid))
        return [name for name, a, b in pairs if a and b and a != b]


@frozen_record
class FrozenEntry:
    """One mount in the state file: enough to find and thaw it."""

    path: str
    major: int       # superblock identity, as in /proc/self/mountinfo
    minor: int
    fstype: str
    # Mount identity; None / zero in a file written by an older version.
    mount_id: Optional[int] = None
    root: str = ""   # the mount's root within the filesystem
    fsid: int = 0
    root_ino: int = 0
    mnt_id_unique: int = 0
    uuid: str = ""

    @property
    def identity(self) -> FsIdentity:
        return FsIdentity(self.fsid, self.root_ino, self.mnt_id_unique,
                          self.uuid)


def entry_for(path: str, fd: int, info) -> FrozenEntry:
    """The entry of a mount about to be frozen: info is its MountInfo, fd
    an open fd on it (opened with mountfd.open_mount)."""
    ident = FsIdentity.of_fd(fd)
    return FrozenEntry(path, info.major, info.minor, info.fstype,
                       info.mount_id, info.root, ident.fsid, ident.root_ino,
                       ident.mnt_id_unique, ident.uuid)


def state_path() -> str:
    return os.path.join(run_dir(), "state.json")


def write_state(entries: Sequence[FrozenEntry], pid: int) -> None:
    path = state_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # 600: it names mount points and identities; nobody else's business.
    write_atomic(path, json.dumps(
        {"pid": pid, "mounts": [asdict(e) for e in entries]}))


def _entry(m: dict) -> FrozenEntry:
    mount_id = m.get("mount_id")
    return FrozenEntry(str(m["path"]), int(m["major"]), int(m["minor"]),
                       str(m["fstype"]),
                       None if mount_id is None else int(mount_id),
                       str(m.get("root", "")), int(m.get("fsid", 0)),
                       int(m.get("root_ino", 0)),
                       int(m.get("mnt_id_unique", 0)),
                       str(m.get("uuid", "")))


def read_state() -> Optional[List[FrozenEntry]]:
    """The entries of a state file, None when there is none; an unreadable
    file is treated as empty (its run froze nothing we can identify)."""
    try:
        with open(state_path(), encoding="utf-8") as f:
            data = json.load(f)
        return [_entry(m) for m in data["mounts"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def clear_state() -> None:
    try:
        os.unlink(state_path())
    except FileNotFoundError:
        pass
