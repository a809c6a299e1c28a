"""Running pre/post scripts of a phase: real scripts, real permissions, real
child processes; retries counted by the scripts themselves."""
from __future__ import annotations

import logging
import os
import time

import pytest

from tests.helpers.scripts import (NOBODY, Scripts, count_into, read_int,
                                   wait_gone)
from vmsnapshot.config.model import Plugin
from vmsnapshot.scripts.oneshot import ScriptResult, run_phase, run_script
from vmsnapshot.scripts.spawn import ROOT_HOME

DESIGN_KEYS = {"plugin", "phase", "path", "attempts", "returncode",
               "timed_out", "duration_ms"}


def only(results) -> ScriptResult:
    assert len(results) == 1, results
    return results[0]


def test_success_and_report_keys(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("app", pre="echo quiesced\n", post="echo back\n")
    pre = only(run_phase([plugin], "pre"))
    assert pre.ok and pre.error is None
    assert (pre.plugin, pre.phase, pre.path) == ("app", "pre", plugin.pre[0])
    assert (pre.attempts, pre.returncode, pre.timed_out) == (1, 0, False)
    assert pre.output_tail == ("quiesced",)
    data = pre.to_json()
    assert DESIGN_KEYS <= set(data)
    assert data["error"] is None and data["signal"] is None
    assert isinstance(data["duration_ms"], float)
    post = only(run_phase([plugin], "post"))
    assert (post.phase, post.output_tail) == ("post", ("back",))


def test_params_arrive_intact(scripts: Scripts, no_leaks):
    out = scripts.file("argv")
    params = ("with space", "it's \"quoted\"", "$HOME", "`id`", "new\nline",
              "*", "-n", "")
    plugin = scripts.plugin(
        "args", pre="printf '%%s\\0' \"$@\" > %s\n" % out, args=params)
    assert only(run_phase([plugin], "pre")).ok
    with open(out, "rb") as f:
        got = f.read().split(b"\0")[:-1]
    assert tuple(a.decode() for a in got) == params


def test_clean_environment(scripts: Scripts, monkeypatch, no_leaks):
    monkeypatch.setenv("VMS_TEST_LEAK", "secret")
    out = scripts.file("env")
    plugin = scripts.plugin(
        "envy", post='env > %s; pwd >> %s; readlink /proc/self/fd/0 >> %s\n'
        % (out, out, out))
    assert only(run_phase([plugin], "post")).ok
    with open(out) as f:
        lines = f.read().splitlines()
    env = dict(line.split("=", 1) for line in lines[:-2])
    env.pop("PWD", None)     # sh sets these itself
    env.pop("SHLVL", None)
    env.pop("_", None)
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8", "HOME": ROOT_HOME, "VMSNAPSHOT_PHASE": "post",
        "VMSNAPSHOT_PLUGIN": "envy", "VMSNAPSHOT_SCRIPT": plugin.post[0]}
    assert lines[-2:] == ["/", "/dev/null"]


@pytest.mark.parametrize("phase,name,code", [
    ("pre", "Pre-ScriptExecutionFailed", 300),
    ("post", "Post-ScriptExecutionFailed", 301)])
def test_failure_message(scripts: Scripts, phase, name, code, caplog,
                         no_leaks):
    body = "echo first; echo 'the reason' >&2; exit 3\n"
    plugin = scripts.plugin("db", args=("a b",), **{phase: body})
    with caplog.at_level(logging.INFO):
        res = only(run_phase([plugin], phase))
    argv0 = getattr(plugin, phase)[0]
    assert (res.error.entry.error_name, res.error.entry.code) == (name, code)
    assert (res.attempts, res.returncode, res.timed_out) == (1, 3, False)
    assert res.error.message == (
        "%s-script %s (plugin db) failed: exit status 3 (attempt 1 of 1); "
        "command: %s 'a b'; last output:\n  first\n  the reason"
        % (phase.capitalize(), argv0, argv0))
    assert res.to_json()["error"] == name
    assert "the reason" in caplog.text


