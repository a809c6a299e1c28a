"""`vmsnapshot check`: every problem run would hit, named, with its action;
the summary level; the exit status."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers.cli import ROOT, run_vmsnapshot
from tests.helpers.configfiles import (
    NOBODY, TEMPLATE_CONF, TEMPLATE_JSON, azure_json, in_root, write_file,
    write_script)
from vmsnapshot.commands.check import check_command
from vmsnapshot.config import PLUGINHOST_PATH, SCRIPT_PLUGIN_PATH
from vmsnapshot.errors import Catalogue


def check(capsys, path=None, root="/"):
    status = check_command(path, root)
    out = capsys.readouterr().out
    return status, out, out.splitlines()[-1]


def assert_reported(out: str, entry: Catalogue, *fragments: str) -> None:
    lines = out.splitlines()
    head = "%s (%d): " % (entry.error_name, entry.code)
    hits = [i for i, line in enumerate(lines) if line.startswith(head)]
    assert hits, out
    i = hits[0]
    assert lines[i + 1] == "  action: " + entry.action
    for fragment in fragments:
        assert fragment in lines[i], lines[i]


@pytest.fixture
def azure_root(tmp_path):
    """A fake / where the admin copied Azure's templates with mode 600."""
    root = str(tmp_path / "root")
    for src, dst in ((TEMPLATE_CONF, PLUGINHOST_PATH),
                     (TEMPLATE_JSON, SCRIPT_PLUGIN_PATH)):
        os.makedirs(os.path.dirname(in_root(root, dst)), exist_ok=True)
        shutil.copy(src, in_root(root, dst))
        os.chmod(in_root(root, dst), 0o600)
    return root


@pytest.fixture
def scripts(tmp_path):
    # Separate directories, so a bad directory concerns one script only.
    pre = write_script(str(tmp_path / "pre.d" / "pre.sh"))
    post = write_script(str(tmp_path / "post.d" / "post.sh"))
    return pre, post


def configure(root: str, **keys) -> str:
    return write_file(in_root(root, SCRIPT_PLUGIN_PATH), azure_json(**keys))


def test_no_configuration_is_valid_filesystem_level(capsys, tmp_path):
    status, out, summary = check(capsys, root=str(tmp_path))
    assert status == 0
    assert out.startswith("configuration: none (searched %s/etc/vmsnapshot/"
                          "vmsnapshot.toml, " % tmp_path)
    assert summary == ("summary: OK: a run would be filesystem-consistent at "
                       "best (no pre-script configured)")


def test_unedited_azure_templates(capsys, azure_root):
    status, out, summary = check(capsys, root=azure_root)
    assert status == 0, out
    assert "configuration: %s (Azure plugin host INI)" % in_root(
        azure_root, PLUGINHOST_PATH) in out
    assert "  also read: " + in_root(azure_root, SCRIPT_PLUGIN_PATH) in out
    assert "filesystem-consistent" in summary


def test_templates_with_700_scripts_are_application(capsys, azure_root,
                                                    scripts):
    pre, post = scripts
    configure(azure_root, preScriptLocation=pre, postScriptLocation=post,
              preScriptParams=["a b", ""])
    status, out, summary = check(capsys, root=azure_root)
    assert status == 0, out
    assert "plugin ScriptRunner: pre %s 'a b' '': ok" % pre in out
    assert "plugin ScriptRunner: post %s '' '': ok" % post in out
    assert summary == ("summary: OK: a run would be application-consistent "
                       "at best (1 pre-script, freeze enabled)")


def test_freeze_disabled_with_scripts_is_application(capsys, tmp_path,
                                                     scripts):
    path = write_file(str(tmp_path / "c.json"), azure_json(
        preScriptLocation=scripts[0], fsFreezeEnabled=False))
    status, out, summary = check(capsys, path)
    assert status == 0
    assert "freeze: disabled by configuration" in out
    assert summary.endswith("application-consistent at best (1 pre-script, "
                            "freeze disabled)")


def test_check_says_crash_when_freeze_disabled_without_scripts(capsys,
                                                               tmp_path):
    path = write_file(str(tmp_path / "v.toml"), "[freeze]\nenabled = false\n")
    status, out, summary = check(capsys, path)
    assert status == 0
    assert "crash-consistent" in summary


@pytest.mark.parametrize("phase, problem, entry", [
    ("pre", "missing", Catalogue.PRE_SCRIPT_NOT_FOUND),
    ("post", "missing", Catalogue.POST_SCRIPT_NOT_FOUND),
    ("pre", "mode", Catalogue.INSUFFICIENT_PERMISSION_FOR_PRE_SCRIPT),
    ("post", "mode", Catalogue.INSUFFICIENT_PERMISSION_FOR_POST_SCRIPT),
    ("pre", "owner", Catalogue.INSUFFICIENT_PERMISSION_FOR_PRE_SCRIPT),
    ("post", "owner", Catalogue.INSUFFICIENT_PERMISSION_FOR_POST_SCRIPT),
    ("pre", "group-writable dir",
     Catalogue.INSUFFICIENT_PERMISSION_FOR_PRE_SCRIPT),
    ("post", "group-writable dir",
     Catalogue.INSUFFICIENT_PERMISSION_FOR_POST_SCRIPT),
])
def test_script_problems(capsys, azure_root, scripts, phase, problem, entry):
    pre, post = scripts
    bad = pre if phase == "pre" else post
    if problem == "missing":
        os.unlink(bad)
    elif problem == "mode":
        os.chmod(bad, 0o755)
    elif problem == "owner":
        os.chown(bad, NOBODY, -1)
    else:
        os.chmod(os.path.dirname(bad), 0o775)
    configure(azure_root, preScriptLocation=pre, postScriptLocation=post)
    status, out, summary = check(capsys, root=azure_root)
    assert status == 1
    assert_reported(out, entry, bad)
    # The template's params ["", ""] are two empty arguments.
    assert "plugin ScriptRunner: %s %s '' '': %s" % (
        phase, bad, entry.error_name) in out
    # run would skip the pre-script and continue (the template's policy);
    # a bad post-script stops its pre-script too (both checked first, as
    # Microsoft's extension does).
    assert summary == ("summary: 1 problem: a run would be "
                       "filesystem-consistent at best (a pre-script "
                       "would fail)")


