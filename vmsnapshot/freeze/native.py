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

import importlib
import os
import threading
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

from vmsnapshot.errors import Catalogue, FreezeError
from vmsnapshot.freeze import errnos
from vmsnapshot.freeze.guard import GUARD_ENV, check_guard
from vmsnapshot.freeze.records import STATES, MountOutcome, RunStatus

__all__ = ["FreezeRun", "MountOutcome", "RunStatus", "STATES", "GUARD_ENV",
           "load", "check_guard", "thaw_fd", "identity"]

# How often freeze(should_stop) asks whether to stop.
STOP_POLL_S = 0.02

_REQUIRED = ("vms_freeze", "vms_thaw", "vms_status", "vms_free",
             "vms_thaw_fd", "vms_prepare", "vms_start", "vms_abort",
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

    def status(self) -> RunStatus:
        """The run as one consistent snapshot (vms_status, one lock):
        take decisions from one of these, not from several calls. After
        close(), the final one."""
        if self._final is not None:
            return self._final
        if self._run is None:
            return RunStatus(False, None, False, True, tuple(
                MountOutcome(p, "pending", 0, 0, False, 0.0, 0.0)
                for p in self.paths))
        # Buffers of its own per call: status() may be read from two
        # threads at once (cffi releases the GIL inside vms_status).
        st = self._ffi.new("struct vms_status *")
        m = self._ffi.new("struct vms_mount[]", max(self._n, 1))
        if self._lib.vms_status(self._run, st, m, self._n) != 0:
            self._fail(self._ffi.errno)
        outcomes = tuple(MountOutcome(
            path, STATES[m[i].state], m[i].freeze_errno, m[i].thaw_errno,
            bool(m[i].thawed_by_watchdog), m[i].freeze_ns / 1e6,
            m[i].thaw_ns / 1e6,
            bool(m[i].thawed_early)
            or (STATES[m[i].state] == "thawed"
                and errnos.thawed_by_another(m[i].thaw_errno)))
            for i, path in enumerate(self.paths))
        return RunStatus(bool(st.fired),
                         st.fired_after_ns / 1e9 if st.fired else None,
                         bool(st.guardian_lost), bool(st.idle), outcomes)

    # One-fact readers, each from its own snapshot (tests, bench).
    def watchdog_fired(self) -> bool:
        return self.status().fired

    def fired_after_s(self) -> Optional[float]:
        """Seconds from the start of freeze() to the watchdog firing."""
        return self.status().fired_after_s

    def guardian_lost(self) -> bool:
        """The guardian went away mid-run (the watchdog then fired)."""
        return self.status().guardian_lost

    def idle(self) -> bool:
        """No worker is still inside FIFREEZE/FITHAW."""
        return self.status().idle

    def outcomes(self) -> List[MountOutcome]:
        """Per-mount results, current (final ones after close())."""
        return list(self.status().outcomes)

    def close(self) -> None:
        """Thaw if still frozen, then release the run (never blocks on a
        worker stuck in FIFREEZE). Idempotent; results stay readable."""
        if self._closed:
            return
        try:
            self.thaw()
            self.collect()
        finally:
            self._final = self.status()
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
