"""Whole-VM proof: a Debian guest with the .deb installed freezes its own
filesystems, / included, while the host snapshots both disks over QMP.

Three guests boot (TCG, ~20-40 s each): one for the harness check and the
happy path, one shared by the fault scenarios (each must leave it healthy
for the next, which is part of what they prove), one for qemu-ga.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Tuple

import pytest

from tests.helpers.wait import poll
from tests.vm import verify
from tests.vm.machine import Machine

pytestmark = pytest.mark.vm

VMSNAPSHOT = "/usr/sbin/vmsnapshot"
SNAPSHOT_CMD = "/usr/local/sbin/vmtest-snapshot"
RUN = "/run/vmtest"
PRE_MARKER = ("/var/lib/vmtest/pre-marker", "app/pre-marker")    # (/, /data)
POST_MARKER = ("/var/lib/vmtest/post-marker", "app/post-marker")
SCRIPT_STEP_S = 120     # pre-scripts plus the freeze, under TCG on a busy host


# ---------------------------------------------------------------- helpers

def start_run(vm: Machine, name: str, *options: str) -> None:
    """vmsnapshot run with no --mount: every eligible mount, / included."""
    vm.call("spawn", name=name,
            argv=[VMSNAPSHOT, "run", "--json", *options, "--", SNAPSHOT_CMD])


def wait_frozen(vm: Machine, name: str, timeout: float = SCRIPT_STEP_S) -> None:
    assert vm.snap is not None
    try:
        line = vm.snap.read_line(timeout)
    except AssertionError:
        raise AssertionError("the guest never said frozen; vmsnapshot: %s\n%s"
                             % (vm.call("wait", name=name), vm.diagnostics()))
    assert line == "frozen", line


def finish_run(vm: Machine, name: str,
               timeout: float = SCRIPT_STEP_S) -> Tuple[int, Dict[str, Any]]:
    reply = vm.call("wait", name=name, timeout=timeout)
    assert not reply["running"], "vmsnapshot still running after %d s:\n%s" % (
        timeout, reply["err"])
    try:
        report = json.loads(reply["out"])
    except ValueError:
        raise AssertionError("no JSON report (rc=%s):\n%s\n%s" % (
            reply["rc"], reply["out"], reply["err"]))
    report["_stderr"] = reply["err"]
    return reply["rc"], report


def error_names(report: Dict[str, Any]) -> List[str]:
    return [e["name"] for e in report["errors"]]


def frozen_paths(report: Dict[str, Any]) -> List[str]:
    return [m["path"] for m in report["mounts"] if m["frozen"]]


def assert_alive(vm: Machine, timeout: float = 60) -> None:
    """The agent answers and / and /data take writes again."""
    vm.call("ping")
    vm.sh("echo alive > /var/lib/vmtest/alive && echo alive > /data/alive && sync",
          timeout=timeout)


def resume_app(vm: Machine) -> None:
    vm.sh("kill -USR2 $(cat %s/app.pid)" % RUN)


def app_records(vm: Machine, at_least: int = 3) -> None:
    """Wait until the application has written a few records."""
    def records() -> int:
        out = vm.sh("wc -l < /data/app/records.log 2>/dev/null || echo 0")["out"]
        return int(out.strip() or 0)
    if poll(lambda: records() >= at_least, 60, 1):
        return
    raise AssertionError("the application wrote nothing\n" + vm.diagnostics())


class Snapshot:
    """The host's view of one atomic snapshot of both disks."""

    def __init__(self, taken: Dict[str, str], workdir: str) -> None:
        self.root = verify.to_raw(taken["root"], os.path.join(workdir, "snap-root.raw"))
        self.data = verify.to_raw(taken["data"], os.path.join(workdir, "snap-data.raw"))
        self.mnt = os.path.join(workdir, "snap-data")

    def check_clean(self) -> None:
        verify.check_ext4_clean(self.root)
        verify.check_xfs_clean(self.data)

    def read_root(self, path: str) -> Any:
        return verify.ext4_read(self.root, path)

    def read_data(self) -> Dict[str, Any]:
        """The files the test looks at on /data, read with the snapshot
        mounted ro,norecovery."""
        with verify.xfs_mounted(self.data, self.mnt) as mnt:
            found = {}
            for rel in ("app/records.log", PRE_MARKER[1], POST_MARKER[1]):
                path = os.path.join(mnt, rel)
                found[rel] = open(path, "rb").read() if os.path.exists(path) else None
            return found

    def remove(self) -> None:
        for path in (self.root, self.data):
            os.unlink(path)


