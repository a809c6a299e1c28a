"""Presync: write dirty data back with parallel syncfs() before the freeze,
so the sync inside FIFREEZE (while every writer is blocked) is short.

[freeze] presync = auto (default) syncs only when the kernel holds enough
dirty or writeback data for it to matter; true/false force it.  Each pass
has its own deadline: a device that cannot keep up is left to FIFREEZE,
under the watchdog, instead of stretching the run.  A syncfs still blocked
at the deadline stays in its daemon thread (the kernel cannot abort it) and
closes its own fd when it returns.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

MODES = ("auto", "true", "false")
# Below this much Dirty+Writeback, FIFREEZE's own sync is a few ms even on
# a slow disk (8 MiB at 200 MB/s is 40 ms, spread over the mounts).
AUTO_MIN_BYTES = 8 << 20
# A pass never waits longer than this, nor half the freeze timeout.
MAX_DEADLINE_S = 10.0
MEMINFO = "/proc/meminfo"
SYS_DEV_BLOCK = "/sys/dev/block"


@dataclass(frozen=True)
class PassReport:
    """One presync pass: where in the cycle, whether it ran and why."""

    stage: str                      # "before-pre" | "before-freeze"
    ran: bool
    reason: str                     # why it ran or not
    duration_ms: float = 0.0
    dirty_bytes: Optional[int] = None    # Dirty+Writeback before the pass
    flushed_bytes: Optional[int] = None
    timed_out: Tuple[str, ...] = ()      # mounts still syncing at deadline
    failed: Tuple[str, ...] = ()         # "path: strerror"
    dirty_after: Optional[int] = None    # Dirty+Writeback when it ended

    def to_json(self) -> Dict[str, Any]:
        return {"stage": self.stage, "ran": self.ran, "reason": self.reason,
                "duration_ms": round(self.duration_ms, 3),
                "dirty_bytes": self.dirty_bytes,
                "flushed_bytes": self.flushed_bytes,
                "timed_out": list(self.timed_out),
                "failed": list(self.failed)}


@dataclass(frozen=True)
class PresyncReport:
    """All passes of one run, for the status JSON's freeze.presync."""

    mode: str
    passes: Tuple[PassReport, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        ran = [p for p in self.passes if p.ran]
        flushed = [p.flushed_bytes for p in ran
                   if p.flushed_bytes is not None]
        return {"mode": self.mode, "ran": bool(ran),
                "duration_ms": round(sum(p.duration_ms for p in ran), 3),
                "flushed_bytes": sum(flushed) if flushed else
                (0 if not ran else None),
                "timed_out": any(p.timed_out for p in self.passes),
                "passes": [p.to_json() for p in self.passes]}


def normalize_mode(value: Any) -> Optional[str]:
    """The config value as "auto"/"true"/"false" (TOML booleans accepted),
    or None when it is none of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value in MODES:
        return value
    return None


def dirty_bytes(meminfo: str = MEMINFO) -> Optional[int]:
    """Dirty + Writeback from /proc/meminfo (machine-wide: the kernel keeps
    no per-filesystem count outside debugfs), or None if unreadable."""
    total, found = 0, 0
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Dirty", "Writeback"):
                    total += int(rest.split()[0]) * 1024
                    found += 1
    except (OSError, ValueError, IndexError):
        return None
    return total if found == 2 else None


def _sectors_written(devices: Sequence[Tuple[int, int]]) -> Optional[int]:
    """Sectors written so far to these block devices (field 7 of their
    stat, 512-byte units), or None if one has no stat (btrfs' anonymous
    device, nodev filesystems)."""
    total = 0
    for major, minor in devices:
        try:
            with open("%s/%d:%d/stat" % (SYS_DEV_BLOCK, major, minor),
                      encoding="ascii") as f:
                total += int(f.read().split()[6])
        except (OSError, ValueError, IndexError):
            return None
    return total


def _workers() -> int:
    """As many syncfs at once as the freeze has FIFREEZE workers: the C
    core's cap, chosen by measurement (bench/README.md)."""
    try:
        from vmsnapshot.freeze import native
        return int(native.load().lib.VMS_DEFAULT_THREADS)
    except Exception:   # no native module: the workers report it per mount
        return 1


def deadline_for(freeze_timeout_s: float) -> float:
    return min(MAX_DEADLINE_S, freeze_timeout_s / 2.0)


def decide(mode: str, dirty: Optional[int],
           since: Optional[int] = None) -> Tuple[bool, str]:
    """Whether a pass runs.  DIRTY is Dirty+Writeback now; SINCE, for the
    pass after a first one, what it was when the first one ended: then
    auto looks at what was dirtied in between (the pre-scripts'
    checkpoints), not at what other filesystems hold (issue 15: syncfs on
    a clean filesystem slows the FIFREEZE after it, 5 -> 20-45 ms here)."""
    if mode == "true":
        return True, "presync = true"
    if mode == "false":
        return False, "presync = false"
    if dirty is None:
        return True, "auto: dirty data unknown (%s unreadable)" % MEMINFO
    if since is not None:
        grown = dirty - since
        if grown >= AUTO_MIN_BYTES:
            return True, "auto: %d MiB dirtied since the first pass" % (
                grown >> 20)
        return False, "auto: only %d KiB dirtied since the first pass" % (
            max(0, grown) >> 10)
    if dirty >= AUTO_MIN_BYTES:
        return True, "auto: %d MiB dirty or under writeback" % (dirty >> 20)
    return False, "auto: only %d KiB dirty or under writeback" % (
        dirty >> 10)


class _Job:
    """Mounts to sync, shared by the workers; results under one lock."""

    def __init__(self, items: Sequence[Tuple[str, Optional[int]]]) -> None:
        self.items = list(items)        # (path, fd or None: open it)
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.next = 0
        self.finished = 0
        self.busy: Dict[int, str] = {}  # index -> path, inside syncfs
        self.errors: List[str] = []
        self.cancelled = False          # the deadline passed: start no more

    def take(self) -> Optional[int]:
        with self.lock:
            if self.cancelled or self.next >= len(self.items):
                return None
            i = self.next
            self.next += 1
            self.busy[i] = self.items[i][0]
            return i

    def finish(self, i: int, error: Optional[str]) -> None:
        with self.lock:
            del self.busy[i]
            self.finished += 1
            if error:
                self.errors.append(error)
            self.done.notify_all()


def _worker(job: _Job) -> None:
    from vmsnapshot.freeze import native
    while True:
        i = job.take()
        if i is None:
            return
        path, fd = job.items[i]
        error = None
        own = fd is None
        try:
            if own:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY
                             | os.O_CLOEXEC)
            err = native.syncfs(fd)
            if err:
                error = "%s: %s" % (path, os.strerror(err))
        except OSError as e:
            error = "%s: %s" % (path, e.strerror)
        except Exception as e:  # the native module is missing or broken
            error = "%s: %s" % (path, e)
        finally:
            if own and fd is not None:
                os.close(fd)
        job.finish(i, error)