def test_script_problem_with_continue_false_fails(capsys, tmp_path):
    path = write_file(str(tmp_path / "c.json"), azure_json(
        preScriptLocation=str(tmp_path / "nope.sh"),
        continueBackupOnFailure=False))
    status, out, summary = check(capsys, path)
    assert status == 1
    assert summary == ("summary: 1 problem: a run would fail (a pre-script "
                       "would fail and continueBackupOnFailure is false, so "
                       "no snapshot)")


def test_every_config_and_script_problem_is_listed(capsys, tmp_path):
    path = write_file(str(tmp_path / "c.json"), azure_json(
        preScriptLocation=str(tmp_path / "nope.sh"), timeoutInSeconds=-3,
        preScriptNoOfRetries="2"), mode=0o664)
    status, out, summary = check(capsys, path)
    assert status == 1
    e305 = Catalogue.INCORRECT_JSON_CONFIG_FILE
    assert_reported(out, e305, "mode 0664", "chmod 600 " + path)
    assert out.count("IncorrectJSONConfigFile (305): ") == 3
    assert_reported(out, Catalogue.PRE_SCRIPT_NOT_FOUND, "nope.sh")
    assert summary == ("summary: 4 problems: a run would be filesystem-"
                       "consistent at best (the configuration would be "
                       "ignored: no script would run, default freeze)")


def test_broken_plugin_host_file(capsys, azure_root):
    write_file(in_root(azure_root, PLUGINHOST_PATH),
               "[pre_post]\nnumberOfPlugins: two\n")
    status, out, summary = check(capsys, root=azure_root)
    assert status == 1
    assert_reported(out, Catalogue.INCORRECT_PLUGINHOST_FILE,
                    "-> [pre_post] -> numberOfPlugins: got 'two'")
    assert "no script would run" in summary


def test_every_source_is_named(capsys, azure_root):
    native = write_file(in_root(azure_root, "/etc/vmsnapshot/vmsnapshot.toml"),
                        "[policy]\n")
    status, out, summary = check(capsys, root=azure_root)
    assert status == 0
    assert out.splitlines()[:4] == [
        "configuration: %s (native TOML)" % native,
        "configuration: %s (Azure plugin host INI)" % in_root(
            azure_root, PLUGINHOST_PATH),
        "  also read: %s" % in_root(azure_root, SCRIPT_PLUGIN_PATH),
        "  not used: %s (read through the plugin host file, which lists "
        "it)" % in_root(azure_root, SCRIPT_PLUGIN_PATH)]


def test_cli_check(tmp_path, scripts):
    path = write_file(str(tmp_path / "v.toml"),
                      '[[plugin]]\nname = "db"\npre = ["%s", "x"]\n'
                      'post = ["%s"]\n' % scripts)
    res = run_vmsnapshot("check", "--config", path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1].startswith(
        "summary: OK: a run would be application-consistent")
    os.chmod(scripts[1], 0o777)
    res = run_vmsnapshot("check", "--config", path)
    assert res.returncode == 1
    assert "InsufficientPermissionforPost-Script (307): " in res.stdout


def test_missing_freeze_module(tmp_path):
    """A copy of the package without the compiled module, run for real."""
    shutil.copytree(os.path.join(ROOT, "vmsnapshot"),
                    str(tmp_path / "pkg" / "vmsnapshot"),
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    path = write_file(str(tmp_path / "v.toml"), "")
    res = run_vmsnapshot("check", "--config", path, cwd=str(tmp_path / "pkg"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FreezeModuleMissing (124): cannot load the native module " \
        "vmsnapshot._freeze" in res.stdout
    assert res.stdout.splitlines()[-1] == (
        "summary: 1 problem: a run would be crash-consistent at best (the "
        "freeze module is missing)")
    # Not needed when the configuration disables the freeze.
    write_file(path, "[freeze]\nenabled = false\n")
    res = run_vmsnapshot("check", "--config", path, cwd=str(tmp_path / "pkg"))
    assert res.returncode == 0, res.stdout


def test_readable_azure_json_is_refused_like_microsoft(capsys, azure_root,
                                                       scripts):
    # Microsoft's extension refuses a JSON readable by others (its 317);
    # check says so by name, with the fix, and run would ignore the file.
    pre, post = scripts
    path = write_file(in_root(azure_root, SCRIPT_PLUGIN_PATH), azure_json(
        preScriptLocation=pre, postScriptLocation=post), mode=0o644)
    status, out, summary = check(capsys, root=azure_root)
    assert status == 1
    assert_reported(out, Catalogue.INCORRECT_JSON_CONFIG_FILE, "mode 0644",
                    "error 317", "fix: chmod 600 " + path)
    assert "the configuration would be ignored" in summary
