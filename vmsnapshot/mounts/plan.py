"""Which mounts a run freezes, and why the others are left alone.

Rules (design.md, "Freezing rules"), first match wins per mount:

1. pseudo, network, FUSE, stacked or read-only-by-design filesystem types.
   A type not known either way is frozen only if its superblock sits on a
   block device (sysfs knows its MAJ:MIN, or the source is a block device):
   that catches zfs-like and future pseudo filesystems, whose FIFREEZE
   would fail or be meaningless.
2. over-mounted: nothing can open it by path.
3. read-only (the mount or its superblock): nothing to flush.
4. excluded by a glob (fnmatch on the mount point, case-sensitive; "*" also
   matches "/").  Excluding applies to that mount only: a superblock is
   still frozen through another, non-excluded mount of it.
5. not selected: with explicit --mount paths, only those; otherwise, with
   include globs, only the matching mounts; otherwise every mount.
6. one freeze per superblock: bind mounts and btrfs subvolumes share one;
   the selected (else shortest) mount point freezes it, the others say
   "same superblock as X".  Any wanted mount of a superblock freezes it.
"""
from __future__ import annotations

import fnmatch
import os
import stat
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.errors import Catalogue, FreezeError
from vmsnapshot.mounts.mountinfo import (SKIPPED_FSTYPES, MountInfo, fstype_kind,
                                  hidden_mounts)
from vmsnapshot.mounts.waves import assign_waves

__all__ = ["SKIPPED_FSTYPES", "MountDecision", "plan", "to_json",
           "format_table", "fstype_reason", "printable"]

# Disk filesystems that support FIFREEZE; frozen without the block device
# check (the root's source is often a nonexistent "/dev/root", and btrfs
# reports an anonymous 0:N device).
DISK_FSTYPES = frozenset("ext2 ext3 ext4 xfs btrfs f2fs jfs reiserfs nilfs2 "
                         "bcachefs".split())


@frozen_record
class MountDecision:
    """Whether one mount is frozen, why not, and in which wave."""

    info: MountInfo
    freeze: bool
    reason: Optional[str]   # why not frozen (None when frozen)
    wave: Optional[int]     # freeze wave, 0 first; None when not frozen

    @property
    def path(self) -> str:
        return self.info.mount_point


def fstype_reason(info: MountInfo, sysfs: str = "/sys") -> Optional[str]:
    """Why this filesystem type is never frozen, or None."""
    fstype = info.fstype
    kind = fstype_kind(fstype)
    if kind:
        return "%s (%s)" % (kind, fstype)
    if fstype in DISK_FSTYPES or _block_backed(info, sysfs):
        return None
    return "no block device (%s on '%s')" % (fstype, info.source)


def _block_backed(info: MountInfo, sysfs: str) -> bool:
    if os.path.exists(os.path.join(sysfs, "dev", "block",
                                   "%d:%d" % info.dev)):
        return True
    try:
        return (info.source.startswith("/dev/")
                and stat.S_ISBLK(os.stat(info.source).st_mode))
    except OSError:
        return False


def _mount_points(mounts: Sequence[MountInfo], hidden: Dict[int, str],
                  selected: Sequence[str]) -> Set[str]:
    """Resolve --mount paths to visible mount points, or raise."""
    visible = {m.mount_point for m in mounts if m.mount_id not in hidden}
    points = set()
    for path in selected:
        real = os.path.realpath(path)
        if real not in visible:
            what = ("does not exist" if not os.path.lexists(path)
                    else "is not a mount point")
            if real != path:
                what += " (resolved to %s)" % real
            raise FreezeError(
                "--mount %s: %s; give the directory a filesystem is mounted "
                "on (see 'vmsnapshot mounts')" % (path, what),
                Catalogue.UNABLE_TO_OPEN_MOUNT)
        points.add(real)
    return points


def _first_glob(path: str, globs: Sequence[str]) -> Optional[str]:
    for glob in globs:
        if fnmatch.fnmatchcase(path, glob):
            return glob
    return None


