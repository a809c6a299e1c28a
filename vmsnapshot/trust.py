"""Trust checks for pre/post scripts, and opening the very file that was
checked.

The path is resolved by hand, one component at a time, each opened with
``O_PATH|O_NOFOLLOW`` relative to the directory fd already checked, so what is
checked is what is opened (no re-resolution by path between check and use).
Every directory on the resolved path, every symlink followed and the script
itself must be owned by root. Directories must not be writable by group or
others, with one exception:

*A root-owned directory with the sticky bit (``/tmp``, ``/var/tmp``) is
accepted as an ancestor, but never as the directory that holds the script.*
The sticky bit stops anyone but the entry's owner (or root) from renaming or
unlinking an entry, and the walk requires every entry it resolves through such
a directory to be root-owned, so no other user can swap a component under us.
The script's own directory is different: scripts source siblings
(``$(dirname "$0")/common.sh``) and write next to themselves, and a
world-writable directory there lets anyone plant files that nothing checks.

A group-writable directory is refused even when its group is root: non-root
users can be members of group 0. POSIX ACLs granting write show up as group
write bits (the ACL mask), so they are refused too.

The runner executes the returned fd through ``/proc/self/fd/N``; for a
``#!`` script the interpreter then reopens that same fd path, so ``$0`` is
``/proc/self/fd/N`` and the real path is given in ``VMSNAPSHOT_SCRIPT``.
"""
from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from typing import List, Optional, Tuple

from vmsnapshot.errors import Catalogue, ScriptError, TrustError

MAX_SYMLINKS = 40   # the kernel's own limit (ELOOP)
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: never hang on a FIFO swapped in by root between the two opens.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

@dataclass(frozen=True)
class PhaseEntries:
    """The catalogue entries of one phase's script errors."""

    not_found: Catalogue
    no_permission: Catalogue
    failed: Catalogue
    timeout: Catalogue


_PHASES = {
    "pre": PhaseEntries(Catalogue.PRE_SCRIPT_NOT_FOUND,
                        Catalogue.INSUFFICIENT_PERMISSION_FOR_PRE_SCRIPT,
                        Catalogue.PRE_SCRIPT_EXECUTION_FAILED,
                        Catalogue.PRE_SCRIPT_TIMEOUT),
    "post": PhaseEntries(Catalogue.POST_SCRIPT_NOT_FOUND,
                         Catalogue.INSUFFICIENT_PERMISSION_FOR_POST_SCRIPT,
                         Catalogue.POST_SCRIPT_EXECUTION_FAILED,
                         Catalogue.POST_SCRIPT_TIMEOUT),
}


def phase_entries(phase: str) -> PhaseEntries:
    try:
        return _PHASES[phase]
    except KeyError:
        raise ValueError("phase must be 'pre' or 'post', not %r"
                         % (phase,)) from None


@dataclass(frozen=True)
class TrustedScript:
    """An open, checked script: execute ``fd``, never ``path`` again."""

    fd: int
    path: str        # as configured
    real_path: str   # symlinks resolved
    st_dev: int
    st_ino: int


def _owner(uid: int) -> str:
    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def _describe(st: os.stat_result) -> str:
    return "owner %s, mode %04o" % (_owner(st.st_uid),
                                    stat.S_IMODE(st.st_mode))


def _writers(mode: int) -> str:
    who = [w for w, bit in (("group", 0o020), ("others", 0o002)) if mode & bit]
    return " and ".join(who)


def _components(path: str) -> List[str]:
    return [c for c in path.split("/") if c and c != "."]


