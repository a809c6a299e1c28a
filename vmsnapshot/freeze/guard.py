"""The test suites' freeze guard: with VMSNAPSHOT_FREEZE_GUARD set, the
native door refuses every mount but the separate filesystems the tests
created under its prefixes, so a bug can never freeze the machine."""
from __future__ import annotations

import os
from typing import List, Sequence

from vmsnapshot.errors import Catalogue, FreezeError

GUARD_ENV = "VMSNAPSHOT_FREEZE_GUARD"


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
