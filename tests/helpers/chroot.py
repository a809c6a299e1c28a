"""Fresh Debian roots and the project's OS packages, for packaging and VM tests.

- build_deb(outdir) / build_rpm(outdir): build the packages from a clean copy
  of the work tree (scripts/pkgbuild.py), cached by the tree's content.
- make_debian_root(dir): a minbase bookworm root, unpacked from a tarball made
  once by debootstrap and kept under CACHE_DIR, so a second call takes seconds.
- chroot_run(root, argv): run a command inside such a root, in a private mount
  namespace: /proc, /sys, /dev (and any bind mounts asked for) exist only for
  that command and vanish with it, even if the test is killed.
- install_debs(root, *debs) / apt_get(root, *args): apt-get inside the root
  (dependencies from the host's Debian mirror), with a .deb cache shared
  between roots.

Every command inside a root gets a clean environment: the host's pyenv python
must never leak into a package build or a chroot.
"""
from __future__ import annotations

import fcntl
import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE_DIR = os.environ.get("VMSNAPSHOT_TEST_CACHE", "/var/cache/vmsnapshot-tests")
SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# Lists baked into the tarball go stale with point releases; rebuild weekly.
TARBALL_MAX_AGE_S = 7 * 24 * 3600
CLEAN_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}
# Tools the packaging and chroot helpers need on the host.
HOST_TOOLS = ("debootstrap", "dpkg-buildpackage", "lintian", "rpmbuild",
              "rpmlint", "unshare", "chroot", "zstd")


