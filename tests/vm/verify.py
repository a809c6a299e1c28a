"""Checks of a guest snapshot on the host, read-only throughout.

A disk's snapshot is a qcow2 whose chain ends in the base image; it is
converted to a raw file (qemu-img -U: QEMU still holds it as a backing
file), then:

- ext4 (root): dumpe2fs must not show needs_recovery (the journal was
  clean when frozen), e2fsck -fn must pass, files are read with debugfs:
  no mount, no loop device.
- xfs (data): the log may hold only the freeze's covering records (see
  xfs_log_leftovers), xfs_repair -n must find nothing else, and the file
  system must mount ro,norecovery (the only loop device is one this module
  attaches read-only and always detaches).

Nothing on the host is ever frozen.
"""
from __future__ import annotations

import re
import subprocess
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import loopfs


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, errors="replace", timeout=300)
    if check and res.returncode != 0:
        raise AssertionError("%s: exit %d\n%s\n%s" % (" ".join(argv), res.returncode,
                                                      res.stdout[-3000:], res.stderr[-3000:]))
    return res


def to_raw(qcow2: str, out: str) -> str:
    _run(["qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O", "raw", qcow2, out])
    return out


# ---------------------------------------------------------------- ext4

def ext4_features(raw: str) -> List[str]:
    out = _run(["dumpe2fs", "-h", raw]).stdout
    m = re.search(r"^Filesystem features:\s*(.*)$", out, re.M)
    assert m, "no feature line in dumpe2fs -h %s" % raw
    return m.group(1).split()


def check_ext4_clean(raw: str) -> None:
    """Clean without journal replay: the snapshot was taken frozen."""
    features = ext4_features(raw)
    assert "needs_recovery" not in features, \
        "ext4 snapshot needs journal recovery: %s" % " ".join(features)
    res = _run(["e2fsck", "-f", "-n", raw], check=False)
    assert res.returncode == 0, "e2fsck -fn: exit %d\n%s\n%s" % (
        res.returncode, res.stdout[-3000:], res.stderr[-3000:])


def ext4_read(raw: str, path: str) -> Optional[str]:
    """A file's content, None when it does not exist."""
    res = _run(["debugfs", "-R", "cat %s" % path, raw], check=False)
    if "not found by ext2_lookup" in res.stderr or "File not found" in res.stderr:
        return None
    assert res.returncode == 0, res.stderr
    return res.stdout


# ---------------------------------------------------------------- xfs

def xfs_log_leftovers(raw: str) -> List[str]:
    """What log recovery would replay, minus the freeze's own records.

    Freezing xfs (6.1) forces the log, writes back everything, then
    "covers" the log with two superblock-only transactions (xfs_log_cover),
    so a frozen snapshot's log is not empty but holds nothing a
    norecovery mount misses.  Anything else is a real leftover."""
    out = _run(["xfs_logprint", "-t", raw]).stdout
    if "state: <CLEAN>" in out:
        return []
    items = [i for i in re.findall(r"^([A-Z]+): ", out, re.M) if i != "TRANS"]
    leftovers = [i for i in items if i != "BUF"]
    bufs, supers = items.count("BUF"), out.count("SUPER Block Buffer")
    return leftovers + ["BUF (not the superblock)"] * (bufs - supers)


# Expected from xfs_repair -n when the log holds the covering records: it
# ignores them, so it warns, and the lazy superblock counters (logged, not
# written in place) look stale.
_XFS_REPAIR_EXPECTED = re.compile(
    r"^(ALERT: The filesystem has valuable metadata changes in a log.*"
    r"|ignored because the -n option was used.*|which may be resolved by.*"
    r"|sb_(fdblocks|icount|ifree|frextents) \d+, counted \d+)$")


def check_xfs_clean(raw: str) -> None:
    """Nothing to replay but the freeze's covering records, and xfs_repair
    -n finds nothing beyond what ignoring those records explains."""
    leftovers = xfs_log_leftovers(raw)
    assert not leftovers, "xfs snapshot log holds %s: it needs recovery" % leftovers
    res = _run(["xfs_repair", "-n", "-f", raw], check=False)
    text = res.stdout + res.stderr
    findings = [line for line in text.splitlines() if line and not line[0].isspace()
                and not line.startswith(("Phase ", "No modify flag", "Cannot get host",
                                         "Repair may fail", "the image and the host"))
                and not _XFS_REPAIR_EXPECTED.match(line)]
    assert res.returncode in (0, 1) and not findings, \
        "xfs_repair -n: exit %d, findings %s\n%s" % (res.returncode, findings, text[-3000:])


@contextmanager
def xfs_mounted(raw: str, mountpoint: str) -> Iterator[str]:
    """raw mounted read-only without log recovery; nouuid because every
    snapshot of the disk has the same UUID."""
    lfs = loopfs.mount_image(raw, mountpoint, "ro,norecovery,nouuid", "xfs")
    try:
        yield mountpoint
    finally:
        problems = loopfs.destroy_loopfs(lfs, keep_image=True)
        assert not problems, problems


# ---------------------------------------------------------------- records

@dataclass(frozen=True)
class Records:
    count: int
    last: str          # payload of the last record
    checkpoints: List[str]


def check_records(data: bytes) -> Records:
    """Every record whole, checksummed and in sequence (the format of
    guest/recwriter.py)."""
    assert data, "no records"
    assert data.endswith(b"\n"), "the last record is torn: %r" % data[-80:]
    checkpoints = []
    payload = ""
    lines = data.decode().splitlines()
    for i, line in enumerate(lines, 1):
        body, _, crc = line.rpartition(" ")
        assert "%08x" % zlib.crc32(body.encode()) == crc, "bad record %d: %r" % (i, line)
        seq, _, payload = body.partition(" ")
        assert int(seq) == i, "record %d has sequence %s" % (i, seq)
        if payload.startswith("CHECKPOINT "):
            checkpoints.append(payload.split()[1])
    return Records(len(lines), payload, checkpoints)
