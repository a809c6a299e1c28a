"""Presync: write dirty data back with parallel syncfs() before the freeze,
so the sync inside FIFREEZE (while every writer is blocked) is short.

[freeze] presync = auto (default) syncs only the filesystems that hold
enough dirty data for it to matter (vmsnapshot.freeze.dirty says how it
is estimated per mount); true/false force every filesystem.  Each pass
has its own deadline: a device that cannot keep up is left to FIFREEZE,
under the watchdog, instead of stretching the run.  A syncfs still blocked
at the deadline stays in its daemon thread (the kernel cannot abort it) and
closes its own fd when it returns.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vmsnapshot import logs
from vmsnapshot.frozenrecord import frozen_record


log = logs.get(__name__)

MODES = ("auto", "true", "false")
# Below this much Dirty+Writeback machine-wide, FIFREEZE's own sync is a
# few ms even on a slow disk (8 MiB at 200 MB/s is 40 ms, spread over the
# mounts): no pass, and no per-mount counter read.
AUTO_MIN_BYTES = 8 << 20
# What no per-mount counter places (xfs, overwrites, writeback) may sit on
# any mount: from this much on, every mount is synced.  Twice the machine
# bound: such data is rarely on one mount only, and a lower bound synced
# every clean filesystem of the bench's D=0 case (8 writers each
# rewriting 1 MiB in place: 8 MiB unplaced, none of it worth a syncfs).
UNPLACED_MIN_BYTES = 16 << 20
# A mount whose own counter shows less is left to FIFREEZE: its sync is
# ~20 ms at 200 MB/s, less than what a syncfs costs the writers of a
# clean filesystem (a journal commit that waits for their pages).
MOUNT_MIN_BYTES = 4 << 20
# A pass never waits longer than this, nor half the freeze timeout.
MAX_DEADLINE_S = 10.0
# When the C core cannot tell its cap (no native module: the freeze fails
# anyway, each worker reports it).
DEFAULT_WORKERS = 64
MEMINFO = "/proc/meminfo"
# vmsnapshot.freeze.dirty and .syncfs load only when a pass may run: a
# run on clean filesystems does not pay for their import (issue 15).


@frozen_record
class MountChoice:
    """One mount in an auto pass: its own counter and whether it synced."""

    mount_point: str
    synced: bool
    dirty_bytes: Optional[int]      # None: no per-filesystem counter
    counter: str = ""

    def to_json(self) -> Dict[str, Any]:
        return {"mount_point": self.mount_point, "synced": self.synced,
                "dirty_bytes": self.dirty_bytes,
                "counter": self.counter or None}


@frozen_record
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
    mounts: Tuple[MountChoice, ...] = ()  # auto's per-mount decision
    unplaced_bytes: Optional[int] = None  # dirty no mount counter places

    def to_json(self) -> Dict[str, Any]:
        out = {"stage": self.stage, "ran": self.ran, "reason": self.reason,
               "duration_ms": round(self.duration_ms, 3),
               "dirty_bytes": self.dirty_bytes,
               "flushed_bytes": self.flushed_bytes,
               "timed_out": list(self.timed_out),
               "failed": list(self.failed)}
        if self.mounts:
            out["mounts"] = [m.to_json() for m in self.mounts]
            out["unplaced_bytes"] = self.unplaced_bytes
        return out


@frozen_record
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
    """Dirty + Writeback from /proc/meminfo (machine-wide), or None if
    unreadable."""
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


def _workers() -> int:
    """As many syncfs at once as the freeze has FIFREEZE workers: the C
    core's cap, chosen by measurement (bench/README.md)."""
    try:
        from vmsnapshot.freeze import native
        return int(native.load().lib.VMS_DEFAULT_THREADS)
    except Exception:
        return DEFAULT_WORKERS


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


