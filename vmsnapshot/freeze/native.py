"""The only door to the native freeze core (vmsnapshot._freeze).

Everything a freeze needs is prepared in FreezeRun's constructor: the C
array of mounts, the result buffers, the bound C functions, the prepared
run with its probe processes (vms_prepare). freeze() and thaw() then only
call into C (cffi releases the GIL), so a Python main thread blocked on a
frozen filesystem never delays the watchdog, and nothing in them imports,
logs or touches a filesystem. freeze(should_stop) runs the C call in a
helper thread so that the main thread can stop it on a signal.
"""
from __future__ import annotations

import errno
import importlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from vmsnapshot.errors import Catalogue, FreezeError

GUARD_ENV = "VMSNAPSHOT_FREEZE_GUARD"

# enum vms_state, by value; "freezing"/"thawing" only show while a worker is
# inside the ioctl (a FIFREEZE stuck past the watchdog).
STATES = ("pending", "freezing", "frozen", "thawing", "thawed", "failed",
          "skipped")

# How often freeze(should_stop) asks whether to stop.
STOP_POLL_S = 0.02

_REQUIRED = ("vms_freeze", "vms_thaw", "vms_get", "vms_free",
             "vms_watchdog_fired", "vms_watchdog_fired_after_ns",
             "vms_guardian_lost", "vms_run_idle", "vms_thaw_fd",
             "vms_presync", "vms_prepare", "vms_start", "vms_abort",
             "vms_identity", "vms_collect")

_module: Any = None


def load() -> Any:
    """The native module (with .ffi and .lib), or FreezeModuleMissing."""
    global _module
    if _module is not None:
        return _module
    try:
        _freeze = importlib.import_module("vmsnapshot._freeze")
    except ImportError as e:
        raise FreezeError("cannot load the native module vmsnapshot._freeze:"
                          " %s" % e, Catalogue.FREEZE_MODULE_MISSING)
    missing = [n for n in _REQUIRED if not hasattr(_freeze.lib, n)]
    if missing:
        raise FreezeError("the native module vmsnapshot._freeze (%s) is "
                          "broken or stale: missing %s"
                          % (getattr(_freeze, "__file__", "?"),
                             ", ".join(missing)),
                          Catalogue.FREEZE_MODULE_MISSING)
    _module = _freeze
    return _module


@dataclass(frozen=True)
class MountOutcome:
    """One mount's result, read back from the C core."""

    path: str
    state: str           # one of STATES
    freeze_errno: int
    thaw_errno: int
    thawed_by_watchdog: bool
    freeze_ms: float
    thaw_ms: float
    # Somebody else thawed it before our thaw (a probe saw it, or our
    # FITHAW found it not frozen).
    thawed_early: bool = False

    @property
    def error(self) -> Optional[OSError]:
        """The FIFREEZE error, else the FITHAW error, as an OSError."""
        err = self.freeze_errno or self.thaw_errno
        if not err:
            return None
        return OSError(err, os.strerror(err), self.path)

    @property
    def frozen_by_another(self) -> bool:
        return self.state == "failed" and self.freeze_errno == errno.EBUSY


@dataclass(frozen=True)
class RunStatus:
    """What a run reports; kept when the run is closed."""

    fired: bool
    fired_after_s: Optional[float]
    guardian_lost: bool
    idle: bool
    outcomes: Tuple[MountOutcome, ...]


def _guard_prefixes() -> List[str]:
    value = os.environ.get(GUARD_ENV, "")
    return [os.path.realpath(p) for p in value.split(":") if p]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def check_guard(fds: Sequence[int], paths: Sequence[str]) -> None:
    """With VMSNAPSHOT_FREEZE_GUARD set (test suites), refuse any mount
    outside its prefixes, judged by both the given path and what the fd
    really is, and any fd on the filesystem holding a prefix or "/" (a
    plain directory under the prefix would freeze the machine's disk)."""
    prefixes = _guard_prefixes()
    if GUARD_ENV not in os.environ:
        return
    forbidden = set()
    for p in prefixes + ["/"]:
        try:
            forbidden.add(os.stat(p).st_dev)
        except OSError:
            pass
    for fd, path in zip(fds, paths):
        try:
            real = os.readlink("/proc/self/fd/%d" % fd)
            dev = os.fstat(fd).st_dev
        except OSError as e:
            real, dev = "(fd %d: %s)" % (fd, e.strerror), None
        inside = any(_under(os.path.realpath(path), p)
                     and _under(real, p) for p in prefixes)
        if not inside or dev is None or dev in forbidden:
            raise FreezeError(
                "refusing to freeze %s (fd %d is %s): %s=%s allows only "
                "separate filesystems mounted under those prefixes"
                % (path, fd, real, GUARD_ENV, os.environ[GUARD_ENV]),
                Catalogue.FS_FREEZE_FAILED)


