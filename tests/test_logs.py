"""vmsnapshot.logs (issue 15): `logging` is imported only when a message
is emitted, and nothing a user or a test sees of the log changes."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

from tests.helpers.cli import ROOT, run_vmsnapshot
from vmsnapshot import logs

LINE = re.compile(r"^vmsnapshot: (DEBUG|INFO|WARNING|ERROR|CRITICAL): \S")


def _python(code: str) -> subprocess.CompletedProcess:
    """A fresh interpreter: what is in sys.modules is what the code did."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60)


# A CLI-like setup in a child: the CLI's own format, on a stream that the
# child can look at while a hold is on.
CHILD = """
import io, json, sys
from vmsnapshot import logs
out = io.StringIO()

def setup(logging):
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("vmsnapshot: %(levelname)s: "
                                           "%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logs.WARNING)

seen = []
def loaded():
    return "logging" in sys.modules
log = logs.get("vmsnapshot.child")
"""


def test_threshold_zero_forwards_everything_to_logging(caplog):
    """Library use and tests: a debug message reaches caplog, with the
    caller's function and line (not the proxy's)."""
    log = logs.get("vmsnapshot.test_logs")
    assert logs.get("vmsnapshot.test_logs") is log
    with caplog.at_level(logging.DEBUG, logger="vmsnapshot.test_logs"):
        line = sys._getframe().f_lineno + 1
        log.debug("seen %d", 1)
        log.log(logs.INFO, "at %s", "info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("caught")
        assert log.isEnabledFor(logs.DEBUG)
    first, second, third = caplog.records
    assert (first.levelname, first.getMessage()) == ("DEBUG", "seen 1")
    assert first.funcName == sys._getframe().f_code.co_name
    assert first.lineno == line
    assert first.pathname == __file__
    assert (second.levelname, second.getMessage()) == ("INFO", "at info")
    assert third.levelname == "ERROR" and third.exc_info[0] is ValueError


def test_below_the_threshold_nothing_imports_logging():
    """Before: every module imported logging (~5 ms of each run)."""
    res = _python(CHILD + """
import vmsnapshot.cli, vmsnapshot.commands.run, vmsnapshot.results.publishing
seen.append(loaded())
logs.configure(logs.WARNING, setup)
log.debug("not %s", "shown"); log.info("nor this")
seen.append(loaded())
seen.append(log.isEnabledFor(logs.INFO))
seen.append(loaded())
log.warning("shown %d", 1)
seen.append(loaded())
log.debug("still not")
print(json.dumps({"seen": seen, "out": out.getvalue()}))
""")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["seen"] == [False, False, False, False, True]
    assert got["out"] == "vmsnapshot: WARNING: shown 1\n"


def test_without_a_threshold_a_debug_message_loads_logging():
    res = _python(CHILD + """
log.debug("x")
print(json.dumps(loaded()))
""")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) is True


def test_logging_imported_by_someone_else_gets_the_setup():
    """Another module imported logging first: the setup applies (once),
    and a below-threshold message goes through logging's own levels."""
    res = _python(CHILD + """
calls = []
def counted(logging):
    calls.append(1)
    setup(logging)
logs.configure(logs.WARNING, counted)
import logging
log.info("dropped by the root level")
log.warning("after someone else")
logging.getLogger("other").error("theirs")
print(json.dumps({"calls": len(calls), "out": out.getvalue()}))
""")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["calls"] == 1
    assert got["out"] == ("vmsnapshot: WARNING: after someone else\n"
                          "vmsnapshot: ERROR: theirs\n")


def test_a_hold_started_before_logging_was_loaded_holds_its_first_message():
    """Before: the hold swapped the root handlers at its start, which
    needs logging; now it takes effect when a message loads logging."""
    res = _python(CHILD + """
from vmsnapshot.cycle.frozenlog import logs_held_in_memory
logs.configure(logs.WARNING, setup)
with logs_held_in_memory():
    log.debug("below the threshold")
    seen.append(loaded())
    log.warning("while %s", "frozen")
    seen.append(loaded())
    seen.append(out.getvalue())
seen.append(out.getvalue())
print(json.dumps(seen))
""")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        False, True, "", "vmsnapshot: WARNING: while frozen\n"]


def test_a_hold_with_nothing_logged_loads_nothing():
    res = _python(CHILD + """
from vmsnapshot.cycle.frozenlog import logs_held_in_memory
logs.configure(logs.WARNING, setup)
with logs_held_in_memory():
    log.info("below the threshold")
seen.append(loaded())
log.warning("after the hold")
print(json.dumps({"seen": seen, "out": out.getvalue()}))
""")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["seen"] == [False]
    assert got["out"] == "vmsnapshot: WARNING: after the hold\n"


def _lines(stderr: str):
    lines = stderr.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    return lines


def test_verbose_runs_print_the_same_lines(loopfs_factory, no_config):
    """-v: info lines, no debug; -vv: both; the CLI's format."""
    a = loopfs_factory("ext4")
    by_level = {}
    for flag in ("-v", "-vv"):
        res = run_vmsnapshot("run", flag, "--config", no_config,
                             "--mount", str(a), "--json", "--",
                             "sh", "-c", "echo hello")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["consistency"] == "filesystem"
        lines = _lines(res.stderr)
        assert "vmsnapshot: INFO: snapshot: hello" in lines, lines
        by_level[flag] = {line.split(":")[1].strip() for line in lines}
    assert "DEBUG" not in by_level["-v"]
    assert "DEBUG" in by_level["-vv"]


def test_a_warning_at_the_default_level_still_prints(loopfs_factory,
                                                     no_config):
    """The first message of the run, after the thaw: it loads logging."""
    a = loopfs_factory("ext4")
    res = run_vmsnapshot("run", "--config", no_config, "--mount", str(a),
                         "--json", "--", "false")
    assert res.returncode != 0
    assert json.loads(res.stdout)["errors"]
    lines = res.stderr.splitlines()
    assert lines[0] == ("vmsnapshot: WARNING: SnapshotCommandFailed (126): "
                        "false: exit status 1"), lines
    assert [line[:10] for line in lines[1:]] == ["  action: "], lines


def test_an_internal_error_still_logs_its_traceback(tmp_path, monkeypatch):
    """No journal, no syslog: the traceback on stderr, then one line."""
    bogus = tmp_path / "state"
    bogus.write_text("")
    monkeypatch.setenv("VMSNAPSHOT_STATE_DIR", str(bogus))
    monkeypatch.setenv("VMSNAPSHOT_JOURNAL_SOCKET", str(tmp_path / "none"))
    res = run_vmsnapshot("status")
    assert res.returncode == 70
    assert "Traceback (most recent call last)" in res.stderr
    assert "NotADirectoryError" in res.stderr
    assert res.stderr.splitlines()[-1].startswith(
        "vmsnapshot: internal error: NotADirectoryError")
