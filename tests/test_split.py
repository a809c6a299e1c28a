"""`vmsnapshot pre` / `vmsnapshot post`: the split cycle on real loop
filesystems, with the holder in between (issue 13): each way an agent can
misbehave (never calling post, calling it twice, pre twice, freezeFail, a
killed holder, a restart of the agent's whole cgroup) ends thawed with the
level and exit status of design.md."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Dict, Iterator, Optional

import pytest

from tests.helpers.cli import run_vmsnapshot, vmsnapshot_cmd
from tests.helpers.configfiles import write_file, write_script
from tests.helpers.loopfs import is_frozen
from tests.helpers.require import skip_or_fail
from tests.helpers.scripts import make_dir
from tests.helpers.wait import wait_until


class Split:
    def __init__(self, tmp_path, mount, run_dir: str) -> None:
        self.mount = mount
        self.run_dir = run_dir
        d = make_dir(tmp_path / "plugin", 0o700)
        self.log = str(tmp_path / "order.log")
        self.pre_script = write_script(os.path.join(d, "pre"),
                                       "echo pre >> %s\n" % self.log)
        self.post_script = write_script(os.path.join(d, "post"),
                                        "echo post >> %s\n" % self.log)
        self.config = write_file(os.path.join(d, "v.toml"), """\
[[plugin]]
name = "app"
pre = ["%s"]
post = ["%s"]
""" % (self.pre_script, self.post_script))

    def pre(self, *extra: str, config: Optional[str] = None
            ) -> subprocess.CompletedProcess:
        # capture_output reads to EOF: a holder keeping pre's pipes open
        # would make this time out.
        return run_vmsnapshot("pre", "--config", config or self.config,
                              "--mount", str(self.mount), *extra, timeout=60)

    def post(self, *extra: str) -> subprocess.CompletedProcess:
        return run_vmsnapshot("post", "--json", *extra, timeout=60)

    def holder_pid(self) -> Optional[int]:
        try:
            with open(os.path.join(self.run_dir, "holder.json")) as f:
                return int(json.load(f)["pid"])
        except FileNotFoundError:
            return None

    def wait_holder_gone(self, timeout: float = 60) -> None:
        wait_until(lambda: self.holder_pid() is None, timeout,
                   "the holder ended")

    def order(self):
        with open(self.log) as f:
            return f.read().split()


@pytest.fixture
def split(tmp_path, loopfs_factory, run_dir) -> Iterator[Split]:
    s = Split(tmp_path, loopfs_factory("ext4"), run_dir)
    yield s
    if s.holder_pid() is not None:       # never leave a holder behind
        s.post()
        s.wait_holder_gone()


def report_of(res: subprocess.CompletedProcess) -> Dict[str, Any]:
    try:
        return json.loads(res.stdout)
    except ValueError:
        raise AssertionError("not JSON (rc=%d): %s %s"
                             % (res.returncode, res.stdout, res.stderr))


def names(report):
    return [e["name"] for e in report["errors"]]


def test_pre_freezes_and_returns_post_thaws(split: Split) -> None:
    t0 = time.monotonic()
    res = split.pre("--freeze-timeout", "30")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 20
    assert is_frozen(str(split.mount))
    assert split.order() == ["pre"]
    holder = split.holder_pid()
    res = split.post()
    report = report_of(res)
    assert res.returncode == 0, res.stderr
    assert report["consistency"] == "application", report["errors"]
    assert report["snapshot_taken"] is True
    assert report["mounts"][0]["frozen"] is True
    assert not is_frozen(str(split.mount))
    assert split.order() == ["pre", "post"]
    split.wait_holder_gone()
    mount = _cgroup2()
    if mount is not None:       # the holder removed the cgroup it made
        gone = os.path.join(mount, "vmsnapshot-holder-%d" % holder)
        wait_until(lambda: not os.path.exists(gone), 5, "removed: " + gone)


def test_pre_twice_is_already_running(split: Split) -> None:
    assert split.pre("--freeze-timeout", "30").returncode == 0
    res = split.pre("--freeze-timeout", "30")
    assert res.returncode == 3
    assert "AlreadyRunning" in res.stderr
    report = report_of(split.post())
    assert report["consistency"] == "application"


def test_post_without_pre_and_post_twice(split: Split) -> None:
    res = split.post()
    assert res.returncode == 3 and "is holding anything" in res.stderr
    assert split.pre("--freeze-timeout", "30").returncode == 0
    assert split.post().returncode == 0
    res = split.post()
    assert res.returncode == 3 and "is holding anything" in res.stderr


def test_post_failed_is_failed_and_thaws(split: Split) -> None:
    assert split.pre("--freeze-timeout", "30").returncode == 0
    res = split.post("--failed")
    report = report_of(res)
    assert res.returncode == 3
    assert report["consistency"] == "failed"
    assert report["snapshot_taken"] is False
    assert "SnapshotCommandFailed" in names(report)
    assert not is_frozen(str(split.mount))
    assert split.order() == ["pre", "post"]


def test_never_calling_post_thaws_at_the_deadline(split: Split) -> None:
    assert split.pre("--freeze-timeout", "2").returncode == 0
    assert is_frozen(str(split.mount))
    split.wait_holder_gone(30)
    assert not is_frozen(str(split.mount))
    assert split.order() == ["pre", "post"]     # released at the deadline
    res = split.post()
    report = report_of(res)
    assert res.returncode == 1
    assert report["consistency"] == "crash"
    assert "FsFreezeTimeout" in names(report)


def test_killed_holder_is_thawed_by_its_guardian(split: Split) -> None:
    assert split.pre("--freeze-timeout", "30").returncode == 0
    pid = split.holder_pid()
    assert pid is not None and is_frozen(str(split.mount))
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not is_frozen(str(split.mount)), 2,
               "thawed after the kill")
    res = split.post()
    report = report_of(res)
    assert res.returncode == 1
    assert report["consistency"] == "crash"
    assert "RunInterrupted" in names(report)
    assert split.order() == ["pre", "post"], "post-scripts still run"
    mount = _cgroup2()
    if mount is not None:
        assert not os.path.exists(os.path.join(
            mount, "vmsnapshot-holder-%d" % pid)), "its cgroup was left"


def test_policy_refusal_leaves_nothing_frozen(split: Split, tmp_path) -> None:
    d = make_dir(tmp_path / "bad", 0o700)
    bad = write_script(os.path.join(d, "pre"), "exit 5\n")
    config = write_file(os.path.join(d, "v.toml"), """\
