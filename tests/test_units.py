"""The shipped systemd units and tmpfiles entry, checked by systemd's own
tools against a throw-away root (the machine's systemd is not touched)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from tests.helpers.cli import ROOT
from tests.helpers.require import skip_or_fail

UNITS = os.path.join(ROOT, "systemd")


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        skip_or_fail("%s not installed (Debian package systemd)" % tool)


@pytest.fixture
def unit_root(tmp_path, root_loop):
    """A root holding systemd's own units, ours, and a stand-in
    /usr/sbin/vmsnapshot (verify checks that ExecStart= is executable)."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", str(root / "lib/systemd/system"),
                    symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name in ("vmsnapshot@.service", "vmsnapshot@.timer"):
        shutil.copy(os.path.join(UNITS, name), str(etc / name))
    sbin = root / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "vmsnapshot").write_text("#!/bin/sh\n")
    os.chmod(str(sbin / "vmsnapshot"), 0o755)
    return root


def verify(root) -> subprocess.CompletedProcess:
    """systemd-analyze verify in a mount namespace of its own with a
    private /run/systemd: it leaves a marker file there otherwise."""
    _need("systemd-analyze")
    _need("unshare")
    script = ('mount -t tmpfs tmpfs /run/systemd && cd "$1" && '
              'exec systemd-analyze verify --man=no --root="$1" '
              'vmsnapshot@nightly.service vmsnapshot@nightly.timer')
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         script, "sh", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=120)


def test_units_verify_clean(unit_root) -> None:
    res = verify(unit_root)
    assert res.returncode == 0 and res.stdout == "", res.stdout


def test_verify_would_catch_a_broken_unit(unit_root) -> None:
    unit = unit_root / "etc/systemd/system/vmsnapshot@.service"
    unit.write_text(unit.read_text().replace("OOMScoreAdjust=-900",
                                             "OOMScoreAdjust=-9000"))
    res = verify(unit_root)
    assert "OOM score adjust value out of range" in res.stdout


def test_service_contract() -> None:
    with open(os.path.join(UNITS, "vmsnapshot@.service")) as f:
        lines = [line.strip() for line in f if not line.startswith("#")]
    assert ("EnvironmentFile=/etc/vmsnapshot/schedules/%i") in lines
    assert ("ExecStart=/usr/sbin/vmsnapshot run $RUN_ARGS -- "
            "$SNAPSHOT_COMMAND") in lines
    assert "ExecStopPost=/usr/sbin/vmsnapshot thaw --recover" in lines
    assert "PrivateTmp=no" in lines
    assert any(line.startswith("OOMScoreAdjust=-") for line in lines)


def test_tmpfiles_creates_the_run_directory(tmp_path, root_loop) -> None:
    _need("systemd-tmpfiles")
    root = tmp_path / "root"
    root.mkdir()
    res = subprocess.run(
        ["systemd-tmpfiles", "--create", "--root=%s" % root,
         os.path.join(UNITS, "vmsnapshot.tmpfiles")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert res.returncode == 0, res.stdout
    for d in ("run/vmsnapshot", "var/lib/vmsnapshot"):
        st = os.stat(str(root / d))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == 0
