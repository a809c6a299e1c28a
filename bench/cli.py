"""Entry point: ``python3 -m bench [--quick] [options]`` as root.

Sets up a pool of loop filesystems, then for each (N, D) configuration runs
every method R times, interleaved, with a stall writer on every mount;
prints the table and the issue's targets, writes JSON (and a PNG plot when
matplotlib is there) to bench/results/.  Everything it made is undone on
any exit, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench import device, loops, native, overhead, report, vmdirty
from bench.methods import (DEFAULT_METHODS, METHODS, NEEDS_FREEZER, Context,
                           CycleTimes, peak_threads)

log = logging.getLogger("bench")

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
LOCK = "/run/vmsnapshot-bench.lock"
TOOLS = ("losetup", "mount", "umount", "mkfs.ext4", "mkfs.xfs", "fsfreeze")
GUARD = "VMSNAPSHOT_FREEZE_GUARD"

# Default: every N at D=16 (the plot), every D at N=8 (the targets), and
# N=64 clean and dirty (thaw target, thread cap).  --full runs the whole
# cross product, which takes far longer (N=64 x 64 MiB is 4 GiB a cycle).
DEFAULT = ((1, 16), (4, 16), (8, 0), (8, 16), (8, 64), (16, 16), (64, 0),
           (64, 16))
FULL_N = (1, 4, 8, 16, 64)
FULL_D = (0, 16, 64)
QUICK = ((1, 4), (4, 0), (4, 4))


@dataclass(frozen=True)
class Plan:
    configs: Tuple[Tuple[int, int], ...]
    methods: Tuple[str, ...]
    runs: int
    warmup: int
    bandwidth_mib: int
    overhead_runs: int
    writer_interval_us: int
    hold_ms: float
    max_threads: int
    pre_dirty_mib: int = 0

    @property
    def max_n(self) -> int:
        return max(n for n, _ in self.configs)

    def prefill(self) -> List[int]:
        """Data file size per pool index: the largest D it is used with."""
        return [max([d for n, d in self.configs if i < n] or [0])
                for i in range(self.max_n)]

    def max_dirty_bytes(self) -> int:
        return max(n * d for n, d in self.configs) * 2**20

    def estimate_s(self, mib_s: float) -> float:
        """Per cycle: dirtying (~1.5 GiB/s), the flush, ~25 ms per mount
        (journal commit and cache flush, paid in turn by the sequential
        methods); then the fixed parts, measured on the reference machine."""
        cycles = self.warmup + self.runs * len(self.methods)
        per_config = sum(cycles * (n * d / mib_s + n * d / 1500.0 + 0.05
                                   + 0.025 * n) for n, d in self.configs)
        return per_config + 0.4 * self.max_n + 30


def _ints(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m bench",
        description="Freeze benchmark: vmsnapshot's parallel freeze against "
        "util-linux fsfreeze in a loop and a single-threaded FIFREEZE loop, "
        "on loop filesystems it creates (run as root).")
    p.add_argument("--quick", action="store_true",
                   help="smoke run for CI: N=1,4, D=0,4, 2 runs (< 1 min)")
    p.add_argument("--full", action="store_true",
                   help="every N in 1,4,8,16,64 with every D in 0,16,64 "
                   "(slow: tens of minutes)")
    p.add_argument("-n", "--filesystems", type=_ints, metavar="N,...",
                   help="numbers of filesystems (crossed with -d)")
    p.add_argument("-d", "--dirty", type=_ints, metavar="MIB,...",
                   help="dirty MiB per filesystem (crossed with -n)")
    p.add_argument("-r", "--runs", type=int, help="runs per method "
                   "(default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed cycles per configuration (default 1)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma list of: %s (default: all but "
                   "vmsnapshot-early)" % ", ".join(METHODS))
    p.add_argument("--hold-ms", type=float, default=0.0,
                   help="time frozen before the thaw, standing in for the "
                   "snapshot (default 0)")
    p.add_argument("--pre-dirty-mib", type=int, default=0, metavar="MIB",
                   help="MiB each stand-in pre-script dirties per mount "
                   "(a database checkpoint), at most D (default 0)")
    p.add_argument("--writer-interval-us", type=int, default=1000,
                   help="pause between a writer's 4 KiB writes (default 1000)")
    p.add_argument("--max-threads", type=int, default=0,
                   help="vmsnapshot worker cap (default 0: the core's own)")
    p.add_argument("--bandwidth-mib", type=int,
                   help="MiB written to measure the disk (default 512, "
                   "quick 64)")
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the `vmsnapshot run` process overhead runs")
    p.add_argument("--workdir", default=tempfile.gettempdir(),
                   help="where the work directory with the sparse images and "
                   "mounts is made (default %(default)s)")
    p.add_argument("--results", default=RESULTS,
                   help="directory for the JSON and PNG (default bench/"
                   "results)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _plan(args: argparse.Namespace) -> Plan:
    if args.filesystems or args.dirty:
        configs = tuple((n, d) for n in (args.filesystems or (8,))
                        for d in (args.dirty or (16,)))
    elif args.full:
        configs = tuple((n, d) for n in FULL_N for d in FULL_D)
    else:
        configs = QUICK if args.quick else DEFAULT
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit("bench: unknown method(s) %s; choose from %s"
                         % (", ".join(unknown), ", ".join(METHODS)))
    return Plan(
        configs=tuple(sorted(set(configs))), methods=methods,
        runs=args.runs or (2 if args.quick else 5), warmup=args.warmup,
        bandwidth_mib=args.bandwidth_mib or (64 if args.quick else 512),
        overhead_runs=0 if args.no_overhead else (2 if args.quick else 7),
        writer_interval_us=args.writer_interval_us, hold_ms=args.hold_ms,
        max_threads=args.max_threads, pre_dirty_mib=args.pre_dirty_mib)


def _preflight(plan: Plan) -> Optional[str]:
    if os.geteuid() != 0:
        return "run as root: the bench makes loop devices and freezes them"
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support (/dev/loop-control)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return "missing tools: %s" % ", ".join(missing)
    if any(m in NEEDS_FREEZER for m in plan.methods):
        try:
            from vmsnapshot.freeze import native as freeze_core
            freeze_core.load()
        except Exception as e:  # ImportError or FreezeModuleMissing
            return ("vmsnapshot's freeze core is not usable (%s): build it "
                    "with `make build`, or choose --methods without "
                    "vmsnapshot" % e)
    return None


def _thread_cap() -> Optional[int]:
    try:
        from vmsnapshot._freeze import lib
        return int(lib.VMS_DEFAULT_THREADS)
    except (ImportError, AttributeError):
        return None


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt("signal %d" % signum)


def _set_guard(workdir: str) -> None:
    """Only the bench's own mounts may be frozen, also by `vmsnapshot run`
    children.  An outer guard (the test suite's) must contain workdir."""
    old = os.environ.get(GUARD)
    if old and not workdir.startswith(os.path.realpath(old).rstrip("/")
                                      + "/"):
        raise SystemExit("bench: work directory %s is outside %s=%s"
                         % (workdir, GUARD, old))
    os.environ[GUARD] = workdir


def _check_ours(paths: Sequence[str], workdir: str) -> None:
    for p in paths:
        if not (p.startswith(workdir + "/") and os.path.ismount(p)):
            raise RuntimeError("refusing to freeze %s: not a mount made "
                               "by this bench" % p)


class Bench:
    """One run of the plan on one pool; cleanup() undoes everything."""

    def __init__(self, plan: Plan, workdir: str) -> None:
        self.plan = plan
        self.workdir = workdir
        self.pool = loops.LoopPool(workdir)
        self.writers: Optional[native.Writers] = None
        self.saved_dirty: Optional[Dict[str, int]] = None
        self.pattern = os.urandom(loops.CHUNK)
        self.cycles: List[Dict[str, Any]] = []
        self.bindir = ""
        self.ctx: Optional[Context] = None

    def setup(self) -> Dict[str, Any]:
        self.bindir = native.build(self.workdir)
        self.ctx = Context(self.bindir, self.plan.hold_ms / 1000.0, 60.0,
                           self.plan.max_threads)
        # Before the writeback measurement too, which dirties the cache.
        self.saved_dirty = vmdirty.apply(
            max(self.plan.max_dirty_bytes(), self.plan.bandwidth_mib * 2**20))
        log.info("measuring the disk (%d MiB, 3 ways)",
                 self.plan.bandwidth_mib)
        bw = device.measure(self.workdir, self.plan.bandwidth_mib,
                            min(8, self.plan.max_n))
        log.info("disk: %.0f MiB/s one direct stream, %.0f MiB/s with %d, "
                 "%.0f MiB/s by writeback", bw["seq_mib_s"],
                 bw["direct_parallel_mib_s"], bw["devices"],
                 bw["writeback_mib_s"])
        log.info("estimated time: %.1f min",
                 self.plan.estimate_s(bw["direct_parallel_mib_s"]) / 60)
        log.info("creating %d loop filesystems", self.plan.max_n)
        self.pool.create(self.plan.prefill(), self.pattern)
        return bw

    def _cycle(self, n: int, d: int, method: str, run: int,
               paths: Sequence[str]) -> Dict[str, Any]:
        assert self.ctx and self.writers
        mounts = self.pool.mounts[:n]
        devices = [m.device for m in mounts]
        w0 = loops.written_mib(devices)
        for m in mounts:
            loops.write_mib(m.data_file, d, self.pattern, False)
        self.writers.reset()
        w1 = loops.written_mib(devices)
        times: Optional[CycleTimes] = None
        error = None
        pre = min(self.plan.pre_dirty_mib, d)
        ctx = self.ctx
        if pre:
            ctx = replace(ctx, pre_phase=lambda: [
                loops.write_mib(m.data_file, pre, self.pattern, False)
                for m in mounts])
        try:
            times = METHODS[method](ctx, paths)
        except (RuntimeError, OSError) as e:
            error = str(e)
            log.error("N=%d D=%d %s: %s", n, d, method, error)
            # Writers blocked on a mount left frozen would never answer.
            self.pool.thaw_all()
        samples = self.writers.samples()
        w2 = loops.written_mib(devices)
        worst = max(range(n), key=lambda i: samples[i].max_ns)
        return {
            "n": n, "d_mib": d, "method": method, "run": run,
            "freeze_ms": round(times.freeze_ms, 3) if times else None,
            "presync_ms": round(times.presync_ms, 3) if times else None,
            "quiesced_ms": round(times.quiesced_ms, 3) if times else None,
            "thaw_ms": round(times.thaw_ms, 3) if times else None,
            "stall_ms": round(samples[worst].max_ns / 1e6, 3),
            "stall_mount": worst,
            "stall_started_after_ms": round(
                (samples[worst].max_start_ns - times.start_ns) / 1e6, 3)
            if times else None,
            "writes": sum(s.count for s in samples),
            # Written to the loop devices while dirtying (early writeback,
            # should be ~0) and during the cycle (should be >= N * D).
            "written_mib_before": round(w1 - w0, 1),
            "written_mib_cycle": round(w2 - w1, 1), "error": error}

    def run_config(self, n: int, d: int) -> None:
        mounts = self.pool.mounts[:n]
        paths = [m.path for m in mounts]
        _check_ours(paths, self.workdir)
        self.writers = native.Writers(self.bindir,
                                      [m.writer_file for m in mounts],
                                      self.plan.writer_interval_us)
        try:
            methods = list(self.plan.methods)
            for _ in range(self.plan.warmup):
                self._cycle(n, d, methods[0], -1, paths)
            for r in range(self.plan.runs):
                # Rotate the order so no method always follows another.
                k = r % len(methods)
                for method in methods[k:] + methods[:k]:
                    self.cycles.append(self._cycle(n, d, method, r, paths))
        finally:
            self.pool.thaw_all()
            self.writers.stop()
            self.writers = None

    def threads(self) -> Optional[Dict[str, Any]]:
        """Peak worker threads in one untimed freeze of the biggest set,
        with dirty data so the workers live long enough to be counted."""
        if not any(m in NEEDS_FREEZER for m in self.plan.methods):
            return None
        assert self.ctx
        n = self.plan.max_n
        d = max([dd for nn, dd in self.plan.configs if nn == n] + [4])
        for m in self.pool.mounts[:n]:
            loops.write_mib(m.data_file, d, self.pattern, False)
        paths = [m.path for m in self.pool.mounts[:n]]
        _check_ours(paths, self.workdir)
        return peak_threads(self.ctx, paths)

    def quiet_thaw(self) -> Dict[str, Any]:
        """Thaw alone at the largest N: clean filesystems and no writers,
        whose wake-ups at the thaw compete with it for the CPUs."""
        assert self.ctx
        n = self.plan.max_n
        paths = [m.path for m in self.pool.mounts[:n]]
        _check_ours(paths, self.workdir)
        out: Dict[str, Any] = {"n": n}
        for method in self.plan.methods:
            thaws = [METHODS[method](self.ctx, paths).thaw_ms
                     for _ in range(self.plan.runs)]
            out[method] = report.stats(thaws)
        return out

    def overhead(self) -> Optional[Dict[str, Any]]:
        if not self.plan.overhead_runs:
            return None
        path = self.pool.mounts[0].path
        _check_ours([path], self.workdir)
        return overhead.measure(path, self.plan.overhead_runs, self.bindir)

    def cleanup(self) -> List[str]:
        """Thaw first: writers blocked on a frozen mount cannot exit."""
        self.pool.thaw_all()
        if self.writers:
            self.writers.stop()
        problems = self.pool.destroy()
        if self.saved_dirty is not None:
            vmdirty.release(self.saved_dirty)
            self.saved_dirty = None
        return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="bench: %(message)s")
    plan = _plan(args)
    problem = _preflight(plan)
    if problem:
        log.error("%s", problem)
        return 2
    lock_fd = os.open(LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.error("another bench is running (%s)", LOCK)
            return 2
        # A bench killed outright left the machine's writeback tuned.
        vmdirty.recover()
        return _main_locked(plan, args)
    finally:
        os.close(lock_fd)


def _main_locked(plan: Plan, args: argparse.Namespace) -> int:
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="vmsnapshot-bench-",
                                                dir=args.workdir))
    _set_guard(workdir)
    # SIGINT too: a shell starts background jobs with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.time()
    bench = Bench(plan, workdir)
    doc: Dict[str, Any] = {"bench": "vmsnapshot freeze", "format": 1,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "settings": dict(asdict(plan), workdir=workdir)}
    try:
        doc["machine"] = device.machine(workdir)
        doc["bandwidth"] = bench.setup()
        doc["vm_dirty"] = {"before": bench.saved_dirty,
                           "during": vmdirty.read()}
        for n, d in plan.configs:
            t0 = time.monotonic()
            bench.run_config(n, d)
            log.info("N=%d D=%d done in %.1f s", n, d, time.monotonic() - t0)
        doc["threads"] = bench.threads()
        doc["quiet_thaw_ms"] = bench.quiet_thaw()
        doc["overhead"] = bench.overhead()
    except KeyboardInterrupt:
        log.error("interrupted: cleaning up, no results written")
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        problems = bench.cleanup()
        for p in problems:
            log.error("cleanup: %s", p)
        if not problems:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return _finish(doc, bench, plan, args, started)


