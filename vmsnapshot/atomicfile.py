"""One way to replace a file so that a reader never sees half of it: the
report, the state file, the history and the metrics all use it."""
from __future__ import annotations

import os


def write_atomic(path: str, text: str, mode: int = 0o600,
                 sync_dir: bool = False, durable: bool = True) -> None:
    """Write TEXT to a hidden file beside PATH (created with MODE, so it is
    never readable by others even for a moment), fsync it, rename it over
    PATH; with sync_dir the directory entry is made durable too. The hidden
    name keeps half-written files out of node-exporter's *.prom glob.
    durable=False skips the fsync, for a file derived from others and
    rewritten by every run: readers still never see half of it, only a
    crash right after may leave it empty until the next run."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.%d.%s" % (
        os.path.basename(path), os.getpid(), os.urandom(4).hex()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)      # whatever the umask said
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
