"""Presync (issue 15, issue 11 defect 13): the bulk of the dirty data goes
to disk before the pre-scripts quiesce anything, every pass has its own
deadline, "auto" decides from the kernel's dirty counters, and the report
says what ran, for how long and how much it flushed."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.helpers.cli import ROOT, run_json, run_vmsnapshot, vmsnapshot_cmd
from tests.helpers.loopfs import is_frozen, run
from vmsnapshot.freeze import presync

MIB = 1 << 20


def write_config(tmp_path, text, name="vmsnapshot.toml"):
    path = tmp_path / name
    path.write_text(text)
    os.chmod(str(path), 0o600)
    return str(path)


def dirty(path, mib):
    """MIB of page-cache data on PATH, not yet written back."""
    with open(path, "wb") as f:
        f.write(b"x" * (mib * MIB))


def sectors_written(device):
    with open("/sys/block/%s/stat" % os.path.basename(device)) as f:
        return int(f.read().split()[6])


def pre_plugin(tmp_path, body):
    """A config dir and pre-script that pass the trust walk (root, 0700)."""
    d = tmp_path / "plug"
    d.mkdir(mode=0o700)
    script = d / "pre"
    script.write_text("#!/bin/sh\n" + body)
    os.chmod(str(script), 0o700)
    return str(script)


def test_the_bulk_is_flushed_before_the_pre_scripts(loopfs_factory,
                                                    tmp_path):
    """Defect 13: presync ran after the pre-scripts, so applications stayed
    quiesced while it wrote everything back. The pre-script sees the data
    already written to the device."""
    a = loopfs_factory("ext4")
    seen = tmp_path / "sectors-at-pre"
    script = pre_plugin(tmp_path, "cat /sys/block/%s/stat > %s\n"
                        % (os.path.basename(a.device), seen))
    config = write_config(tmp_path, (
        '[freeze]\npresync = true\ntimeout = 30\n'
        '[[plugin]]\nname = "probe"\npre = ["%s"]\n' % script))
    before = sectors_written(a.device)
    dirty(a.mountpoint + "/data", 16)
    report = run_json("run", "--config", config, "--mount", str(a),
                      "--json", "--", "true")
    assert report["consistency"] == "application", report["errors"]
    at_pre = int(seen.read_text().split()[6])
    assert (at_pre - before) * 512 >= 16 * MIB
    first = report["freeze"]["presync"]["passes"][0]
    assert first["stage"] == "before-pre" and first["ran"] is True
    assert first["flushed_bytes"] >= 16 * MIB


def test_presync_on_a_hung_device_has_a_deadline(loopfs_factory, tmp_path):
    """Defect 13: with no deadline, a presync on a device that cannot write
    hung the run before the watchdog even started. Hung device: L's image
    lives on B, and B is frozen by hand, so L's writeback blocks."""
    b = loopfs_factory("ext4", size_mb=128)
    inner = loopfs_factory("ext4", name="inner", image_dir=b.mountpoint)
    dirty(inner.mountpoint + "/data", 8)
    # A pre-script, so that there is a first pass (before the pre phase).
    script = pre_plugin(tmp_path, "exit 0\n")
    config = write_config(tmp_path, (
        '[freeze]\npresync = true\n'
        '[[plugin]]\nname = "noop"\npre = ["%s"]\n' % script))
    marker = tmp_path / "snapshot-ran"
    status = tmp_path / "status.json"
    run("fsfreeze", "-f", b.mountpoint)
    proc = None
    try:
        start = time.monotonic()
        proc = subprocess.Popen(
            vmsnapshot_cmd("run", "--config", config, "--mount",
                           inner.mountpoint, "--freeze-timeout", "4",
                           "--status-file", str(status), "--json", "--",
                           "touch", str(marker)),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        # Presync gives up after 2 s (half the timeout), FIFREEZE blocks
        # on the same writeback until the watchdog fires at 4 s; then the
        # snapshot command runs.
        while not marker.exists():
            assert time.monotonic() - start < 30, \
                "presync held the run on a hung device"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
    finally:
        run("fsfreeze", "-u", b.mountpoint)
    out, err = proc.communicate(timeout=60)
    report = json.loads(out)
    assert report["consistency"] == "crash"
    assert "FsFreezeTimeout" in [e["name"] for e in report["errors"]]
    assert report["scripts"][0]["returncode"] == 0
    sync = report["freeze"]["presync"]
    assert sync["timed_out"] is True
    first, second = sync["passes"]
    assert first["timed_out"] == [inner.mountpoint]
    assert 1500 < first["duration_ms"] < 10000
    assert second["ran"] is False
    assert second["reason"] == "the first pass did not finish in time"
    assert not is_frozen(inner.mountpoint) and not is_frozen(b.mountpoint)


@pytest.mark.parametrize("value,mode", [
    (None, "auto"), ('"auto"', "auto"), ("true", "true"), ('"true"', "true"),
    ("false", "false"), ('"false"', "false")])
def test_presync_modes_and_the_report(loopfs_factory, tmp_path, value, mode):
    a = loopfs_factory("xfs")
    dirty(a.mountpoint + "/data", 4)
    text = "[freeze]\ntimeout = 30\n"
    if value is not None:
        text += "presync = %s\n" % value
    report = run_json("run", "--config", write_config(tmp_path, text),
                      "--mount", str(a), "--json", "--", "true")
    assert report["consistency"] == "filesystem", report["errors"]
    sync = report["freeze"]["presync"]
    assert sync["mode"] == mode
    assert set(sync) >= {"mode", "ran", "duration_ms", "flushed_bytes"}
    first, second = sync["passes"]
    assert (first["stage"], second["stage"]) == ("before-pre",
                                                 "before-freeze")
    # No pre-script: nothing is quiesced, one pass right before the freeze.
    assert first["ran"] is False
    assert first["reason"] == ("no pre-script: one pass, right before the "
                               "freeze")
    if mode == "true":
        assert sync["ran"] is True and sync["flushed_bytes"] >= 4 * MIB
    if mode == "false":
        assert sync["ran"] is False and sync["duration_ms"] == 0
        assert second["reason"] == "presync = false"


def test_a_bad_presync_value_is_a_named_config_error(tmp_path):
    config = write_config(tmp_path, '[freeze]\npresync = "sometimes"\n')
    res = run_vmsnapshot("check", "--config", config)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "IncorrectJSONConfigFile" in out
    assert "presync" in out and 'true, false or "auto"' in out


def test_auto_decides_from_dirty_and_writeback(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nDirty:  6144 kB\n"
                       "Writeback: 4096 kB\n")
    dirty_now = presync.dirty_bytes(str(meminfo))
    assert dirty_now == 10 * MIB
    assert presync.decide("auto", dirty_now)[0] is True
    assert presync.decide("auto", 1 * MIB) == (
        False, "auto: only 1024 KiB dirty or under writeback")
    assert presync.decide("false", 10 * MIB)[0] is False
    assert presync.decide("true", 0)[0] is True
    # Unknown (no /proc/meminfo): sync, the safe side for the stall.
    assert presync.dirty_bytes(str(tmp_path / "none")) is None
    assert presync.decide("auto", None)[0] is True
    # After a first pass: only what was dirtied since counts.
    assert presync.decide("auto", 100 * MIB, since=95 * MIB) == (
        False, "auto: only 5120 KiB dirtied since the first pass")
    assert presync.decide("auto", 100 * MIB, since=80 * MIB) == (
        True, "auto: 20 MiB dirtied since the first pass")
    assert presync.decide("true", 0, since=0)[0] is True
    assert presync.normalize_mode(True) == "true"
    assert presync.normalize_mode("yes") is None
