"""One cgroup v2 per script, so a script that daemonizes (setsid, double
fork) cannot escape its end: the process group kill misses a child that
left the session, ``cgroup.kill`` does not.

Only the unified (v2) hierarchy is used, found in /proc/self/mountinfo
(type cgroup2; it is not always at /sys/fs/cgroup). v1 hierarchies are
never touched. Scripts go below ``vmsnapshot/`` in our own cgroup (under
systemd: the calling service's, so a ``systemctl stop`` of it still ends
them), one child ``<pid>.<n>`` per script, removed once the script is
reaped. Where the hierarchy is missing, read-only, or lacks ``cgroup.kill``
(kernel < 5.14), ``parent()`` is None and the process group alone is used.
``VMSNAPSHOT_SCRIPT_CGROUPS=0`` forces that fallback.

Joining happens in the child between fork and exec (``join_fn``): moving
it after exec would let a quick script fork away first, and neither
``os.posix_spawn`` nor ``subprocess`` offers clone3's CLONE_INTO_CGROUP.
"""
from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from typing import Callable, List, Optional

from vmsnapshot import logs

log = logs.get(__name__)

ENV_SWITCH = "VMSNAPSHOT_SCRIPT_CGROUPS"
PARENT_NAME = "vmsnapshot"
_names = itertools.count(1)
_names_lock = threading.Lock()


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def unified_mount(mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """The mount point of the cgroup2 hierarchy, or None."""
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return _unescape(left.split()[4])
    except OSError:
        pass
    return None


def own_cgroup() -> str:
    """Our cgroup in the unified hierarchy ('0::PATH'), '/' if unknown."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip() or "/"
    except OSError:
        pass
    return "/"


def parent() -> Optional[str]:
    """The directory below which script cgroups are made, or None for the
    process-group fallback (logged once at debug level each time)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    mount = unified_mount()
    if mount is None:
        log.debug("no cgroup2 hierarchy: scripts end by process group")
        return None
    base = os.path.join(mount, own_cgroup().lstrip("/"))
    if not os.path.isdir(base):     # another cgroup namespace view
        base = mount
    path = os.path.join(base, PARENT_NAME)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        log.debug("cannot create %s (%s): scripts end by process group",
                  path, e.strerror)
        return None
    if not os.path.exists(os.path.join(path, "cgroup.kill")):
        log.debug("%s has no cgroup.kill (kernel < 5.14): scripts end by "
                  "process group", path)
        return None
    sweep(path)
    return path


def sweep(path: str) -> None:
    """Remove the empty cgroups a killed vmsnapshot left behind (its own
    pid is gone; rmdir fails on a cgroup that still has processes, so a
    hook outliving its supervisor keeps its cgroup until it exits)."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        pid, dot, n = name.partition(".")
        if not (dot and pid.isdigit() and n.isdigit()):
            continue
        if os.path.exists("/proc/%s" % pid):
            continue
        try:
            os.rmdir(os.path.join(path, name))
        except OSError:
            pass


class ScriptCgroup:
    """One script's cgroup: made before the fork, joined by the child
    before exec, killed as a whole, removed after the reap."""

    def __init__(self, parent_dir: str):
        with _names_lock:
            n = next(_names)
        self.path = os.path.join(parent_dir, "%d.%d" % (os.getpid(), n))
        os.mkdir(self.path, 0o755)
        try:
            self._procs_fd = os.open(os.path.join(self.path, "cgroup.procs"),
                                     os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            os.rmdir(self.path)
            raise

    def join_fn(self) -> Callable[[], None]:
        """For subprocess's preexec_fn: the child writes "0" (= itself) to
        cgroup.procs through an fd opened beforehand. It only calls
        os.write on prepared objects, takes no Python lock another thread
        could hold at the fork, and imports nothing, which is what makes a
        preexec_fn safe in a threaded parent. A failure leaves the child
        where it is (the caller checks ``contains``)."""
        fd = self._procs_fd

        def join() -> None:
            try:
                os.write(fd, b"0")
            except OSError:
                pass
        return join

    def started(self) -> None:
        """The child has exec'd: the parent's fd is no longer needed."""
        if self._procs_fd >= 0:
            os.close(self._procs_fd)
            self._procs_fd = -1

    def pids(self) -> List[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def contains(self, pid: int) -> bool:
        return pid in self.pids()

    def kill(self) -> None:
        """SIGKILL every process in it, daemonized or not (atomic in the
        kernel: nothing can fork away meanwhile)."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.warning("cannot kill cgroup %s: %s", self.path,
                            e.strerror)

    def remove(self, timeout: float = 2.0) -> None:
        """Kill what is left and remove the directory (EBUSY until the
        last process has exited)."""
        self.started()
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    log.warning("cannot remove cgroup %s: %s", self.path,
                                e.strerror)
                    return
            self.kill()
            time.sleep(0.01)


def make() -> Optional[ScriptCgroup]:
    """A new script cgroup, or None (process-group fallback)."""
    where = parent()
    if where is None:
        return None
    try:
        return ScriptCgroup(where)
    except OSError as e:
        log.debug("cannot create a script cgroup in %s (%s): process group "
                  "fallback", where, e.strerror)
        return None
