"""The benchmark's quick mode runs to the end and writes valid JSON (CI
smoke test: nothing is asserted about times)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.cli import ROOT
from tests.helpers.require import skip_or_fail

pytestmark = pytest.mark.root


def test_quick_completes_and_writes_json(root_loop, tmp_path):
    for tool in ("mkfs.ext4", "mkfs.xfs", "fsfreeze", "cc"):
        if shutil.which(tool) is None:
            skip_or_fail("%s not installed" % tool)
    results = tmp_path / "results"
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-plot",
         "--workdir", str(tmp_path), "--results", str(results)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=300)
    if res.returncode == 2 and "another bench is running" in res.stdout:
        skip_or_fail("another bench holds the lock")
    assert res.returncode == 0, res.stdout
    (path,) = glob.glob(str(results / "freeze-*.json"))
    with open(path) as f:
        doc = json.load(f)
    methods = {"vmsnapshot-default", "vmsnapshot-scripts", "vmsnapshot",
               "vmsnapshot-presync", "fsfreeze-loop", "seq-ioctl"}
    assert {c["method"] for c in doc["cycles"]} == methods
    assert all(c["error"] is None for c in doc["cycles"])
    assert {s["method"] for s in doc["summary"]} == methods
    assert doc["bandwidth"]["seq_mib_s"] > 0
    assert doc["overhead"]["vmsnapshot_run_ms"] is not None
    assert doc["overhead"]["tree_run_ms"] is not None
    assert doc["overhead"]["seqfreeze_ms"] is not None
    targets = {t["target"] for t in doc["targets"]}
    assert any("default config" in t for t in targets)
    # Everything it made is gone: no mount or image left in its work dir.
    assert not [p for p in os.listdir(tmp_path)
                if p.startswith("vmsnapshot-bench-")]
