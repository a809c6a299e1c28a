"""Parse /proc/self/mountinfo (proc(5)) into immutable records.

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)   (4)   (5)      (6)      (7)  (8) (9)    (10)        (11)

The kernel escapes space, tab, newline and backslash in paths and the source
as \\ooo octal, separates fields with single spaces (an empty source shows as
two spaces), and puts any number of optional fields (7) before the "-".
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

from vmsnapshot import logs
from vmsnapshot.frozenrecord import frozen_record

log = logs.get(__name__)

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")

# Filesystem types never frozen, by kind (the kind names the reason).
_KINDS = {
    "pseudo filesystem": (
        "proc sysfs tmpfs devtmpfs devpts cgroup cgroup2 securityfs debugfs "
        "tracefs configfs pstore bpf mqueue hugetlbfs binfmt_misc fusectl "
        "efivarfs rpc_pipefs nsfs ramfs rootfs autofs selinuxfs smackfs "
        "nfsd sockfs pipefs anon_inodefs devfs usbfs cpuset resctrl"),
    "network filesystem": (
        "nfs nfs4 cifs smb3 smbfs 9p virtiofs ceph glusterfs lustre afs "
        "coda ncpfs orangefs gpfs beegfs vboxsf vmhgfs"),
    # fuse.sshfs etc. match by their "fuse" prefix.
    "FUSE filesystem": "fuse fuseblk",
    # Their layers are frozen where they live.
    "stacked filesystem": "overlay aufs unionfs ecryptfs shiftfs",
    "read-only filesystem": "squashfs iso9660 cramfs erofs romfs",
}
_KIND_OF = {fstype: kind for kind, names in _KINDS.items()
            for fstype in names.split()}
SKIPPED_FSTYPES = frozenset(_KIND_OF)
# Where a stat() may hang for ever (dead server, stuck daemon).
REMOTE_KINDS = frozenset(("network filesystem", "FUSE filesystem"))


@frozen_record
class MountInfo:
    """One line of /proc/self/mountinfo, decoded."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: Tuple[str, ...]
    optional: Tuple[str, ...]
    fstype: str
    source: str
    super_options: Tuple[str, ...]

    @property
    def read_only(self) -> bool:
        """Read-only mount, or read-only superblock (mounted rw elsewhere
        is impossible then: the superblock flag wins)."""
        return "ro" in self.options or "ro" in self.super_options

    @property
    def dev(self) -> Tuple[int, int]:
        """The superblock's identity: bind mounts and btrfs subvolume mounts
        of one filesystem share it."""
        return (self.major, self.minor)


def fstype_kind(fstype: str) -> Optional[str]:
    """"pseudo filesystem", "network filesystem", ... for a type that is
    never frozen; None for any other type.  "fuse.sshfs" counts as fuse."""
    return _KIND_OF.get(fstype) or _KIND_OF.get(fstype.split(".", 1)[0])


def unescape(field: str) -> str:
    """Undo the kernel's mangle(): \\ooo -> the character (ASCII only; the
    kernel never escapes anything else, so other sequences stay literal)."""
    def repl(m: "re.Match[str]") -> str:
        value = int(m.group(1), 8)
        return chr(value) if value < 0x80 else m.group(0)
    return _OCTAL.sub(repl, field)


def parse_line(line: str) -> MountInfo:
    """One mountinfo line -> MountInfo; ValueError says what is wrong."""
    fields = line.split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        raise ValueError("no '-' separator after the sixth field") from None
    if len(fields) - sep != 4:
        raise ValueError("expected 3 fields after '-', found %d"
                         % (len(fields) - sep - 1))
    major, colon, minor = fields[2].partition(":")
    if not colon:
        raise ValueError("device %r is not MAJOR:MINOR" % fields[2])
    fstype = fields[sep + 1]
    if not fstype:
        raise ValueError("empty filesystem type")
    return MountInfo(
        mount_id=_number(fields[0]), parent_id=_number(fields[1]),
        major=_number(major), minor=_number(minor),
        root=unescape(fields[3]), mount_point=unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        optional=tuple(f for f in fields[6:sep] if f),
        fstype=fstype, source=unescape(fields[sep + 2]),
        super_options=tuple(fields[sep + 3].split(",")))


def _number(text: str) -> int:
    # int() alone would accept " 7", "+7", "٧" and "1_0".
    if not text.isascii() or not text.isdigit():
        raise ValueError("%r is not a number" % text)
    return int(text)


def parse_mountinfo(text: str) -> List[MountInfo]:
    """Every well-formed line, in order; a malformed line is skipped with a
    warning, so one odd entry never stops discovery."""
    mounts = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            mounts.append(parse_line(line))
        except ValueError as exc:
            log.warning("mountinfo line %d skipped (%s): %r", lineno, exc, line)
    return mounts


def read_mountinfo(path: str = MOUNTINFO) -> List[MountInfo]:
    # surrogateescape keeps non-UTF-8 path bytes round-trippable (os.fsencode).
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def is_under(path: str, mount_point: str) -> bool:
    """path is mount_point or inside it (by path components)."""
    return (path == mount_point or mount_point == "/"
            or path.startswith(mount_point + "/"))


def _ancestors(path: str) -> List[str]:
    """"/a/b/c" -> ["/a/b", "/a", "/"] (without path itself)."""
    out = []
    while "/" in path and path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


def hidden_mounts(mounts: Sequence[MountInfo]) -> Dict[int, str]:
    """mount_id -> mount point of what covers it, for every mount that can no
    longer be reached by path: another mount stacked on the same mount point,
    a sibling mounted later on it or on a directory above it, or a hidden
    ancestor.  Something mounted over "/" is ignored: the process root stays
    on the mount below it until a chroot."""
    by_id = {m.mount_id: m for m in mounts}
    positions = {m.mount_id: pos for pos, m in enumerate(mounts)}
    # children[parent_id][mount_point] -> positions in mounts, in order
    children: Dict[int, Dict[str, List[int]]] = {}
    for pos, m in enumerate(mounts):
        children.setdefault(m.parent_id, {}).setdefault(
            m.mount_point, []).append(pos)

    # mount_id -> (position of the mount covering it, covered path)
    covered: Dict[int, Tuple[int, str]] = {}
    for pos, m in enumerate(mounts):
        if m.mount_point == "/":
            continue
        siblings = children.get(m.parent_id, {})
        on_top = [p for p in children.get(m.mount_id, {}).get(
            m.mount_point, []) if p != pos] + [
            p for p in siblings[m.mount_point] if p > pos]
        if on_top:
            covered[m.mount_id] = (on_top[0], m.mount_point)
            continue
        for above in _ancestors(m.mount_point):
            if above != "/" and above in siblings:
                covered[m.mount_id] = (siblings[above][-1], above)
                break

    def cover(pos: int) -> Optional[str]:
        """Walk up the parents; an ancestor's cover hides us unless the
        cover is the very mount we came up from (stacked mounts)."""
        seen = set()
        came_from = None
        m = mounts[pos]
        while m.mount_id not in seen:
            seen.add(m.mount_id)
            if m.mount_id in covered:
                by, path = covered[m.mount_id]
                if by != came_from:
                    return path
            parent = by_id.get(m.parent_id)
            if parent is None:
                return None
            came_from = positions[m.mount_id]
            m = parent
        return None

    hidden = {}
    for pos, m in enumerate(mounts):
        path = cover(pos)
        if path is not None:
            hidden[m.mount_id] = path
    return hidden
