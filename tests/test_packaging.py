"""The .deb and .rpm: built from a clean copy of the tree, lint-clean, and the
.deb proven by installing it into a fresh Debian 12 minbase root.

Slow (about two minutes warm, plus one debootstrap when the cache under
/var/cache/vmsnapshot-tests is cold); everything is built once per module.
"""
from __future__ import annotations

import glob
import json
import os
import re
import stat
import subprocess
from typing import Dict, Tuple

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers import chroot
from tests.helpers.chroot import pkgbuild
from tests.helpers.loopfs import is_frozen

pytestmark = pytest.mark.packaging

TOML = "/etc/vmsnapshot/vmsnapshot.toml"
AZURE_JSON = "/etc/azure/VMSnapshotScriptPluginConfig.json"
TEMPLATES = (TOML,)
EXAMPLES = "/usr/share/doc/vmsnapshot/examples/"
ADAPTERS = "/usr/share/vmsnapshot/adapters/"
# main when 0.1.0 shipped AZURE_JSON as a conffile: the "old" package.
OLD_COMMIT = "789d87a"
SBIN = "/usr/sbin/vmsnapshot"
UPGRADE_NOTE = "# changed upstream in the upgrade test build\n"
ADMIN_NOTE = "# edited by the administrator\n"


def sh(*argv: str) -> str:
    return chroot.run(argv).stdout


def in_root(root: str, *argv: str, check: bool = True,
            **kw) -> subprocess.CompletedProcess:
    return chroot.chroot_run(root, argv, check=check, **kw)


