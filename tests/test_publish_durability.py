"""Publishing waits until the history is visible, not until it is durable
(issue 15): the fsyncs of the history and counters happen after the
command has returned, and a reader sees the run at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.helpers.cli import ROOT
from tests.helpers.wait import wait_until
from vmsnapshot.results import history, publishing


def _fds_under(path: str) -> list:
    held = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith(path + "/"):
                held.append((pid, target))
    return held


def test_the_history_is_visible_before_its_fsyncs_end(
        hung_device, monkeypatch):
    """State directory on a filesystem whose device stalls (writes reach
    the page cache, fsync waits for the device).  Before: the writer
    fsynced before renaming, so publish waited its whole deadline, said
    "still blocked", and no reader saw the run."""
    upper = hung_device.upper.mountpoint
    state = os.path.join(upper, "state")
    monkeypatch.setenv("VMSNAPSHOT_STATE_DIR", state)
    monkeypatch.setenv("VMSNAPSHOT_METRICS_DIR", os.path.join(upper, "prom"))
    os.makedirs(os.path.join(state, "runs"), mode=0o700)
    os.sync()       # nothing of the set-up left to write back
    hung_device.hang()
    report = {"run_id": "feedc0de", "started_at": "2026-01-01T00:00:00.0Z",
              "consistency": "filesystem", "errors": [], "trigger": "run"}
    try:
        start = time.monotonic()
        problems = publishing._files_with_deadline(report, 8.0, 100)
        elapsed = time.monotonic() - start
        assert problems == [], problems
        assert elapsed < 6.0, elapsed
        assert [r.get("run_id") for r in history.load()] == ["feedc0de"]
    finally:
        hung_device.recover()
    # The grandchild's fsyncs end once the device is back; only then may
    # the fixture unmount the filesystem.
    wait_until(lambda: not _fds_under(upper), 30,
               "the deferred fsyncs finished")


WRITER = """
import json, sys
from vmsnapshot.results import publishing
problems, pending = publishing._write_files(json.loads(sys.argv[1]), 100, False)
print(json.dumps({"problems": problems, "strptime": "_strptime" in sys.modules,
                  "prom": open(sys.argv[2]).read()}))
"""


def test_the_writer_parses_the_end_time_without_strptime(tmp_path,
                                                         results_paths):
    """Before: the metrics parsed ended_at with strptime, whose first call
    imports _strptime and locale: ~10 ms of the run's wait, every run."""
    report = {"run_id": "feedc0de", "started_at": "2026-11-29T20:00:00.100Z",
              "ended_at": "2026-11-29T20:00:00.123Z",
              "consistency": "filesystem", "errors": [], "trigger": "run"}
    prom = os.path.join(results_paths["metrics"], "vmsnapshot.prom")
    res = subprocess.run([sys.executable, "-c", WRITER, json.dumps(report),
                          prom], cwd=ROOT, stdout=subprocess.PIPE,
                         check=True, text=True, timeout=60)
    out = json.loads(res.stdout)
    assert out["problems"] == []
    assert not out["strptime"]
    assert ('vmsnapshot_last_run_timestamp_seconds{trigger="run"} '
            '1795982400.123') in out["prom"]
