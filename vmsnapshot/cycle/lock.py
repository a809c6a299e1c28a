"""Single-instance lock for `run` (and the Azure extension's freeze lock).

flock(2) locks die with their holder, so a killed run never leaves a stale
lock behind; only the state file (freeze/state.py) can be stale.
"""
from __future__ import annotations

import errno
import fcntl
import os
from typing import List

from vmsnapshot.errors import Catalogue, VmsnapshotError
from vmsnapshot.rundir import run_dir

__all__ = ["AZURE_LOCK", "RunLock", "run_dir"]

# The Azure VM backup extension takes this lock around its own freeze; taking
# it too keeps the two from freezing at the same time.
AZURE_LOCK = "/etc/azure/MicrosoftRecoverySvcsSafeFreezeLock/SafeFreezeLockFile"


class RunLock:
    """Hold the vmsnapshot lock, and the Azure lock when its file exists."""

    def __init__(self, azure_lock: str = AZURE_LOCK) -> None:
        self.azure_lock = os.environ.get("VMSNAPSHOT_AZURE_LOCK", azure_lock)
        self._fds: List[int] = []

    def acquire(self) -> None:
        directory = run_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            self._lock(os.path.join(directory, "lock"), create=True,
                       holder="another vmsnapshot run")
            if os.path.exists(self.azure_lock):
                self._lock(self.azure_lock, create=False,
                           holder="the Azure VM backup extension")
        except BaseException:
            self.release()
            raise

    def _lock(self, path: str, create: bool, holder: str) -> None:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        self._fds.append(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise VmsnapshotError(
                    "%s holds the lock %s" % (holder, path),
                    Catalogue.ALREADY_RUNNING) from None
            raise

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
