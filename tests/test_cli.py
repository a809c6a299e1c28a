"""The command line as a person meets it: help for everything, -v in
either place, warnings where they matter, errors said once."""
from __future__ import annotations

import argparse
import json
import os
import subprocess

from tests.helpers.cli import ROOT, run_vmsnapshot, vmsnapshot_cmd
from tests.helpers.configfiles import write_file
from tests.helpers.scripts import make_dir
from vmsnapshot.cli import _parser
from vmsnapshot.errors import Catalogue, ErrorRecord
from vmsnapshot.errtext import error_lines


def _subparsers(p: argparse.ArgumentParser):
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError("no subcommands")


def test_every_subcommand_and_option_has_help() -> None:
    p = _parser()
    sub = _subparsers(p)
    helped = {a.dest for a in sub._choices_actions if a.help}
    assert helped == set(sub.choices), set(sub.choices) - helped
    for name, sp in sub.choices.items():
        for action in sp._actions:
            assert action.help, (name, action.option_strings or action.dest)
    assert set(sub.choices) >= {"mounts", "check", "run", "thaw", "hook",
                                "status"}


def test_top_help_names_the_man_page_and_the_search_path() -> None:
    res = run_vmsnapshot("--help")
    assert res.returncode == 0
    assert "man 8 vmsnapshot" in res.stdout
    for path in ("/etc/vmsnapshot/vmsnapshot.toml",
                 "/etc/azure/VMSnapshotPluginHost.conf",
                 "/etc/azure/VMSnapshotScriptPluginConfig.json"):
        assert path in res.stdout
    assert "vmsnapshot status" in res.stdout


def test_run_help_warns_that_root_is_frozen_without_mount() -> None:
    res = run_vmsnapshot("run", "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert ("Without --mount, EVERY eligible filesystem is frozen, / "
            "included") in text
    assert "--require LEVEL" in text


def test_verbose_after_the_subcommand(loopfs_factory) -> None:
    a = loopfs_factory("ext4")
    res = run_vmsnapshot("mounts", "--mount", str(a), "-vv")
    assert res.returncode == 0, res.stderr
    assert "DEBUG" in res.stderr or "INFO" in res.stderr or res.stderr == ""
    res = run_vmsnapshot("-v", "mounts", "-v", "--mount", str(a))
    assert res.returncode == 0, res.stderr


def test_thaw_without_a_flag_explains_itself() -> None:
    res = run_vmsnapshot("thaw")
    assert res.returncode == 2
    assert res.stderr.startswith("vmsnapshot thaw: nothing done. "
                                 "'vmsnapshot thaw --recover' thaws what a\n"
                                 "killed vmsnapshot run left frozen")
    assert "fsfreeze -u MOUNTPOINT" in res.stderr
    assert "usage:" not in res.stderr


def test_mounts_hides_pseudo_filesystems_unless_all() -> None:
    res = run_vmsnapshot("mounts")
    assert res.returncode == 0, res.stderr
    rows = [line.split()[:2] for line in res.stdout.splitlines()[1:]]
    assert ["/proc", "proc"] not in rows
    assert not [r for r in rows if r[1] in ("proc", "sysfs", "cgroup2")]
    res = run_vmsnapshot("mounts", "--all")
    rows = [line.split()[:2] for line in res.stdout.splitlines()[1:]]
    assert ["/proc", "proc"] in rows


def test_freeze_timeout_is_a_usage_error(tmp_path) -> None:
    """Refused before anything runs: no pre-script ever quiesces a
    database for a run that cannot start."""
    d = make_dir(tmp_path / "plugin", 0o700)
    marker = str(tmp_path / "pre-ran")
    pre = os.path.join(d, "pre")
    write_file(pre, "#!/bin/sh\ntouch %s\n" % marker, 0o700)
    config = write_file(os.path.join(d, "v.toml"),
                        '[[plugin]]\nname = "db"\npre = ["%s"]\n' % pre)
    for command in ("run", "pre"):
        for bad in ("0", "-1", "nan", "inf", "3601", "1e300", "soon"):
            res = run_vmsnapshot(command, "--config", config,
                                 "--freeze-timeout", bad, "--mount",
                                 "/nonexistent")
            assert res.returncode == 2, (command, bad)
            assert "argument --freeze-timeout:" in res.stderr, res.stderr
    assert not os.path.exists(marker)


def test_identical_action_said_once() -> None:
    e = Catalogue.PRE_SCRIPT_NOT_FOUND
    lines = error_lines([ErrorRecord(e, "a: missing"),
                         ErrorRecord(e, "b: missing"),
                         ErrorRecord(Catalogue.FS_FREEZE_FAILED, "x")])
    assert lines == [
        "Pre-ScriptNotFound (302): a: missing",
        "  action: " + e.action,
        "Pre-ScriptNotFound (302): b: missing",
        "FsFreezeFailed (121): x",
        "  action: " + Catalogue.FS_FREEZE_FAILED.action]


def test_check_says_a_shared_action_once(tmp_path) -> None:
    d = make_dir(tmp_path / "conf", 0o700)
    config = write_file(os.path.join(d, "vmsnapshot.toml"), "".join(
        '[[plugin]]\nname = "p%d"\npre = ["%s/missing%d"]\n' % (i, d, i)
        for i in range(3)))
    res = run_vmsnapshot("check", "--config", config)
    assert res.returncode == 1
    heads = [line for line in res.stdout.splitlines()
             if line.startswith("Pre-ScriptNotFound (302): ")]
    assert len(heads) == 3, res.stdout
    assert res.stdout.count(
        "  action: " + Catalogue.PRE_SCRIPT_NOT_FOUND.action) == 1


# entry() leaves with os._exit (issue 15's fixed cost): nothing is lost.

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
