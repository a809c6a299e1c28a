"""The state file: which superblocks the current run is freezing.

Written to /run/vmsnapshot (tmpfs, never frozen) before the first FIFREEZE
and removed after the thaw. If both the supervisor and its guardian die, it
is what `vmsnapshot thaw --recover` thaws, matched by device id so that a
remount in between cannot make it thaw something else.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

from vmsnapshot.runlock import run_dir


@dataclass(frozen=True)
class FrozenEntry:
    """One mount in the state file: enough to find and thaw it."""

    path: str
    major: int       # superblock identity, as in /proc/self/mountinfo
    minor: int
    fstype: str


def state_path() -> str:
    return os.path.join(run_dir(), "state.json")


def write_state(entries: Sequence[FrozenEntry], pid: int) -> None:
    path = state_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"pid": pid, "mounts": [asdict(e) for e in entries]}, f)
    os.replace(tmp, path)


def read_state() -> Optional[List[FrozenEntry]]:
    """The entries of a state file, None when there is none; an unreadable
    file is treated as empty (its run froze nothing we can identify)."""
    try:
        with open(state_path(), encoding="utf-8") as f:
            data = json.load(f)
        return [FrozenEntry(str(m["path"]), int(m["major"]), int(m["minor"]),
                            str(m["fstype"])) for m in data["mounts"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return []


def clear_state() -> None:
    try:
        os.unlink(state_path())
    except FileNotFoundError:
        pass
