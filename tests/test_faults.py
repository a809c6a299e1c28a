"""Fault injection: whatever dies or hangs, no filesystem stays frozen, no
process stays behind, and the report names the error (issue 4)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.cli import ROOT, run_json, vmsnapshot_cmd
from tests.helpers.loopfs import is_frozen, run
from tests.helpers.wait import wait_until


def start_run(args, tmp_path, snapshot):
    """Start `vmsnapshot run` in the background; its snapshot command
    writes a marker (on /, never frozen) once the freeze is in place."""
    marker = tmp_path / "frozen-marker"
    cmd = ["sh", "-c", 'echo $$ > %s; exec %s' % (marker, snapshot)]
    proc = subprocess.Popen(vmsnapshot_cmd("run", *args, "--json", "--",
                                           *cmd),
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    def frozen() -> str:
        assert proc.poll() is None, proc.communicate()
        return marker.read_text().strip() if marker.exists() else ""
    return proc, int(wait_until(frozen, 30, "the run froze"))


class TimedWrite:
    """A writer started now; finished() gives its completion time."""

    def __init__(self, path):
        self.out = path + ".done"       # beside the mount: never frozen
        self.proc = subprocess.Popen(
            ["sh", "-c", 'echo payload > "$1"; date +%s.%N > "$2"', "w",
             path, self.out])

    def blocked(self):
        """Waiting in the kernel (a writer of a frozen filesystem sleeps
        uninterruptibly, state D), nothing written yet."""
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state == "D" and not os.path.exists(self.out)

    def finished(self, timeout=15):
        self.proc.wait(timeout)
        with open(self.out) as f:
            return float(f.read())


def kill_quietly(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_run_killed_by_sigkill_thaws_within_a_second(loopfs_factory,
                                                     tmp_path, no_config):
    a = loopfs_factory("ext4")
    proc, snap_pid = start_run(["--config", no_config, "--mount", str(a)],
                               tmp_path, "sleep 60")
    try:
        write = TimedWrite(a.mountpoint + "/f")
        wait_until(write.blocked, 10, "the writer blocked by the freeze")
        killed_at = time.time()
        proc.kill()
        proc.communicate()
        assert write.finished() - killed_at < 1.0
        assert not is_frozen(str(a))
        # Nothing of the run outlives it: the guardian also killed the
        # snapshot command (its own session, so nothing else would).
        wait_until(lambda: not os.path.exists("/proc/%d" % snap_pid), 5,
                   "the snapshot command ended")
    finally:
        kill_quietly(snap_pid)
    with open(a.mountpoint + "/f") as f:
        assert f.read() == "payload\n"
    # The guardian thawed everything and removed the state file: the next
    # run needs no manual recovery.
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json", "--", "true")
    assert report["consistency"] == "filesystem", report["errors"]


def test_sigterm_while_frozen_thaws_and_reports(loopfs_factory, tmp_path,
                                                no_config):
    a = loopfs_factory("xfs")
    proc, snap_pid = start_run(["--config", no_config, "--mount", str(a)],
                               tmp_path, "sleep 60")
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        kill_quietly(snap_pid)
    report = json.loads(out)
    assert proc.returncode != 0
    names = [e["name"] for e in report["errors"]]
    assert "RunInterrupted" in names
    assert "SIGTERM" in report["errors"][names.index("RunInterrupted")]["message"]
    assert not is_frozen(str(a))
    with pytest.raises(ProcessLookupError):
        os.kill(snap_pid, 0)


def test_hanging_snapshot_command_is_killed_after_the_watchdog(
        loopfs_factory, tmp_path, no_config):
    a = loopfs_factory("ext4")
    pidfile = tmp_path / "pid"
    # Ignores SIGTERM: only the group SIGKILL ends it.
    cmd = ["sh", "-c", "trap '' TERM; echo $$ > %s; while :; do sleep 1; done"
           % pidfile]
    start = time.monotonic()
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--freeze-timeout", "1", "--json", "--", *cmd)
    assert time.monotonic() - start < 30
    assert report["snapshot"]["killed"] is True
    names = [e["name"] for e in report["errors"]]
    assert "FsFreezeTimeout" in names and "SnapshotCommandFailed" in names
    assert report["consistency"] == "crash"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)
    assert not is_frozen(str(a))


def test_snapshot_command_writing_to_frozen_mount_blocks_until_watchdog(
        loopfs_factory, no_config):
    a = loopfs_factory("btrfs")
    start = time.monotonic()
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--freeze-timeout", "1", "--json", "--", "sh", "-c",
                      "echo x > %s/blocked" % a)
    assert 0.8 < time.monotonic() - start < 15
    assert report["consistency"] == "crash"
    assert [e["name"] for e in report["errors"]] == ["FsFreezeTimeout"]
    assert report["snapshot"]["returncode"] == 0


def test_two_concurrent_runs(loopfs_factory, tmp_path, no_config):
    a = loopfs_factory("ext4")
    b = loopfs_factory("ext4")
    release = tmp_path / "release"
    # The first run holds its freeze until the second one has answered,
    # however slowly a loaded machine starts the second interpreter.
    proc, snap_pid = start_run(
        ["--config", no_config, "--mount", str(a)], tmp_path,
        "sh -c 'while [ ! -e %s ]; do sleep 0.05; done'" % release)
    try:
        second = run_json("run", "--config", no_config, "--mount", str(b),
                          "--json", "--", "true")
    finally:
        release.write_text("")
    out, _ = proc.communicate(timeout=60)
    assert [e["name"] for e in second["errors"]] == ["AlreadyRunning"]
    assert second["mounts"] == []
    assert json.loads(out)["consistency"] == "filesystem"
    assert not is_frozen(str(a)) and not is_frozen(str(b))


def test_mount_unmounted_between_discovery_and_open(loopfs_factory):
    from vmsnapshot.mounts import mountinfo
    from vmsnapshot.mounts import plan
    from vmsnapshot.freeze.session import close_targets, open_targets
    from vmsnapshot.cycle.freezerows import unopened_rows
    a = loopfs_factory("ext4")
    decisions = plan.plan(mountinfo.read_mountinfo(), selected=[str(a)])
    run("umount", str(a))
    targets, unopened = open_targets(decisions)
    close_targets(targets)
    failed, errors = unopened_rows(unopened)
    assert targets == []
    assert [e.entry.error_name for e in errors] == ["UnableToOpenMount"]
    assert failed[0].path == str(a) and not failed[0].frozen


def test_status_file_on_a_full_filesystem(loopfs_factory, no_config):
    a = loopfs_factory("ext4")
    full = loopfs_factory("ext4", size_mb=8)
    # Fill it to the last block (root may use the reserved ones): one big
    # file, then small ones until ENOSPC, after a sync has settled delalloc.
    run("sh", "-c", "dd if=/dev/zero of=%s/fill bs=1M 2>/dev/null; sync; "
        "i=0; while head -c 1024 /dev/zero > %s/small$i 2>/dev/null && "
        "sync; do i=$((i+1)); done" % (full, full), check=False)
    res = subprocess.run(vmsnapshot_cmd(
        "run", "--config", no_config, "--mount", str(a), "--json",
        "--status-file", "%s/status.json" % full, "--", "true"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(res.stdout)["consistency"] == "filesystem"
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert not is_frozen(str(a))


def test_back_to_back_runs_under_write_load_lose_nothing(loopfs_factory,
                                                         tmp_path,
                                                         no_config):
    a = loopfs_factory("ext4")
    b = loopfs_factory("xfs")
    log = tmp_path / "acked"
    # One writer per mount appends numbered records and, after each
    # completed write+fsync, acknowledges the number outside the freeze.
    writer = (
        "import os, sys, time\n"
        "target, ack = sys.argv[1], sys.argv[2]\n"
        "fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
        "a = open(ack, 'w')\n"
        "n = 0\n"
        "while not os.path.exists(ack + '.stop'):\n"
        "    os.write(fd, b'%08d\\n' % n); os.fsync(fd)\n"
        "    a.write('%d\\n' % n); a.flush(); n += 1\n"
        "    time.sleep(0.001)\n")
    writers = [subprocess.Popen([sys.executable, "-c", writer,
                                 "%s/records" % m, "%s-%d" % (log, i)])
               for i, m in enumerate((a, b))]
    try:
        for _ in range(20):
            report = run_json("run", "--config", no_config, "--mount", str(a),
                              "--mount", str(b), "--freeze-timeout", "10",
                              "--json", "--", "true")
            assert report["consistency"] == "filesystem", report["errors"]
    finally:
        for i in range(2):
            open("%s-%d.stop" % (log, i), "w").close()
        for w in writers:
            w.wait(30)
    for i, m in enumerate((a, b)):
        acked = open("%s-%d" % (log, i)).read().split()
        with open("%s/records" % m) as f:
            records = f.read().split()
        assert records[:len(acked)] == ["%08d" % n for n in range(len(acked))]
        assert len(acked) > 20
    assert not is_frozen(str(a)) and not is_frozen(str(b))


def _guardian_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid), "-x", "vms-guardian"],
                         stdout=subprocess.PIPE, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def test_run_whose_guardian_is_killed_thaws_and_reports_crash(
        loopfs_factory, tmp_path, no_config):
    a = loopfs_factory("ext4")
    proc, snap_pid = start_run(["--config", no_config, "--mount", str(a)],
                               tmp_path, "sleep 60")
    try:
        write = TimedWrite(a.mountpoint + "/f")
        killed_at = time.time()
        os.kill(_guardian_of(proc.pid), signal.SIGKILL)
        assert write.finished() - killed_at < 1.0
        # The run goes on, its freeze lost: not a consistent snapshot.
        kill_quietly(snap_pid)
        out, _ = proc.communicate(timeout=60)
    finally:
        kill_quietly(snap_pid)
    report = json.loads(out)
    assert report["consistency"] == "crash"
    assert "guardian" in " ".join(e["message"] for e in report["errors"])


def test_sigkill_of_both_then_thaw_recover(loopfs_factory, tmp_path,
                                           no_config):
    a = loopfs_factory("xfs")
    proc, snap_pid = start_run(["--config", no_config, "--mount", str(a)],
                               tmp_path, "sleep 60")
    try:
        guardian = _guardian_of(proc.pid)
        # Stopped first, so neither can react to the other's death.
        os.kill(proc.pid, signal.SIGSTOP)
        os.kill(guardian, signal.SIGKILL)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert is_frozen(str(a))
        report = run_json("run", "--config", no_config, "--mount", str(a),
                          "--json", "--", "true")
        assert [e["name"] for e in report["errors"]] == ["StaleFreezeState"]
        res = subprocess.run(vmsnapshot_cmd("thaw", "--recover"), cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
        assert res.returncode == 0
        assert "thawed" in res.stdout
        assert not is_frozen(str(a))
    finally:
        kill_quietly(snap_pid)
        run("fsfreeze", "-u", str(a), check=False)
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json", "--", "true")
    assert report["consistency"] == "filesystem"
