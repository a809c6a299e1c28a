"""The freeze methods compared, each one freeze-then-thaw cycle on a set of
mounts, timed on CLOCK_MONOTONIC (time.monotonic_ns on Linux), the clock
the stallwriter processes use too."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from bench.native import SeqFreeze


@dataclass(frozen=True)
class CycleTimes:
    start_ns: int           # the method begins (presync included)
    freeze_start_ns: int    # first FIFREEZE (after any presync)
    frozen_ns: int          # every mount frozen
    thaw_start_ns: int
    thawed_ns: int          # every mount thawed
    # Where `run` would have the applications quiesced (after the pre
    # phase): the whole cycle for methods without a first presync pass.
    quiesced_ns: Optional[int] = None

    @property
    def quiesced_ms(self) -> float:
        return (self.thawed_ns - (self.quiesced_ns or self.start_ns)) / 1e6

    @property
    def freeze_ms(self) -> float:
        return (self.frozen_ns - self.start_ns) / 1e6

    @property
    def presync_ms(self) -> float:
        return (self.freeze_start_ns - self.start_ns) / 1e6

    @property
    def thaw_ms(self) -> float:
        return (self.thawed_ns - self.thaw_start_ns) / 1e6


@dataclass(frozen=True)
class Context:
    bindir: str
    hold_s: float           # the "snapshot" between freeze and thaw
    timeout_s: float        # vmsnapshot's watchdog, a backstop only
    max_threads: int
    # Stands in for the pre-scripts (--pre-dirty-mib: a checkpoint that
    # dirties data): run after vmsnapshot's first presync pass, and before
    # the clock starts for the methods that have no such pass.
    pre_phase: Optional[Callable[[], None]] = None


def _pre_phase(ctx: Context) -> None:
    if ctx.pre_phase is not None:
        ctx.pre_phase()


Method = Callable[[Context, Sequence[str]], CycleTimes]


def _hold(ctx: Context) -> None:
    if ctx.hold_s > 0:
        time.sleep(ctx.hold_s)


def _open_all(paths: Sequence[str]) -> List[int]:
    fds: List[int] = []
    try:
        for p in paths:
            fds.append(os.open(p, os.O_RDONLY | os.O_DIRECTORY
                               | os.O_CLOEXEC))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _dev(fd: int) -> Tuple[int, int]:
    st = os.fstat(fd)
    return os.major(st.st_dev), os.minor(st.st_dev)


def _vmsnapshot(ctx: Context, paths: Sequence[str],
                early: Optional[str] = None, late: str = "false"
                ) -> CycleTimes:
    """The freeze path of `vmsnapshot run`: fds opened and the run prepared
    before the clock starts, then the presync passes `run` makes (EARLY
    before the pre-scripts, None when none is configured; LATE right
    before the freeze; each "auto", "true" or "false"), the stand-in pre
    phase between them, and FreezeRun.freeze/thaw."""
    from vmsnapshot.freeze import native
    from vmsnapshot.freeze import presync

    fds = _open_all(paths)
    items = list(zip(paths, fds))
    devs = [_dev(fd) for fd in fds]
    run = native.FreezeRun(fds, [0] * len(fds), list(paths), ctx.timeout_s,
                            max_threads=ctx.max_threads)
    try:
        t0 = time.monotonic_ns()
        first = None
        if early is not None:
            first = presync.sync_pass("before-pre", early, items, devs,
                                      presync.deadline_for(ctx.timeout_s))
        _pre_phase(ctx)
        tq = time.monotonic_ns()
        second = presync.before_freeze(late, first, items, devs,
                                       ctx.timeout_s)
        t1 = time.monotonic_ns()
        passes = [p for p in (first, second) if p is not None]
        problems = [x for p in passes for x in p.failed + p.timed_out]
        if problems:
            raise RuntimeError("presync: %s" % ", ".join(problems))
        try:
            run.freeze()
            t2 = time.monotonic_ns()
            _hold(ctx)
        finally:
            t3 = time.monotonic_ns()
            run.thaw()
            t4 = time.monotonic_ns()
        bad = ["%s: %s (freeze errno %s, thaw errno %s)"
               % (p, o.state, o.freeze_errno, o.thaw_errno)
               for p, o in zip(paths, run.outcomes())
               if o.state != "thawed" or o.thaw_errno]
        if bad or run.watchdog_fired():
            raise RuntimeError("vmsnapshot freeze incomplete: %s"
                               % ("; ".join(bad) or "watchdog fired"))
        return CycleTimes(t0, t1, t2, t3, t4, tq)
    finally:
        run.close()
        for fd in fds:
            os.close(fd)


def vmsnapshot(ctx: Context, paths: Sequence[str]) -> CycleTimes:
    """presync = false."""
    return _vmsnapshot(ctx, paths)


def vmsnapshot_default(ctx: Context, paths: Sequence[str]) -> CycleTimes:
    """The default configuration, presync = "auto", no pre-script: one
    pass, right before the freeze."""
    return _vmsnapshot(ctx, paths, late="auto")


def vmsnapshot_scripts(ctx: Context, paths: Sequence[str]) -> CycleTimes:
    """The default configuration with pre-scripts: both passes."""
    return _vmsnapshot(ctx, paths, early="auto", late="auto")


def vmsnapshot_early(ctx: Context, paths: Sequence[str]) -> CycleTimes:
    """Only the pass before the pre-scripts (placement measurement)."""
    return _vmsnapshot(ctx, paths, early="auto")


def vmsnapshot_presync(ctx: Context, paths: Sequence[str]) -> CycleTimes:
    """The old presync = true: one pass, after the pre-scripts."""
    return _vmsnapshot(ctx, paths, late="true")


def _fsfreeze(flag: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["fsfreeze", flag, path], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def fsfreeze_loop(ctx: Context, paths: Sequence[str]) -> CycleTimes:
    """`for m; do fsfreeze -f $m; done; ...; fsfreeze -u` as scripts do."""
    frozen: List[str] = []
    _pre_phase(ctx)
    t0 = time.monotonic_ns()
    try:
        for p in paths:
            res = _fsfreeze("-f", p)
            if res.returncode != 0:
                raise RuntimeError("fsfreeze -f %s: %s"
                                   % (p, res.stderr.strip()))
            frozen.append(p)
        t1 = time.monotonic_ns()
        _hold(ctx)
    finally:
        t2 = time.monotonic_ns()
        problems = [p for p in frozen if _fsfreeze("-u", p).returncode != 0]
        t3 = time.monotonic_ns()
    if problems:
        raise RuntimeError("fsfreeze -u failed on %s" % ", ".join(problems))
    return CycleTimes(t0, t0, t1, t2, t3)


def seqfreeze(ctx: Context, paths: Sequence[str]) -> CycleTimes:
    """One thread, FIFREEZE per mount in turn (qemu-ga, safefreeze)."""
    _pre_phase(ctx)
    sf = SeqFreeze(ctx.bindir, paths)
    try:
        t0, t1 = sf.frozen()
        _hold(ctx)
        t2, t3 = sf.thaw()
    finally:
        sf.close()
    return CycleTimes(t0, t0, t1, t2, t3)


METHODS: Dict[str, Method] = {
    "vmsnapshot-default": vmsnapshot_default,
    "vmsnapshot-scripts": vmsnapshot_scripts,
    "vmsnapshot": vmsnapshot,
    "vmsnapshot-presync": vmsnapshot_presync,
    "vmsnapshot-early": vmsnapshot_early,
    "fsfreeze-loop": fsfreeze_loop,
    "seq-ioctl": seqfreeze,
}
NEEDS_FREEZER = ("vmsnapshot-default", "vmsnapshot-scripts", "vmsnapshot",
                 "vmsnapshot-presync", "vmsnapshot-early")
BASELINES = ("fsfreeze-loop", "seq-ioctl")
# vmsnapshot-early only serves to measure where presync belongs.
DEFAULT_METHODS = tuple(m for m in METHODS if m != "vmsnapshot-early")


def peak_threads(ctx: Context, paths: Sequence[str]) -> Dict[str, int]:
    """One untimed vmsnapshot cycle while a sampler counts this process's
    threads, to show the worker cap holds at large N."""
    task = "/proc/self/task"
    before = len(os.listdir(task))
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(os.listdir(task)))
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _vmsnapshot(ctx, paths)
    finally:
        stop.set()
        sampler.join()
    # Minus the main thread and the sampler.
    return {"mounts": len(paths), "threads_before": before,
            "peak_extra_threads": peak[0] - before - 1}