def write_in_root(root: str, path: str, text: str, mode: int) -> None:
    full = root + path
    os.makedirs(os.path.dirname(full), mode=0o700, exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(full, mode)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tools() -> None:
    if os.geteuid() != 0:
        skip_or_fail("packaging tests need root (debootstrap, chroot)")
    missing = chroot.missing_host_tools()
    if missing:
        skip_or_fail("packaging tools missing: %s" % " ".join(missing))


@pytest.fixture(scope="module")
def outdir(tools, tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="module")
def deb(outdir) -> str:
    return chroot.build_deb(outdir)


@pytest.fixture(scope="module")
def upgrade_deb(deb, outdir) -> str:
    """A later version whose native template changed upstream too, so the
    upgrade meets a real conffile conflict."""
    def tweak(src: str) -> None:
        with open(os.path.join(src, TOML.lstrip("/")), "a") as f:
            f.write(UPGRADE_NOTE)

    version = pkgbuild._changelog_version(chroot.ROOT) + "+upgradetest1"
    return chroot.build_deb(os.path.join(outdir, "upgrade"), version=version,
                            tweak=tweak)


@pytest.fixture(scope="module")
def rpm(outdir) -> str:
    return chroot.build_rpm(os.path.join(outdir, "rpm"))


@pytest.fixture(scope="module")
def old_src(tools, tmp_path_factory) -> str:
    """The tree of 0.1.0, which owned AZURE_JSON."""
    dest = str(tmp_path_factory.mktemp("old-src"))
    res = subprocess.run("git -C '%s' archive %s | tar -x -C '%s'"
                         % (chroot.ROOT, OLD_COMMIT, dest), shell=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        skip_or_fail("cannot extract %s from git: %s"
                     % (OLD_COMMIT, res.stdout.decode(errors="replace")))
    return dest


@pytest.fixture(scope="module")
def old_deb(old_src, outdir) -> str:
    return pkgbuild.build_deb(old_src, os.path.join(outdir, "old"),
                              cache_dir=os.path.join(chroot.CACHE_DIR,
                                                     "builds"))


@pytest.fixture(scope="module")
def old_rpm(old_src, outdir) -> str:
    return pkgbuild.build_rpm(old_src, os.path.join(outdir, "oldrpm"),
                              cache_dir=os.path.join(chroot.CACHE_DIR,
                                                     "builds"))


@pytest.fixture(scope="module")
def upgrade_rpm(outdir) -> str:
    """This tree as release 2, so rpm -U sees an upgrade from 0.1.0-1."""
    src = os.path.join(outdir, "rpm-upgrade-src")
    pkgbuild.clean_copy(chroot.ROOT, src)
    spec = os.path.join(src, "rpm", "vmsnapshot.spec")
    with open(spec, encoding="utf-8") as f:
        text = re.sub(r"^Release:\s*1", "Release:        2", f.read(),
                      count=1, flags=re.M)
    with open(spec, "w", encoding="utf-8") as f:
        f.write(text)
    rpms = os.path.join(outdir, "rpm-upgrade")
    return pkgbuild.build_rpm(src, rpms, cache_dir=os.path.join(
        chroot.CACHE_DIR, "builds"))


@pytest.fixture
def fresh_root(tools, tmp_path_factory):
    root = chroot.make_debian_root(str(tmp_path_factory.mktemp("fresh")))
    yield root
    chroot.remove_root(root)


@pytest.fixture(scope="module")
def installed(deb, tmp_path_factory):
    """A fresh minbase bookworm root with the .deb installed by apt."""
    root = chroot.make_debian_root(str(tmp_path_factory.mktemp("root")))
    chroot.install_debs(root, deb)
    yield root
    chroot.remove_root(root)


def deb_listing(path: str) -> Dict[str, Tuple[str, str]]:
    """path -> (mode string, owner/group) from dpkg-deb --contents."""
    out = {}
    for line in sh("dpkg-deb", "--contents", path).splitlines():
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        name = name.split(" -> ")[0]
        out["/" + name.lstrip("./").rstrip("/")] = (mode, owner)
    return out


def rpm_listing(path: str) -> Dict[str, Tuple[str, str]]:
    out = {}
    for line in sh("rpm", "-qlvp", path).splitlines():
        fields = line.split()
        name = fields[8] if len(fields) > 8 else fields[-1]
        out[name] = (fields[0], "%s/%s" % (fields[2], fields[3]))
    return out


def source_hooks() -> Dict[str, str]:
    """Installed hook path -> expected ls mode, per scripts/install-hooks.sh:
    hooks are root-only executables (the trust check wants 700), files in
    subdirectories (sourced libraries) plain 644."""
    hooks = os.path.join(chroot.ROOT, "hooks")
    out = {}
    for name in pkgbuild.tree_files(chroot.ROOT):
        base = os.path.basename(name)
        if (name.startswith("hooks/") and not base.endswith(".md")
                and not base.startswith(".")):
            nested = "/" in name[len("hooks/"):]
            out["/usr/share/vmsnapshot/" + name] = (
                "-rw-r--r--" if nested else "-rwx------")
    assert out or not os.path.isdir(hooks)
    return out


def source_adapters() -> Dict[str, str]:
    """Installed adapter path -> expected ls mode, per
    scripts/install-adapters.sh: executable in the tree = 0700 script."""
    out = {}
    for name in pkgbuild.tree_files(chroot.ROOT):
        if name.startswith("adapters/") and not name.endswith(".md"):
            executable = os.access(os.path.join(chroot.ROOT, name), os.X_OK)
            out["/usr/share/vmsnapshot/" + name] = (
                "-rwx------" if executable else "-rw-r--r--")
    assert out
    return out


def source_modules() -> set:
    """Every .py of the package in the work tree, relative to the site dir."""
    found = set()
    pkg = os.path.join(chroot.ROOT, "vmsnapshot")
    for name in pkgbuild.tree_files(chroot.ROOT):
        if name.startswith("vmsnapshot/") and name.endswith(".py"):
            found.add(name)
    assert found and os.path.isdir(pkg)
    return found


def python_files(listing: Dict[str, Tuple[str, str]]) -> set:
    out = set()
    for name in listing:
        m = re.search(r"/(?:dist|site)-packages/(vmsnapshot/.*\.py)$", name)
        if m:
            out.add(m.group(1))
    return out


# ---------------------------------------------------------------- sources

def test_versions_agree() -> None:
    upstream = pkgbuild.upstream_version(chroot.ROOT)
    assert pkgbuild._changelog_version(chroot.ROOT) == upstream
    assert pkgbuild.spec_version(chroot.ROOT) == upstream


# ---------------------------------------------------------------- .deb

def test_lintian_prints_nothing(deb) -> None:
    assert pkgbuild.lint_deb(deb) == ""


def test_deb_contents(deb) -> None:
    files = deb_listing(deb)
    assert files[SBIN] == ("-rwxr-xr-x", "root/root")
    assert "/usr/bin/vmsnapshot" not in files
    for template in TEMPLATES:
        assert files[template] == ("-rw-------", "root/root"), template
    assert files["/etc/vmsnapshot"] == ("drwx------", "root/root")
    assert "/usr/share/man/man8/vmsnapshot.8.gz" in files
    assert any(re.search(r"/dist-packages/vmsnapshot/_freeze\.abi3\.so$", f)
               for f in files), "no abi3 extension"
    # pyproject's package list must not leave a subpackage out.
    assert python_files(files) >= source_modules() - {
        "vmsnapshot/_freeze_build.py"}
    for hook, mode in source_hooks().items():
        assert files[hook] == (mode, "root/root"), hook
    for unit in ("vmsnapshot@.service", "vmsnapshot@.timer"):
        assert files["/lib/systemd/system/" + unit] == ("-rw-r--r--",
                                                        "root/root"), unit
    assert files["/usr/lib/tmpfiles.d/vmsnapshot.conf"] == ("-rw-r--r--",
                                                            "root/root")
    for adapter, mode in source_adapters().items():
        assert files[adapter] == (mode, "root/root"), adapter
    # /etc/azure is Azure Backup's: its templates are examples only.
    assert not [f for f in files if f.startswith("/etc/azure")]
    for example in ("VMSnapshotScriptPluginConfig.json",
                    "VMSnapshotPluginHost.conf"):
        assert files[EXAMPLES + example] == ("-rw-r--r--", "root/root")
    conffiles = sh("dpkg-deb", "--info", deb, "conffiles").split()
    assert sorted(conffiles) == sorted(TEMPLATES)
    depends = sh("dpkg-deb", "--field", deb, "Depends")
    assert "python3-cffi-backend-api" in depends  # generated by dh_python3
    assert "python3-packaging" in depends


def test_installed_command_and_extension(installed) -> None:
    res = in_root(installed, "sh", "-c", "command -v vmsnapshot")
    assert res.stdout.strip() == SBIN
    res = in_root(installed, SBIN, "--version")
    assert res.stdout.strip() == "vmsnapshot " + pkgbuild.upstream_version(
        chroot.ROOT)
    in_root(installed, "/usr/bin/python3", "-c", "import vmsnapshot._freeze")


def test_installed_templates_modes_and_owners(installed) -> None:
    for template in TEMPLATES:
        st = os.lstat(installed + template)
        assert stat.S_ISREG(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
    st = os.lstat(installed + "/etc/vmsnapshot")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 0, 0)
    res = in_root(installed, "stat", "-c", "%a %U:%G %n", *TEMPLATES)
    assert res.stdout.split("\n")[:len(TEMPLATES)] == [
        "600 root:root " + t for t in TEMPLATES]
    assert not os.path.lexists(installed + AZURE_JSON)


def test_dpkg_verify_clean(installed) -> None:
    res = in_root(installed, "dpkg", "--verify", "vmsnapshot", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_check_installed_templates(installed) -> None:
    # The templates as installed: valid, freeze only.
    res = in_root(installed, SBIN, "check", check=False)
    # No Azure file any more: the (all-comment) native template or nothing.
    assert res.stdout.startswith("configuration: "), res.stdout
    assert "configuration: " + AZURE_JSON not in res.stdout
    # A chroot has no filesystem of its own to freeze, and check says so
    # (NothingFrozen is its only problem: the templates themselves are fine).
    assert res.returncode == 1, res.stdout + res.stderr
    assert "mount plan: nothing would be frozen" in res.stdout
    assert "1 problem:" in res.stdout and "NothingFrozen (130)" in res.stdout

    # Both templates, pointed at scripts made the way the docs ask.
    pre, post = "/root/vmstest/pre.sh", "/root/vmstest/post.sh"
    for script in (pre, post):
        write_in_root(installed, script, "#!/bin/sh\nexit 0\n", 0o700)
    # Freezing off: the chroot has nothing to freeze (see above).
    with open(installed + TOML, encoding="utf-8") as f:
        native = f.read() + (
            '\n[freeze]\nenabled = false\n'
            '\n[[plugin]]\nname = "test"\npre = ["%s"]\npost = ["%s"]\n'
            % (pre, post))
    write_in_root(installed, "/root/vmstest/vmsnapshot.toml", native, 0o600)
    with open(installed + EXAMPLES + "VMSnapshotScriptPluginConfig.json",
              encoding="utf-8") as f:
        azure = json.load(f)
    azure.update(preScriptLocation=pre, postScriptLocation=post,
                 fsFreezeEnabled=False)
    write_in_root(installed, "/root/vmstest/azure.json", json.dumps(azure), 0o600)
    for config in ("/root/vmstest/vmsnapshot.toml", "/root/vmstest/azure.json"):
        res = in_root(installed, SBIN, "check", "--config", config, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "application-consistent" in res.stdout, res.stdout

    # The shipped hooks pass the trust check where they are installed.
    hooks = [h for h, mode in source_hooks().items() if mode == "-rwx------"]
    if hooks:
        native = "[freeze]\nenabled = false\n" + "".join(
            '[[plugin]]\nname = "%s"\npre = ["%s", "pre"]\npost = ["%s", "post"]\n'
            % (os.path.basename(h), h, h) for h in hooks)
        write_in_root(installed, "/root/vmstest/hooks.toml", native, 0o600)
        res = in_root(installed, SBIN, "check", "--config",
                      "/root/vmstest/hooks.toml", check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        for hook in hooks:
            assert "pre %s pre: ok" % hook in res.stdout, res.stdout

    # A script others may read and run is refused.
    os.chmod(installed + pre, 0o755)
    res = in_root(installed, SBIN, "check", "--config",
                  "/root/vmstest/vmsnapshot.toml", check=False)
    assert res.returncode == 1
    assert "InsufficientPermissionforPre-Script" in res.stdout


def test_azure_enable_in_the_installed_root(installed) -> None:
    """enable names the wrappers where the package put them, root-only as
    Microsoft's extension wants; disable leaves /etc/azure as it was."""
    res = in_root(installed, SBIN, "azure", "enable", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        with open(installed + AZURE_JSON, encoding="utf-8") as f:
            data = json.load(f)
        assert stat.S_IMODE(os.stat(installed + AZURE_JSON).st_mode) == 0o600
        for key in ("preScriptLocation", "postScriptLocation"):
            assert data[key].startswith(ADAPTERS + "azure/"), data
            st = os.stat(installed + data[key])
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
            in_root(installed, "dash", "-n", data[key])
    finally:
        res = in_root(installed, SBIN, "azure", "disable", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not os.path.lexists(installed + AZURE_JSON)


def test_freeze_inside_the_root(installed, loopfs_factory) -> None:
    """The installed extension freezes and thaws a loop filesystem this test
    made, bind-mounted into the root; nothing else is visible to freeze."""
    lfs = loopfs_factory("ext4")
    guard = "/mnt/vmstest"
    target = guard + "/fs"
    res = in_root(installed, SBIN, "run", "--mount", target, "--json",
                  "--", "/bin/true", check=False, timeout=120,
                  binds=[(lfs.mountpoint, target)],
                  env={"VMSNAPSHOT_FREEZE_GUARD": guard})
    assert not is_frozen(lfs.mountpoint)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["consistency"] == "filesystem"
    assert [(m["path"], m["frozen"], m["error"]) for m in report["mounts"]] == [
        (target, True, None)]
    assert report["freeze"]["auto_thawed"] is False
    assert report["snapshot"]["returncode"] == 0
    assert report["snapshot"]["finished_while_frozen"] is True


def test_upgrade_remove_purge(deb, upgrade_deb, tmp_path_factory) -> None:
    root = chroot.make_debian_root(str(tmp_path_factory.mktemp("lifecycle")))
    try:
        chroot.install_debs(root, deb)
        with open(root + TOML, "a", encoding="utf-8") as f:
            f.write(ADMIN_NOTE)

        # Upgrade: the admin's edit stays; the new template waits beside it.
        chroot.install_debs(root, upgrade_deb)
        version = in_root(root, "dpkg-query", "-W", "-f", "${Version}",
                          "vmsnapshot").stdout
        assert version.endswith("+upgradetest1")
        with open(root + TOML, encoding="utf-8") as f:
            kept = f.read()
        assert kept.endswith(ADMIN_NOTE) and UPGRADE_NOTE not in kept
        with open(root + TOML + ".dpkg-dist", encoding="utf-8") as f:
            assert f.read().endswith(UPGRADE_NOTE)
        st = os.stat(root + TOML)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)

        # Remove keeps the configuration, purge deletes it.
        chroot.apt_get(root, "remove", "vmsnapshot")
        assert not os.path.exists(root + SBIN)
        assert os.path.exists(root + TOML)
        status = in_root(root, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}",
                         "vmsnapshot").stdout
        assert status.strip() == "rc"
        chroot.apt_get(root, "purge", "vmsnapshot")
        for path in TEMPLATES + ("/etc/vmsnapshot", TOML + ".dpkg-dist"):
            assert not os.path.lexists(root + path), path
        res = in_root(root, "dpkg-query", "-W", "vmsnapshot", check=False)
        assert res.returncode != 0
    finally:
        chroot.remove_root(root)


# ---------------------------------------------------------------- .rpm

def test_rpmlint_clean(rpm) -> None:
    out = pkgbuild.lint_rpm(rpm)
    assert pkgbuild.rpmlint_clean(out), out


def test_rpm_files_and_modes_match_the_deb(rpm, deb) -> None:
    files = rpm_listing(rpm)
    debfiles = deb_listing(deb)
    assert files[SBIN] == ("-rwxr-xr-x", "root/root")
    for template in TEMPLATES:
        assert files[template] == ("-rw-------", "root/root"), template
    assert files["/etc/vmsnapshot"] == ("drwx------", "root/root")
    assert not [f for f in files if f.startswith("/etc/azure")]
    for adapter, mode in source_adapters().items():
        assert files[adapter] == (mode, "root/root"), adapter
    # Fedora's docdir is unversioned, Debian's rpm still versions it.
    assert [f for f in files if re.match(
        r"/usr/share/doc/vmsnapshot(-[^/]+)?/examples/"
        r"VMSnapshotScriptPluginConfig\.json$", f)], sorted(files)
    assert "/usr/share/man/man8/vmsnapshot.8.gz" in files
    assert any(f.endswith("/vmsnapshot/_freeze.abi3.so") for f in files)
    assert python_files(files) == python_files(debfiles)
    for unit in ("vmsnapshot@.service", "vmsnapshot@.timer"):
        assert files["/usr/lib/systemd/system/" + unit] == ("-rw-r--r--",
                                                            "root/root")
    assert files["/usr/lib/tmpfiles.d/vmsnapshot.conf"][0] == "-rw-r--r--"
    for hook, mode in source_hooks().items():
        assert files[hook] == (mode, "root/root"), hook
    # Same modes for what both ship at the same path (.so modes differ by
    # each distribution's convention: 0644 on Debian, 0755 for rpm).
    for path in set(files) & set(debfiles):
        if not path.endswith(".so"):
            assert files[path][0] == debfiles[path][0], path


def test_rpm_config_noreplace(rpm) -> None:
    assert sorted(sh("rpm", "-qcp", rpm).split()) == sorted(TEMPLATES)
    flags = {}
    for line in sh("rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]",
                   rpm).splitlines():
        flag, _, name = line.partition(" ")
        flags[name] = flag
    for template in TEMPLATES:
        assert set(flags[template]) >= {"c", "n"}, (template, flags[template])


# ------------------------------------------------- living beside Azure Backup

ADMIN_AZURE = json.dumps({
    "pluginName": "ScriptRunner",
    "preScriptLocation": "/etc/azure/scripts/pre.sh",
    "postScriptLocation": "/etc/azure/scripts/post.sh",
    "preScriptParams": ["--db", ""], "postScriptParams": [],
    "preScriptNoOfRetries": 1, "postScriptNoOfRetries": 0,
    "timeoutInSeconds": 120, "continueBackupOnFailure": False,
    "fsFreezeEnabled": True}, indent=4) + "\n"


def conffiles(root: str) -> str:
    return in_root(root, "dpkg-query", "-W", "-f", "${Conffiles}",
                   "vmsnapshot").stdout


def assert_admin_file(root: str) -> None:
    with open(root + AZURE_JSON, encoding="utf-8") as f:
        assert f.read() == ADMIN_AZURE
    st = os.stat(root + AZURE_JSON)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
    left = sorted(os.listdir(root + "/etc/azure"))
    assert left == ["VMSnapshotScriptPluginConfig.json"], left


def test_upgrade_from_0_1_0_keeps_the_admins_azure_file(
        old_deb, upgrade_deb, tmp_path_factory) -> None:
    """0.1.0 owned AZURE_JSON as a conffile: after the upgrade the admin's
    edited file is where the Azure extension reads it, dpkg no longer
    lists it, and neither remove nor purge deletes it."""
    root = chroot.make_debian_root(str(tmp_path_factory.mktemp("azure-up")))
    try:
        chroot.install_debs(root, old_deb)
        assert AZURE_JSON in conffiles(root)
        write_in_root(root, AZURE_JSON, ADMIN_AZURE, 0o600)
        chroot.install_debs(root, upgrade_deb)
        assert_admin_file(root)
        assert AZURE_JSON not in conffiles(root)
        res = in_root(root, "dpkg", "-S", AZURE_JSON, check=False)
        assert res.returncode != 0, res.stdout
        chroot.apt_get(root, "remove", "vmsnapshot")
        assert_admin_file(root)
        chroot.apt_get(root, "purge", "vmsnapshot")
        assert_admin_file(root)
    finally:
        chroot.remove_root(root)


def test_upgrade_from_0_1_0_drops_the_untouched_template(
        old_deb, upgrade_deb, tmp_path_factory) -> None:
    """The unedited template pointed at no script (Pre-ScriptNotFound on
    every backup): the upgrade deletes it and leaves nothing beside it."""
    root = chroot.make_debian_root(str(tmp_path_factory.mktemp("azure-tpl")))
    try:
        chroot.install_debs(root, old_deb)
        chroot.install_debs(root, upgrade_deb)
        assert not os.path.lexists(root + AZURE_JSON)
        assert not glob.glob(root + AZURE_JSON + "*")
        assert AZURE_JSON not in conffiles(root)
    finally:
        chroot.remove_root(root)


def test_install_and_purge_beside_an_admins_azure_file(
        deb, fresh_root) -> None:
    """A VM whose admin already configured Azure Backup: install asks
    nothing, changes nothing, and purge takes nothing of /etc/azure."""
    write_in_root(fresh_root, AZURE_JSON, ADMIN_AZURE, 0o600)
    res = chroot.install_debs(fresh_root, deb)
    assert "conffile" not in (res.stdout + res.stderr).lower()
    assert_admin_file(fresh_root)
    chroot.apt_get(fresh_root, "purge", "vmsnapshot")
    assert_admin_file(fresh_root)


def rpm_in_root(root: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run(["rpm", "--root", root] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    assert res.returncode == 0, res.stdout
    return res


def test_rpm_upgrade_from_0_1_0_keeps_the_admins_azure_file(
        old_rpm, upgrade_rpm, fresh_root) -> None:
    """rpm --root into a Debian root (it has the /bin/sh scriptlets need):
    rpm renames an edited config file the new package no longer lists to
    .rpmsave; %posttrans puts it back, and erase leaves it."""
    rpm_in_root(fresh_root, "--initdb")
    rpm_in_root(fresh_root, "-i", "--nodeps", old_rpm)
    write_in_root(fresh_root, AZURE_JSON, ADMIN_AZURE, 0o600)
    rpm_in_root(fresh_root, "-U", "--nodeps", upgrade_rpm)
    assert_admin_file(fresh_root)
    rpm_in_root(fresh_root, "-e", "--nodeps", "vmsnapshot")
    assert_admin_file(fresh_root)