def _chosen(path: str, points: Set[str], include: Sequence[str]) -> bool:
    if points:                   # --mount wins over configured globs
        return path in points
    return not include or _first_glob(path, include) is not None


def plan(mounts: Sequence[MountInfo], selected: Sequence[str] = (),
         include: Sequence[str] = (), exclude: Sequence[str] = (),
         sysfs: str = "/sys") -> List[MountDecision]:
    """One decision per mount, in mountinfo order (rules in the module doc).
    Raises FreezeError (UnableToOpenMount) for a --mount path that is not
    a mount point."""
    hidden = hidden_mounts(mounts)
    points = _mount_points(mounts, hidden, selected)
    # Indexed by position: mount ids are unique in a real mountinfo, but
    # this must not depend on it.
    reasons: List[Optional[str]] = []
    for m in mounts:
        glob = _first_glob(m.mount_point, exclude)
        reason = fstype_reason(m, sysfs)
        if reason is None and m.mount_id in hidden:
            reason = "over-mounted"
            if hidden[m.mount_id] != m.mount_point:
                reason += " (under %s)" % hidden[m.mount_id]
        if reason is None and m.read_only:
            reason = "read-only"
        if reason is None and glob is not None:
            reason = "excluded by '%s'" % glob
        if reason is None and not _chosen(m.mount_point, points, include):
            reason = "not selected"
        reasons.append(reason)

    _dedupe(mounts, reasons, points)
    frozen = [m for m, r in zip(mounts, reasons) if r is None]
    waves = assign_waves(frozen, mounts, sysfs)
    return [MountDecision(m, r is None, r,
                          waves.get(m.mount_id) if r is None else None)
            for m, r in zip(mounts, reasons)]


def _dedupe(mounts: Sequence[MountInfo], reasons: List[Optional[str]],
            points: Set[str]) -> None:
    """Keep one freezer per superblock among the eligible mounts (wanted,
    or eligible but not selected); mark the rest "same superblock as X"."""
    groups: Dict[Tuple[int, int], List[int]] = {}
    for pos, m in enumerate(mounts):
        if reasons[pos] in (None, "not selected"):
            groups.setdefault(m.dev, []).append(pos)
    for group in groups.values():
        wanted = [p for p in group if reasons[p] is None]
        if not wanted:
            continue
        best = [p for p in wanted if mounts[p].mount_point in points] or wanted
        keeper = min(best, key=lambda p: (len(mounts[p].mount_point),
                                          mounts[p].mount_point, p))
        for p in group:
            reasons[p] = (None if p == keeper else "same superblock as %s"
                          % mounts[keeper].mount_point)


def to_json(decisions: Sequence[MountDecision]) -> List[Dict[str, Any]]:
    return [{"path": d.info.mount_point, "fstype": d.info.fstype,
             "source": d.info.source, "device": "%d:%d" % d.info.dev,
             "freeze": d.freeze, "reason": d.reason, "wave": d.wave}
            for d in decisions]


def format_table(decisions: Sequence[MountDecision]) -> str:
    """A fixed-width table, one row per mount, for people."""
    head = ("PATH", "FSTYPE", "SOURCE", "DEVICE", "FREEZE", "WAVE", "REASON")
    rows = [head] + [
        (printable(d.info.mount_point), d.info.fstype,
         printable(d.info.source) or "-", "%d:%d" % d.info.dev,
         "yes" if d.freeze else "no",
         "-" if d.wave is None else str(d.wave),
         printable(d.reason or "", escape=""))
        for d in decisions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    return "".join(
        ("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        .rstrip() + "\n" for r in rows)


def printable(text: str, escape: str = " \t\n\\") -> str:
    """Escape as mountinfo does (space, tab, newline, backslash) plus
    anything unprintable, so a row stays one aligned line and undecodable
    path bytes (surrogateescape) cannot break the console encoding."""
    out = []
    for c in text:
        code = ord(c)
        if 0xDC80 <= code <= 0xDCFF:
            code -= 0xDC00   # the original byte
        if c in escape or not c.isprintable():
            out.append("\\%03o" % code if code < 0x100 else "\\u%04x" % code)
        else:
            out.append(c)
    return "".join(out)
