"""`vmsnapshot run` end to end on real loop filesystems (freeze-only runs:
no configuration)."""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time

import pytest

from tests.helpers.cli import run_json, run_vmsnapshot
from tests.helpers.loopfs import is_frozen, run




def probe_script(tmp_path, mounts):
    """A snapshot command that records, for each mount, whether it is
    frozen right now (fsfreeze -f answers EBUSY on a frozen filesystem)."""
    out = tmp_path / "probe.json"
    code = (
        "import json, subprocess, sys\n"
        "res = {}\n"
        "for m in sys.argv[2:]:\n"
        "    p = subprocess.run(['fsfreeze', '-f', m], capture_output=True,"
        " text=True)\n"
        "    if p.returncode == 0:\n"
        "        subprocess.run(['fsfreeze', '-u', m])\n"
        "    res[m] = p.returncode != 0 and 'busy' in p.stderr.lower()\n"
        "json.dump(res, open(sys.argv[1], 'w'))\n")
    return [sys.executable, "-c", code, str(out)] + [str(m) for m in mounts], out


def test_two_mounts_frozen_during_command_and_thawed_after(
        loopfs_factory, tmp_path, no_config):
    a = loopfs_factory("ext4")
    b = loopfs_factory("xfs")
    cmd, out = probe_script(tmp_path, [a, b])
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--mount", str(b), "--json", "--", *cmd)
    assert report["_returncode"] == 0, report
    assert json.loads(out.read_text()) == {str(a): True, str(b): True}
    assert report["consistency"] == "filesystem"
    assert report["snapshot_taken"] is True
    assert report["errors"] == []
    by_path = {m["path"]: m for m in report["mounts"]}
    assert set(by_path) == {str(a), str(b)}
    for m in by_path.values():
        assert m["frozen"] is True and m["error"] is None
        assert m["freeze_ms"] > 0 and m["thaw_ms"] > 0
    assert report["snapshot"]["finished_while_frozen"] is True
    assert report["freeze"]["auto_thawed"] is False
    assert not is_frozen(str(a)) and not is_frozen(str(b))


def test_watchdog_thaws_during_long_snapshot(loopfs_factory, tmp_path,
                                             no_config):
    a = loopfs_factory("ext4")
    times = tmp_path / "times"
    # The writer starts inside the freeze and must resume at the watchdog's
    # deadline (1 s), not when the 4 s command ends.
    cmd = ["sh", "-c",
           'date +%%s.%%N > %s; echo data > %s/file; date +%%s.%%N >> %s; '
           'sleep 4' % (times, a, times)]
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--freeze-timeout", "1", "--json", "--", *cmd)
    t0, t1 = (float(x) for x in times.read_text().split())
    assert 0.3 < t1 - t0 < 2.5, t1 - t0
    assert report["consistency"] == "crash"
    assert report["_returncode"] == 1
    assert [e["name"] for e in report["errors"]] == ["FsFreezeTimeout"]
    assert report["errors"][0]["code"] == 122
    assert report["freeze"]["auto_thawed"] is True
    assert report["snapshot"]["finished_while_frozen"] is False
    assert (a.mountpoint + "/file") and open(a.mountpoint + "/file").read() == "data\n"


def test_foreign_freeze_is_reported_and_left_frozen(loopfs_factory,
                                                    no_config):
    a = loopfs_factory("ext4")
    b = loopfs_factory("btrfs")
    run("fsfreeze", "-f", str(a))
    try:
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--mount", str(b), "--json", "--", "true")
        assert is_frozen(str(a)), "vmsnapshot thawed a foreign freeze"
    finally:
        run("fsfreeze", "-u", str(a), check=False)
    names = [e["name"] for e in report["errors"]]
    assert names == ["FrozenByAnotherProcess"]
    assert report["errors"][0]["code"] == 125
    by_path = {m["path"]: m for m in report["mounts"]}
    assert by_path[str(a)]["frozen"] is False
    assert by_path[str(b)]["frozen"] is True
    assert report["consistency"] == "crash"