def _finish(doc: Dict[str, Any], bench: Bench, plan: Plan,
            args: argparse.Namespace, started: float) -> int:
    floor = doc["bandwidth"]["floor_mib_s"]
    summary = report.summarize(bench.cycles, floor)
    doc.update(elapsed_s=round(time.time() - started, 1),
               thread_cap=_thread_cap(), summary=summary,
               cycles=bench.cycles)
    doc["targets"] = report.targets(summary, bench.cycles, doc["threads"],
                                    doc["thread_cap"], doc["quiet_thaw_ms"])
    os.makedirs(args.results, exist_ok=True)
    stem = os.path.join(args.results,
                        "freeze-" + time.strftime("%Y%m%d-%H%M%S"))
    doc["plot"] = None
    if not args.no_plot:
        skipped = report.plot(stem + ".png", summary)
        doc["plot"] = stem + ".png" if skipped is None else None
        if skipped:
            log.info("no plot: %s", skipped)
    report.write_json(stem + ".json", doc)
    print(report.table(summary, floor))
    print("\n" + report.quiet_thaw_text(doc["quiet_thaw_ms"]))
    if doc["overhead"]:
        print("\n" + overhead.text(doc["overhead"]))
    print("\n" + report.targets_text(doc["targets"]))
    print("\nresults: %s.json%s (%.0f s)" % (
        stem, " and .png" if doc["plot"] else "", doc["elapsed_s"]))
    failed = sum(c["error"] is not None for c in bench.cycles)
    if failed:
        log.error("%d cycle(s) failed", failed)
    return 1 if failed else 0
