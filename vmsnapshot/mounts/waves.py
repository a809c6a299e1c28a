"""Freeze waves from block-device dependencies read in sysfs.

A filesystem A on /dev/loopN whose backing file lives on filesystem B must
be frozen before B: freezing A syncs A, and that writes into the image on
B, which blocks for ever once B is frozen.  Device-mapper and md devices
lead, through /sys/block/X/slaves/, to the devices under them, so a
filesystem on dm-0 over loop0 depends on B in the same way, and so does a
filesystem whose image lives on an unfrozen filesystem C that itself lives
on an image on B.

Wave 0 freezes first and thaws last.  Each mount goes as early as its
dependencies allow; "/" goes in the last wave (the supervisor's own files
and most images live there).
"""
from __future__ import annotations

import glob
import graphlib
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from vmsnapshot import logs
from vmsnapshot.mounts.mountinfo import (REMOTE_KINDS, MountInfo, fstype_kind,
                                  hidden_mounts, is_under)

log = logs.get(__name__)

Dev = Tuple[int, int]
_DELETED = " (deleted)"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def _block_dir(sysfs: str, name: str) -> Optional[str]:
    """The sysfs directory of block device NAME (a disk, not a partition)."""
    for candidate in (os.path.join(sysfs, "class", "block", name),
                      os.path.join(sysfs, "block", name)):
        if os.path.isdir(candidate):
            path = os.path.realpath(candidate)
            if os.path.exists(os.path.join(path, "partition")):
                path = os.path.dirname(path)  # loop0p1 -> loop0
            return path
    return None


def device_names(info: MountInfo, sysfs: str = "/sys") -> List[str]:
    """Block devices a mount's filesystem sits on directly: the device of
    its MAJ:MIN, its source, and for btrfs every member device."""
    names = []
    link = os.path.join(sysfs, "dev", "block", "%d:%d" % info.dev)
    if os.path.exists(link):
        names.append(os.path.basename(os.path.realpath(link)))
    if info.source.startswith("/dev/"):
        # /dev/mapper/vg-lv -> dm-3; btrfs reports an anonymous 0:N dev,
        # so for it the source is the only way in.
        names.append(os.path.basename(os.path.realpath(info.source)))
    if info.fstype == "btrfs":
        for members in sorted(glob.glob(os.path.join(
                glob.escape(sysfs), "fs", "btrfs", "*", "devices"))):
            try:
                found = sorted(os.listdir(members))
            except OSError:
                continue
            if any(n in found for n in names):
                names.extend(found)
    return list(dict.fromkeys(names))


def backing_files(info: MountInfo, sysfs: str = "/sys") -> List[str]:
    """Loop backing files under a mount's filesystem, through any stack of
    dm/md devices (slaves) and partitions."""
    files: List[str] = []
    seen: Set[str] = set()
    todo = device_names(info, sysfs)
    while todo:
        path = _block_dir(sysfs, todo.pop(0))
        if path is None or path in seen:
            continue
        seen.add(path)
        backing = _read(os.path.join(path, "loop", "backing_file"))
        if backing:
            if backing.endswith(_DELETED):
                backing = backing[:-len(_DELETED)]
            files.append(backing)
        try:
            todo.extend(sorted(os.listdir(os.path.join(path, "slaves"))))
        except OSError:
            pass
    return files


class _Holders:
    """Which superblock holds a file, and which superblocks hold the images
    a superblock lives on (memoised: chains revisit the same devices)."""

    def __init__(self, mounts: Sequence[MountInfo], sysfs: str):
        self.sysfs = sysfs
        hidden = hidden_mounts(mounts)
        self.visible = [m for m in mounts if m.mount_id not in hidden]
        self.by_dev: Dict[Dev, MountInfo] = {}
        for m in self.visible + list(mounts):
            self.by_dev.setdefault(m.dev, m)
        self.cache: Dict[Dev, Set[Dev]] = {}

    def of_file(self, path: str) -> Optional[Dev]:
        """The superblock holding PATH: by st_dev when it names a mounted
        superblock, else (btrfs subvolumes have their own st_dev; deleted
        files) the deepest visible mount whose mount point contains it."""
        by_path = max((m for m in self.visible
                       if is_under(path, m.mount_point)),
                      key=lambda m: len(m.mount_point), default=None)
        # A dead NFS server or FUSE daemon would hang stat() for ever.
        if by_path is None or fstype_kind(by_path.fstype) not in REMOTE_KINDS:
            try:
                st = os.stat(path)
            except OSError:
                pass
            else:
                dev = (os.major(st.st_dev), os.minor(st.st_dev))
                if dev in self.by_dev:
                    return dev
        return by_path.dev if by_path else None

    def of_dev(self, dev: Dev) -> Set[Dev]:
        if dev not in self.cache:
            self.cache[dev] = set()
            info = self.by_dev.get(dev)
            if info is not None:
                for path in backing_files(info, self.sysfs):
                    holder = self.of_file(path)
                    if holder is not None:
                        self.cache[dev].add(holder)
        return self.cache[dev]


