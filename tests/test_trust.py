"""Trust checks on real files: owners, modes, directories, symlinks, and
executing the very file that was checked."""
from __future__ import annotations

import os
import stat

import pytest

from tests.helpers.scripts import NOBODY, Scripts
from vmsnapshot import trust
from vmsnapshot.errors import VmsnapshotError


def refusal(path: str, phase: str = "pre") -> VmsnapshotError:
    with pytest.raises(VmsnapshotError) as info:
        trust.check_script(path, phase)
    return info.value


def test_good_script_opens_the_checked_file(scripts: Scripts, no_leaks):
    path = scripts.write("ok", "exit 0\n")
    trust.check_script(path, "pre")
    checked = trust.open_trusted(path, "post")
    try:
        st = os.fstat(checked.fd)
        assert (st.st_dev, st.st_ino) == (checked.st_dev, checked.st_ino)
        assert (st.st_dev, st.st_ino) == (os.stat(path).st_dev,
                                          os.stat(path).st_ino)
        assert checked.real_path == path
        assert os.get_inheritable(checked.fd) is False
    finally:
        os.close(checked.fd)


@pytest.mark.parametrize("phase,name,code", [
    ("pre", "Pre-ScriptNotFound", 302), ("post", "Post-ScriptNotFound", 303)])
def test_missing_script(scripts: Scripts, phase, name, code, no_leaks):
    path = os.path.join(scripts.dir, "nope")
    err = refusal(path, phase)
    assert (err.entry.error_name, err.entry.code) == (name, code)
    assert str(err) == "%s-script %s does not exist" % (
        phase.capitalize(), path)


def test_missing_directory_and_relative_path(scripts: Scripts, no_leaks):
    path = os.path.join(scripts.dir, "nodir", "x")
    err = refusal(path)
    assert err.entry.error_name == "Pre-ScriptNotFound"
    assert str(err) == "Pre-script %s: %s does not exist" % (
        path, os.path.dirname(path))
    assert str(refusal("bin/true")) == \
        "Pre-script bin/true: not an absolute path"
    file_as_dir = scripts.write("f", "exit 0\n") + "/x"
    assert refusal(file_as_dir).entry.error_name == "Pre-ScriptNotFound"


@pytest.mark.parametrize("phase,name,code", [
    ("pre", "InsufficientPermissionforPre-Script", 306),
    ("post", "InsufficientPermissionforPost-Script", 307)])
def test_not_owned_by_root(scripts: Scripts, phase, name, code, no_leaks):
    path = scripts.write("theirs", "exit 0\n", uid=NOBODY)
    err = refusal(path, phase)
    assert (err.entry.error_name, err.entry.code) == (name, code)
    assert str(err) == (
        "%s-script %s is not owned by root (owner nobody (uid 65534), mode "
        "0700); fix: chown root:root %s && chmod 700 %s; nothing of this "
        "plugin runs" % (phase.capitalize(), path, path, path))


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o710, 0o701, 0o740, 0o777])
def test_group_or_other_bits_refused(scripts: Scripts, mode, no_leaks):
    path = scripts.write("loose", "exit 0\n", mode=mode)
    err = refusal(path)
    assert err.entry.error_name == "InsufficientPermissionforPre-Script"
    assert "accessible by group or others" in str(err)
    assert "mode %04o" % mode in str(err)
    assert "chmod 700 %s" % path in str(err)


def test_owner_only_modes(scripts: Scripts, no_leaks):
    trust.check_script(scripts.write("rx", "exit 0\n", mode=0o500), "pre")
    err = refusal(scripts.write("noexec", "exit 0\n", mode=0o600))
    assert "is not executable" in str(err)


def test_not_a_regular_file(scripts: Scripts, no_leaks):
    d = scripts.subdir("adir", 0o700)
    assert "is a directory, not a regular file" in str(refusal(d))
    fifo = os.path.join(scripts.dir, "fifo")
    os.mkfifo(fifo, 0o700)
    # Refused without opening it (opening a FIFO for reading would block).
    assert "is not a regular file" in str(refusal(fifo))


@pytest.mark.parametrize("mode,who", [(0o775, "group"), (0o757, "others"),
                                      (0o777, "group and others")])
def test_writable_parent_directory_refused(scripts: Scripts, mode, who,
                                           no_leaks):
    d = scripts.subdir("shared", mode)
    path = scripts.write("s", "exit 0\n", where=d)
    err = refusal(path, "post")
    assert err.entry.error_name == "InsufficientPermissionforPost-Script"
    assert str(err) == (
        "Post-script %s: directory %s is writable by %s (owner root (uid 0), "
        "mode %04o); fix: chmod go-w %s; nothing of this plugin runs"
        % (path, d, who, mode, d))


