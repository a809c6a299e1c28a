"""Recovery: thaw what a killed run left frozen, from its state file
(`vmsnapshot thaw --recover` calls it under the run lock).

Only a superblock that is still the one the run froze receives a FITHAW:
the recorded mount must still exist with the same id, device, type, root
and mount point, it is opened the way the freeze path opens it (the fd's
mount id is checked, so an over-mounted path never receives the FITHAW),
and the filesystem behind the fd must have the recorded identity (fsid,
root inode, UUID and unique mount id where the kernel tells them). A
device number reused by another filesystem, which may be frozen by
someone else, is never thawed.

Entries whose outcome is final (thawed, was not frozen, gone, another
filesystem now) leave the state file; those that could not be thawed or
reached stay in it, so a later `thaw --recover` can try again.
"""
from __future__ import annotations

import dataclasses
import errno
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

from vmsnapshot.freeze import native
from vmsnapshot.freeze import state
from vmsnapshot.freeze.mountfd import MountChanged, open_mount
from vmsnapshot.mounts import mountinfo

# Outcomes after which an entry is dropped from the state file.
FINAL = ("thawed", "none", "skipped")


@dataclass(frozen=True)
class Recovery:
    path: str
    device: str
    action: str      # thawed | none | skipped | failed | unreachable
    detail: str

    @property
    def keep(self) -> bool:
        """Whether the entry must stay in the state file."""
        return self.action not in FINAL

    def to_json(self) -> Dict[str, object]:
        return {"path": self.path, "device": self.device,
                "action": self.action, "detail": self.detail}


def thaw_decision(err: int) -> str:
    """The action for a FITHAW result: EINVAL means it was not frozen (the
    outcome is final); any other error leaves the record for a retry."""
    if err == 0:
        return "thawed"
    if err == errno.EINVAL:
        return "none"
    return "failed"


def recover_one(entry: state.FrozenEntry,
                mounts: Sequence[mountinfo.MountInfo],
                thaw_fd: Callable[[int], int] = native.thaw_fd
                ) -> Recovery:
    dev = "%d:%d" % (entry.major, entry.minor)

    def result(action: str, detail: str) -> Recovery:
        return Recovery(entry.path, dev, action, detail)

    legacy = entry.mount_id is None
    if legacy:
        # Written by an older version (before an upgrade): only the device
        # and the path were recorded. Matched on them, as that version
        # did, but still opened as that very mount (never over-mounted).
        now = next((m for m in mounts if m.mount_point == entry.path
                    and m.dev == (entry.major, entry.minor)
                    and m.fstype == entry.fstype), None)
        if now is None:
            return result("none", "no longer mounted")
        entry = dataclasses.replace(entry, mount_id=now.mount_id,
                                    root=now.root)
    now = next((m for m in mounts if m.mount_id == entry.mount_id), None)
    if now is None:
        return result("none", "no longer mounted")
    if (now.dev, now.fstype, now.root, now.mount_point) != \
            ((entry.major, entry.minor), entry.fstype, entry.root,
             entry.path):
        return result("skipped", "mount id %d is now another mount (%s %s "
                      "at %s): not the filesystem the run froze"
                      % (entry.mount_id, now.fstype, now.source,
                         now.mount_point))
    assert entry.mount_id is not None
    try:
        fd = open_mount(entry.path, entry.mount_id)
    except MountChanged as e:
        return result("unreachable", "%s; unmount what covers it and run "
                      "'vmsnapshot thaw --recover' again" % e)
    except OSError as e:
        return result("unreachable", "cannot open it: %s" % e.strerror)
    try:
        diff = state.FsIdentity.of_fd(fd).differences(entry.identity)
        if diff:
            return result("skipped", "another filesystem now (%s differ): "
                          "not thawed" % ", ".join(diff))
        err = thaw_fd(fd)
    finally:
        os.close(fd)
    action = thaw_decision(err)
    detail = {"thawed": "thawed", "none": "was not frozen"}.get(
        action, "FITHAW failed: %s" % os.strerror(err))
    if legacy:
        detail += " (recorded by an older version: matched by device and " \
                  "path only)"
    return result(action, detail)


def recover(entries: Sequence[state.FrozenEntry],
            thaw_fd: Callable[[int], int] = native.thaw_fd
            ) -> List[Recovery]:
    """Recover every entry; rewrite the state file with those to keep."""
    mounts = mountinfo.read_mountinfo()
    results = [recover_one(e, mounts, thaw_fd) for e in entries]
    kept = [e for e, r in zip(entries, results) if r.keep]
    if kept:
        state.write_state(kept, os.getpid())
    else:
        state.clear_state()
    return results
