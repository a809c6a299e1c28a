"""Trust checks for pre/post scripts and configuration files: one walk, one
set of messages.

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

Scripts and configuration files differ only in the last step (scripts:
owner root, no group/other access, executable; configuration: owner root,
no group/other access, no execute bits).

Scripts are executed by their configured path once the walk passed. The
check-then-exec window is not a race anyone but root can win: every
directory and symlink on the path and the file are root-owned and writable
by root alone, so only root can swap a component in between (and root can
change the configuration anyway). Executing through ``/proc/self/fd/N``
instead would leave a readable fd on the root-only script in the script and
in every child it starts, and give the script a useless ``$0``.
"""
from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from typing import Callable, List, Tuple

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
class TrustedFile:
    """An open, checked file (O_RDONLY|O_CLOEXEC): read ``fd``."""

    fd: int
    path: str        # as configured
    real_path: str   # symlinks resolved
    st_dev: int
    st_ino: int


TrustedScript = TrustedFile   # the name scripts and held hooks know


class Refusal(Exception):
    """Why a path is not trusted (``missing``: a component does not
    exist). ``detail`` reads as a sentence about the path."""

    def __init__(self, detail: str, missing: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.missing = missing


# Last step of the walk: the problems of the file itself, each with its fix.
FileCheck = Callable[[os.stat_result, str], List[str]]


def script_problems(st: os.stat_result, real: str) -> List[str]:
    """A script: owner root, no group/other access, executable."""
    fix = "fix: chown root:root %s && chmod 700 %s" % (real, real)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return ["%s is not owned by root (%s); %s" % (real, _describe(st),
                                                       fix)]
    if mode & 0o077:
        return ["%s is accessible by group or others (%s); expected mode "
                "700; %s" % (real, _describe(st), fix)]
    if not mode & stat.S_IXUSR:
        return ["%s is not executable (%s); %s" % (real, _describe(st), fix)]
    return []


def config_problems(st: os.stat_result, real: str) -> List[str]:
    """A configuration file names programs run as root: owner root, no
    group/other access at all (Microsoft's extension refuses a file others
    may read: its error 317), no execute bits (not a program; +x usually
    means a careless chmod 755/777)."""
    found = []
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        found.append("%s is not owned by root (%s); fix: chown root:root %s"
                     % (real, _describe(st), real))
    if mode & 0o077:
        found.append("%s is accessible by group or others (%s); expected "
                     "mode 600, as Microsoft's extension requires (its "
                     "error 317 refuses it); fix: chmod 600 %s"
                     % (real, _describe(st), real))
    if mode & 0o100:
        found.append("%s has execute bits (%s): a configuration file is not "
                     "a program; fix: chmod 600 %s"
                     % (real, _describe(st), real))
    return found


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
    """State of one resolution: a stack of checked directory fds. Raises
    Refusal for the path (directories, symlinks, kind); the file's own
    problems (``check``) are returned with the open fd."""

    def __init__(self, path: str, check: FileCheck):
        self.path = path
        self.check = check
        # (fd, real path, world-writable-but-sticky)
        self.stack: List[Tuple[int, str, bool]] = []

    def close(self) -> None:
        while self.stack:
            os.close(self.stack.pop()[0])

    def push_dir(self, fd: int, real: str) -> None:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != 0:
            os.close(fd)
            raise Refusal("directory %s is not owned by root (%s); "
                          "fix: chown root:root %s"
                          % (real, _describe(st), real))
        sticky_open = False
        if mode & 0o022:
            if not (mode & stat.S_ISVTX and mode & 0o002):
                os.close(fd)
                raise Refusal(
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
            raise Refusal("%s does not exist" % real, missing=True) from None
        except OSError as exc:
            raise Refusal("cannot open %s: %s" % (real, exc.strerror)) \
                from None

    def resolve(self) -> Tuple[TrustedFile, List[str]]:
        if not os.path.isabs(self.path):
            raise Refusal("not an absolute path", missing=True)
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
                    raise Refusal("too many levels of symbolic links",
                                  missing=True)
                if target.startswith("/"):
                    while len(self.stack) > 1:
                        os.close(self.stack.pop()[0])
                todo[:0] = _components(target)
            elif todo:
                if not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    raise Refusal("%s is not a directory" % real,
                                  missing=True)
                self.push_dir(fd, real)
            else:
                try:
                    return self.open_final(st, name, real)
                finally:
                    os.close(fd)
        raise Refusal("resolves to the directory %s, not a file"
                      % self.stack[-1][1])

    def follow(self, fd: int, st: os.stat_result, name: str, real: str) -> str:
        # The directory holding the link is trusted, but in a sticky
        # directory the link's owner may replace it: links must be root's.
        if st.st_uid != 0:
            raise Refusal("symlink %s is not owned by root (%s); fix: "
                          "chown -h root:root %s" % (real, _describe(st),
                                                     real))
        return os.readlink(name, dir_fd=self.stack[-1][0])

    def open_final(self, st: os.stat_result, name: str, real: str
                   ) -> Tuple[TrustedFile, List[str]]:
        if not stat.S_ISREG(st.st_mode):
            raise Refusal("%s is %s" % (real, "a directory, not a regular "
                                        "file" if stat.S_ISDIR(st.st_mode)
                                        else "not a regular file"))
        dfd, dreal, sticky_open = self.stack[-1]
        if sticky_open:
            raise Refusal(
                "its directory %s is world-writable (sticky); keep it in "
                "a directory only root can write, e.g. /etc/vmsnapshot"
                % dreal)
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            raise Refusal("%s does not exist" % real, missing=True) from None
        except OSError as exc:
            raise Refusal("cannot open %s: %s" % (real, exc.strerror)) \
                from None
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                raise Refusal("%s changed while being checked" % real)
            problems = self.check(fst, real)
        except BaseException:
            os.close(fd)
            raise
        return (TrustedFile(fd, self.path, real, fst.st_dev, fst.st_ino),
                problems)


def walk(path: str, check: FileCheck) -> Tuple[TrustedFile, List[str]]:
    """Resolve and open ``path`` checking every directory and symlink on
    the way (Refusal if one is not root-only), then ``check`` the file:
    its problems are returned with the open fd (the caller closes it)."""
    w = _Walk(path, check)
    try:
        return w.resolve()
    finally:
        w.close()


def _script_message(path: str, phase: str, detail: str) -> str:
    # "Pre-script /x is not ..." rather than "Pre-script /x: /x is not ..."
    if detail.startswith(path + " "):
        detail = detail[len(path):]
    else:
        detail = ": " + detail
    return "%s-script %s%s" % (phase.capitalize(), path, detail)


def open_trusted(path: str, phase: str) -> TrustedScript:
    """Resolve, check and open ``path``; the caller owns (and closes) the fd.

    Raises VmsnapshotError: Pre/Post-ScriptNotFound when a component is
    missing, InsufficientPermissionforPre/Post-Script for any trust problem.
    """
    entries = phase_entries(phase)
    try:
        trusted, problems = walk(path, script_problems)
    except Refusal as r:
        if r.missing:
            raise ScriptError(_script_message(path, phase, r.detail),
                              entries.not_found) from None
        problems, trusted = [r.detail], None
    if problems:
        if trusted is not None:
            os.close(trusted.fd)
        raise TrustError(_script_message(path, phase, problems[0])
                         + "; nothing of this plugin runs",
                         entries.no_permission)
    assert trusted is not None
    return trusted


def open_trusted_script(path: str, phase: str) -> int:
    """Like :func:`open_trusted`; only the fd (O_RDONLY|O_CLOEXEC)."""
    return open_trusted(path, phase).fd


def check_script(path: str, phase: str) -> None:
    """Check ``path`` as :func:`open_trusted` does, running nothing."""
    os.close(open_trusted(path, phase).fd)
