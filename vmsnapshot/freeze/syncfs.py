"""syncfs() on many filesystems at once, under a deadline.

The calls go to libc through ctypes, which drops the GIL for them, so the
worker threads block in the kernel side by side (nothing is frozen yet:
no C core is needed).  Daemon threads, not a concurrent.futures pool: that
pool joins its workers at interpreter exit, and a syncfs still blocked
past its deadline (the kernel cannot abort it) would hold the process
there.  Such a thread closes the fd it opened when the call returns; an fd
given is borrowed, and the caller may close it after the deadline even
while a syncfs still runs on it (the kernel holds its own reference to the
file during the call).
"""
from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple


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


_libc: Any = None      # ctypes.CDLL, loaded by the first pass that runs


def syncfs(fd: int) -> int:
    """syncfs(fd) through libc: 0 or the errno.  ctypes drops the GIL for
    the call, so the workers block in the kernel side by side."""
    global _libc
    import ctypes    # here: ~4 ms that a run without a pass never pays
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syncfs.argtypes = [ctypes.c_int]
        _libc.syncfs.restype = ctypes.c_int
    if _libc.syncfs(fd) != 0:
        return ctypes.get_errno()
    return 0


def _worker(job: _Job) -> None:
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
            err = syncfs(fd)
            if err:
                error = "%s: %s" % (path, os.strerror(err))
        except OSError as e:
            error = "%s: %s" % (path, e.strerror)
        except Exception as e:  # libc without syncfs
            error = "%s: %s" % (path, e)
        finally:
            if own and fd is not None:
                os.close(fd)
        job.finish(i, error)


def parallel(items: Sequence[Tuple[str, Optional[int]]], workers: int,
             deadline_s: float) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """syncfs every ITEM ((path, fd or None: open the path)) on at most
    WORKERS threads.  Returns (paths still syncing or not started at the
    deadline, "path: strerror" per failure)."""
    job = _Job(items)
    for _ in range(max(1, min(workers, len(job.items)))):
        threading.Thread(target=_worker, args=(job,), daemon=True,
                         name="presync").start()
    with job.lock:
        job.done.wait_for(lambda: job.finished == len(job.items),
                          timeout=deadline_s)
        job.cancelled = True
        stuck = tuple(sorted(job.busy.values())) + tuple(
            p for p, _ in job.items[job.next:])
        return stuck, tuple(job.errors)