class FreezeRun:
    """One freeze of a set of open mount fds: freeze() once, thaw() once,
    close() (or use as a context manager, which thaws if needed)."""

    def __init__(self, fds: Sequence[int], waves: Sequence[int],
                 paths: Sequence[str], timeout_s: float,
                 max_threads: int = 0, notify_fd: int = -1) -> None:
        if not len(fds) == len(waves) == len(paths):
            raise ValueError("fds, waves and paths differ in length")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        check_guard(fds, paths)
        mod = load()
        self._ffi, self._lib = mod.ffi, mod.lib
        self.paths = list(paths)
        self._n = len(self.paths)
        self._mounts = self._ffi.new("struct vms_mount[]", max(self._n, 1))
        for i, (fd, wave) in enumerate(zip(fds, waves)):
            self._mounts[i].fd = fd
            self._mounts[i].wave = wave
        self._timeout_ms = max(1, int(round(timeout_s * 1000)))
        self._max_threads = max_threads
        self._notify_fd = notify_fd
        self._runp = self._ffi.new("struct vms_run **")
        self._one = self._ffi.new("struct vms_mount *")
        self._run: Any = None
        self._thawed = False
        self._collected = False
        self._closed = False
        self._freeze_called = False
        self._final: Optional[RunStatus] = None
        self.stopped_early = False
        self.started_at: Optional[float] = None  # time.monotonic()
        self.thawed_at: Optional[float] = None
        # Forks the probes (a fraction of a millisecond per mount), so
        # that freeze() itself does not pay for them.
        if self._lib.vms_prepare(self._mounts, self._n, self._timeout_ms,
                                 self._max_threads, self._notify_fd,
                                 self._runp) != 0:
            self._fail(self._ffi.errno)
        self._run = self._runp[0]

    def freeze(self, should_stop: Optional[Callable[[], bool]] = None
               ) -> bool:
        """Freeze every wave in turn; returns when all were attempted or
        the watchdog fired. Per-mount failures are in outcomes(); only a
        run that could not start at all raises FsFreezeFailed.

        With should_stop, the C call runs in a helper thread while this
        thread (the one Python runs signal handlers in) asks should_stop()
        every STOP_POLL_S; once it says yes, the freeze is aborted: no
        further FIFREEZE, everything frozen is thawed. Returns True if it
        was stopped that way (also in self.stopped_early)."""
        if self._freeze_called or self._closed:
            raise RuntimeError("FreezeRun.freeze() called twice")
        self._freeze_called = True
        self.started_at = time.monotonic()
        if should_stop is None:
            if self._lib.vms_start(self._run) != 0:
                self._fail(self._ffi.errno)
            return False
        result: List[int] = []

        def start() -> None:
            rc = self._lib.vms_start(self._run)
            result.append(self._ffi.errno if rc != 0 else 0)

        worker = threading.Thread(target=start, name="vms-freeze",
                                  daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                if not self.stopped_early and should_stop():
                    self.stopped_early = bool(self._lib.vms_abort(self._run))
                worker.join(STOP_POLL_S)
        except BaseException:
            # Whatever happens here, nothing may stay frozen behind us.
            self._lib.vms_abort(self._run)
            worker.join()
            raise
        if result and result[0]:
            self._fail(result[0])
        return self.stopped_early

    @staticmethod
    def _fail(err: int) -> None:
        raise FreezeError("cannot start the freeze: %s" % os.strerror(err),
                          Catalogue.FS_FREEZE_FAILED)

    def thaw(self) -> None:
        """Thaw what this run froze (reverse waves); stops the watchdog.
        FITHAW errors are in outcomes()."""
        if self._run is not None and not self._thawed:
            self._lib.vms_thaw(self._run)
            self._thawed = True
            self.thawed_at = time.monotonic()

    def collect(self) -> None:
        """After thaw() (and after timing it): read the probes, which
        tell whether somebody else thawed a mount first (thawed_early in
        outcomes()). Waits at most a second. Idempotent."""
        if self._run is not None and self._thawed and not self._collected:
            self._lib.vms_collect(self._run)
            self._collected = True

    def watchdog_fired(self) -> bool:
        return self._status().fired

    def fired_after_s(self) -> Optional[float]:
        """Seconds from the start of freeze() to the watchdog firing."""
        return self._status().fired_after_s

    def guardian_lost(self) -> bool:
        """The guardian went away mid-run (the watchdog then fired)."""
        return self._status().guardian_lost

    def idle(self) -> bool:
        """No worker is still inside FIFREEZE/FITHAW (after close(): none
        was when it closed)."""
        return self._status().idle

    def outcomes(self) -> List[MountOutcome]:
        """Per-mount results, current (final ones after close())."""
        return list(self._status().outcomes)

    def _status(self) -> RunStatus:
        if self._final is not None:
            return self._final
        if self._run is None:
            return RunStatus(False, None, False, True, tuple(
                MountOutcome(p, "pending", 0, 0, False, 0.0, 0.0)
                for p in self.paths))
        lib, run, m = self._lib, self._run, self._one
        outcomes = []
        for i, path in enumerate(self.paths):
            lib.vms_get(run, i, m)
            outcomes.append(MountOutcome(
                path, STATES[m.state], m.freeze_errno, m.thaw_errno,
                bool(m.thawed_by_watchdog), m.freeze_ns / 1e6,
                m.thaw_ns / 1e6, bool(m.thawed_early)))
        after = lib.vms_watchdog_fired_after_ns(run)
        return RunStatus(bool(lib.vms_watchdog_fired(run)),
                         None if after < 0 else after / 1e9,
                         bool(lib.vms_guardian_lost(run)),
                         bool(lib.vms_run_idle(run)), tuple(outcomes))

    def close(self) -> None:
        """Thaw if still frozen, then release the run (never blocks on a
        worker stuck in FIFREEZE). Idempotent; results stay readable."""
        if self._closed:
            return
        try:
            self.thaw()
            self.collect()
        finally:
            self._final = self._status()
            self._closed = True
            if self._run is not None:
                self._lib.vms_free(self._run)
                self._run = None

    def __enter__(self) -> "FreezeRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A safety net only: callers close() explicitly.
        if not getattr(self, "_closed", True):
            self.close()


def presync(fds: Sequence[int], max_threads: int = 0) -> List[int]:
    """syncfs() every fd in parallel; one errno (0 = ok) per fd."""
    mod = load()
    n = len(fds)
    c_fds = mod.ffi.new("int[]", list(fds) or [0])
    c_err = mod.ffi.new("int[]", max(n, 1))
    if mod.lib.vms_presync(c_fds, n, max_threads, c_err) < 0:
        raise OSError(mod.ffi.errno, os.strerror(mod.ffi.errno))
    return [c_err[i] for i in range(n)]


def thaw_fd(fd: int) -> int:
    """One FITHAW outside a run (thaw --recover): 0 or the errno
    (EINVAL: it was not frozen)."""
    return int(load().lib.vms_thaw_fd(fd))


def identity(fd: int) -> Tuple[int, str]:
    """(unique mount id, filesystem UUID as hex) of the mount fd is on;
    0 / "" where the kernel or filesystem does not tell."""
    mod = load()
    ident = mod.ffi.new("struct vms_identity *")
    if mod.lib.vms_identity(fd, ident) != 0:
        raise OSError(mod.ffi.errno, os.strerror(mod.ffi.errno))
    return (int(ident.mnt_id_unique),
            bytes(ident.uuid[0:ident.uuid_len]).hex())


def syncfs(fd: int) -> int:
    """One syncfs(fd): 0 or the errno.  Blocks for as long as the
    writeback takes (cffi releases the GIL meanwhile)."""
    mod = load()
    c_fd = mod.ffi.new("int[1]", [fd])
    c_err = mod.ffi.new("int[1]")
    if mod.lib.vms_presync(c_fd, 1, 1, c_err) < 0:
        return mod.ffi.errno or errno.EIO
    return int(c_err[0])