[policy]
continue_on_failure = false
[[plugin]]
name = "app"
pre = ["%s"]
post = ["%s"]
""" % (bad, split.post_script))
    res = split.pre(config=config)
    assert res.returncode == 3
    assert "Pre-ScriptExecutionFailed" in res.stderr
    split.wait_holder_gone()
    assert not is_frozen(str(split.mount))
    assert split.order() == ["post"]


def _running(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _cgroup2() -> Optional[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return left.split()[4]
    return None


def _removed(cgroup: str) -> bool:
    """rmdir, which fails while the killed processes are still exiting."""
    try:
        os.rmdir(cgroup)
        return True
    except OSError:
        return False


def test_restarting_the_callers_cgroup_keeps_the_freeze(split: Split,
                                                        tmp_path) -> None:
    """An agent's `systemctl restart` kills its whole cgroup: the holder
    and guardian must not be in it, or the mount stays frozen for ever."""
    mount = _cgroup2()
    if mount is None or not os.path.exists(os.path.join(mount,
                                                        "cgroup.procs")):
        skip_or_fail("no cgroup2 hierarchy")
    caller = os.path.join(mount, "vmsnapshot-test-agent-%d" % os.getpid())
    os.mkdir(caller)
    try:
        cmd = " ".join("'%s'" % a for a in vmsnapshot_cmd(
            "pre", "--config", split.config, "--mount", str(split.mount),
            "--freeze-timeout", "30"))
        res = subprocess.run(
            ["sh", "-c", "echo $$ > %s/cgroup.procs && exec %s"
             % (caller, cmd)], capture_output=True, text=True, timeout=60,
            cwd=os.path.dirname(os.path.dirname(__file__)))
        assert res.returncode == 0, res.stderr
        with open(os.path.join(caller, "cgroup.kill"), "w") as f:
            f.write("1")
        time.sleep(1)
        pid = split.holder_pid()
        assert pid is not None and _running(pid), "the holder was killed"
        assert is_frozen(str(split.mount))
        report = report_of(split.post())
        assert report["consistency"] == "application", report["errors"]
        assert not is_frozen(str(split.mount))
    finally:
        wait_until(lambda: _removed(caller), 10, "removed: " + caller, 0.1)