def sync_pass(stage: str, mode: str,
              items: Sequence[Tuple[str, Optional[int]]],
              devices: Sequence[Tuple[int, int]],
              deadline_s: float, since: Optional[int] = None) -> PassReport:
    """One pass over ITEMS ((path, open fd or None to open the path)):
    decide, then syncfs() them in parallel until done or DEADLINE_S.  An
    fd given is borrowed; the caller may close it after the pass, even
    while a syncfs past the deadline still runs on it (the kernel holds its
    own reference to the file during the call)."""
    dirty = dirty_bytes()
    run, reason = decide(mode, dirty, since)
    if not items:
        run, reason = False, "no filesystem to freeze"
    if not run:
        return PassReport(stage, False, reason, dirty_bytes=dirty)
    devs = sorted(set(devices))
    sectors = _sectors_written(devs)
    job = _Job(items)
    start = time.monotonic()
    for _ in range(min(_workers(), len(job.items))):
        threading.Thread(target=_worker, args=(job,), daemon=True,
                         name="presync").start()
    with job.lock:
        job.done.wait_for(lambda: job.finished == len(job.items),
                          timeout=deadline_s)
        job.cancelled = True
        stuck = tuple(sorted(job.busy.values())) + tuple(
            p for p, _ in job.items[job.next:])
        errors = tuple(job.errors)
    duration_ms = (time.monotonic() - start) * 1000.0
    after = _sectors_written(devs) if sectors is not None else None
    now = dirty_bytes()
    if sectors is not None and after is not None:
        flushed: Optional[int] = max(0, after - sectors) * 512
    else:
        flushed = (None if dirty is None or now is None
                   else max(0, dirty - now))
    if stuck:
        log.warning("presync %s: still syncing after %.1fs, left to the "
                    "freeze: %s", stage, deadline_s, ", ".join(stuck))
    for e in errors:
        log.warning("presync %s: %s", stage, e)
    return PassReport(stage, True, reason, duration_ms, dirty, flushed,
                      stuck, errors, now)


def before_pre(mode: str, decisions: Sequence[Any], enabled: bool,
               freeze_timeout_s: float, scripts: bool = True) -> PassReport:
    """The first pass, while applications still run: the bulk of the dirty
    data goes to disk before anything is quiesced, so it costs them
    nothing.  Without pre-scripts nothing is quiesced: the pass right
    before the freeze alone does the job, once."""
    if not scripts:
        return PassReport("before-pre", False, "no pre-script: one pass, "
                          "right before the freeze")
    chosen = [d.info for d in decisions if d.freeze] if enabled else []
    return sync_pass("before-pre", mode,
                     [(i.mount_point, None) for i in chosen],
                     [(i.major, i.minor) for i in chosen],
                     deadline_for(freeze_timeout_s))


def before_freeze(mode: str, first: Optional[PassReport],
                  items: Sequence[Tuple[str, Optional[int]]],
                  devices: Sequence[Tuple[int, int]],
                  freeze_timeout_s: float) -> PassReport:
    """The pass right before FIFREEZE, for what the pre-scripts dirtied
    (a database checkpoint): FIFREEZE would write it anyway, with every
    writer blocked.  None after a first pass that hit its deadline: the
    device is that slow, and a second pass would wait on the same
    writeback with applications quiesced."""
    if first is not None and first.timed_out:
        return PassReport("before-freeze", False,
                          "the first pass did not finish in time",
                          dirty_bytes=dirty_bytes())
    since = first.dirty_after if first is not None and first.ran else None
    return sync_pass("before-freeze", mode, items, devices,
                     deadline_for(freeze_timeout_s), since)
