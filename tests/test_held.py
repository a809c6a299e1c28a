"""Held pre-scripts with real hooks: READY, release on EOF, timeouts, a hook
that dies while held, and a supervisor that is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers.scripts import (NOBODY, Scripts, count_into, pid_gone,
                                   read_int, wait_for_file, wait_gone)
from tests.helpers.wait import wait_until
from vmsnapshot.config.model import Plugin
from vmsnapshot.scripts.held import start_held

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hook_body(scripts: Scripts, before: str = "", after: str = "") -> str:
    """A hook that records its pid, says READY, holds until EOF on stdin,
    then records the release."""
    return ("echo $$ > %s\n%secho READY\ncat >/dev/null\n"
            "echo released > %s\n%s"
            % (scripts.file("pid"), before, scripts.file("released"), after))


def test_ready_then_release_on_eof(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("db", pre=hook_body(scripts, after="echo bye\n"),
                            hold=True, timeout=10)
    hook = start_held(plugin)
    assert hook.wait_ready() is None
    assert hook.alive()
    time.sleep(0.2)
    assert hook.alive() and not os.path.exists(scripts.file("released"))
    res = hook.release()
    assert res.ok, res.error
    assert (res.plugin, res.phase, res.path) == ("db", "pre", plugin.pre[0])
    assert (res.attempts, res.returncode, res.timed_out) == (1, 0, False)
    assert res.output_tail == ("READY", "bye")
    assert wait_for_file(scripts.file("released")) == "released\n"
    assert not hook.alive()
    assert hook.release() is res


def test_never_ready_is_a_pre_script_timeout(scripts: Scripts, no_leaks):
    plugin = scripts.plugin(
        "mute", pre="echo $$ > %s; echo READY >&2; echo almost; sleep 300\n"
        % scripts.file("pid"), hold=True, timeout=1.5)
    start = time.monotonic()
    hook = start_held(plugin, grace=1.0)
    err = hook.wait_ready()
    assert time.monotonic() - start < 6.0
    assert (err.entry.error_name, err.entry.code) == ("Pre-ScriptTimeout", 308)
    assert err.message.startswith(
        "Pre-script %s (plugin mute) did not print READY within 1.5 s "
        "(1 attempt): timed out" % plugin.pre[0])
    assert "almost" in err.message
    pid = read_int(scripts.file("pid"))
    assert pid > 0 and wait_gone(pid, 1.0)
    assert not hook.alive()
    res = hook.release()
    assert res.error is err and res.timed_out


def test_exit_before_ready_fails_and_retries(scripts: Scripts, no_leaks):
    counter = scripts.file("count")
    plugin = scripts.plugin("quitter", pre=count_into(counter) +
                            "echo 'cannot lock'; exit 4\n", hold=True,
                            pre_retries=1, timeout=10)
    hook = start_held(plugin)
    err = hook.wait_ready()
    assert err.entry.error_name == "Pre-ScriptExecutionFailed"
    assert read_int(counter) == 2
    assert err.message.startswith(
        "Pre-script %s (plugin quitter) exited before printing READY: exit "
        "status 4 (attempt 2 of 2)" % plugin.pre[0])
    assert "cannot lock" in err.message
    res = hook.release()
    assert res.attempts == 2 and res.returncode == 4 and res.error is err


def test_retry_then_ready(scripts: Scripts, no_leaks):
    counter = scripts.file("count")
    plugin = scripts.plugin(
        "second", pre=count_into(counter) + '[ "$n" -ge 2 ] || exit 1\n'
        + hook_body(scripts), hold=True, pre_retries=3, timeout=10)
    hook = start_held(plugin)
    assert hook.wait_ready() is None and hook.alive()
    res = hook.release()
    assert res.ok and res.attempts == 2


def test_hook_dying_while_held(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("dies", pre=hook_body(scripts), hold=True,
                            timeout=10)
    hook = start_held(plugin)
    assert hook.wait_ready() is None
    os.kill(read_int(scripts.file("pid")), signal.SIGKILL)
    wait_until(lambda: not hook.alive(), 5, "the held hook seen dead")
    res = hook.release()
    assert res.error.entry.error_name == "Pre-ScriptExecutionFailed"
    assert res.signal == "SIGKILL"
    assert "exited before it was released (its lock was not held to the " \
           "end): killed by signal SIGKILL" in res.error.message


def test_hook_ignoring_eof_is_stopped(scripts: Scripts, no_leaks):
    plugin = scripts.plugin(
        "stubborn", pre="echo $$ > %s; echo READY; exec sleep 300\n"
        % scripts.file("pid"), hold=True, timeout=10)
    hook = start_held(plugin, grace=0.5)
    assert hook.wait_ready() is None
    start = time.monotonic()
    res = hook.release(timeout=0.5)
    assert time.monotonic() - start < 5.0
    assert res.error.entry.error_name == "Pre-ScriptTimeout"
    assert "did not exit after its release (stdin closed) within 0.5 s" \
        in res.error.message
    assert res.timed_out and res.signal == "SIGTERM"
    assert pid_gone(read_int(scripts.file("pid")))


def test_failure_after_release(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("unlock", pre=hook_body(
        scripts, after="echo 'unlock failed'; exit 2\n"), hold=True)
    hook = start_held(plugin)
    assert hook.wait_ready() is None
    res = hook.release()
    assert res.error.entry.error_name == "Pre-ScriptExecutionFailed"
    assert "failed after its release: exit status 2" in res.error.message
    assert "unlock failed" in res.error.message


def test_untrusted_hook_never_starts(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("theirs", pre=hook_body(scripts), hold=True)
    os.chown(plugin.pre[0], NOBODY, -1)
    hook = start_held(plugin)
    err = hook.wait_ready()
    assert err.entry.error_name == "InsufficientPermissionforPre-Script"
    assert not hook.alive()
    res = hook.release()
    assert res.attempts == 0 and res.error is err
    assert not os.path.exists(scripts.file("pid"))


def test_missing_hook(scripts: Scripts, no_leaks):
    hook = start_held(Plugin("gone", (scripts.file("nope"),), None,
                             hold=True))
    assert hook.wait_ready().entry.error_name == "Pre-ScriptNotFound"
    assert hook.release().attempts == 0


def test_released_before_ready(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("slow", pre="sleep 300\n", hold=True)
    hook = start_held(plugin, grace=0.5)
    res = hook.release()
    assert res.error.entry.error_name == "Pre-ScriptTimeout"
    assert "was released before it printed READY" in res.error.message


SUPERVISOR = """
import sys, time
sys.path.insert(0, %(root)r)
from vmsnapshot.config.model import Plugin
from vmsnapshot.scripts.held import start_held
from vmsnapshot.scripts.spawn import start_process
hook = start_held(Plugin("h", (%(path)r,), None, hold=True, timeout=10))
assert hook.wait_ready() is None
# Started after the hook, like the snapshot command: it must not hold the
# write end of the hook's stdin.
other = start_process(["sleep", "300"])
print(other.pid, flush=True)
time.sleep(300)
"""


def test_killed_supervisor_releases_the_hook(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("h", pre=hook_body(scripts), hold=True)
    sup = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR % {"root": ROOT,
                                             "path": plugin.pre[0]}],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    other = 0
    try:
        other = int(sup.stdout.readline())
        hook_pid = read_int(scripts.file("pid"))
        assert not pid_gone(hook_pid)
        assert not os.path.exists(scripts.file("released"))
        sup.kill()
        assert wait_for_file(scripts.file("released"), 10) == "released\n"
        assert wait_gone(hook_pid, 10)
        assert not pid_gone(other)     # still running, yet the hook got EOF
    finally:
        sup.kill()
        sup.wait()
        sup.stdout.close()
        if other:
            os.kill(other, signal.SIGKILL)
    # The killed supervisor's empty script cgroup is swept by the next run.
    from vmsnapshot.scripts import cgroup
    where = cgroup.parent()
    if where is not None:
        assert not [n for n in os.listdir(where)
                    if n.startswith("%d." % sup.pid)]


def test_should_stop_while_waiting_for_ready(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("slowhold", pre="echo $$ > %s\nsleep 60\n"
                            % scripts.file("pid"), hold=True, timeout=120)
    hook = start_held(plugin, grace=1.0)
    start = time.monotonic()
    err = hook.wait_ready(should_stop=lambda: time.monotonic() > start + 1)
    assert time.monotonic() - start < 10
    assert err is not None and err.entry.error_name == "RunInterrupted"
    assert not hook.alive()
    assert wait_gone(read_int(scripts.file("pid")), 2.0)
    res = hook.release()
    assert res.interrupted and not res.ok and res.signal == "SIGTERM"


@pytest.mark.parametrize("code", [3, 4])
def test_lock_lost_at_release_is_pre_script_execution_failed(
        scripts: Scripts, code, no_leaks):
    # The shipped hooks learn only at release that their lock was lost:
    # mariadb exits 3, postgresql 4. The result must name it.
    plugin = scripts.plugin("db", pre=hook_body(
        scripts, after="echo lock lost >&2\nexit %d\n" % code), hold=True)
    hook = start_held(plugin)
    assert hook.wait_ready() is None
    res = hook.release()
    assert res.error.entry.error_name == "Pre-ScriptExecutionFailed"
    assert res.error.entry.code == 300
    assert res.returncode == code and not res.ok
    assert "failed after its release: exit status %d" % code \
        in res.error.message
    assert "lock lost" in res.error.message


def test_no_exit_after_release_is_pre_script_timeout(scripts: Scripts,
                                                     no_leaks):
    # EOF arrives but the hook hangs (e.g. its unlock blocks): after the
    # release timeout it is stopped and named Pre-ScriptTimeout.
    plugin = scripts.plugin("hang", pre=hook_body(
        scripts, after="sleep 60\n"), hold=True, timeout=1.5)
    hook = start_held(plugin, grace=0.5)
    assert hook.wait_ready() is None
    start = time.monotonic()
    res = hook.release()
    assert time.monotonic() - start < 10
    assert res.error.entry.error_name == "Pre-ScriptTimeout"
    assert res.error.entry.code == 308 and res.timed_out
    assert "did not exit after its release (stdin closed) within 1.5 s" \
        in res.error.message
