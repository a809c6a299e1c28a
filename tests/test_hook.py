"""`vmsnapshot hook freeze|thaw` on the host, without a VM and without any
freeze (qemu-ga freezes, not the hook): the held pre-script stays held
between the two calls, the policy can refuse the freeze, a missing thaw is
bounded by the freeze timeout, and one holder at a time.  The qemu-ga VM
test (test_vm.py) drives the same code through a real qemu-ga."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import Any, Dict, Iterator

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers.cli import run_vmsnapshot
from tests.helpers.configfiles import write_file
from tests.helpers.scripts import Scripts
from tests.helpers.wait import wait_until

HOLD = """\
echo held > "$STATE"
echo READY
cat > /dev/null
echo released >> "$STATE"
"""


def _unlocked(lock: str) -> bool:
    """No one holds LOCK (or it is gone)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        assert e.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        return False
    finally:
        os.close(fd)


class Hook:
    def __init__(self, base) -> None:
        self.scripts = Scripts(base)
        self.state = self.scripts.file("state")
        self.run_dir = str(base / "run")
        self.env = dict(os.environ, VMSNAPSHOT_RUN_DIR=self.run_dir)

    def config(self, pre: str, freeze_timeout: float = 30,
               continue_on_failure: bool = True) -> str:
        env = "STATE=%s\n" % self.state
        pre_path = self.scripts.write("pre", env + pre)
        post_path = self.scripts.write("post", env + 'echo post >> "$STATE"\n')
        return write_file(os.path.join(self.scripts.dir, "vmsnapshot.toml"), """\
[freeze]
timeout = %g
[policy]
continue_on_failure = %s
[[plugin]]
name = "app"
pre = ["%s"]
post = ["%s"]
hold = %s
timeout = 10
""" % (freeze_timeout, str(continue_on_failure).lower(), pre_path, post_path,
            "true" if "READY" in pre else "false"))

    def call(self, *args: str) -> Any:
        return run_vmsnapshot("hook", *args, env=self.env, timeout=60)

    def read_state(self) -> str:
        with open(self.state) as f:
            return f.read()

    def status(self) -> Dict[str, Any]:
        with open(os.path.join(self.run_dir, "split-status.json")) as f:
            return json.load(f)

    def wait_holder_gone(self, timeout: float = 30) -> None:
        """The holder keeps the run lock until it is done."""
        lock = os.path.join(self.run_dir, "lock")
        wait_until(lambda: _unlocked(lock), timeout, "the hook holder ended")


@pytest.fixture
def hook(tmp_path) -> Iterator[Hook]:
    if os.geteuid() != 0:
        skip_or_fail("the hook's trust checks need root-owned scripts")
    h = Hook(tmp_path)
    yield h
    h.call("thaw")                    # never leave a holder behind
    h.wait_holder_gone()


def test_held_pre_script_stays_held_from_freeze_to_thaw(hook: Hook) -> None:
    config = hook.config(HOLD)
    res = hook.call("freeze", "--config", config)
    assert res.returncode == 0, res.stderr
    time.sleep(0.5)
    assert hook.read_state() == "held\n"          # the hook process has exited
    res = hook.call("thaw")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["consistency"] == "application"
    assert [(s["phase"], s["returncode"]) for s in report["scripts"]] == [("pre", 0), ("post", 0)]
    assert hook.read_state() == "held\nreleased\npost\n"
    assert hook.status() == report


def test_policy_refuses_the_freeze_when_a_pre_script_fails(hook: Hook) -> None:
    config = hook.config("echo failing >&2\nexit 4\n", continue_on_failure=False)
    res = hook.call("freeze", "--config", config)
    assert res.returncode == 3
    assert "Pre-ScriptExecutionFailed" in res.stderr
    hook.wait_holder_gone()
    assert hook.read_state() == "post\n"         # post runs after a failed pre
    assert hook.status()["consistency"] == "failed"
    res = hook.call("thaw")
    assert res.returncode == 0 and "is holding anything" in res.stderr


def test_no_thaw_releases_at_the_freeze_timeout(hook: Hook) -> None:
    config = hook.config(HOLD, freeze_timeout=1)
    assert hook.call("freeze", "--config", config).returncode == 0
    hook.wait_holder_gone()
    assert hook.read_state() == "held\nreleased\npost\n"
    status = hook.status()
    assert status["consistency"] == "crash"
    assert [e["name"] for e in status["errors"]] == ["FsFreezeTimeout"]
    # The late thaw hook answers with that report, not with success; once.
    res = hook.call("thaw")
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout) == status
    assert "gave up" in res.stderr
    res = hook.call("thaw")
    assert res.returncode == 0 and "is holding anything" in res.stderr


def test_hook_fails_when_the_held_script_fails_at_release(hook: Hook) -> None:
    config = hook.config(HOLD + "exit 3\n")
    assert hook.call("freeze", "--config", config).returncode == 0
    res = hook.call("thaw")
    report = json.loads(res.stdout)
    assert report["consistency"] == "filesystem", report
    assert [e["name"] for e in report["errors"]] == [
        "Pre-ScriptExecutionFailed"]


def test_one_holder_at_a_time(hook: Hook) -> None:
    config = hook.config(HOLD)
    assert hook.call("freeze", "--config", config).returncode == 0
    res = hook.call("freeze", "--config", config)
    assert res.returncode == 3 and "AlreadyRunning" in res.stderr
    res = hook.call("thaw")
    assert res.returncode == 0 and json.loads(res.stdout)["consistency"] == "application"