def test_bind_mount_of_same_superblock_frozen_once(loopfs_factory,
                                                   tmp_path, no_config):
    a = loopfs_factory("ext4")
    bind = tmp_path / "bind"
    bind.mkdir()
    run("mount", "--bind", str(a), str(bind))
    try:
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--mount", str(bind), "--json", "--", "true")
    finally:
        run("umount", str(bind))
    assert report["_returncode"] == 0, report
    frozen = [m for m in report["mounts"] if m["frozen"]]
    assert len(frozen) == 1
    assert report["errors"] == []


def test_no_snapshot_command_freezes_and_thaws_at_once(loopfs_factory,
                                                       no_config):
    a = loopfs_factory("xfs")
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json")
    assert report["_returncode"] == 0
    assert report["snapshot_taken"] is False
    assert report["mounts"][0]["frozen"] is True
    assert not is_frozen(str(a))


def test_failing_snapshot_command(loopfs_factory, no_config):
    a = loopfs_factory("ext4")
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json", "--", "sh", "-c", "exit 7")
    assert report["_returncode"] == 1
    assert [e["name"] for e in report["errors"]] == ["SnapshotCommandFailed"]
    assert "exit status 7" in report["errors"][0]["message"]
    assert report["snapshot"]["returncode"] == 7
    assert report["snapshot_taken"] is False
    assert not is_frozen(str(a))


def test_missing_snapshot_command(loopfs_factory, no_config):
    a = loopfs_factory("ext4")
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json", "--", "/nonexistent/snapshot-tool")
    assert [e["name"] for e in report["errors"]] == ["SnapshotCommandFailed"]
    assert report["_returncode"] == 1
    assert not is_frozen(str(a))


def test_mount_that_is_not_a_mount_point(tmp_path, no_config, root_loop):
    report = run_json("run", "--config", no_config, "--mount",
                      str(tmp_path), "--json", "--", "true")
    assert report["consistency"] == "failed"
    assert [e["name"] for e in report["errors"]] == ["UnableToOpenMount"]
    assert report["_returncode"] == 3


def test_status_file_written_after_thaw(loopfs_factory, tmp_path, no_config):
    a = loopfs_factory("ext4")
    status = tmp_path / "status.json"
    res = run_vmsnapshot("run", "--config", no_config, "--mount", str(a),
                         "--status-file", str(status), "--", "true")
    assert res.returncode == 0, res.stderr
    assert "consistency: filesystem" in res.stdout
    assert json.loads(status.read_text())["consistency"] == "filesystem"


def test_unwritable_status_file_still_reports_and_thaws(loopfs_factory,
                                                        no_config):
    a = loopfs_factory("ext4")
    res = run_vmsnapshot("run", "--config", no_config, "--mount", str(a),
                         "--json", "--status-file", "/proc/version/status",
                         "--", "true")
    assert json.loads(res.stdout)["consistency"] == "filesystem"
    assert res.returncode != 0
    assert "status file" in res.stderr
    assert "Traceback" not in res.stderr
    assert not is_frozen(str(a))