def check_application_consistent(snap: Snapshot, token: str) -> verify.Records:
    """What the pre-script wrote is in, what the post-script wrote is not,
    and the application's records end at the pre-script's checkpoint."""
    snap.check_clean()
    assert (snap.read_root(PRE_MARKER[0]) or "").strip() == token
    # The post-marker may be there from an earlier run, never from this one.
    assert (snap.read_root(POST_MARKER[0]) or "").strip() != token
    data = snap.read_data()
    assert (data[PRE_MARKER[1]] or b"").decode().strip() == token
    assert (data[POST_MARKER[1]] or b"").decode().strip() != token
    records = verify.check_records(data["app/records.log"])
    assert records.last == "CHECKPOINT " + token, records
    return records


# ---------------------------------------------------------------- harness

@pytest.fixture(scope="module")
def happy_vm(machine_factory) -> Machine:
    vm = machine_factory("happy")
    app_records(vm)
    return vm


def test_harness_control_unfrozen_snapshot_is_dirty(happy_vm: Machine, tmp_path) -> None:
    """The verification is sharp: a snapshot of the running guest, not
    frozen, has an ext4 journal to replay.  (It also proves the QMP
    transaction and the image conversion.)"""
    snap = Snapshot(happy_vm.snapshot(), str(tmp_path))
    try:
        assert "needs_recovery" in verify.ext4_features(snap.root)
    finally:
        snap.remove()


# ---------------------------------------------------------------- happy path

def snapshot_cycle(vm: Machine, name: str, workdir: str) -> Dict[str, Any]:
    """The real thing: vmsnapshot run (no --mount) in the guest, the host
    snapshots both disks while it is frozen; then every check on the
    report, the guest and the snapshot.  Returns the report."""
    status_file = "/var/lib/vmtest/status-%s.json" % name
    probe = "/var/lib/vmtest/write-during-freeze-%s" % name
    start_run(vm, name, "--status-file", status_file)
    wait_frozen(vm, name)
    # / is really frozen: a write blocks (and lands after the thaw).
    vm.call("spawn", name=name + "-probe", argv=["/bin/sh", "-c", "echo late > " + probe])
    blocked = vm.call("wait", name=name + "-probe", timeout=2)
    assert blocked["running"], "a write to / went through while frozen: %r" % blocked
    taken = vm.snapshot()
    vm.snap.send_line("done")
    rc, report = finish_run(vm, name)

    assert report["consistency"] == "application", report
    assert rc == 0, report["_stderr"]
    assert report["snapshot_taken"] is True
    assert report["errors"] == [], report["errors"]
    assert "/" in frozen_paths(report) and "/data" in frozen_paths(report), report["mounts"]
    waves = {m["path"]: m["wave"] for m in report["mounts"] if m["frozen"]}
    # / in the last wave, after every other filesystem is frozen.
    assert all(w < waves["/"] for p, w in waves.items() if p != "/"), waves
    assert report["snapshot"]["finished_while_frozen"] is True
    assert report["freeze"]["auto_thawed"] is False
    assert [s["phase"] for s in report["scripts"]] == ["pre", "post"], report["scripts"]

    token = vm.read(RUN + "/quiesce-token").strip()
    assert vm.read(POST_MARKER[0]).strip() == token          # post ran, after
    assert json.loads(vm.read(status_file))["consistency"] == "application"
    assert vm.call("wait", name=name + "-probe", timeout=30)["rc"] == 0
    assert vm.read(probe) == "late\n"

    snap = Snapshot(taken, workdir)
    try:
        records = check_application_consistent(snap, token)
        assert records.count >= 3
        # Written after the thaw: absent from the snapshot.
        assert snap.read_root(status_file) is None
        assert snap.read_root(probe) is None
    finally:
        snap.remove()
    return report


def test_run_freezes_root_and_data_application_consistent(happy_vm: Machine, tmp_path) -> None:
    snapshot_cycle(happy_vm, "happy", str(tmp_path))