class _Walk:
    """State of one resolution: a stack of checked directory fds."""

    def __init__(self, path: str, phase: str):
        entries = phase_entries(phase)
        self.path = path
        self.phase = phase
        self.not_found = entries.not_found
        self.no_permission = entries.no_permission
        # (fd, real path, world-writable-but-sticky)
        self.stack: List[Tuple[int, str, bool]] = []

    def _message(self, detail: str) -> str:
        # "Pre-script /x is not ..." rather than "Pre-script /x: /x is not ..."
        if detail.startswith(self.path + " "):
            detail = detail[len(self.path):]
        else:
            detail = ": " + detail
        return "%s-script %s%s" % (self.phase.capitalize(), self.path, detail)

    def missing(self, detail: str) -> ScriptError:
        return ScriptError(self._message(detail), self.not_found)

    def refuse(self, detail: str) -> TrustError:
        return TrustError(self._message(detail)
                          + "; nothing of this plugin runs",
                          self.no_permission)

    def close(self) -> None:
        while self.stack:
            os.close(self.stack.pop()[0])

    def push_dir(self, fd: int, real: str) -> None:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != 0:
            os.close(fd)
            raise self.refuse("directory %s is not owned by root (%s); "
                              "fix: chown root:root %s"
                              % (real, _describe(st), real))
        sticky_open = False
        if mode & 0o022:
            if not (mode & stat.S_ISVTX and mode & 0o002):
                os.close(fd)
                raise self.refuse(
                    "directory %s is writable by %s (%s); fix: chmod go-w %s"
                    % (real, _writers(mode), _describe(st), real))
            sticky_open = True   # acceptable as an ancestor only, see above
        self.stack.append((fd, real, sticky_open))

    def step(self, name: str) -> Tuple[int, str]:
        dfd, dreal, _ = self.stack[-1]
        real = os.path.join(dreal, name)
        try:
            return os.open(name, _PATH_FLAGS, dir_fd=dfd), real
        except (FileNotFoundError, NotADirectoryError):
            raise self.missing("%s does not exist" % real) from None
        except OSError as exc:
            raise self.refuse("cannot open %s: %s" % (real, exc.strerror)) \
                from None

    def resolve(self) -> TrustedScript:
        if not os.path.isabs(self.path):
            raise self.missing("not an absolute path")
        self.push_dir(os.open("/", _PATH_FLAGS | os.O_DIRECTORY), "/")
        todo = _components(self.path)
        links = 0
        while todo:
            name = todo.pop(0)
            if name == "..":
                if len(self.stack) > 1:
                    os.close(self.stack.pop()[0])
                continue
            fd, real = self.step(name)
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = self.follow(fd, st, name, real)
                finally:
                    os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise self.missing("too many levels of symbolic links")
                if target.startswith("/"):
                    while len(self.stack) > 1:
                        os.close(self.stack.pop()[0])
                todo[:0] = _components(target)
            elif todo:
                if not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    raise self.missing("%s is not a directory" % real)
                self.push_dir(fd, real)
            else:
                try:
                    return self.open_final(fd, st, name, real)
                finally:
                    os.close(fd)
        raise self.refuse("resolves to the directory %s, not a file"
                          % self.stack[-1][1])

    def follow(self, fd: int, st: os.stat_result, name: str, real: str) -> str:
        # The directory holding the link is trusted, but in a sticky
        # directory the link's owner may replace it: links must be root's.
        if st.st_uid != 0:
            raise self.refuse("symlink %s is not owned by root (%s); fix: "
                              "chown -h root:root %s" % (real, _describe(st),
                                                         real))
        return os.readlink(name, dir_fd=self.stack[-1][0])

    def open_final(self, pfd: int, st: os.stat_result, name: str,
                   real: str) -> TrustedScript:
        fix = "fix: chown root:root %s && chmod 700 %s" % (real, real)
        if not stat.S_ISREG(st.st_mode):
            raise self.refuse("%s is not a regular file" % real)
        dfd, dreal, sticky_open = self.stack[-1]
        if sticky_open:
            raise self.refuse(
                "its directory %s is world-writable (sticky); keep scripts in "
                "a directory only root can write, e.g. /etc/vmsnapshot/scripts"
                % dreal)
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            raise self.missing("%s does not exist" % real) from None
        except OSError as exc:
            raise self.refuse("cannot open %s: %s" % (real, exc.strerror)) \
                from None
        try:
            fst = os.fstat(fd)
            mode = stat.S_IMODE(fst.st_mode)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                problem: Optional[str] = ("%s changed while being checked"
                                          % real)
            elif fst.st_uid != 0:
                problem = "%s is not owned by root (%s); %s" % (
                    real, _describe(fst), fix)
            elif mode & 0o077:
                problem = ("%s is accessible by group or others (%s); "
                           "expected mode 700; %s"
                           % (real, _describe(fst), fix))
            elif not mode & stat.S_IXUSR:
                problem = "%s is not executable (%s); %s" % (
                    real, _describe(fst), fix)
            else:
                problem = None
            if problem is not None:
                raise self.refuse(problem)
        except BaseException:
            os.close(fd)
            raise
        return TrustedScript(fd, self.path, real, fst.st_dev, fst.st_ino)


def open_trusted(path: str, phase: str) -> TrustedScript:
    """Resolve, check and open ``path``; the caller owns (and closes) the fd.

    Raises VmsnapshotError: Pre/Post-ScriptNotFound when a component is
    missing, InsufficientPermissionforPre/Post-Script for any trust problem.
    """
    walk = _Walk(path, phase)
    try:
        return walk.resolve()
    finally:
        walk.close()


def open_trusted_script(path: str, phase: str) -> int:
    """Like :func:`open_trusted`; only the fd (O_RDONLY|O_CLOEXEC)."""
    return open_trusted(path, phase).fd


def check_script(path: str, phase: str) -> None:
    """Check ``path`` as :func:`open_trusted` does, running nothing."""
    os.close(open_trusted(path, phase).fd)
