"""The freeze never reports more than happened, and never leaves a state
file behind (issue 11, defects 3 and 5, and the worker-cap gap)."""
from __future__ import annotations

import os
import time

import pytest

from tests.helpers.cli import run_json
from tests.helpers.loopfs import is_frozen, run
from vmsnapshot.freeze import native
from vmsnapshot.mounts import mountinfo
from vmsnapshot.mounts import plan
from vmsnapshot.freeze import state
from vmsnapshot.freeze.session import FreezeSession, close_targets, open_targets


def names(report):
    return [e["name"] for e in report["errors"]]


def test_foreign_thaw_during_the_snapshot_is_reported(loopfs_factory,
                                                      no_config):
    a = loopfs_factory("ext4")
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json", "--", "fsfreeze", "-u", str(a))
    assert "ThawedByAnotherProcess" in names(report), report["errors"]
    assert report["consistency"] == "crash"
    assert report["snapshot"]["finished_while_frozen"] is False
    # Our own FITHAW found it thawed (EINVAL): that is not a failed thaw.
    assert "FsFreezeFailed" not in names(report)
    assert not is_frozen(str(a))


def test_foreign_thaw_and_refreeze_is_reported(loopfs_factory, no_config):
    """A third party thaws and refreezes: our FITHAW then succeeds, so only
    the probe can tell. The probe sees the thaw; and our FITHAW thaws the
    third party's refreeze -- the expected end state: the snapshot is over
    and the mount is listed as ours, so it ends thawed."""
    a = loopfs_factory("xfs")
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--json", "--", "sh", "-c",
                      'fsfreeze -u "$1" && fsfreeze -f "$1"', "sh", str(a))
    assert "ThawedByAnotherProcess" in names(report), report["errors"]
    assert report["consistency"] == "crash"
    assert not is_frozen(str(a))


def test_undisturbed_freeze_reports_no_foreign_thaw(loopfs_factory,
                                                    no_config):
    a, b = loopfs_factory("ext4"), loopfs_factory("btrfs")
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--mount", str(b), "--json", "--", "sleep", "0.3")
    assert report["consistency"] == "filesystem", report["errors"]
    assert report["errors"] == []


def _targets(*paths):
    decisions = plan.plan(mountinfo.read_mountinfo(), selected=list(paths))
    targets, unopened = open_targets(decisions)
    assert not unopened and len(targets) == len(paths)
    return targets


def test_exception_after_the_state_file_leaves_no_stale_state(loopfs_factory):
    """close() alone (no thaw(): an exception escaped) thaws and removes
    the state file."""
    a = loopfs_factory("ext4")
    targets = _targets(a.mountpoint)
    try:
        with pytest.raises(RuntimeError):
            session = FreezeSession(targets, 30)
            try:
                session.freeze()
                assert os.path.exists(state.state_path())
                raise RuntimeError("injected between freeze and thaw")
            finally:
                session.close()
    finally:
        close_targets(targets)
    assert not os.path.exists(state.state_path())
    assert not is_frozen(str(a))


def test_state_file_records_mount_identity(loopfs_factory):
    a = loopfs_factory("ext4")
    targets = _targets(a.mountpoint)
    session = FreezeSession(targets, 30)
    try:
        session.freeze()
        [entry] = state.read_state()
        assert os.stat(state.state_path()).st_mode & 0o777 == 0o600
    finally:
        session.close()
        close_targets(targets)
    info = next(m for m in mountinfo.read_mountinfo()
                if m.mount_point == a.mountpoint)
    assert (entry.mount_id, entry.root, entry.fstype) == \
        (info.mount_id, info.root, "ext4")
    assert entry.fsid and entry.root_ino == 2
    # Linux 6.5+ (FS_IOC_GETFSUUID) and 6.8+ (STATX_MNT_ID_UNIQUE).
    blkid = run("blkid", "-s", "UUID", "-o", "value", a.device).stdout
    assert entry.uuid == blkid.strip().replace("-", "")
    assert entry.mnt_id_unique > 0


# Measured on the 2-core CI machine: 150 filesystems take ~15 s (200:
# ~40 s, most of it creating and destroying them), under the ~60 s budget.
N_LOOP = 150


def test_more_mounts_than_the_worker_cap(loopfs_factory, no_config):
    """N_LOOP real filesystems (many times the 16-thread cap) through one
    run: every one frozen, with its guardian records and its probe, then
    thawed."""
    assert N_LOOP > native.load().lib.VMS_DEFAULT_THREADS * 2
    fss = [loopfs_factory("ext4", name="m%02d" % i, size_mb=8)
           for i in range(N_LOOP)]
    args = []
    for f in fss:
        args += ["--mount", f.mountpoint]
    t0 = time.monotonic()
    report = run_json("run", "--config", no_config, *args,
                      "--freeze-timeout", "60", "--json", "--", "true")
    assert time.monotonic() - t0 < 60
    assert report["consistency"] == "filesystem", report["errors"]
    frozen = [m for m in report["mounts"] if m["frozen"]]
    assert len(frozen) == N_LOOP
    assert not any(is_frozen(f.mountpoint) for f in fss[:3] + fss[-3:])
