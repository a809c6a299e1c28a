"""The fixed cost of `vmsnapshot run --mount M` (no scripts, the default
freeze settings) on one clean mount, against the util-linux pair
`fsfreeze -f M && fsfreeze -u M` and the single-threaded loop (seqfreeze:
one process, FIFREEZE then FITHAW), wall time, interleaved.  Issue 15's
target: run's median at most 100 ms above the pair's.

`run` is timed twice, interleaved with the rest:

- as installed: the distribution's interpreter (/usr/bin/python3, what the
  .deb and the .rpm depend on) running the console script the package
  installs (`vmsnapshot`: import the entry point, call it).  This is what
  an admin or a backup agent runs, and what the target is judged on.
- from the tree: this bench's own interpreter with `python -m vmsnapshot`,
  which adds runpy's imports; shown for comparison with development runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from bench.report import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Freeze only: a config of our own, so no script configured on the machine
# ever runs from the bench.
CONFIG = "[freeze]\nenabled = true\ntimeout = 60\n"
TARGET_MS = 100.0
SETTLE_S = 0.5
DISTRIBUTION_PYTHON = "/usr/bin/python3"
# What installer (pybuild's pyproject plugin) and rpm's pyproject macros
# write into /usr/sbin/vmsnapshot (debian/rules moves it there), minus
# the shebang.
CONSOLE_SCRIPT = (
    "import re\nimport sys\nfrom vmsnapshot.cli import entry\n"
    "if __name__ == '__main__':\n"
    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "    sys.exit(entry())\n")


def installed_python() -> str:
    """/usr/bin/python3 when it can run the tree (3.9+, cffi's backend
    installed, as the packages require); else this interpreter."""
    probe = ("import sys, _cffi_backend; "
             "sys.exit(0 if sys.version_info >= (3, 9) else 1)")
    try:
        ok = subprocess.run([DISTRIBUTION_PYTHON, "-c", probe],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=30
                            ).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return DISTRIBUTION_PYTHON if ok else sys.executable


def _config_dir() -> str:
    """The trust rules refuse a config under a directory others can write
    (/tmp), so it goes in a fresh root-only directory under /run."""
    return tempfile.mkdtemp(prefix="vmsnapshot-bench-", dir="/run")


def _timed(argv: List[str]) -> Tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    # A FIFREEZE right after a thaw finds the journal idle and takes ~2 ms;
    # 50 ms later ext4 has a commit to flush first (~40 ms on a loop
    # device).  Without a pause the command timed right after another one
    # gets the fast freeze, whatever it is: every command starts settled.
    time.sleep(SETTLE_S)
    t0 = time.monotonic()
    res = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=120)
    return (time.monotonic() - t0) * 1000.0, res


def measure(mount: str, runs: int, bindir: str) -> Dict[str, Any]:
    installed = installed_python()
    # An installed package has its bytecode compiled (py3compile, rpm's
    # brp-python-bytecompile); `run` itself never writes any (it may run
    # while filesystems are frozen), so compile the tree as packages do,
    # with each interpreter that runs it.
    for python in sorted({installed, sys.executable}):
        subprocess.run([python, "-m", "compileall", "-q",
                        os.path.join(ROOT, "vmsnapshot")], check=True,
                       stdout=subprocess.DEVNULL)
    cfgdir = _config_dir()
    try:
        cfg = os.path.join(cfgdir, "vmsnapshot.toml")
        fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(CONFIG)
        args = ["run", "--config", cfg, "--mount", mount, "--json"]
        vms = [installed, "-c", CONSOLE_SCRIPT] + args
        tree = [sys.executable, "-m", "vmsnapshot"] + args
        pair = ["sh", "-c", 'fsfreeze -f "$1" && fsfreeze -u "$1"', "sh",
                mount]
        # EOF on stdin: seqfreeze thaws at once after freezing.
        seq = [os.path.join(bindir, "seqfreeze"), mount]
        vms_ms: List[float] = []
        tree_ms: List[float] = []
        pair_ms: List[float] = []
        seq_ms: List[float] = []
        windows: List[float] = []
        errors: List[str] = []
        for argv in (vms, tree, pair, seq):
            _timed(argv)        # warm-up: bytecode, page cache
        for _ in range(runs):
            for argv, times in ((vms, vms_ms), (tree, tree_ms)):
                ms, res = _timed(argv)
                window = _window(res.stdout)
                if res.returncode == 0 and window is not None:
                    times.append(ms)
                    if argv is vms:
                        windows.append(window)
                else:
                    errors.append("vmsnapshot run rc=%d: %s" % (
                        res.returncode,
                        (res.stderr or res.stdout).strip()[-400:]))
            for name, argv, times in (("fsfreeze", pair, pair_ms),
                                      ("seqfreeze", seq, seq_ms)):
                ms, res = _timed(argv)
                if res.returncode == 0:
                    times.append(ms)
                else:
                    errors.append("%s rc=%d: %s" % (
                        name, res.returncode, res.stderr.strip()))
    finally:
        shutil.rmtree(cfgdir, ignore_errors=True)
    out: Dict[str, Any] = {
        "mount": mount, "runs": runs, "installed_python": installed,
        "tree_python": sys.executable,
        "vmsnapshot_run_ms": stats(vms_ms), "tree_run_ms": stats(tree_ms),
        "fsfreeze_pair_ms": stats(pair_ms),
        "seqfreeze_ms": stats(seq_ms), "target_ms": TARGET_MS,
        "vmsnapshot_window_ms": stats(windows), "errors": errors[:5]}
    if vms_ms and pair_ms:
        out["overhead_ms"] = round(out["vmsnapshot_run_ms"]["median"]
                                   - out["fsfreeze_pair_ms"]["median"], 1)
        out["met"] = out["overhead_ms"] <= TARGET_MS
    if tree_ms and pair_ms:
        out["tree_overhead_ms"] = round(out["tree_run_ms"]["median"]
                                        - out["fsfreeze_pair_ms"]["median"], 1)
    return out


def _window(stdout: str) -> Optional[float]:
    try:
        return float(json.loads(stdout)["freeze"]["window_ms"])
    except (ValueError, KeyError, TypeError):
        return None


def text(o: Dict[str, Any]) -> str:
    def med(key: str) -> str:
        return "%.1f" % o[key]["median"] if o.get(key) else "failed"
    lines = ["fixed cost on one clean mount, %d runs interleaved (wall ms, "
             "median): vmsnapshot run as installed (%s, console script) "
             "%s, fsfreeze -f && -u %s, seqfreeze %s; run - fsfreeze pair "
             "%s (target <= %g: %s); freeze window inside run %s"
             % (o["runs"], o.get("installed_python", "?"),
                med("vmsnapshot_run_ms"), med("fsfreeze_pair_ms"),
                med("seqfreeze_ms"), o.get("overhead_ms", "-"),
                o["target_ms"], {True: "MET", False: "MISSED"}.get(
                    o.get("met"), "not measured"),
                med("vmsnapshot_window_ms")),
             "  from the tree (%s -m vmsnapshot): run %s, run - fsfreeze "
             "pair %s" % (o.get("tree_python", "?"), med("tree_run_ms"),
                          o.get("tree_overhead_ms", "-"))]
    lines += ["  " + e for e in o["errors"]]
    return "\n".join(lines)
