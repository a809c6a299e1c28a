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

from tests.vm import verify
from tests.vm.machine import Machine

pytestmark = pytest.mark.vm

VMSNAPSHOT = "/usr/sbin/vmsnapshot"
SNAPSHOT_CMD = "/usr/local/sbin/vmtest-snapshot"
STATUS_FILE = "/var/lib/vmtest/status.json"
RUN = "/run/vmtest"
PRE_MARKER = ("/var/lib/vmtest/pre-marker", "app/pre-marker")    # (/, /data)
POST_MARKER = ("/var/lib/vmtest/post-marker", "app/post-marker")
# A write attempted while frozen: it must block, and land after the thaw.
PROBE = "/var/lib/vmtest/write-during-freeze"
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


def finish_run(vm: Machine, name: str, timeout: float = SCRIPT_STEP_S) -> Tuple[int, Dict[str, Any]]:
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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = vm.sh("wc -l < /data/app/records.log 2>/dev/null || echo 0")["out"]
        if int(out.strip() or 0) >= at_least:
            return
        time.sleep(1)
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
    assert snap.read_root(POST_MARKER[0]) is None
    data = snap.read_data()
    assert (data[PRE_MARKER[1]] or b"").decode().strip() == token
    assert data[POST_MARKER[1]] is None
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

def test_run_freezes_root_and_data_application_consistent(happy_vm: Machine, tmp_path) -> None:
    vm = happy_vm
    start_run(vm, "happy", "--status-file", STATUS_FILE)
    wait_frozen(vm, "happy")
    # / is really frozen: a write blocks (and lands after the thaw).
    vm.call("spawn", name="probe", argv=["/bin/sh", "-c", "echo late > " + PROBE])
    probe = vm.call("wait", name="probe", timeout=2)
    assert probe["running"], "a write to / went through while frozen: %r" % probe
    vm.call("ping")
    taken = vm.snapshot()
    vm.snap.send_line("done")
    rc, report = finish_run(vm, "happy")

    assert report["consistency"] == "application", report
    assert rc == 0, report["_stderr"]
    assert report["snapshot_taken"] is True
    assert report["errors"] == [], report["errors"]
    assert "/" in frozen_paths(report) and "/data" in frozen_paths(report), report["mounts"]
    assert report["snapshot"]["finished_while_frozen"] is True
    assert report["freeze"]["auto_thawed"] is False
    assert [s["phase"] for s in report["scripts"]] == ["pre", "post"], report["scripts"]

    token = vm.read(RUN + "/quiesce-token").strip()
    assert vm.read(POST_MARKER[0]).strip() == token          # post ran, after
    assert json.loads(vm.read(STATUS_FILE))["consistency"] == "application"
    assert vm.call("wait", name="probe", timeout=30)["rc"] == 0
    assert vm.read(PROBE) == "late\n"          # the blocked write, after the thaw

    snap = Snapshot(taken, str(tmp_path))
    try:
        records = check_application_consistent(snap, token)
        assert records.count >= 3
        # Written after the thaw: absent from the snapshot.
        assert snap.read_root(STATUS_FILE) is None
        assert snap.read_root(PROBE) is None
    finally:
        snap.remove()