def test_signal_death_reported_by_name(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("sig", pre="kill -USR1 $$\n")
    res = only(run_phase([plugin], "pre"))
    assert res.returncode == -10 and res.signal == "SIGUSR1"
    assert "killed by signal SIGUSR1" in res.error.message
    assert res.to_json()["signal"] == "SIGUSR1"


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_really_rerun(scripts: Scripts, retries, no_leaks):
    counter = scripts.file("count")
    plugin = scripts.plugin("flaky", pre=count_into(counter) + "exit 1\n",
                            pre_retries=retries)
    res = only(run_phase([plugin], "pre"))
    assert read_int(counter) == retries + 1
    assert res.attempts == retries + 1
    assert res.error.entry.error_name == "Pre-ScriptExecutionFailed"
    assert "(attempt %d of %d)" % (retries + 1, retries + 1) \
        in res.error.message


def test_retry_succeeds(scripts: Scripts, no_leaks):
    counter = scripts.file("count")
    plugin = scripts.plugin(
        "flaky", post=count_into(counter) + '[ "$n" -ge 2 ]\n',
        post_retries=5)
    res = only(run_phase([plugin], "post"))
    assert res.ok and res.attempts == 2 and read_int(counter) == 2


def test_timeout_covers_all_attempts(scripts: Scripts, no_leaks):
    counter = scripts.file("count")
    plugin = scripts.plugin("slow", pre=count_into(counter) +
                            "sleep 0.4; exit 1\n", pre_retries=20,
                            timeout=1.0)
    start = time.monotonic()
    res = run_script(plugin, "pre", grace=0.5)
    assert time.monotonic() - start < 1.0 + 0.5 + 3.0   # loose: loaded CI
    assert 1 <= read_int(counter) <= 3 and res.attempts == read_int(counter)
    assert res.error is not None


@pytest.mark.parametrize("phase,name,code", [
    ("pre", "Pre-ScriptTimeout", 308), ("post", "Post-ScriptTimeout", 309)])
def test_timeout_kills_grandchild(scripts: Scripts, phase, name, code,
                                  no_leaks):
    pidfile = scripts.file("bg.pid")
    plugin = scripts.plugin(
        "stuck", timeout=2,
        **{phase: "sleep 300 & echo $! > %s; echo waiting; wait\n" % pidfile})
    res = run_script(plugin, phase, grace=1.0)
    assert (res.error.entry.error_name, res.error.entry.code) == (name, code)
    assert res.timed_out and res.attempts == 1
    assert res.error.message.startswith(
        "%s-script %s (plugin stuck) did not finish within 2 s (1 attempt):"
        " timed out after 2." % (phase.capitalize(),
                                 getattr(plugin, phase)[0]))
    assert res.error.message.endswith(
        " s (killed by signal SIGTERM); last output:\n  waiting")
    bg = read_int(pidfile)
    assert bg > 0 and wait_gone(bg, 2.0)


@pytest.mark.parametrize("phase,name", [
    ("pre", "Pre-ScriptNotFound"), ("post", "Post-ScriptNotFound")])
def test_not_found(scripts: Scripts, phase, name, no_leaks):
    path = os.path.join(scripts.dir, "missing")
    plugin = Plugin("gone", (path,), (path,))
    res = only(run_phase([plugin], phase))
    assert res.error.entry.error_name == name
    assert (res.attempts, res.returncode) == (0, None)


@pytest.mark.parametrize("phase,name", [
    ("pre", "InsufficientPermissionforPre-Script"),
    ("post", "InsufficientPermissionforPost-Script")])
def test_untrusted_script_never_runs(scripts: Scripts, phase, name, no_leaks):
    marker = scripts.file("ran")
    plugin = scripts.plugin("loose", **{phase: "touch %s\n" % marker})
    os.chmod(getattr(plugin, phase)[0], 0o755)
    res = only(run_phase([plugin], phase))
    assert res.error.entry.error_name == name and res.attempts == 0
    assert not os.path.exists(marker)
    os.chmod(getattr(plugin, phase)[0], 0o700)
    os.chown(getattr(plugin, phase)[0], NOBODY, -1)
    assert only(run_phase([plugin], phase)).error.entry.error_name == name
    assert not os.path.exists(marker)


def test_no_shebang(scripts: Scripts, no_leaks):
    path = scripts.write("plain", "echo hi\n", shebang=None)
    res = only(run_phase([Plugin("plain", (path,), None)], "pre"))
    assert res.error.entry.error_name == "Pre-ScriptExecutionFailed"
    assert res.error.message == (
        "Pre-script %s (plugin plain) could not be executed: %s: Exec format "
        "error (no #! line?)" % (path, path))


def test_plugins_run_in_parallel(scripts: Scripts, no_leaks):
    # Overlap, not wall time, proves it (loaded CI hosts start slowly).
    stamps = scripts.file("stamps")
    body = ("echo start $(date +%%s.%%N) >> %s; sleep 1.5; "
            "echo end $(date +%%s.%%N) >> %s\n" % (stamps, stamps))
    plugins = [scripts.plugin("p%d" % i, pre=body) for i in range(4)]
    start = time.monotonic()
    results = run_phase(plugins, "pre")
    assert time.monotonic() - start < 5.9      # one after the other: 6 s
    assert [r.plugin for r in results] == ["p0", "p1", "p2", "p3"]
    assert all(r.ok for r in results)
    with open(stamps) as f:
        events = [line.split() for line in f]
    starts = [float(t) for what, t in events if what == "start"]
    ends = [float(t) for what, t in events if what == "end"]
    assert len(starts) == len(ends) == 4
    assert max(starts) < min(ends)             # all four ran at once


def test_phase_selection(scripts: Scripts, no_leaks):
    held = scripts.plugin("held", pre="exit 1\n", post="exit 0\n", hold=True)
    post_only = scripts.plugin("postonly", post="exit 0\n")
    pre_only = scripts.plugin("preonly", pre="exit 0\n")
    assert [r.plugin for r in run_phase([held, post_only, pre_only], "pre")] \
        == ["preonly"]
    assert [r.plugin for r in run_phase([held, post_only, pre_only], "post")] \
        == ["held", "postonly"]
    assert run_phase([], "pre") == []
    with pytest.raises(ValueError):
        run_phase([pre_only], "middle")


def test_big_output_is_bounded(scripts: Scripts, no_leaks):
    plugin = scripts.plugin(
        "chatty", pre="yes line | head -c 10485760; echo the end\n")
    start = time.monotonic()
    res = only(run_phase([plugin], "pre"))
    assert time.monotonic() - start < 20      # seconds, not a hang
    assert res.ok and res.output_tail[-1] == "the end"


def test_missing_interpreter(scripts: Scripts, no_leaks):
    path = scripts.write("interp", "exit 0\n", shebang="#!/nonexistent/sh")
    res = only(run_phase([Plugin("interp", None, (path,))], "post"))
    assert res.error.entry.error_name == "Post-ScriptExecutionFailed"
    assert res.error.message.endswith(
        "could not be executed: %s: No such file or directory (is the #! "
        "interpreter missing?)" % path)
    assert res.attempts == 1 and res.returncode is None


def test_children_get_no_fd_on_the_script(scripts: Scripts, no_leaks):
    # A script's child dropping to nobody tries every fd it inherited and
    # every fd of its parent (the script): the root-only script's text
    # must be readable through none of them. (bash: dash's <&N takes one
    # digit only.)
    body = (
        "# SECRET-SCRIPT-TEXT\n"
        "setpriv --reuid=%d --regid=%d --clear-groups bash -c '\n"
        "  for f in /proc/self/fd/* /proc/$PPID/fd/*; do\n"
        "    n=${f##*/}; case $f in /proc/self/*) [ $n -le 2 ] && continue;;"
        " esac\n"
        "    echo \"try $f\"\n"
        "    timeout 2 cat \"$f\" 2>/dev/null </dev/null\n"
        "    case $f in /proc/self/*) (eval \"timeout 2 cat <&$n\") "
        "2>/dev/null;; esac\n"
        "  done; echo done' 2>&1\n" % (NOBODY, NOBODY))
    plugin = scripts.plugin("leaky", pre=body)
    res = only(run_phase([plugin], "pre"))
    assert res.ok, res
    assert res.output_tail[-1] == "done"
    assert not any("SECRET-SCRIPT-TEXT" in line for line in res.output_tail), \
        res.output_tail


def test_dollar_zero_is_the_configured_path(scripts: Scripts, no_leaks):
    # Azure's and qemu's scripts find their siblings by $(dirname "$0").
    out = scripts.file("zero")
    scripts.write("lib.sh", "LIB=loaded\n", mode=0o600)
    plugin = scripts.plugin(
        "zero", pre='. "$(dirname "$0")/lib.sh"\necho "$0 $LIB" > %s\n' % out)
    assert only(run_phase([plugin], "pre")).ok
    with open(out) as f:
        assert f.read() == "%s loaded\n" % plugin.pre[0]
    # Through a symlink too: $0 is the path the admin wrote.
    link = os.path.join(scripts.dir, "via-link")
    os.symlink(plugin.pre[0], link)
    assert only(run_phase([Plugin("link", (link,), None)], "pre")).ok
    with open(out) as f:
        assert f.read() == "%s loaded\n" % link


@pytest.mark.parametrize("problem, name", [
    ("missing", "Post-ScriptNotFound"),
    ("mode", "InsufficientPermissionforPost-Script"),
    ("owner", "InsufficientPermissionforPost-Script")])
def test_bad_post_script_stops_the_pre_script(scripts: Scripts, problem, name,
                                              no_leaks):
    # As Microsoft's extension does, both scripts are checked before the
    # pre-script runs: a pre-script without its post-script would leave
    # the application quiesced.
    marker = scripts.file("pre-ran")
    plugin = scripts.plugin("half", pre="touch %s\n" % marker,
                            post="exit 0\n")
    post = plugin.post[0]
    if problem == "missing":
        os.unlink(post)
    elif problem == "mode":
        os.chmod(post, 0o755)
    else:
        os.chown(post, NOBODY, -1)
    res = only(run_phase([plugin], "pre"))
    assert not os.path.exists(marker)
    assert (res.phase, res.path, res.attempts) == ("pre", plugin.pre[0], 0)
    assert res.error.entry.error_name == name
    assert res.error.message.startswith("Post-script %s" % post)
    assert res.error.message.endswith(
        "; nothing of this plugin runs (its pre-script %s was not started)"
        % plugin.pre[0])


def test_bad_post_script_stops_a_held_pre_script(scripts: Scripts, no_leaks):
    from vmsnapshot.scripts.held import start_held
    marker = scripts.file("pre-ran")
    plugin = scripts.plugin("heldhalf", pre="touch %s\necho READY\ncat\n"
                            % marker, post="exit 0\n", hold=True)
    os.chmod(plugin.post[0], 0o750)
    hook = start_held(plugin)
    err = hook.wait_ready()
    assert err.entry.error_name == "InsufficientPermissionforPost-Script"
    res = hook.release()
    assert res.attempts == 0 and res.error is err
    assert not os.path.exists(marker)


def test_azure_template_params_give_two_empty_arguments(scripts: Scripts,
                                                        tmp_path, no_leaks):
    # The published template's "preScriptParams": ["", ""]: Azure runs
    # `sh SCRIPT "" ""`, so the script sees $# = 2; so does vmsnapshot.
    from tests.helpers.configfiles import azure_json, write_file
    from vmsnapshot.config import load_config
    out = scripts.file("argc")
    pre = scripts.write("argc", 'echo "$#:$1:$2" > %s\n' % out)
    path = write_file(str(tmp_path / "c.json"), azure_json(
        preScriptLocation=pre, postScriptLocation=""))
    (plugin,) = load_config(path).plugins
    assert plugin.pre == (pre, "", "")
    assert only(run_phase([plugin], "pre")).ok
    with open(out) as f:
        assert f.read() == "2::\n"


def test_should_stop_ends_the_phase_at_once(scripts: Scripts, no_leaks):
    # A SIGTERM in the pre phase must not wait for the whole phase: every
    # running script is stopped (SIGTERM, grace, SIGKILL, reaped).
    pids = [scripts.file("pid%d" % i) for i in range(2)]
    plugins = [scripts.plugin("slow%d" % i, pre="echo $$ > %s\nsleep 60\n"
                              % pids[i], timeout=120) for i in range(2)]
    plugins.append(scripts.plugin("stubborn", pre="trap '' TERM\n"
                                  "echo $$ > %s\nwhile :; do sleep 1; done\n"
                                  % scripts.file("pid-stubborn")))
    start = time.monotonic()
    results = run_phase(plugins, "pre", grace=1.0,
                        should_stop=lambda: time.monotonic() > start + 1.0)
    took = time.monotonic() - start
    assert took < 15, took       # not 60 s
    for res in results:
        assert res.interrupted and not res.ok and not res.timed_out, res
        assert res.error is None and res.attempts == 1
        assert res.to_json()["interrupted"] is True
    assert [r.signal for r in results] == ["SIGTERM", "SIGTERM", "SIGKILL"]
    for path in pids + [scripts.file("pid-stubborn")]:
        assert wait_gone(read_int(path), 2.0)


def test_should_stop_before_the_start_runs_nothing(scripts: Scripts,
                                                   no_leaks):
    marker = scripts.file("ran")
    plugin = scripts.plugin("never", pre="touch %s\n" % marker)
    res = only(run_phase([plugin], "pre", should_stop=lambda: True))
    assert res.interrupted and res.attempts == 0 and not res.ok
    assert not os.path.exists(marker)


DAEMON = ("(setsid sh -c 'echo $$ > %s; exec sleep 300' </dev/null >/dev/null"
          " 2>&1 &)\n")


def _daemon_pid(path: str) -> int:
    from tests.helpers.scripts import wait_for_file
    return int(wait_for_file(path).strip())


def _needs_cgroups() -> str:
    from tests.helpers.require import skip_or_fail
    from vmsnapshot.scripts import cgroup
    where = cgroup.parent()
    if where is None:
        skip_or_fail("no writable cgroup2 hierarchy with cgroup.kill")
    return where


def _our_cgroups(where: str) -> list:
    return [n for n in os.listdir(where) if n.startswith("%d." % os.getpid())]


@pytest.mark.parametrize("tail", ["sleep 60\n", "exit 0\n"])
def test_daemonized_child_dies_with_its_cgroup(scripts: Scripts, tail,
                                               no_leaks):
    # setsid + double fork leaves the process group; not the cgroup. Both
    # at a timeout and when the script itself exits at once.
    where = _needs_cgroups()
    pidfile = scripts.file("daemon")
    plugin = scripts.plugin("daemonizer", pre=DAEMON % pidfile
                            + "while [ ! -s %s ]; do sleep 0.05; done\n"
                            % pidfile + tail, timeout=1.5)
    res = only(run_phase([plugin], "pre", grace=0.5))
    daemon = _daemon_pid(pidfile)
    assert wait_gone(daemon, 3.0), "daemon %d survived" % daemon
    if tail == "exit 0\n":
        assert res.ok, res
    else:
        assert res.error.entry.error_name == "Pre-ScriptTimeout"
    assert _our_cgroups(where) == []        # removed after the reap


def test_process_group_fallback_without_cgroups(scripts: Scripts,
                                                monkeypatch, no_leaks):
    # Forced fallback (no cgroup v2): the group kill still ends the script
    # at its timeout; a daemonized child escapes it, which is why cgroups
    # are used where they exist.
    from vmsnapshot.scripts import cgroup
    from vmsnapshot.scripts.spawn import start_process
    monkeypatch.setenv(cgroup.ENV_SWITCH, "0")
    assert cgroup.parent() is None
    handle = start_process(["/bin/true"], cgroup=True)
    assert handle.cgroup is None
    handle.wait(10)
    pidfile = scripts.file("daemon")
    grandchild = scripts.file("grandchild")
    plugin = scripts.plugin(
        "daemonizer", pre=DAEMON % pidfile + "sleep 60 & echo $! > %s\n"
        "wait\n" % grandchild, timeout=1.5)
    res = only(run_phase([plugin], "pre", grace=0.5))
    daemon = _daemon_pid(pidfile)
    try:
        assert res.error.entry.error_name == "Pre-ScriptTimeout"
        assert wait_gone(read_int(grandchild), 3.0)   # in the group
        assert not wait_gone(daemon, 0.5)             # escaped it
    finally:
        os.kill(daemon, 9)


def test_should_stop_none_is_never(scripts: Scripts, no_leaks):
    plugin = scripts.plugin("plain", pre="exit 0\n")
    assert only(run_phase([plugin], "pre", should_stop=None)).ok