def _choose(mode: str, items: Sequence[Tuple[str, Optional[int]]],
            devices: Sequence[Tuple[int, int]], now: Optional[int],
            since: Optional[int]
            ) -> Tuple[List[int], str, Tuple[MountChoice, ...],
                       Optional[int]]:
    """Which ITEMS a pass syncs (indexes), why, auto's per-mount view and
    the unplaced bytes.  Auto syncs a mount whose own counter shows
    MOUNT_MIN_BYTES, and every mount when what no counter places (xfs,
    overwrites, writeback) reaches UNPLACED_MIN_BYTES: a clean filesystem
    does not pay for another one's dirty data (issue 15)."""
    run, reason = decide(mode, now, since)
    if not items:
        return [], "no filesystem to freeze", (), None
    if not run:
        return [], reason, (), None
    if mode != "auto" or now is None:
        return list(range(len(items))), reason, (), None
    from vmsnapshot.freeze import dirty as kdirty
    est = [kdirty.mount_estimate(path, fd, dev) for (path, fd), dev in
           zip(items, list(devices) + [(0, 0)] * len(items))]
    own = {e.key: e.bytes for e in est if e.key and e.bytes is not None}
    unplaced = max(0, now - kdirty.machine_placed(own))
    if since is not None:   # the second pass: only what appeared since
        unplaced = min(unplaced, max(0, now - since))
    if unplaced >= UNPLACED_MIN_BYTES:
        chosen = list(range(len(items)))
        reason = ("auto: %d MiB dirty that no per-filesystem counter "
                  "places" % (unplaced >> 20))
    else:
        chosen = [i for i, e in enumerate(est)
                  if e.bytes is not None and e.bytes >= MOUNT_MIN_BYTES]
        reason = ("auto: %d of %d filesystems dirty" % (
            len(chosen), len(items)) if chosen else
            "auto: every filesystem clean (%d MiB dirty elsewhere)"
            % (now >> 20))
    picked = set(chosen)
    view = tuple(MountChoice(path, i in picked, e.bytes, e.counter)
                 for i, ((path, _), e) in enumerate(zip(items, est)))
    return chosen, reason, view, unplaced


def sync_pass(stage: str, mode: str,
              items: Sequence[Tuple[str, Optional[int]]],
              devices: Sequence[Tuple[int, int]],
              deadline_s: float, since: Optional[int] = None) -> PassReport:
    """One pass over ITEMS ((path, open fd or None to open the path);
    DEVICES: their (major, minor), in the same order): decide, then
    syncfs() the chosen ones in parallel (vmsnapshot.freeze.syncfs) until
    done or DEADLINE_S."""
    before = dirty_bytes()
    chosen, reason, view, unplaced = _choose(mode, items, devices, before,
                                             since)
    log.debug("presync %s: %s", stage, reason)
    if not chosen:
        return PassReport(stage, False, reason, dirty_bytes=before,
                          mounts=view, unplaced_bytes=unplaced)
    from vmsnapshot.freeze import dirty as kdirty
    devs = sorted(set(devices[i] for i in chosen if i < len(devices)))
    sectors = kdirty.sectors_written(devs)
    from vmsnapshot.freeze import syncfs
    start = time.monotonic()
    stuck, errors = syncfs.parallel([items[i] for i in chosen], _workers(),
                                    deadline_s)
    duration_ms = (time.monotonic() - start) * 1000.0
    after = kdirty.sectors_written(devs) if sectors is not None else None
    now = dirty_bytes()
    if sectors is not None and after is not None:
        flushed: Optional[int] = max(0, after - sectors) * 512
    else:
        flushed = (None if before is None or now is None
                   else max(0, before - now))
    if stuck:
        log.warning("presync %s: still syncing after %.1fs, left to the "
                    "freeze: %s", stage, deadline_s, ", ".join(stuck))
    for e in errors:
        log.warning("presync %s: %s", stage, e)
    return PassReport(stage, True, reason, duration_ms, before, flushed,
                      stuck, errors, now, view, unplaced)


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
