"""Run the vmsnapshot CLI as a real child process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vmsnapshot_cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "vmsnapshot", *args]


def run_vmsnapshot(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("cwd", ROOT)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(vmsnapshot_cmd(*args), stdout=subprocess.PIPE,
                          text=True, timeout=timeout, **kw)


def run_json(*args: str, **kw) -> Dict[str, Any]:
    """run ... --json; returns the parsed report (asserts stdout is JSON)."""
    res = run_vmsnapshot(*args, **kw)
    try:
        report = json.loads(res.stdout)
    except ValueError:
        raise AssertionError("not JSON (rc=%d):\n%s\nstderr:\n%s"
                             % (res.returncode, res.stdout, res.stderr))
    report["_returncode"] = res.returncode
    report["_stderr"] = res.stderr
    return report