def test_split_cycle_pre_host_snapshot_post(happy_vm: Machine, tmp_path) -> None:
    """A backup agent's convention: `vmsnapshot pre` in the guest returns
    with / and /data frozen and held by the holder, the host snapshots both
    disks over QMP, then `vmsnapshot post`: as clean as with run."""
    vm = happy_vm
    vm.call("spawn", name="split-pre", argv=[VMSNAPSHOT, "pre"])
    reply = vm.call("wait", name="split-pre", timeout=SCRIPT_STEP_S)
    assert not reply["running"] and reply["rc"] == 0, (reply, vm.diagnostics())
    probe = "/var/lib/vmtest/write-during-split"
    vm.call("spawn", name="split-probe", argv=["/bin/sh", "-c", "echo late > " + probe])
    assert vm.call("wait", name="split-probe", timeout=2)["running"], \
        "a write to / went through between pre and post"
    taken = vm.snapshot()
    vm.call("spawn", name="split-post", argv=[VMSNAPSHOT, "post", "--json"])
    rc, report = finish_run(vm, "split-post")
    assert report["consistency"] == "application", report
    assert rc == 0, report["_stderr"]
    assert report["errors"] == [], report["errors"]
    assert "/" in frozen_paths(report) and "/data" in frozen_paths(report)
    assert [s["phase"] for s in report["scripts"]] == ["pre", "post"]
    assert vm.call("wait", name="split-probe", timeout=30)["rc"] == 0
    token = vm.read(RUN + "/quiesce-token").strip()
    snap = Snapshot(taken, str(tmp_path))
    try:
        check_application_consistent(snap, token)
        assert snap.read_root(probe) is None
    finally:
        snap.remove()


# ---------------------------------------------------------------- faults

@pytest.fixture(scope="module")
def fault_vm(machine_factory) -> Machine:
    vm = machine_factory("faults")
    app_records(vm)
    return vm


def test_host_never_answers_watchdog_thaws(fault_vm: Machine) -> None:
    vm = fault_vm
    start_run(vm, "silent", "--freeze-timeout", "5")
    wait_frozen(vm, "silent")
    frozen_at = time.monotonic()
    vm.call("ping")                     # the guest answers while frozen
    # The host never answers.  The watchdog thaws at its deadline: / and
    # /data take writes again, long before the snapshot command gives up.
    assert_alive(vm)
    rc, report = finish_run(vm, "silent")
    assert report["consistency"] == "crash", report
    assert "FsFreezeTimeout" in error_names(report), report["errors"]
    assert rc != 0
    assert report["freeze"]["auto_thawed"] is True
    assert report["snapshot"]["finished_while_frozen"] is False
    assert time.monotonic() - frozen_at < 60
    assert vm.read(POST_MARKER[0]) is not None          # post-scripts ran
    assert_alive(vm)


def test_kill_9_while_root_frozen_guardian_thaws(fault_vm: Machine) -> None:
    vm = fault_vm
    start_run(vm, "killed")             # watchdog deadline: 60 s
    wait_frozen(vm, "killed")
    frozen_at = time.monotonic()
    vm.call("spawn", name="killed-probe", argv=["/bin/sh", "-c", "echo x > /var/lib/vmtest/k"])
    assert vm.call("wait", name="killed-probe", timeout=1)["running"]
    vm.call("kill", name="killed", signal=9)
    assert vm.call("wait", name="killed", timeout=30)["rc"] == -9
    # Only the guardian can thaw now (the watchdog died with the process),
    # and it must do so well before the dead run's deadline.
    assert vm.call("wait", name="killed-probe", timeout=45)["rc"] == 0, \
        "/ still frozen after vmsnapshot was killed\n" + vm.diagnostics()
    assert time.monotonic() - frozen_at < 50
    assert_alive(vm)
    # Nothing of the run outlives it: the guardian also killed the snapshot
    # command (which would otherwise wait for the host's "done" for ever).
    def left() -> str:
        return vm.sh("ps -eo stat=,args= | grep '[v]mtest-snapshot' "
                     "| grep -v '^Z' || true")["out"]
    assert poll(lambda: left() == "", 20, 0.5), left()
    recover = vm.sh(VMSNAPSHOT + " thaw --recover --json", check=False)
    assert recover["rc"] == 0, recover
    resume_app(vm)                      # no post-script ran


