"""Start the holder so that it outlives its caller and the caller's cgroup.

Backup agents run their scripts from a systemd service; `systemctl restart`
of that service (package upgrades do it) kills every process in its cgroup,
so a holder started as a plain child would die with its guardian and leave
filesystems frozen. Where systemd runs, the holder is a transient unit of
its own (systemd-run); elsewhere it forks, starts a new session, and moves
into a cgroup of its own in the unified hierarchy when there is one it may
write to. Either way its stdio is /dev/null: an agent that reads `pre`'s
output until EOF must not wait for the holder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Callable, List, Optional

from vmsnapshot import exitstatus, logs
from vmsnapshot.scripts import cgroup

log = logs.get(__name__)

SYSTEMD_RUN = "systemd-run"
_PASSED_ENV = ("PYTHONPATH",)   # plus every VMSNAPSHOT_* variable


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 here."""
    return os.path.isdir("/run/systemd/system")


def holder_argv(args_json: str, notify_path: str, unit: str) -> List[str]:
    """systemd-run's command line for a holder (a transient service of its
    own, reaped by systemd, not killed by the caller's unit)."""
    argv = [SYSTEMD_RUN, "--quiet", "--collect", "--unit", unit,
            "--service-type=exec", "--property=OOMScoreAdjust=-1000",
            "--description=vmsnapshot holder (pre/post split cycle)"]
    for name, value in sorted(os.environ.items()):
        if name.startswith("VMSNAPSHOT_") or name in _PASSED_ENV:
            argv.append("--setenv=%s=%s" % (name, value))
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv += ["--setenv=PYTHONPATH=%s" % package_dir, "--",
             sys.executable, "-m", "vmsnapshot", "__holder",
             "--args", args_json, "--notify", notify_path]
    return argv


def start_holder(args_json: str, notify_path: str, unit: str,
                 hold_here: Callable[[], int]) -> None:
    """Start the holder; returns at once in the caller. Where systemd runs,
    a transient unit runs `vmsnapshot __holder`; elsewhere a forked child
    daemonizes, runs hold_here() and exits with its status."""
    if systemd_running() and shutil.which(SYSTEMD_RUN):
        subprocess.run(holder_argv(args_json, notify_path, unit), check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        return
    if os.fork() != 0:
        return
    status = exitstatus.INTERNAL   # unless hold_here() returns
    try:
        _become_daemon()
        status = hold_here()
    finally:
        _leave_own_cgroup()
        os._exit(status)


def _become_daemon() -> None:
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    # Whatever else the agent handed to `pre` (pipes on fds above 2) must
    # not stay open in the holder either.
    os.closerange(3, _max_fd())
    os.chdir("/")
    _enter_own_cgroup()


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


# -- the unified cgroup hierarchy, where no systemd manages it -------------

HOLDER_PREFIX = "vmsnapshot-holder-"
_own: Optional[str] = None      # the cgroup this holder made for itself
_came_from: Optional[str] = None


def _move_self(path: str) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write("0")


def _remove_tree(path: str) -> bool:
    """rmdir PATH and the empty cgroups below it (the scripts' parent that
    vmsnapshot.scripts.cgroup made there), deepest first; False if one is busy."""
    try:
        names = [n for n in os.listdir(path)
                 if os.path.isdir(os.path.join(path, n))]
    except OSError:
        return False
    ok = all([_remove_tree(os.path.join(path, n)) for n in names])
    try:
        os.rmdir(path)
    except OSError:
        return False
    return ok


def running(pid: int) -> bool:
    """Running, not a zombie waiting for an init that does not reap (a
    holder's parent, `pre`, is gone by then)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def sweep_dead_holders() -> None:
    """For `post` after a killed holder: its cgroup goes too."""
    mount = cgroup.unified_mount()
    if mount is not None and os.access(mount, os.W_OK):
        _sweep(mount)


def _sweep(mount: str) -> None:
    """Remove holder cgroups whose holder is gone (killed, or its guardian
    was still in it when it left); rmdir fails on any still in use."""
    for name in os.listdir(mount):
        pid = name[len(HOLDER_PREFIX):]
        if name.startswith(HOLDER_PREFIX) and pid.isdigit() \
                and not running(int(pid)):
            _remove_tree(os.path.join(mount, name))


def _enter_own_cgroup() -> None:
    global _own, _came_from
    mount = cgroup.unified_mount()
    if mount is None or not os.access(mount, os.W_OK):
        return
    own = os.path.join(mount, HOLDER_PREFIX + str(os.getpid()))
    try:
        _sweep(mount)
        _came_from = os.path.join(mount, cgroup.own_cgroup().lstrip("/"))
        os.mkdir(own, 0o755)
        _own = own
        _move_self(own)
    except OSError as e:
        log.warning("the holder stays in its caller's cgroup: %s", e)


def _leave_own_cgroup() -> None:
    """Move back (to the root if the caller's cgroup is gone) and remove
    ours, once the guardian has left it too (it exits right after the
    holder's clean end); if it stays (a stuck FIFREEZE), the next holder
    sweeps it."""
    if _own is None:
        return
    mount = cgroup.unified_mount() or "/"
    for target in (_came_from, mount):
        if target and os.path.isdir(target):
            try:
                _move_self(target)
                break
            except OSError:
                continue
    deadline = time.monotonic() + 2.0
    while not _remove_tree(_own) and time.monotonic() < deadline:
        time.sleep(0.05)