def dependencies(frozen: Sequence[MountInfo], mounts: Sequence[MountInfo],
                 sysfs: str = "/sys") -> Dict[int, Set[int]]:
    """mount_id of each frozen mount -> mount_ids of the frozen mounts that
    must be frozen after it (they hold, directly or through unfrozen
    filesystems, an image it lives on)."""
    frozen_by_dev: Dict[Dev, List[int]] = {}
    for m in frozen:
        frozen_by_dev.setdefault(m.dev, []).append(m.mount_id)
    known = {m.mount_id for m in mounts}
    holders = _Holders(list(mounts) + [m for m in frozen
                                       if m.mount_id not in known], sysfs)
    deps: Dict[int, Set[int]] = {}
    for m in frozen:
        reached: Set[Dev] = set()
        todo = list(holders.of_dev(m.dev))
        while todo:
            dev = todo.pop()
            if dev in reached:
                continue
            reached.add(dev)
            if dev not in frozen_by_dev:
                todo.extend(holders.of_dev(dev))
        if m.dev in reached:
            log.warning("%s lives on an image inside itself; ignoring that "
                        "dependency", m.mount_point)
            reached.discard(m.dev)
        deps[m.mount_id] = {i for dev in reached
                            for i in frozen_by_dev.get(dev, ())}
    return deps


def waves_from_dependencies(frozen: Sequence[MountInfo],
                            deps: Mapping[int, Iterable[int]]
                            ) -> Dict[int, int]:
    """mount_id -> wave, given deps (mount -> mounts frozen after it)."""
    by_id = {m.mount_id: m for m in frozen}
    before: Dict[int, Set[int]] = {i: set() for i in by_id}
    for i, later in deps.items():
        for j in later:
            if i in by_id and j in by_id and i != j:
                before[j].add(i)
    order = _topological(frozen, before)
    wave: Dict[int, int] = {}

    def place(i: int) -> None:
        wave[i] = max([wave.get(i, 0)] + [wave[p] + 1 for p in before[i]])

    for i in order:
        place(i)
    root = next((m.mount_id for m in frozen if m.mount_point == "/"), None)
    if root is not None:
        # After everything not bound to come after it (only what holds the
        # root's own image, root on a loop device, follows it): the root
        # carries the system's logs and spools, so it is frozen for the
        # shortest time, once every other filesystem already is.
        after = _reachable(root, before)
        wave[root] = max([wave[root]] + [w + 1 for i, w in wave.items()
                                         if i not in after and i != root])
        for i in order[order.index(root) + 1:]:
            place(i)
    return wave


def _reachable(start: int, before: Mapping[int, Set[int]]) -> Set[int]:
    """Everything that must be frozen after start."""
    later: Dict[int, Set[int]] = {i: set() for i in before}
    for j, preds in before.items():
        for i in preds:
            later[i].add(j)
    seen: Set[int] = set()
    todo = list(later[start])
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(later[i])
    return seen


def _topological(frozen: Sequence[MountInfo],
                 before: Dict[int, Set[int]]) -> List[int]:
    """graphlib's order, ties in mountinfo order.  A cycle (impossible with
    real devices, but sysfs may be odd) is broken at its alphabetically
    first mount point, whose constraints inside the cycle are dropped from
    before[]."""
    path = {m.mount_id: m.mount_point for m in frozen}
    index = {m.mount_id: n for n, m in enumerate(frozen)}
    while True:
        sorter = graphlib.TopologicalSorter(before)
        try:
            sorter.prepare()
        except graphlib.CycleError as e:
            cycle = set(e.args[1])
            victim = min(cycle, key=lambda i: path[i])
            log.warning("freeze order: dependency cycle among %s; freezing "
                        "%s without waiting for %s",
                        ", ".join(sorted(path[i] for i in cycle)),
                        path[victim],
                        ", ".join(sorted(path[i] for i in before[victim]
                                         & cycle)))
            before[victim] -= cycle
            continue
        order: List[int] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=index.__getitem__)
            order += ready
            sorter.done(*ready)
        return order


def assign_waves(frozen: Sequence[MountInfo], mounts: Sequence[MountInfo],
                 sysfs: str = "/sys") -> Dict[int, int]:
    """mount_id -> wave (0 first) for every mount in frozen."""
    if not frozen:
        return {}
    return waves_from_dependencies(frozen, dependencies(frozen, mounts, sysfs))