def test_hanging_pre_script_times_out_without_freezing(fault_vm: Machine) -> None:
    vm = fault_vm
    config = "/etc/vmtest/stop-on-failure.json"
    with open(os.path.join(os.path.dirname(__file__), "guest",
                           "VMSnapshotScriptPluginConfig.json")) as f:
        azure = json.load(f)
    azure.update(continueBackupOnFailure=False, timeoutInSeconds=5)
    vm.write(config, json.dumps(azure), mode=0o600)
    vm.write(RUN + "/pre-mode", "hang\n")
    try:
        start_run(vm, "hang", "--config", config)
        rc, report = finish_run(vm, "hang")
    finally:
        vm.write(RUN + "/pre-mode", "\n")
    assert report["consistency"] == "failed", report
    assert "Pre-ScriptTimeout" in error_names(report), report["errors"]
    assert rc != 0
    assert report["snapshot_taken"] is False
    assert frozen_paths(report) == []
    with pytest.raises(AssertionError):         # never said frozen
        vm.snap.read_line(0.5)
    # The hung script and its children were killed.
    left = vm.sh("pgrep -x sleep || true")["out"]
    assert left == "", left
    assert_alive(vm)


def test_guest_snapshots_fine_after_the_faults(fault_vm: Machine, tmp_path) -> None:
    snapshot_cycle(fault_vm, "after-faults", str(tmp_path))


# ---------------------------------------------------------------- qemu-ga

HELD_TOML = """\
# Instead of the image's Azure file (moved away: sources are merged now),
# a held pre-script this time.
[freeze]
timeout = 120

[[plugin]]
name = "recwriter"
pre = ["/etc/vmtest/hold.sh"]
post = ["/etc/vmtest/post.sh"]
hold = true
timeout = 30
"""


@pytest.fixture(scope="module")
def qga_vm(machine_factory) -> Machine:
    vm = machine_factory("qga", qga=True)
    app_records(vm)
    return vm


def test_qemu_guest_agent_drives_vmsnapshot_hooks(qga_vm: Machine, tmp_path) -> None:
    """The host freezes and thaws through qemu-ga, as libvirt and Proxmox
    do; qemu-ga runs vmsnapshot as its fsfreeze hook (image's
    /etc/qemu/qemu-ga.conf), which holds the held pre-script from the
    freeze hook to the thaw hook."""
    vm = qga_vm
    vm.sh("mv /etc/azure/VMSnapshotScriptPluginConfig.json /etc/vmtest/")
    vm.write("/etc/vmsnapshot/vmsnapshot.toml", HELD_TOML, mode=0o600)
    vm.call("spawn", name="qemu-ga", argv=["/usr/sbin/qemu-ga"])  # as its unit does
    assert vm.qga is not None
    vm.qga.sync()
    frozen = vm.qga.command("guest-fsfreeze-freeze", timeout=SCRIPT_STEP_S)
    try:
        assert frozen >= 2, frozen                     # / and /data
        assert vm.qga.command("guest-fsfreeze-status") == "frozen"
        token = vm.read(RUN + "/quiesce-token").strip()
        assert vm.read(RUN + "/hold.state").startswith("held "), "not held"
        assert vm.read(RUN + "/app.state").startswith("paused " + token)
        vm.call("spawn", name="qga-probe", argv=["/bin/sh", "-c", "echo x > /var/lib/vmtest/q"])
        assert vm.call("wait", name="qga-probe", timeout=2)["running"]
        taken = vm.snapshot()
    finally:
        thawed = vm.qga.command("guest-fsfreeze-thaw", timeout=SCRIPT_STEP_S)
    assert thawed == frozen
    assert vm.read(RUN + "/hold.state").strip() == "released"
    assert vm.read(POST_MARKER[0]).strip() == token
    report = json.loads(vm.read("/run/vmsnapshot/split-status.json"))
    assert report["consistency"] == "application", report
    assert report["errors"] == []
    assert [(s["phase"], s["returncode"]) for s in report["scripts"]] == \
        [("pre", 0), ("post", 0)], report["scripts"]
    assert vm.call("wait", name="qga-probe", timeout=30)["rc"] == 0
    assert_alive(vm)

    snap = Snapshot(taken, str(tmp_path))
    try:
        check_application_consistent(snap, token)
    finally:
        snap.remove()
