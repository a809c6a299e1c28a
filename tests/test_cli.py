"""The command line after issue 15's fixed-cost cuts: only the named
command's parser is built, and the process leaves without the interpreter's
teardown; neither may change what users see."""
from __future__ import annotations

import json
import subprocess

from tests.helpers.cli import ROOT, run_vmsnapshot, vmsnapshot_cmd

COMMANDS = ("mounts", "check", "run", "thaw", "hook")


def test_help_lists_every_command():
    res = run_vmsnapshot("--help")
    assert res.returncode == 0
    for c in COMMANDS:
        assert "    %s " % c in res.stdout, c


def test_a_command_after_an_option_is_found():
    res = run_vmsnapshot("-v", "run", "--help")
    assert res.returncode == 0
    assert res.stdout.startswith("usage: vmsnapshot run ")
    assert "--freeze-timeout SECONDS" in res.stdout


def test_an_unknown_command_names_the_known_ones():
    res = run_vmsnapshot("frezee")
    assert res.returncode == 2
    # argparse's quoting of the choices differs between Python versions.
    assert "invalid choice: 'frezee'" in res.stderr
    for c in COMMANDS:
        assert c in res.stderr.split("choose from", 1)[1], c


def test_output_is_complete_through_a_pipe():
    """os._exit skips Python's own flush at exit: entry() flushes first."""
    proc = subprocess.run(vmsnapshot_cmd("mounts", "--json"),
                          cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)


def test_a_closed_stdout_is_not_a_success():
    """A report nobody could read must not exit 0."""
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh"] + vmsnapshot_cmd("mounts"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=60)
    assert proc.returncode != 0
