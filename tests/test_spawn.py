"""The spawn helper with real child processes: timeouts that reach the whole
group, bounded output, pipes held by background children, no leaks."""
from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time

import pytest

from tests.helpers.scripts import Scripts, read_int, wait_gone
from vmsnapshot.scripts import spawn
from vmsnapshot.scripts.spawn import PIPE, clean_env, run_process, start_process


def sh(code: str, **kw) -> spawn.ProcessResult:
    kw.setdefault("timeout", 10)
    return run_process(["sh", "-c", code], **kw)


def test_exit_status_and_combined_output(no_leaks):
    res = sh("echo out; echo err >&2; printf 'no newline'; exit 3")
    assert res.returncode == 3 and res.signal is None
    assert not res.timed_out
    assert res.output_tail == ("out", "err", "no newline")
    assert res.bytes_dropped == 0
    assert res.describe() == "exit status 3"
    assert res.argv == ("sh", "-c",
                        "echo out; echo err >&2; printf 'no newline'; exit 3")


def test_signal_death_is_named(no_leaks):
    res = sh("kill -USR1 $$")
    assert res.returncode == -signal.SIGUSR1
    assert res.signal == "SIGUSR1"
    assert res.describe() == "killed by signal SIGUSR1"


def test_own_session_cwd_stdin(no_leaks):
    res = sh("ps -o sid= -p $$; echo $$; pwd; readlink /proc/self/fd/0",
             cwd="/")
    sid, pid, cwd, stdin = res.output_tail
    assert sid.strip() == pid.strip()      # session leader
    assert cwd == "/"
    assert stdin == "/dev/null"


def test_timeout_kills_the_group_including_grandchildren(scripts: Scripts,
                                                         no_leaks):
    pidfile = scripts.file("bg.pid")
    start = time.monotonic()
    res = sh("sleep 300 & echo $! > %s; echo started; wait" % pidfile,
             timeout=2.0, grace=2.0)
    elapsed = time.monotonic() - start
    assert res.timed_out and res.signal == "SIGTERM"
    assert 1.9 < res.duration_ms / 1000 < 5.0     # loose: loaded CI hosts
    assert elapsed < 8.0
    assert res.output_tail == ("started",)
    assert res.describe().startswith("timed out after 2.")
    assert res.describe().endswith(" s (killed by signal SIGTERM)")
    bg = read_int(pidfile)
    assert bg > 0 and wait_gone(bg, 2.0)


def test_sigterm_ignored_escalates_to_sigkill(no_leaks):
    handle = start_process(
        ["sh", "-c", "trap '' TERM; echo READY; while :; do sleep 0.05; done"],
        grace=0.5, watch_line=b"READY")
    assert handle.wait_line(10)           # the trap is in place
    start = time.monotonic()
    res = handle.stop()
    assert res.timed_out and res.signal == "SIGKILL"
    assert 0.45 < time.monotonic() - start < 5.0


def test_background_child_holding_stdout_does_not_hang(scripts: Scripts,
                                                       no_leaks):
    pidfile = scripts.file("bg.pid")
    start = time.monotonic()
    res = sh("sleep 300 & echo $! > %s; echo done" % pidfile)
    assert time.monotonic() - start < 5.0
    assert res.returncode == 0 and not res.timed_out
    assert res.output_tail == ("done",)
    # Nothing of the script outlives it.
    bg = read_int(pidfile)
    assert bg > 0 and wait_gone(bg, 2.0)


def test_escaped_child_holding_stdout_does_not_hang(scripts: Scripts,
                                                    no_leaks):
    # setsid leaves our process group: we cannot kill it, only stop reading.
    pidfile = scripts.file("escaped.pid")
    start = time.monotonic()
    res = sh("setsid sh -c 'echo $$ > %s; exec sleep 300' & "
             "while [ ! -s %s ]; do sleep 0.01; done; echo done"
             % (pidfile, pidfile))
    try:
        assert time.monotonic() - start < 5.0
        assert res.returncode == 0 and res.output_tail == ("done",)
    finally:
        os.kill(read_int(pidfile), signal.SIGKILL)


def test_ten_megabytes_of_output_bounded_and_fast(no_leaks):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    res = sh("yes 0123456789abcdef | head -c 10485760; echo; echo last line")
    assert time.monotonic() - start < 20.0    # seconds, not a hang
    assert res.returncode == 0
    assert res.output_tail[-1] == "last line"
    assert len(res.output_tail) == spawn.TAIL_LINES
    assert res.bytes_dropped >= 10485760 - spawn.OUTPUT_LIMIT
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 8 * 1024, grown_kib


def test_output_limit_parameter(no_leaks):
    res = sh("seq 1 1000", output_limit=100)
    assert res.output_tail[-1] == "1000"
    assert res.bytes_dropped == len("".join("%d\n" % i
                                            for i in range(1, 1001))) - 100
    assert all(line.isdigit() for line in res.output_tail)