def test_second_run_fails_fast_with_already_running(loopfs_factory, run_dir,
                                                    no_config):
    a = loopfs_factory("ext4")
    with open(os.path.join(run_dir, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start = time.monotonic()
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--json", "--", "true")
    assert time.monotonic() - start < 10
    assert [e["name"] for e in report["errors"]] == ["AlreadyRunning"]
    assert report["consistency"] == "failed"
    assert report["mounts"] == []


def test_azure_lock_is_honoured(loopfs_factory, tmp_path, no_config,
                                monkeypatch):
    a = loopfs_factory("ext4")
    azure = tmp_path / "SafeFreezeLockFile"
    azure.write_text("")
    monkeypatch.setenv("VMSNAPSHOT_AZURE_LOCK", str(azure))
    with open(azure) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--json", "--", "true")
    assert [e["name"] for e in report["errors"]] == ["AlreadyRunning"]
    assert "Azure" in report["errors"][0]["message"]


def test_stale_state_file_refuses_run_until_recovered(loopfs_factory,
                                                      run_dir, no_config):
    a = loopfs_factory("ext4")
    st = os.stat(a.device)
    state = {"pid": 1, "mounts": [{"path": str(a),
                                   "major": os.major(st.st_rdev),
                                   "minor": os.minor(st.st_rdev),
                                   "fstype": "ext4"}]}
    with open(os.path.join(run_dir, "state.json"), "w") as f:
        json.dump(state, f)
    # Both the supervisor and its guardian died with A frozen.
    run("fsfreeze", "-f", str(a))
    try:
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--json", "--", "true")
        assert [e["name"] for e in report["errors"]] == ["StaleFreezeState"]
        assert "thaw --recover" in report["errors"][0]["action"]
        res = run_vmsnapshot("thaw", "--recover", "--json")
        assert res.returncode == 0, res.stderr
        recovered = json.loads(res.stdout)["recovered"]
        assert [r["action"] for r in recovered] == ["thawed"]
        assert not is_frozen(str(a))
    finally:
        run("fsfreeze", "-u", str(a), check=False)
    assert not os.path.exists(os.path.join(run_dir, "state.json"))
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json", "--", "true")
    assert report["_returncode"] == 0


def test_thaw_recover_without_state_is_a_no_op(root_loop):
    res = run_vmsnapshot("thaw", "--recover")
    assert res.returncode == 0
    assert "nothing to recover" in res.stdout


def test_version():
    res = run_vmsnapshot("--version")
    assert res.returncode == 0 and res.stdout.startswith("vmsnapshot ")


def test_named_mount_that_cannot_be_frozen_is_listed(loopfs_factory,
                                                     tmp_path, no_config):
    a = loopfs_factory("ext4")
    ro = tmp_path / "ro"
    ro.mkdir()
    run("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro))
    try:
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--mount", str(ro), "--json", "--", "true")
    finally:
        run("umount", str(ro))
    by_path = {m["path"]: m for m in report["mounts"]}
    assert by_path[str(a)]["frozen"] is True
    assert by_path[str(ro)]["frozen"] is False
    assert "pseudo filesystem" in by_path[str(ro)]["error"]
    assert report["consistency"] == "filesystem"


def test_presync_from_the_native_config(loopfs_factory, tmp_path):
    a = loopfs_factory("xfs")
    with open(a.mountpoint + "/dirty", "wb") as f:
        f.write(b"x" * (4 << 20))       # in the page cache, not yet on disk
    config = tmp_path / "presync.toml"
    config.write_text("[freeze]\npresync = true\ntimeout = 30\n")
    os.chmod(str(config), 0o600)
    report = run_json("run", "--config", str(config), "--mount", str(a),
                      "--json", "--", "true")
    assert report["consistency"] == "filesystem", report["errors"]
    assert report["mounts"][0]["frozen"] is True


# ---- the report never claims more than happened (issue 11) ----

def test_include_that_matches_nothing_is_nothing_frozen(loopfs_factory,
                                                        tmp_path):
    a = loopfs_factory("ext4")
    config = tmp_path / "typo.toml"
    config.write_text('[freeze]\ninclude = ["%s/no-such-mount*"]\n'
                      % tmp_path)
    os.chmod(str(config), 0o600)
    report = run_json("run", "--config", str(config), "--json", "--", "true")
    assert report["consistency"] == "crash", report
    assert "NothingFrozen" in [e["name"] for e in report["errors"]]
    assert report["_returncode"] == 1
    assert not is_frozen(str(a))
    res = run_vmsnapshot("check", "--config", str(config))
    assert res.returncode == 1, res.stdout
    assert "NothingFrozen (130): [freeze] include" in res.stdout
    assert "mount plan: nothing would be frozen" in res.stdout


def test_only_unfreezable_mounts_named_is_nothing_frozen(tmp_path, no_config,
                                                         root_loop):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    run("mount", "-t", "tmpfs", "none", str(mnt))
    try:
        report = run_json("run", "--config", no_config, "--mount", str(mnt),
                          "--json", "--", "true")
    finally:
        run("umount", str(mnt))
    assert report["consistency"] == "crash"
    assert [e["name"] for e in report["errors"]] == ["NothingFrozen"]
    assert report["mounts"][0]["error"].startswith("not frozen")
    assert report["_returncode"] == 1


def test_non_utf8_mount_point_in_the_summary(loopfs_factory, no_config):
    a = loopfs_factory("ext4", name=os.fsdecode(b"caf\xe9-\xff"))
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8")
    res = run_vmsnapshot("run", "--config", no_config, "--mount", str(a),
                         "--", "true", env=env)
    assert res.returncode == 0, res.stderr
    assert "caf\\xe9-\\xff" in res.stdout
    assert "consistency: filesystem" in res.stdout


def test_status_file_is_private(loopfs_factory, tmp_path, no_config):
    a = loopfs_factory("ext4")
    status = tmp_path / "status.json"
    res = run_vmsnapshot("run", "--config", no_config, "--mount", str(a),
                         "--status-file", str(status), "--", "true")
    assert res.returncode == 0, res.stderr
    assert os.stat(str(status)).st_mode & 0o777 == 0o600


HELD_FAILS_AT_RELEASE = """\
echo READY
cat > /dev/null
exit 3
"""


def test_held_script_failing_at_release_is_not_application(
        loopfs_factory, tmp_path):
    from tests.helpers.configfiles import write_file, write_script
    from tests.helpers.scripts import make_dir
    a = loopfs_factory("ext4")
    d = make_dir(tmp_path / "plugin", 0o700)
    pre = write_script(os.path.join(d, "pre"), HELD_FAILS_AT_RELEASE)
    config = write_file(os.path.join(d, "v.toml"), """\
[[plugin]]
name = "db"
pre = ["%s"]
hold = true
timeout = 10
""" % pre)
    report = run_json("run", "--config", config, "--mount", str(a), "--json",
                      "--", "true")
    assert report["consistency"] == "filesystem", report
    assert [e["name"] for e in report["errors"]] == [
        "Pre-ScriptExecutionFailed"]
    assert "after its release" in report["errors"][0]["message"]


@pytest.mark.parametrize("verbose", ["-vv", "-v"])
def test_verbose_log_into_the_frozen_mount_lands_after_the_thaw(
        loopfs_factory, no_config, verbose):
    """stderr redirected into the very mount the run freezes: a log line
    written while frozen would block the run until the watchdog thaws.
    The frozen-time log buffer holds the lines and writes them after the
    thaw, so the run ends in time, thawed, and nothing of the log is lost.
    With -v logging is loaded before the freeze (vmsnapshot.logs), the
    hold in place as with -vv."""
    a = loopfs_factory("ext4")
    log = os.path.join(str(a), "log")
    with open(log, "w") as err:
        start = time.monotonic()
        res = run_vmsnapshot("run", verbose, "--config", no_config,
                             "--mount", str(a), "--freeze-timeout", "10",
                             "--json", "--", "sh", "-c",
                             "echo said-while-frozen; sleep 2", stderr=err)
        elapsed = time.monotonic() - start
    report = json.loads(res.stdout)
    assert report["consistency"] == "filesystem", report["errors"]
    assert report["freeze"]["auto_thawed"] is False
    assert res.returncode == 0
    assert elapsed < 10, elapsed         # well before the watchdog
    assert not is_frozen(str(a))
    with open(log) as f:
        lines = f.read().splitlines()
    assert "vmsnapshot: INFO: snapshot: said-while-frozen" in lines, lines
