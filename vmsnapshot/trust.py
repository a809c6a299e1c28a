"""Trust checks for pre/post scripts and configuration files: one walk, one
set of messages.

The path is resolved by hand, one component at a time, each opened with
``O_PATH|O_NOFOLLOW`` relative to the directory fd already checked, so what is
checked is what is opened (no re-resolution by path between check and use).
Every directory on the resolved path, every symlink followed and the script
itself must be owned by root. Directories must not be writable by group or
others, with one exception:

*A root-owned sticky directory (``/tmp``) is accepted as an ancestor, but
never as the directory that holds the file*: the sticky bit stops anyone but
an entry's owner from renaming or unlinking it, and every entry resolved
through such a directory must be root's; but scripts source and write
siblings (``$(dirname "$0")/common.sh``), which anyone could plant there.

A group-writable directory is refused even when its group is root (non-root
users can be in group 0); ACLs granting write show in the group bits.

Scripts and configuration files differ only in the last step: both owner
root and no group/other access; scripts executable, configuration files
not (the problems are listed in one format, owner as "name (uid N)").

Scripts are executed by their configured path once the walk passed: the
check-then-exec window is a race only root can win (every component is
root's and writable by root alone). Executing through /proc/self/fd/N
would leave a readable fd on the script in every child it starts, and
give it a useless ``$0``.
"""
from __future__ import annotations

import os
import pwd
import stat
from typing import Callable, List, Tuple

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.errors import ScriptError, TrustError, phase_entries

MAX_SYMLINKS = 40   # the kernel's own limit (ELOOP)
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: never hang on a FIFO swapped in by root between the two opens.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@frozen_record
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


def _file_problems(st: os.stat_result, real: str, mode_wanted: int,
                   why_private: str, chown: str, chmod: str) -> List[str]:
    """What scripts and configuration files share: owner root, no access
    at all for group or others; every problem, owners in one format."""
    found = []
    if st.st_uid != 0:
        found.append("%s is not owned by root (%s); fix: %s"
                     % (real, _describe(st), chown))
    if stat.S_IMODE(st.st_mode) & 0o077:
        found.append("%s is accessible by group or others (%s); expected "
                     "mode %03o%s; fix: %s" % (real, _describe(st),
                                               mode_wanted, why_private,
                                               chmod))
    return found


def script_problems(st: os.stat_result, real: str) -> List[str]:
    """A script: owner root, no group/other access, executable."""
    fix = "chown root:root %s && chmod 700 %s" % (real, real)
    found = _file_problems(st, real, 0o700, "", fix, fix)
    if not st.st_mode & stat.S_IXUSR:
        found.append("%s is not executable (%s); fix: %s"
                     % (real, _describe(st), fix))
    return found


def config_problems(st: os.stat_result, real: str) -> List[str]:
    """A configuration file names programs run as root: owner root, no
    group/other access (Microsoft's error 317), no execute bits (+x means
    a careless chmod 755/777)."""
    chmod = "chmod 600 %s" % real
    found = _file_problems(st, real, 0o600, ", as Microsoft's extension "
                           "requires (its error 317 refuses it)",
                           "chown root:root %s" % real, chmod)
    if st.st_mode & 0o100:
        found.append("%s has execute bits (%s): a configuration file is not "
                     "a program; fix: %s" % (real, _describe(st), chmod))
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
    return " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002))
                        if mode & bit)


def _components(path: str) -> List[str]:
    return [c for c in path.split("/") if c and c != "."]


def _open_at(dfd: int, name: str, real: str, flags: int) -> int:
    try:
        return os.open(name, flags, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        raise Refusal("%s does not exist" % real, missing=True) from None
    except OSError as exc:
        raise Refusal("cannot open %s: %s" % (real, exc.strerror)) from None


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
        # World-writable but sticky: acceptable as an ancestor only.
        sticky_open = bool(mode & 0o022)
        if sticky_open and not (mode & stat.S_ISVTX and mode & 0o002):
            os.close(fd)
            raise Refusal(
                "directory %s is writable by %s (%s); fix: chmod go-w %s"
                % (real, _writers(mode), _describe(st), real))
        self.stack.append((fd, real, sticky_open))

    def step(self, name: str) -> Tuple[int, str]:
        dfd, dreal, _ = self.stack[-1]
        real = os.path.join(dreal, name)
        return _open_at(dfd, name, real, _PATH_FLAGS), real

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
        fd = _open_at(dfd, name, real, _OPEN_FLAGS)
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
    """Resolve, check and open ``path``; the caller closes the fd. Raises
    Pre/Post-ScriptNotFound when a component is missing,
    InsufficientPermissionforPre/Post-Script for any trust problem."""
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


def check_script(path: str, phase: str) -> None:
    """Check ``path`` as :func:`open_trusted` does, running nothing."""
    os.close(open_trusted(path, phase).fd)