def test_argv_as_given(scripts: Scripts, no_leaks):
    # Scripts run by their path: $0 is the path, params arrive exactly,
    # empty strings included; and no fd beyond 0-2 reaches the child.
    path = scripts.write("args", 'printf "%s|" "$0" "$@"; ls /proc/self/fd\n')
    res = run_process([path, "a b", "", "$HOME", ""], timeout=10)
    assert res.output_tail[0] == "%s|a b||$HOME||0" % path
    assert res.output_tail[1:] == ("1", "2", "3")    # 3: ls's own listing
    res = run_process(["/bin/sh", "-c", 'echo "$0"', "my-name"], timeout=10)
    assert res.output_tail == ("my-name",)


def test_clean_env():
    env = clean_env({"VMSNAPSHOT_PHASE": "pre"})
    assert env == {"PATH": spawn.SCRIPT_PATH, "LANG": "C.UTF-8",
                   "HOME": spawn.ROOT_HOME, "VMSNAPSHOT_PHASE": "pre"}
    assert spawn.SCRIPT_PATH == \
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_env_given_or_inherited(monkeypatch, no_leaks):
    monkeypatch.setenv("VMS_TEST_LEAK", "x")
    assert sh('echo "[$VMS_TEST_LEAK]"').output_tail == ("[x]",)
    res = sh('echo "[$VMS_TEST_LEAK]" "$PATH"', env=clean_env())
    assert res.output_tail == ("[] " + spawn.SCRIPT_PATH,)


def test_cannot_start_raises_oserror(no_leaks):
    with pytest.raises(FileNotFoundError):
        run_process(["/nonexistent/program"], timeout=5)


def test_handle_wait_terminate_and_idempotent_result(no_leaks):
    handle = start_process(["sleep", "300"], grace=1.0)
    assert handle.wait(0.1) is None
    assert handle.alive()
    handle.terminate_group()
    res = handle.wait(30)
    assert res is not None and res.signal == "SIGTERM"
    assert not res.timed_out
    assert handle.wait(0) is res and handle.stop() is res
    assert not handle.alive()
    handle.kill_group()            # after the reap: a harmless no-op


def test_handle_stop_escalates(no_leaks):
    handle = start_process(["sh", "-c", "trap '' TERM; echo READY; sleep 300"],
                           grace=0.3, watch_line=b"READY")
    assert handle.wait_line(10)    # sh installed its trap
    res = handle.stop()
    assert res.timed_out and res.signal == "SIGKILL"


def test_stdin_pipe_eof(no_leaks):
    handle = start_process(["sh", "-c", "cat >/dev/null; echo eof"],
                           stdin=PIPE)
    assert handle.wait(0.3) is None          # blocked reading stdin
    handle.close_stdin()
    res = handle.wait(30)
    assert res is not None and res.output_tail == ("eof",)


def test_watch_line_on_stdout_only(no_leaks):
    handle = start_process(
        ["sh", "-c", "echo READY >&2; echo not; sleep 0.3; echo '  READY';"
                     "exec sleep 300"], watch_line=b"READY")
    try:
        start = time.monotonic()
        assert handle.wait_line(5)
        assert time.monotonic() - start >= 0.25   # stderr's READY ignored
    finally:
        handle.stop(0)
    # Exit without the line: False at once, not after the timeout.
    handle = start_process(["sh", "-c", "echo nope"], watch_line=b"READY")
    start = time.monotonic()
    assert not handle.wait_line(30)
    assert time.monotonic() - start < 10
    assert handle.wait(30) is not None


def test_interrupted_run_process_leaves_nothing(no_leaks):
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            sh("sleep 300", timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_no_imports_while_running(no_leaks):
    """Frozen filesystems: nothing may be imported lazily once running."""
    def start() -> spawn.ProcessHandle:
        return start_process(["sh", "-c", "echo READY; sleep 0.2; exit 2"],
                             stdin=PIPE, watch_line=b"READY")
    warm = start()                            # first use may import
    warm.stop(0)
    sh("exit 0")
    before = set(sys.modules)
    handle = start()
    handle.wait_line(5)
    handle.alive()
    handle.wait(0.01)
    handle.close_stdin()
    res = handle.wait(30)
    sh("sleep 5", timeout=0.2, grace=0.1)
    assert set(sys.modules) == before
    assert res is not None and res.returncode == 2


def test_many_parallel_processes_no_leaks(no_leaks):
    results = []

    def one(i: int) -> None:
        results.append(sh("echo %d; sleep 0.1" % i))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(r.output_tail[0]) for r in results) == list(range(20))


def test_exit_detection_without_pidfd(scripts: Scripts, monkeypatch,
                                      no_leaks):
    """Kernels < 5.3 and Python < 3.9 have no pidfd: waitid polling."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    pidfile = scripts.file("bg.pid")
    start = time.monotonic()
    res = sh("sleep 300 & echo $! > %s; sleep 300" % pidfile, timeout=2.0,
             grace=1.0)
    assert res.timed_out and res.signal == "SIGTERM"
    assert time.monotonic() - start < 6.0
    bg = read_int(pidfile)
    assert bg > 0 and wait_gone(bg, 2.0)
    handle = start_process(["sh", "-c", "exit 7"])
    assert handle.pidfd is None
    res = handle.wait(30)
    assert res is not None and res.returncode == 7


def test_duration_counts_from_before_the_exec(no_leaks):
    res = run_process(["sleep", "0.3"], timeout=10)
    assert res.duration_ms >= 300
    assert run_process(["true"], timeout=10).duration_ms > 0
