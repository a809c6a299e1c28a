#!/usr/bin/python3
"""Build vmsnapshot's .deb or .rpm from a clean copy of the work tree.

The copy holds what `git ls-files --cached --others --exclude-standard`
lists and what exists on disk: the work tree as it is now, committed or not,
without ignored build products (.so, build/, dist/, .venv/, caches). Builds
run with a clean environment so Debian's /usr/bin/python3 is used, never a
pyenv or venv python from the caller's PATH.

usage: pkgbuild.py {deb,rpm} [--outdir DIR] [--version V] [--lint] [--list]
"""
from __future__ import annotations

import argparse
import email.utils
import fcntl
import glob
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
NAME = "vmsnapshot"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Never copied even when untracked and not ignored: they are build leftovers.
SKIP_DIRS = {".git", ".pybuild", "build", "dist", ".venv", "__pycache__",
             ".pytest_cache", ".hypothesis"}
SKIP_SUFFIXES = (".so", ".o", ".pyc")


def clean_env(home: str) -> Dict[str, str]:
    env = {"PATH": CLEAN_PATH, "HOME": home, "LC_ALL": "C.UTF-8",
           "TMPDIR": home}
    for keep in ("DEB_BUILD_OPTIONS", "SOURCE_DATE_EPOCH"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    return env


def sh(argv: Sequence[str], cwd: Optional[str] = None,
       env: Optional[Dict[str, str]] = None) -> str:
    """Run argv; return stdout; on failure raise with the output's tail."""
    res = subprocess.run(list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError("%s failed (exit %d):\n%s"
                           % (" ".join(argv), res.returncode, res.stdout[-6000:]))
    return res.stdout


def tree_files(src: str) -> List[str]:
    """Relative paths of the work tree's files (see module doc)."""
    res = None
    if os.path.isdir(os.path.join(src, ".git")):
        res = subprocess.run(
            ["git", "-C", src, "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"], stdout=subprocess.PIPE)
    if res is not None and res.returncode == 0:
        names = sorted(set(res.stdout.decode().split("\0")) - {""})
    else:  # an unpacked sdist, or git refused: everything but build output
        names = []
        for top, dirs, files in os.walk(src):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS
                       and not d.endswith(".egg-info")]
            names += [os.path.relpath(os.path.join(top, f), src) for f in files
                      if not f.endswith(SKIP_SUFFIXES)]
    return [n for n in sorted(names)
            if os.path.lexists(os.path.join(src, n))
            and not SKIP_DIRS.intersection(n.split("/"))]


def clean_copy(src: str, dst: str) -> List[str]:
    files = tree_files(src)
    for name in files:
        target = os.path.join(dst, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(src, name), target, follow_symlinks=False)
    return files


def tree_digest(root: str, files: Sequence[str], *extra: str) -> str:
    h = hashlib.sha256("\0".join(extra).encode())
    for name in files:
        path = os.path.join(root, name)
        st = os.lstat(path)
        h.update(("\0%s\0%o\0" % (name, stat.S_IMODE(st.st_mode))).encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        else:
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:24]


def upstream_version(src: str) -> str:
    with open(os.path.join(src, NAME, "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    if not m:
        raise RuntimeError("no __version__ in %s/__init__.py" % NAME)
    return m.group(1)


def set_deb_version(srcdir: str, version: str) -> None:
    """Prepend a changelog entry for version, signed like the newest one."""
    path = os.path.join(srcdir, "debian", "changelog")
    with open(path, encoding="utf-8") as f:
        old = f.read()
    m = re.search(r"^ -- (.+?)  ", old, re.M)
    if not m:
        raise RuntimeError("debian/changelog: no trailer line")
    entry = ("%s (%s) unstable; urgency=medium\n\n  * Rebuild as %s.\n\n"
             " -- %s  %s\n\n" % (NAME, version, version, m.group(1),
                                email.utils.formatdate(localtime=False)))
    with open(path, "w", encoding="utf-8") as f:
        f.write(entry + old)


def _cached(cache_dir: Optional[str], key: str, outdir: str,
            build: Callable[[str], None]) -> None:
    """Run build(dir) into a cache slot named key (or straight into outdir
    without a cache), then copy the slot's files into outdir."""
    os.makedirs(outdir, exist_ok=True)
    if cache_dir is None:
        build(outdir)
        return
    slot = os.path.join(cache_dir, key)
    os.makedirs(cache_dir, exist_ok=True)
    with open(slot + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(slot):
            part = slot + ".part"
            shutil.rmtree(part, ignore_errors=True)
            build(part)
            os.rename(part, slot)
    for path in glob.glob(os.path.join(slot, "*")):
        shutil.copy2(path, outdir)
    os.utime(slot)
    _prune(cache_dir)


def _prune(cache_dir: str, max_age_s: float = 14 * 24 * 3600) -> None:
    """Drop cached builds unused for max_age_s (every tree change adds one)."""
    for slot in glob.glob(os.path.join(cache_dir, "*-*")):
        if (os.path.isdir(slot) and not slot.endswith(".part")
                and time.time() - os.path.getmtime(slot) > max_age_s):
            shutil.rmtree(slot, ignore_errors=True)
            try:
                os.unlink(slot + ".lock")
            except OSError:
                pass


def build_deb(src: str, outdir: str, version: Optional[str] = None,
              tweak: Optional[Callable[[str], None]] = None,
              cache_dir: Optional[str] = None) -> str:
    """Source and binary packages of src into outdir; returns the .deb.

    version: a Debian version to build instead of debian/changelog's (for
    upgrade tests). tweak(srcdir) edits the clean copy before the build.
    """
    with tempfile.TemporaryDirectory(prefix="vms-deb-") as work:
        copy = os.path.join(work, NAME)
        files = clean_copy(src, copy)
        if tweak is not None:
            tweak(copy)
            cache_dir = None
        if version:
            set_deb_version(copy, version)
        key = "deb-" + tree_digest(copy, files, version or "")

        def build(dest: str) -> None:
            sh(["dpkg-buildpackage", "-us", "-uc"], cwd=copy, env=clean_env(work))
            os.makedirs(dest, exist_ok=True)
            for path in glob.glob(os.path.join(work, NAME + "*_*")):
                shutil.copy2(path, dest)

        _cached(cache_dir, key, outdir, build)
    ver = version or _changelog_version(src)
    debs = glob.glob(os.path.join(outdir, "%s_%s_*.deb" % (NAME, ver)))
    if len(debs) != 1:
        raise RuntimeError("expected one %s_%s_*.deb in %s, found %s"
                           % (NAME, ver, outdir, debs))
    return debs[0]


def _changelog_version(src: str) -> str:
    with open(os.path.join(src, "debian", "changelog"), encoding="utf-8") as f:
        m = re.match(r"\S+ \(([^)]+)\)", f.readline())
    if not m:
        raise RuntimeError("debian/changelog: cannot read the version")
    return m.group(1)


def spec_version(src: str) -> str:
    with open(os.path.join(src, "rpm", NAME + ".spec"), encoding="utf-8") as f:
        m = re.search(r"^Version:\s*(\S+)", f.read(), re.M)
    if not m:
        raise RuntimeError("rpm/%s.spec: no Version:" % NAME)
    return m.group(1)


def build_rpm(src: str, outdir: str, cache_dir: Optional[str] = None) -> str:
    """Binary .rpm of src into outdir with rpmbuild -bb --nodeps (Debian's
    rpm knows no Fedora build dependencies); returns its path."""
    version = spec_version(src)
    with tempfile.TemporaryDirectory(prefix="vms-rpm-") as work:
        top = "%s-%s" % (NAME, version)
        files = clean_copy(src, os.path.join(work, top))
        key = "rpm-" + tree_digest(os.path.join(work, top), files)

        def build(dest: str) -> None:
            topdir = os.path.join(work, "rpmbuild")
            os.makedirs(os.path.join(topdir, "SOURCES"))
            sh(["tar", "-C", work, "--owner=0", "--group=0", "-czf",
                os.path.join(topdir, "SOURCES", top + ".tar.gz"), top])
            sh(["rpmbuild", "-bb", "--nodeps", "--define", "_topdir " + topdir,
                os.path.join(work, top, "rpm", NAME + ".spec")],
               env=clean_env(work))
            os.makedirs(dest, exist_ok=True)
            for path in glob.glob(os.path.join(topdir, "RPMS", "*", "*.rpm")):
                shutil.copy2(path, dest)

        _cached(cache_dir, key, outdir, build)
    rpms = [p for p in glob.glob(os.path.join(outdir, "%s-%s-*.rpm" % (NAME, version)))
            if "debug" not in os.path.basename(p)]
    if len(rpms) != 1:
        raise RuntimeError("expected one %s-%s-*.rpm in %s, found %s"
                           % (NAME, version, outdir, rpms))
    return rpms[0]


def _lint_as_nobody(argv: List[str], paths: Sequence[str],
                    nargs: Optional[int] = None) -> str:
    """Lintian warns when run as root; run linters as nobody on a readable
    copy of the artifacts, passing the first nargs (default all) of them.
    Returns everything they print."""
    with tempfile.TemporaryDirectory(prefix="vms-lint-") as tmp:
        os.chmod(tmp, 0o755)
        copies = []
        for path in paths:
            copies.append(shutil.copy(path, tmp))
            os.chmod(copies[-1], 0o644)
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup",
                    "--clear-groups", "--"] + argv
        res = subprocess.run(argv + copies[:nargs], cwd=tmp, env=clean_env(tmp),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    return res.stdout.replace(tmp + "/", "")


def lint_deb(deb: str) -> str:
    """lintian's output for the build around deb (its .changes: source,
    binaries, buildinfo); empty when clean."""
    outdir = os.path.dirname(deb)
    changes = glob.glob(os.path.join(outdir, "%s_*.changes" % NAME))
    base = os.path.basename(deb)[:-len(".deb")]
    changes = [c for c in changes if os.path.basename(c)[:-len(".changes")] == base]
    if len(changes) != 1:
        return _lint_as_nobody(["lintian"], [deb])
    with open(changes[0], encoding="utf-8") as f:
        listed = re.findall(r"^ [0-9a-f]{40,} \d+ (\S+)$", f.read(), re.M)
    parts = [changes[0]] + [os.path.join(outdir, n) for n in sorted(set(listed))]
    return _lint_as_nobody(["lintian"], parts, nargs=1)


def lint_rpm(rpm: str, src: str = SRC) -> str:
    """rpmlint's output for rpm and the spec, with rpm/vmsnapshot.rpmlintrc."""
    spec = os.path.join(src, "rpm", NAME + ".spec")
    rc = os.path.join(src, "rpm", NAME + ".rpmlintrc")
    # Filters for files that may not exist yet (hooks/) must not count.
    opts = ["-r", rc, "--ignore-unused-rpmlintrc"] if os.path.exists(rc) else []
    return _lint_as_nobody(["rpmlint"] + opts, [rpm, spec])


def rpmlint_clean(output: str) -> bool:
    return re.search(r"\b0 errors, 0 warnings\b", output) is not None


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["deb", "rpm"])
    p.add_argument("--outdir", default=os.path.join(SRC, "dist"))
    p.add_argument("--version", help="Debian version to build (deb only)")
    p.add_argument("--lint", action="store_true",
                   help="run lintian/rpmlint; fail unless clean")
    p.add_argument("--list", action="store_true", help="print the file list")
    args = p.parse_args(argv)
    outdir = os.path.abspath(args.outdir)
    if args.kind == "deb":
        pkg = build_deb(SRC, outdir, version=args.version)
    else:
        pkg = build_rpm(SRC, outdir)
    print(pkg)
    if args.list:
        if args.kind == "deb":
            print(sh(["dpkg-deb", "--contents", pkg]), end="")
        else:
            print(sh(["rpm", "-qlvp", pkg]), end="")
    if args.lint:
        if args.kind == "deb":
            out = lint_deb(pkg)
            ok = out.strip() == ""
        else:
            out = lint_rpm(pkg)
            ok = rpmlint_clean(out)
        print(out, end="")
        print("%s: %s" % ("lintian" if args.kind == "deb" else "rpmlint",
                          "clean" if ok else "NOT CLEAN"))
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
