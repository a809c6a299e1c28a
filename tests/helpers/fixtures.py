"""The suite's shared fixtures (a pytest plugin, registered in
tests/conftest.py): the freeze guard, private run/results directories, and
real loop filesystems that are always destroyed."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, List

import pytest

from tests.helpers.journal import JournalSink
from tests.helpers.loopfs import (LoopFS, destroy_loopfs, is_frozen,
                                  make_loopfs, ours_under)
from tests.helpers.require import need_mkfs, skip_or_fail


@pytest.fixture(scope="session", autouse=True)
def freeze_guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Refuse, in every vmsnapshot process of this session, any freeze of a
    mount outside the suite's own temporary directory."""
    base = str(tmp_path_factory.getbasetemp())
    old = os.environ.get("VMSNAPSHOT_FREEZE_GUARD")
    os.environ["VMSNAPSHOT_FREEZE_GUARD"] = base
    yield base
    leaks = _leaked_under(base)
    if old is None:
        os.environ.pop("VMSNAPSHOT_FREEZE_GUARD", None)
    else:
        os.environ["VMSNAPSHOT_FREEZE_GUARD"] = old
    assert not leaks, "the suite left these behind: %s" % leaks


def _leaked_under(base: str) -> List[str]:
    """Mounts, loop devices and frozen filesystems of this session still
    there at its end (checked by path, so other suites running beside this
    one on the same machine do not count)."""
    mounts, devices = ours_under(base)
    return (["mounted%s: %s" % (_frozen_note(m), m) for m in mounts]
            + ["loop device %s: %s" % d for d in devices])


def _frozen_note(mountpoint: str) -> str:
    try:
        return " and frozen" if is_frozen(mountpoint) else ""
    except AssertionError:      # not a loop device's mount: never probed
        return ""


@pytest.fixture(autouse=True)
def run_dir(tmp_path_factory: pytest.TempPathFactory,
            monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test gets its own lock and state directory (the real one is
    /run/vmsnapshot), so parallel test sessions never see each other's
    locks."""
    path = str(tmp_path_factory.mktemp("run"))
    monkeypatch.setenv("VMSNAPSHOT_RUN_DIR", path)
    return path


@pytest.fixture(autouse=True)
def results_paths(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, Any]]:
    """Where every test's runs publish: their own history, metrics
    directory and journal socket (a draining stand-in), never the
    machine's /var/lib/vmsnapshot, node-exporter directory or journal."""
    base = tmp_path_factory.mktemp("results")
    metrics = base / "node-exporter"
    metrics.mkdir()
    # sun_path holds 108 bytes: pytest's temporary paths can be longer.
    short = tempfile.mkdtemp(prefix="vmsj.", dir="/tmp")
    sink = JournalSink(os.path.join(short, "socket"))
    paths = {"state": str(base / "state"), "metrics": str(metrics),
             "journal": sink}
    monkeypatch.setenv("VMSNAPSHOT_STATE_DIR", paths["state"])
    monkeypatch.setenv("VMSNAPSHOT_METRICS_DIR", paths["metrics"])
    monkeypatch.setenv("VMSNAPSHOT_JOURNAL_SOCKET", sink.path)
    monkeypatch.setenv("VMSNAPSHOT_SYSLOG_SOCKET",
                       os.path.join(short, "no-syslog"))
    monkeypatch.delenv("VMSNAPSHOT_HISTORY_KEEP", raising=False)
    try:
        yield paths
    finally:
        sink.close()
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def root_loop() -> None:
    """Root and loop devices, or skip (fail in CI)."""
    if os.geteuid() != 0:
        skip_or_fail("not root")
    if not os.path.exists("/dev/loop-control"):
        skip_or_fail("no loop device support (/dev/loop-control)")


@pytest.fixture
def loopfs_factory(root_loop: None, tmp_path) -> Iterator[Callable[..., LoopFS]]:
    """Make real loop filesystems; all are destroyed, newest first, even on
    failure."""
    made: List[LoopFS] = []

    def factory(fstype: str = "ext4", **kw) -> LoopFS:
        need_mkfs(fstype)
        kw.setdefault("name", "%s%d" % (fstype, len(made)))
        lfs = make_loopfs(str(tmp_path), fstype, **kw)
        made.append(lfs)
        return lfs

    yield factory
    problems = []
    for lfs in reversed(made):
        problems += destroy_loopfs(lfs)
    assert not problems, problems


@pytest.fixture
def no_config(tmp_path) -> str:
    """An empty native config file (root, 600): a freeze-only run that
    never reads the machine's own /etc configuration."""
    path = tmp_path / "vmsnapshot.toml"
    path.write_text("")
    os.chmod(str(path), 0o600)
    return str(path)


@pytest.fixture(params=["ext4", "xfs", "btrfs"])
def anyfs(request, loopfs_factory) -> LoopFS:
    return loopfs_factory(request.param)
