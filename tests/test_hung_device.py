"""A FIFREEZE stuck in the kernel (hung device) never leaves a filesystem
frozen, whether `run` ends normally, by SIGTERM or by SIGKILL (issue 11,
defects 1 and 10).

The device is simulated by tests/helpers/hungdev.py: L's image lives on B,
B is frozen by hand and an O_DIRECT writer on L waits for L's device, so a
FIFREEZE of L blocks in its first stage until B is thawed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Dict

from tests.helpers.cli import ROOT, vmsnapshot_cmd
from tests.helpers.hungdev import (HungDevice, process_gone,
                                   sleeps_in_kernel, writer_completes)
from tests.helpers.loopfs import is_frozen
from tests.helpers.wait import poll, wait_until
from vmsnapshot.freeze import native


def start_run(hd: HungDevice, no_config: str, status: str,
              timeout: float) -> subprocess.Popen:
    return subprocess.Popen(
        vmsnapshot_cmd("run", "--config", no_config, "--mount",
                       hd.upper.mountpoint, "--freeze-timeout", str(timeout),
                       "--status-file", status, "--json", "--", "true"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_status(path: str, timeout: float) -> Dict[str, Any]:
    """The status file is written before `run` tries to exit (which it
    cannot while a FIFREEZE is stuck): what an agent must read."""
    def status() -> Dict[str, Any]:
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}
    return wait_until(status, timeout, "the status file " + path)


def guardians_of(pid: int):
    out = subprocess.run(["pgrep", "-P", str(pid), "-x", "vms-guardian"],
                         stdout=subprocess.PIPE, text=True).stdout.split()
    return [int(p) for p in out]


def assert_ends_thawed(hd: HungDevice, run_dir: str) -> None:
    """Once the device is back, L ends thawed and the state file is gone
    (the guardian removes it after its thaw)."""
    assert writer_completes(os.path.join(hd.upper.mountpoint, "after"), 30), \
        "%s stayed frozen" % hd.upper
    assert not is_frozen(hd.upper.mountpoint)
    state = os.path.join(run_dir, "state.json")
    wait_until(lambda: not os.path.exists(state), 10,
               "the state file removed: %s" % state)


def wait_stuck(proc: subprocess.Popen, run_dir: str) -> None:
    """Until the run has written its state file and a thread of it sleeps
    in the kernel: its FIFREEZE is stuck on the hung device."""
    wait_until(lambda: os.path.exists(os.path.join(run_dir, "state.json")),
               30, "the run reached the freeze")
    wait_until(lambda: sleeps_in_kernel(proc.pid), 10,
               "the run's FIFREEZE stuck in the kernel")


def finish(proc: subprocess.Popen) -> None:
    """Reap the run (after B is thawed it can exit)."""
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def test_stuck_freeze_and_normal_exit_ends_thawed(hung_device, no_config,
                                                  tmp_path, run_dir):
    hd = hung_device
    hd.hang()
    status = str(tmp_path / "status.json")
    proc = start_run(hd, no_config, status, timeout=2)
    try:
        report = wait_status(status, 60)
        assert report["consistency"] == "crash"
        assert "FsFreezeTimeout" in [e["name"] for e in report["errors"]]
        # The run cannot exit while its FIFREEZE is stuck in the kernel;
        # its guardian must still be there to thaw once it returns.
        time.sleep(1.0)
        assert proc.poll() is None
        guardian = guardians_of(proc.pid)
        assert guardian, "the guardian was killed"
    finally:
        hd.recover()
        finish(proc)
    assert_ends_thawed(hd, run_dir)
    wait_until(lambda: process_gone(guardian[0]), 10, "the guardian ended")


def test_sigterm_during_a_stuck_freeze_stops_at_once(hung_device, no_config,
                                                     tmp_path, run_dir):
    hd = hung_device
    hd.hang()
    status = str(tmp_path / "status.json")
    proc = start_run(hd, no_config, status, timeout=60)
    try:
        wait_stuck(proc, run_dir)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # Long before the 60 s watchdog: the freeze stopped at once.
        report = wait_status(status, 15)
        assert time.monotonic() - sent < 15
        names = [e["name"] for e in report["errors"]]
        assert "RunInterrupted" in names, names
        # Stopped before the snapshot command ever ran (design.md).
        assert report["consistency"] == "failed"
        assert report["snapshot_taken"] is False
    finally:
        hd.recover()
        finish(proc)
    assert_ends_thawed(hd, run_dir)


def test_sigkill_during_a_stuck_freeze_guardian_thaws(hung_device, no_config,
                                                      tmp_path, run_dir):
    hd = hung_device
    hd.hang()
    status = str(tmp_path / "status.json")
    proc = start_run(hd, no_config, status, timeout=60)
    try:
        wait_stuck(proc, run_dir)
        proc.kill()
        # SIGKILL cannot end a thread inside FIFREEZE: still there.
        assert not poll(lambda: proc.poll() is not None, 0.5)
    finally:
        hd.recover()
        finish(proc)
    assert_ends_thawed(hd, run_dir)


def test_freeze_should_stop_aborts_a_stuck_freeze(hung_device):
    """FreezeRun.freeze(should_stop) returns as soon as it is told to, with
    the stuck mount still inside FIFREEZE; when that returns, the late
    freeze is thawed at once by its worker."""
    hd = hung_device
    hd.hang()
    fd = os.open(hd.upper.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    run = native.FreezeRun([fd], [0], [hd.upper.mountpoint], 60)
    try:
        t0 = time.monotonic()
        assert run.freeze(lambda: time.monotonic() - t0 > 0.5) is True
        assert time.monotonic() - t0 < 3
        assert run.stopped_early
        assert not run.watchdog_fired()
        assert [o.state for o in run.outcomes()] == ["freezing"]
        run.thaw()
        assert not run.idle()
    finally:
        hd.recover()
        run.close()
        os.close(fd)
    assert writer_completes(os.path.join(hd.upper.mountpoint, "after"), 30)
    assert not is_frozen(hd.upper.mountpoint)