def _load_pkgbuild():
    spec = importlib.util.spec_from_file_location(
        "vms_pkgbuild", os.path.join(ROOT, "scripts", "pkgbuild.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


pkgbuild = _load_pkgbuild()


def missing_host_tools() -> List[str]:
    return [t for t in HOST_TOOLS if shutil.which(t, path=CLEAN_ENV["PATH"]) is None]


def run(argv: Sequence[str], check: bool = True, timeout: float = 600,
        env: Optional[Dict[str, str]] = None, input: Optional[str] = None,
        **kw) -> subprocess.CompletedProcess:
    """Run with the clean environment, in its own process group so a timeout
    kills everything it started (a chroot's processes keep their mount
    namespace alive); on failure the error shows the output."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(CLEAN_ENV, **(env or {})),
                            start_new_session=True,
                            stdin=subprocess.DEVNULL if input is None
                            else subprocess.PIPE, **kw)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    res = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and res.returncode != 0:
        raise AssertionError("%s: exit %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(argv), res.returncode, res.stdout[-4000:], res.stderr[-4000:]))
    return res


# ---------------------------------------------------------------- packages

def build_deb(outdir: str, version: Optional[str] = None,
              tweak: Optional[Callable[[str], None]] = None) -> str:
    """Build the .deb (and its source package) into outdir; return the .deb.

    version overrides debian/changelog's (for upgrade tests); tweak(srcdir)
    may edit the clean copy before the build (the result is then not cached).
    """
    cache = None if tweak else os.path.join(CACHE_DIR, "builds")
    return pkgbuild.build_deb(ROOT, outdir, version=version, tweak=tweak,
                              cache_dir=cache)


def build_rpm(outdir: str) -> str:
    """Build the binary .rpm into outdir; return its path."""
    return pkgbuild.build_rpm(ROOT, outdir,
                              cache_dir=os.path.join(CACHE_DIR, "builds"))


# ---------------------------------------------------------------- mirror

def _host_apt_entries() -> List[Tuple[str, str, str]]:
    """(uri, suite, components) of the host's enabled deb sources."""
    entries = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path, encoding="utf-8") as f:
            for stanza in re.split(r"\n\s*\n", f.read()):
                fields: Dict[str, str] = {}
                for line in stanza.splitlines():
                    m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                    if m and not line.startswith("#"):
                        fields[m.group(1).lower()] = m.group(2).strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        entries.append((uri, suite, fields.get("components", "main")))
    for path in ["/etc/apt/sources.list"] + sorted(
            glob.glob("/etc/apt/sources.list.d/*.list")):
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
                if len(words) >= 4 and words[0] == "deb":
                    entries.append((words[1], words[2], " ".join(words[3:])))
    return entries


def debian_sources(suite: str = SUITE) -> List[Tuple[str, str, str]]:
    """The host's Debian sources for suite (main, -updates, -security), so
    the chroot uses the same mirror as the host's apt."""
    mine = [e for e in _host_apt_entries()
            if e[1] == suite or e[1].startswith(suite + "-")
            or e[1].startswith(suite + "/")]
    return mine or [(FALLBACK_MIRROR, suite, "main")]


def debian_mirror(suite: str = SUITE) -> str:
    for uri, s, _ in debian_sources(suite):
        if s == suite:
            return uri
    return FALLBACK_MIRROR


# ---------------------------------------------------------------- roots

@contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_sources(root: str, suite: str) -> None:
    lines = ["deb %s %s %s\n" % e for e in debian_sources(suite)]
    with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
        f.writelines(lines)


def _copy_resolv_conf(root: str) -> None:
    target = os.path.join(root, "etc/resolv.conf")
    if os.path.lexists(target):
        os.unlink(target)
    if os.path.exists("/etc/resolv.conf"):
        shutil.copyfile("/etc/resolv.conf", target)


def minbase_tarball(cache_dir: str = CACHE_DIR, suite: str = SUITE) -> str:
    """A debootstrap --variant=minbase root of suite with fresh apt lists,
    as a .tar.zst under cache_dir; made once (~1 min), then reused."""
    tarball = os.path.join(cache_dir, "minbase-%s.tar.zst" % suite)
    with _locked(tarball + ".lock"):
        if (os.path.exists(tarball)
                and time.time() - os.path.getmtime(tarball) < TARBALL_MAX_AGE_S):
            return tarball
        work = tarball + ".tmp"
        remove_root(work)
        try:
            run(["debootstrap", "--variant=minbase", suite, work,
                 debian_mirror(suite)], timeout=900)
            _write_sources(work, suite)
            _copy_resolv_conf(work)
            chroot_run(work, ["apt-get", "update", "-q"], timeout=600)
            chroot_run(work, ["apt-get", "clean"])
            run(["tar", "--numeric-owner", "--xattrs", "-I", "zstd -T0",
                 "-C", work, "-cf", tarball + ".part", "."], timeout=600)
            os.replace(tarball + ".part", tarball)
        finally:
            remove_root(work)
    return tarball


def make_debian_root(directory: str, cache_dir: str = CACHE_DIR,
                     suite: str = SUITE) -> str:
    """Unpack a fresh minbase root of suite into directory (made if needed);
    return directory. The first call runs debootstrap, later ones take
    seconds."""
    tarball = minbase_tarball(cache_dir, suite)
    os.makedirs(directory, exist_ok=True)
    run(["tar", "--numeric-owner", "--xattrs", "-I", "zstd", "-C", directory,
         "-xpf", tarball], timeout=300)
    _copy_resolv_conf(directory)
    return directory


def _mounts_under(path: str) -> List[str]:
    real = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == real or point.startswith(real.rstrip("/") + "/"):
                found.append(point)
    return found


def remove_root(directory: str) -> None:
    """rm -rf a root, but never through a mount (a bind-mounted /dev would
    take the host's device nodes with it)."""
    if not os.path.lexists(directory):
        return
    mounts = _mounts_under(directory)
    if mounts:
        raise AssertionError("refusing to delete %s: mounts inside: %s"
                             % (directory, mounts))
    shutil.rmtree(directory)


_NS_SCRIPT = r'''
set -e
root=$1; shift
nbind=$1; shift
mounted=""
cleanup() {
    # Unmount in reverse order; the private namespace would drop them on
    # exit anyway, this keeps even a lingering child from holding them.
    for m in $mounted; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
mount --make-rprivate /
if [ "$VMS_CHROOT_PROC" = 1 ]; then
    mount -t proc proc "$root/proc"; mounted="$root/proc $mounted"
    mount -t sysfs sysfs "$root/sys"; mounted="$root/sys $mounted"
    mount --bind /dev "$root/dev"; mounted="$root/dev $mounted"
fi
while [ "$nbind" -gt 0 ]; do
    src=$1; dst=$2; shift 2; nbind=$((nbind - 1))
    mkdir -p "$root$dst"
    mount --bind "$src" "$root$dst"; mounted="$root$dst $mounted"
done
status=0
chroot "$root" "$@" || status=$?
exit $status
'''


def chroot_run(root: str, argv: Sequence[str], check: bool = True,
               proc: bool = True, binds: Sequence[Tuple[str, str]] = (),
               env: Optional[Dict[str, str]] = None, timeout: float = 600,
               input: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run argv inside root, in a new private mount namespace.

    proc: mount /proc and /sys and bind /dev for the command. binds: (host
    path, path inside root) bind mounts. Nothing mounted here outlives the
    command, and nothing propagates to the host.
    """
    flat: List[str] = []
    for src, dst in binds:
        flat += [src, dst]
    full_env = dict(env or {}, VMS_CHROOT_PROC="1" if proc else "0")
    return run(["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _NS_SCRIPT, "sh", root, str(len(binds))] + flat
               + list(argv), check=check, env=full_env, timeout=timeout,
               input=input)


def _apt_cache() -> str:
    path = os.path.join(CACHE_DIR, "apt-archives")
    os.makedirs(path, exist_ok=True)
    return path


def apt_get(root: str, *args: str, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """apt-get ARGS inside root; downloaded .debs are kept in CACHE_DIR
    between roots. Refreshes the lists once if the mirror moved on."""
    archives = os.path.join(root, "var/cache/apt/archives")
    for deb in glob.glob(os.path.join(_apt_cache(), "*.deb")):
        target = os.path.join(archives, os.path.basename(deb))
        if not os.path.exists(target):
            shutil.copyfile(deb, target)
    argv = ["apt-get", "-y", "-q", "--no-install-recommends",
            "-o", "Dpkg::Options::=--force-confdef",
            "-o", "Dpkg::Options::=--force-confold"] + list(args)
    res = chroot_run(root, argv, check=False, timeout=timeout)
    if res.returncode != 0 and ("404" in res.stderr or "Unable to fetch" in res.stderr):
        chroot_run(root, ["apt-get", "update", "-q"], timeout=timeout)
        res = chroot_run(root, argv, check=False, timeout=timeout)
    for deb in glob.glob(os.path.join(archives, "*.deb")):
        target = os.path.join(_apt_cache(), os.path.basename(deb))
        if not os.path.exists(target):
            # Atomic: another run may be copying the cache at the same time.
            part = "%s.%d.part" % (target, os.getpid())
            shutil.copyfile(deb, part)
            os.replace(part, target)
    if check and res.returncode != 0:
        raise AssertionError("apt-get %s: exit %d\n%s\n%s" % (
            " ".join(args), res.returncode, res.stdout[-4000:], res.stderr[-4000:]))
    return res


def install_debs(root: str, *debs: str) -> subprocess.CompletedProcess:
    """apt-get install the given host .deb files into root (dependencies from
    the mirror)."""
    inside = []
    for deb in debs:
        name = os.path.basename(deb)
        shutil.copyfile(deb, os.path.join(root, "tmp", name))
        inside.append("/tmp/" + name)
    return apt_get(root, "install", *inside)