def test_writable_ancestor_refused(scripts: Scripts, no_leaks):
    top = scripts.subdir("top", 0o775)
    inner = scripts.subdir("inner", 0o755, where=top)
    path = scripts.write("s", "exit 0\n", where=inner)
    assert "directory %s is writable by group" % top in str(refusal(path))


def test_parent_not_owned_by_root_refused(scripts: Scripts, no_leaks):
    d = scripts.subdir("userdir", 0o755, uid=NOBODY)
    path = scripts.write("s", "exit 0\n", where=d)
    err = refusal(path)
    assert "directory %s is not owned by root (owner nobody" % d in str(err)


def test_sticky_directory_only_as_ancestor(scripts: Scripts, no_leaks):
    # Like /tmp: root, 1777. Fine above a root-only directory ...
    sticky = scripts.subdir("tmp", 0o1777)
    safe = scripts.subdir("safe", 0o755, where=sticky)
    trust.check_script(scripts.write("s", "exit 0\n", where=safe), "pre")
    # ... but never as the script's own directory.
    err = refusal(scripts.write("s", "exit 0\n", where=sticky))
    assert "its directory %s is world-writable (sticky)" % sticky in str(err)
    # Sticky but owned by a user: that user can do anything in it.
    theirs = scripts.subdir("utmp", 0o1777, uid=NOBODY)
    safe2 = scripts.subdir("safe", 0o755, where=theirs)
    err = refusal(scripts.write("s", "exit 0\n", where=safe2))
    assert "directory %s is not owned by root" % theirs in str(err)
    # World-writable without the sticky bit: anyone may rename entries.
    open_dir = scripts.subdir("open", 0o777)
    safe3 = scripts.subdir("safe", 0o755, where=open_dir)
    err = refusal(scripts.write("s", "exit 0\n", where=safe3))
    assert "directory %s is writable by group and others" % open_dir \
        in str(err)


def test_symlinks_resolved_and_checked(scripts: Scripts, no_leaks):
    real = scripts.write("real", "exit 0\n")
    sub = scripts.subdir("sub", 0o755)
    rel = os.path.join(sub, "rel")
    os.symlink("../real", rel)
    absolute = os.path.join(scripts.dir, "abs")
    os.symlink(real, absolute)
    chain = os.path.join(scripts.dir, "chain")
    os.symlink("sub/rel", chain)
    for link in (rel, absolute, chain, os.path.join(sub, "..", "sub", "rel")):
        checked = trust.open_trusted(link, "pre")
        os.close(checked.fd)
        assert checked.real_path == real and checked.path == link


def test_symlink_to_untrusted_target_refused(scripts: Scripts, no_leaks):
    theirs = scripts.write("theirs", "exit 0\n", uid=NOBODY)
    link = os.path.join(scripts.dir, "link")
    os.symlink(theirs, link)
    err = refusal(link)
    assert str(err).startswith("Pre-script %s: %s is not owned by root"
                               % (link, theirs))
    # A link into a group-writable directory: that directory is checked.
    bad = scripts.subdir("bad", 0o775)
    target = scripts.write("t", "exit 0\n", where=bad)
    link2 = os.path.join(scripts.dir, "link2")
    os.symlink(target, link2)
    assert "directory %s is writable by group" % bad in str(refusal(link2))


def test_symlink_owned_by_user_refused(scripts: Scripts, no_leaks):
    real = scripts.write("real", "exit 0\n")
    link = os.path.join(scripts.dir, "link")
    os.symlink(real, link)
    os.lchown(link, NOBODY, -1)
    assert "symlink %s is not owned by root" % link in str(refusal(link))


def test_symlink_loop(scripts: Scripts, no_leaks):
    a = os.path.join(scripts.dir, "a")
    os.symlink("b", a)
    os.symlink("a", os.path.join(scripts.dir, "b"))
    err = refusal(a)
    assert err.entry.error_name == "Pre-ScriptNotFound"
    assert "too many levels of symbolic links" in str(err)


def test_bad_phase():
    with pytest.raises(ValueError):
        trust.check_script("/bin/true", "during")


def test_root_directory_itself_refused(no_leaks):
    err = refusal("/")
    assert err.entry.error_name == "InsufficientPermissionforPre-Script"
    assert stat.S_ISDIR(os.stat("/").st_mode)
