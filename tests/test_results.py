"""Results that last (issue 14): report metadata, history and `status`,
journal entries, node-exporter metrics, --require, tracebacks that reach
the log, and a run whose history lives on the mount it freezes."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from typing import Any, Dict, List

import pytest

from tests.helpers.require import skip_or_fail
from tests.helpers.cli import run_json, run_vmsnapshot
from tests.helpers.configfiles import write_file, write_script
from tests.helpers.loopfs import is_frozen
from tests.helpers.scripts import make_dir
from tests.helpers.wait import poll, wait_until
from vmsnapshot import __version__
from vmsnapshot.results import journal
from vmsnapshot.results import publishing as publish_mod

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def plugin_config(tmp_path, pre_body: str) -> str:
    """A native config with one plugin whose pre-script runs PRE_BODY."""
    d = make_dir(tmp_path / "plugin", 0o700)
    pre = write_script(os.path.join(d, "pre"), pre_body)
    return write_file(os.path.join(d, "vmsnapshot.toml"),
                      '[[plugin]]\nname = "db"\npre = ["%s"]\n' % pre)


def history_files(state: str) -> List[str]:
    runs = os.path.join(state, "runs")
    if not os.path.isdir(runs):
        return []
    # not the temporary file of a write in progress
    return sorted(n for n in os.listdir(runs) if not n.startswith("."))


def promtool_check(path: str) -> None:
    if shutil.which("promtool") is None:
        skip_or_fail("promtool not installed (Debian package prometheus)")
    with open(path, "rb") as f:
        res = subprocess.run(["promtool", "check", "metrics"], stdin=f,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def entries(sink, run_id: str) -> List[Dict[str, str]]:
    return poll(lambda: [e for e in sink.entries
                         if e.get("VMSNAPSHOT_RUN_ID") == run_id], 5)


def test_run_publishes_metadata_history_journal_metrics(
        loopfs_factory, tmp_path, results_paths):
    a = loopfs_factory("ext4")
    config = plugin_config(tmp_path, "exit 1\n")   # filesystem level
    report = run_json("run", "--config", config, "--mount", str(a),
                      "--json", "--", "true")
    assert report["_returncode"] == 0, report["_stderr"]
    assert report["consistency"] == "filesystem"
    # Metadata, keys first.
    assert list(report)[:7] == ["run_id", "trigger", "started_at",
                                "ended_at", "hostname", "version",
                                "config_sources"]
    assert re.match(r"^[0-9a-f]{32}$", report["run_id"])
    assert report["trigger"] == "run"
    assert RFC3339.match(report["started_at"]), report["started_at"]
    assert RFC3339.match(report["ended_at"])
    assert report["started_at"] <= report["ended_at"]
    assert report["hostname"] == socket.gethostname()
    assert report["version"] == __version__
    assert report["config_sources"] == [config]

    # History: one file, root-only, the same report.
    state = results_paths["state"]
    [name] = history_files(state)
    path = os.path.join(state, "runs", name)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert name.endswith("-%s.json" % report["run_id"])
    with open(path) as f:
        saved = json.load(f)
    assert saved == {k: v for k, v in report.items()
                     if not k.startswith("_")}

    # Journal: one entry for the run, one per error.
    got = entries(results_paths["journal"], report["run_id"])
    run_entry = [e for e in got if "VMSNAPSHOT_ERROR_NAME" not in e]
    errs = [e for e in got if "VMSNAPSHOT_ERROR_NAME" in e]
    assert len(run_entry) == 1 and len(errs) == 1, got
    e = run_entry[0]
    assert e["SYSLOG_IDENTIFIER"] == "vmsnapshot"
    assert e["PRIORITY"] == "5"
    assert e["VMSNAPSHOT_LEVEL"] == "filesystem"
    assert e["MESSAGE_ID"] == publish_mod.MESSAGE_IDS["filesystem"]
    assert json.loads(e["VMSNAPSHOT_REPORT"])["run_id"] == report["run_id"]
    assert errs[0]["VMSNAPSHOT_ERROR_NAME"] == "Pre-ScriptExecutionFailed"
    assert errs[0]["VMSNAPSHOT_ERROR_CODE"] == "300"
    assert errs[0]["MESSAGE_ID"] == publish_mod.ERROR_MESSAGE_ID
    assert errs[0]["PRIORITY"] == "4"

    # Metrics: valid exposition format, the run's facts.
    prom = os.path.join(results_paths["metrics"], "vmsnapshot.prom")
    promtool_check(prom)
    text = open(prom).read()
    assert 'vmsnapshot_level{level="filesystem"} 1.0' in text
    assert 'vmsnapshot_level{level="application"} 0.0' in text
    assert ('vmsnapshot_last_run_errors{name="Pre-ScriptExecutionFailed",'
            'code="300"} 1.0') in text
    assert 'vmsnapshot_script_duration_seconds{plugin="db",phase="pre"}' \
        in text
    assert 'vmsnapshot_mount_freeze_seconds{mount="%s",fstype="ext4"}' % a \
        in text
    assert "vmsnapshot_runs_below_application 1.0" in text
    assert not [n for n in os.listdir(results_paths["metrics"])
                if n != "vmsnapshot.prom"]      # no temporary file left

    # --require application: the same degraded run now exits 1, and the
    # alert's streak counts 2.
    res = run_vmsnapshot("run", "--config", config, "--mount", str(a),
                         "--require", "application", "--", "true")
    assert res.returncode == 1, res.stderr
    text = open(prom).read()
    assert "vmsnapshot_runs_below_application 2.0" in text
    assert 'vmsnapshot_runs_total{level="filesystem"} 2.0' in text
    assert ('vmsnapshot_errors_total{name="Pre-ScriptExecutionFailed",'
            'code="300"} 2.0') in text
    promtool_check(prom)
    assert not is_frozen(str(a))


def test_require_exit_statuses(loopfs_factory, tmp_path):
    a = loopfs_factory("ext4")
    good = plugin_config(tmp_path, "exit 0\n")
    res = run_vmsnapshot("run", "--config", good, "--mount", str(a),
                         "--require", "application", "--", "true")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "consistency: application" in res.stdout
    empty = write_file(str(tmp_path / "empty.toml"), "")
    for require, status in (("crash", 0), ("filesystem", 0),
                            ("application", 1)):
        res = run_vmsnapshot("run", "--config", empty, "--mount", str(a),
                             "--require", require, "--", "true")
        assert res.returncode == status, (require, res.stderr)
    res = run_vmsnapshot("run", "--config", empty, "--mount", str(a),
                         "--require", "perfect", "--", "true")
    assert res.returncode == 2
    assert "argument --require: invalid choice: 'perfect'" in res.stderr
    assert history_files(os.environ["VMSNAPSHOT_STATE_DIR"]).__len__() == 4


def test_history_retention_and_status(loopfs_factory, no_config,
                                      monkeypatch, results_paths):
    a = loopfs_factory("xfs")
    monkeypatch.setenv("VMSNAPSHOT_HISTORY_KEEP", "2")
    ids = []
    for _ in range(3):
        ids.append(run_json("run", "--config", no_config, "--mount", str(a),
                            "--json")["run_id"])
    names = history_files(results_paths["state"])
    assert [n.rsplit("-", 1)[1] for n in names] == [
        i + ".json" for i in ids[1:]]
    res = run_vmsnapshot("status", "--json", "-n", "5")
    assert res.returncode == 0, res.stderr
    assert [r["run_id"] for r in json.loads(res.stdout)["runs"]] == [
        ids[2], ids[1]]
    res = run_vmsnapshot("status", "-n", "1")
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["WHEN", "(UTC)", "TRIGGER", "LEVEL", "SNAP",
                                "FROZEN", "ERRORS"]
    assert len(lines) == 2
    assert lines[1].split()[1:4] == ["run", "filesystem", "no"]
    res = run_vmsnapshot("status", "-n", "0")
    assert res.returncode == 2
    assert "must be a whole number above 0" in res.stderr


def test_a_bad_history_keep_is_said_on_stderr(loopfs_factory, no_config,
                                              monkeypatch, results_paths):
    """The history is written by a forked child with stderr on /dev/null:
    the setting is read before the fork, so its warning reaches the admin."""
    a = loopfs_factory("ext4")
    monkeypatch.setenv("VMSNAPSHOT_HISTORY_KEEP", "ten")
    res = run_vmsnapshot("run", "--config", no_config, "--mount", str(a))
    assert res.returncode == 0, res.stderr
    assert ("VMSNAPSHOT_HISTORY_KEEP='ten' is not a number: keeping 100"
            in res.stderr), res.stderr
    assert len(history_files(results_paths["state"])) == 1


def test_status_without_history(results_paths):
    res = run_vmsnapshot("status")
    assert res.returncode == 1
    assert res.stderr == "no runs recorded in %s\n" % os.path.join(
        results_paths["state"], "runs")


def test_history_on_the_frozen_mount_is_written_after_the_thaw(
        loopfs_factory, tmp_path, no_config, monkeypatch):
    """The history, counters and metrics all live on the mount the run
    freezes: nothing may be written there before the thaw (a write would
    block until the watchdog's deadline)."""
    a = loopfs_factory("ext4")
    state = os.path.join(str(a), "state")
    metrics = os.path.join(str(a), "node-exporter")
    os.mkdir(metrics)
    monkeypatch.setenv("VMSNAPSHOT_STATE_DIR", state)
    monkeypatch.setenv("VMSNAPSHOT_METRICS_DIR", metrics)
    during = tmp_path / "during"
    start = time.monotonic()
    report = run_json("run", "--config", no_config, "--mount", str(a),
                      "--freeze-timeout", "60", "--json", "--", "sh", "-c",
                      "ls -A %s %s > %s" % (str(a), metrics, during),
                      timeout=120)
    elapsed = time.monotonic() - start
    assert report["_returncode"] == 0, report["_stderr"]
    assert report["snapshot"]["finished_while_frozen"] is True
    assert report["freeze"]["auto_thawed"] is False
    assert elapsed < 45, elapsed        # far below the 60 s deadline
    # While frozen: nothing of the results existed yet.
    listing = during.read_text().split()
    assert "state" not in listing and "vmsnapshot.prom" not in listing
    # After the thaw: everything is there.
    assert len(history_files(state)) == 1
    assert os.path.exists(os.path.join(metrics, "vmsnapshot.prom"))
    assert not is_frozen(str(a))


def test_hook_trigger_is_published(root_loop, no_config, results_paths):
    res = run_vmsnapshot("hook", "freeze", "--config", no_config)
    assert res.returncode == 0, res.stderr
    res = run_vmsnapshot("hook", "thaw")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["trigger"] == "hook"
    assert RFC3339.match(report["ended_at"])
    # The holder publishes after the thaw's answer.
    [name] = wait_until(lambda: history_files(results_paths["state"]), 10,
                        "the hook's run in the history")
    assert report["run_id"] in name
    assert entries(results_paths["journal"], report["run_id"])


# ---------------------------------------------------------------- journal

def test_unexpected_error_traceback_reaches_the_journal(tmp_path,
                                                        monkeypatch,
                                                        results_paths):
    # A state directory that is a file: a broken machine, not a user error
    # the code expects, so it takes the internal-error path.
    bogus = tmp_path / "state"
    bogus.write_text("")
    monkeypatch.setenv("VMSNAPSHOT_STATE_DIR", str(bogus))
    res = run_vmsnapshot("status")
    assert res.returncode == 70
    assert res.stderr.count("\n") == 1, res.stderr      # one short line
    assert res.stderr.startswith("vmsnapshot: internal error: "
                                 "NotADirectoryError: ")
    assert "journalctl -t vmsnapshot" in res.stderr
    assert "Traceback" not in res.stderr
    sink = results_paths["journal"]
    [entry] = wait_until(lambda: sink.entries, 5, "the journal entry")
    assert entry["MESSAGE_ID"] == publish_mod.INTERNAL_ERROR_MESSAGE_ID
    assert entry["PRIORITY"] == "3"
    assert entry["VMSNAPSHOT_TRACEBACK"].startswith("Traceback")
    assert "NotADirectoryError" in entry["VMSNAPSHOT_TRACEBACK"]
    # No journal, no syslog: the traceback goes to stderr, the last log.
    monkeypatch.setenv("VMSNAPSHOT_JOURNAL_SOCKET", str(tmp_path / "none"))
    res = run_vmsnapshot("status")
    assert res.returncode == 70
    assert "Traceback (most recent call last)" in res.stderr
    assert res.stderr.splitlines()[-1].startswith(
        "vmsnapshot: internal error: NotADirectoryError")


def test_syslog_fallback_and_stderr_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VMSNAPSHOT_JOURNAL_SOCKET", str(tmp_path / "none"))
    path = str(tmp_path / "log")
    if len(path) > 100:
        path = "/tmp/vmsnapshot-syslog-%d" % os.getpid()
    monkeypatch.setenv("VMSNAPSHOT_SYSLOG_SOCKET", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        try:
            assert journal.send("crash run x", journal.WARNING,
                                VMSNAPSHOT_RUN_ID="x",
                                VMSNAPSHOT_LEVEL="crash") == "syslog"
            line = sock.recv(65536).decode()
        finally:
            os.unlink(path)
    assert re.match(r"^<28>vmsnapshot\[\d+\]: crash run x \[VMSNAPSHOT_RUN_ID"
                    r"=x VMSNAPSHOT_LEVEL=crash\]$", line), line
    assert journal.send("nowhere", journal.ERR) == "stderr"
    assert capsys.readouterr().err == "vmsnapshot: nowhere\n"


def test_large_entry_goes_as_a_memfd(results_paths):
    big = "x" * (1 << 20)
    assert journal.send("big", journal.INFO, VMSNAPSHOT_RUN_ID="big",
                        VMSNAPSHOT_REPORT=big + "\nend") == "journal"
    [entry] = entries(results_paths["journal"], "big")
    assert entry["VMSNAPSHOT_REPORT"] == big + "\nend"


@pytest.fixture
def journald(tmp_path):
    """A real systemd-journald in a namespace of its own (nothing
    machine-wide is touched), stopped and its files removed at teardown."""
    binary = next((p for p in ("/lib/systemd/systemd-journald",
                               "/usr/lib/systemd/systemd-journald")
                   if os.access(p, os.X_OK)), None)
    if binary is None or shutil.which("journalctl") is None:
        skip_or_fail("systemd-journald not installed (Debian package systemd)")
    if os.geteuid() != 0:
        skip_or_fail("not root")
    ns = "vmsnapshot-test-%d" % os.getpid()
    proc = subprocess.Popen([binary, ns], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sock = "/run/systemd/journal.%s/socket" % ns
    try:
        def listening() -> bool:
            assert proc.poll() is None, "journald exited %s" % proc.returncode
            return os.path.exists(sock)
        wait_until(listening, 20, "journald's socket")
        yield ns, sock
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with open("/etc/machine-id") as f:
            machine = f.read().strip()
        for d in ("/run/systemd/journal.%s" % ns,
                  "/var/log/journal/%s.%s" % (machine, ns),
                  "/run/log/journal/%s.%s" % (machine, ns)):
            shutil.rmtree(d, ignore_errors=True)


def test_real_journald_gets_the_entries(journald, loopfs_factory, tmp_path,
                                        monkeypatch):
    ns, sock = journald
    monkeypatch.setenv("VMSNAPSHOT_JOURNAL_SOCKET", sock)
    a = loopfs_factory("btrfs")
    config = plugin_config(tmp_path, "exit 3\n")
    report = run_json("run", "--config", config, "--mount", str(a), "--json")
    assert report["consistency"] == "filesystem"
    def both() -> List[Dict[str, Any]]:
        res = subprocess.run(
            ["journalctl", "--namespace=" + ns, "-o", "json", "--no-pager",
             "SYSLOG_IDENTIFIER=vmsnapshot",
             "VMSNAPSHOT_RUN_ID=" + report["run_id"]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        found = [json.loads(line) for line in res.stdout.splitlines()]
        return found if len(found) >= 2 else []
    found = wait_until(both, 15, "the run's two journal entries", 0.2)
    by_id = {e["MESSAGE_ID"]: e for e in found}
    run_entry = by_id[publish_mod.MESSAGE_IDS["filesystem"]]
    assert run_entry["PRIORITY"] == "5"
    assert run_entry["VMSNAPSHOT_LEVEL"] == "filesystem"
    assert run_entry["MESSAGE"].startswith("consistency filesystem, ")
    assert run_entry["MESSAGE"].endswith("(run %s, trigger run)"
                                         % report["run_id"])
    err = by_id[publish_mod.ERROR_MESSAGE_ID]
    assert err["VMSNAPSHOT_ERROR_NAME"] == "Pre-ScriptExecutionFailed"
    assert err["VMSNAPSHOT_ERROR_CODE"] == "300"
    # A fleet query: every degraded run by its MESSAGE_ID.
    res = subprocess.run(
        ["journalctl", "--namespace=" + ns, "-o", "cat", "--no-pager",
         "MESSAGE_ID=" + publish_mod.MESSAGE_IDS["filesystem"]],
        stdout=subprocess.PIPE, text=True)
    assert report["run_id"] in res.stdout


def test_alerting_rule_example_is_valid() -> None:
    if shutil.which("promtool") is None:
        skip_or_fail("promtool not installed (Debian package prometheus)")
    rules = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "systemd", "vmsnapshot-alerts.yml")
    res = subprocess.run(["promtool", "check", "rules", rules],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout
    with open(rules) as f:
        assert "vmsnapshot_runs_below_application >= 2" in f.read()


def test_history_on_a_mount_another_process_froze_does_not_hang_the_run(
        loopfs_factory, tmp_path, no_config, monkeypatch):
    """/var frozen by another agent (FrozenByAnotherProcess: left frozen):
    the run must still end with its report; the history is written when
    that freeze ends."""
    a = loopfs_factory("ext4")
    state = os.path.join(str(a), "state")
    monkeypatch.setenv("VMSNAPSHOT_STATE_DIR", state)
    subprocess.run(["fsfreeze", "-f", str(a)], check=True)
    # A writer blocked by a freeze cannot even be killed: if the run hangs,
    # thaw after 45 s so that it (and this test) can end, and fail.
    rescue = threading.Timer(45, subprocess.run, (["fsfreeze", "-u",
                                                   str(a)],))
    rescue.start()
    try:
        start = time.monotonic()
        res = run_vmsnapshot("run", "--config", no_config, "--mount",
                             str(a), "--json", "--", "true", timeout=120)
        elapsed = time.monotonic() - start
        assert elapsed < 40, "the run waited for the foreign freeze"
        assert is_frozen(str(a))
        assert not history_files(state)
    finally:
        rescue.cancel()
        subprocess.run(["fsfreeze", "-u", str(a)])
    report = json.loads(res.stdout)
    assert [e["name"] for e in report["errors"]] == ["FrozenByAnotherProcess"]
    assert res.returncode == 1
    assert "still blocked" in res.stderr, res.stderr
    wait_until(lambda: len(history_files(state)) == 1, 20,
               "the history written after that thaw")
