"""The merged configuration as `check` and `run` see it on a machine: the
real /etc paths (overlaid for the child process only, see
helpers/etcoverlay.py), real scripts, a real loop filesystem."""
from __future__ import annotations

import json
import os

import pytest

from tests.helpers.configfiles import azure_json, write_script
from tests.helpers.etcoverlay import EtcOverlay
from tests.helpers.loopfs import is_frozen
from tests.helpers.scripts import make_dir
from vmsnapshot.config import (
    CONF_D, NATIVE_PATH, PLUGINHOST_PATH, SCRIPT_PLUGIN_PATH)
from vmsnapshot.config.azuremark import WRAPPER_DIR

DROP_IN = os.path.join(CONF_D, "10-app.toml")


@pytest.fixture
def etc(tmp_path):
    return EtcOverlay(str(tmp_path))


@pytest.fixture
def plugin_dir(tmp_path):
    return make_dir(tmp_path / "plugin", 0o700)


def plugin(name: str, pre: str, extra: str = "") -> str:
    return '%s\n[[plugin]]\nname = "%s"\npre = ["%s"]\n' % (extra, name, pre)


def run(etc: EtcOverlay, mount, marker: str):
    res = etc.vmsnapshot("run", "--mount", str(mount), "--json", "--",
                         "touch", marker)
    try:
        report = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(res.stdout + res.stderr)
    return res.returncode, report


def test_check_names_each_source_setting_and_plugin(etc, plugin_dir):
    ok = write_script(os.path.join(plugin_dir, "ok"))
    etc.files({
        NATIVE_PATH: '[freeze]\ntimeout = 40\n' + plugin("main", ok),
        DROP_IN: plugin("app", ok),
        os.path.join(CONF_D, "10-app.toml.dpkg-old"): "junk",
        SCRIPT_PLUGIN_PATH: azure_json(pluginName="azure",
                                       preScriptLocation=ok,
                                       fsFreezeEnabled=False),
    })
    res = etc.vmsnapshot("check")
    lines = res.stdout.splitlines()
    assert lines[:5] == [
        "configuration: %s (native TOML)" % NATIVE_PATH,
        "configuration: %s (native TOML)" % DROP_IN,
        "configuration: %s (Azure script plugin JSON)" % SCRIPT_PLUGIN_PATH,
        "  not used: %s.dpkg-old (not a drop-in: only *.toml files in %s "
        "are read)" % (DROP_IN, CONF_D),
        "setting [freeze] timeout = 40: from %s -> freeze -> timeout"
        % NATIVE_PATH,
    ]
    for line in (
            "setting [freeze] enabled = false: from %s -> fsFreezeEnabled"
            % SCRIPT_PLUGIN_PATH,
            "plugin main: from %s -> plugin -> [0]" % NATIVE_PATH,
            "plugin app: from %s -> plugin -> [0]" % DROP_IN,
            "plugin azure: from %s" % SCRIPT_PLUGIN_PATH):
        assert line in lines, res.stdout
    assert "ConfigConflict" not in res.stdout


def test_check_fails_on_a_disagreement(etc):
    etc.files({NATIVE_PATH: "[policy]\ncontinue_on_failure = true\n",
               DROP_IN: "[policy]\ncontinue_on_failure = false\n"})
    res = etc.vmsnapshot("check")
    assert res.returncode == 1, res.stdout
    assert ("ConfigConflict (132): [policy] continue_on_failure disagrees "
            "between sources: true in %s -> policy -> continue_on_failure, "
            "false in %s -> policy -> continue_on_failure; a run uses false "
            "(false wins: a failed pre-script stops the run)"
            % (NATIVE_PATH, DROP_IN)) in res.stdout
    assert ("setting [policy] continue_on_failure = false: from %s -> policy "
            "-> continue_on_failure (true); %s -> policy -> "
            "continue_on_failure (false)" % (NATIVE_PATH, DROP_IN)
            ) in res.stdout
    # The drop-in alone is valid (Ansible's validate=).
    alone = etc.vmsnapshot("check", "--config", DROP_IN)
    assert alone.returncode == 0, alone.stdout


def test_run_applies_continue_on_failure_false_from_a_drop_in(
        etc, plugin_dir, loopfs_factory, tmp_path):
    """Before merging, the drop-in was never read: the failing pre-script
    let the snapshot go ahead although its owner said stop."""
    mount = loopfs_factory("ext4")
    bad = write_script(os.path.join(plugin_dir, "bad"), "exit 3\n")
    etc.files({NATIVE_PATH: "[policy]\ncontinue_on_failure = true\n",
               DROP_IN: plugin("app", bad,
                               "[policy]\ncontinue_on_failure = false\n")})
    marker = str(tmp_path / "snapshot-ran")
    status, report = run(etc, mount, marker)
    assert (status, report["consistency"]) == (3, "failed"), report
    assert [e["name"] for e in report["errors"]] == [
        "Pre-ScriptExecutionFailed"]
    assert not os.path.exists(marker)
    assert not is_frozen(str(mount))


def test_run_freeze_disabled_by_an_azure_file_beside_a_native_one(
        etc, plugin_dir, loopfs_factory, tmp_path):
    mount = loopfs_factory("ext4")
    ok = write_script(os.path.join(plugin_dir, "ok"))
    etc.files({NATIVE_PATH: "[freeze]\nenabled = true\n" + plugin("db", ok),
               SCRIPT_PLUGIN_PATH: azure_json(fsFreezeEnabled=False)})
    marker = str(tmp_path / "snapshot-ran")
    status, report = run(etc, mount, marker)
    assert not any(m["frozen"] for m in report["mounts"]), report
    assert [s["plugin"] for s in report["scripts"]] == ["db"]
    assert os.path.exists(marker)
    assert status == 0, report


def test_run_in_azure_extension_mode_does_not_run_the_wrappers(
        etc, plugin_dir, loopfs_factory, tmp_path):
    """The JSON names vmsnapshot's own wrappers (absent here, as on a VM
    where they would call vmsnapshot again): not a plugin source."""
    mount = loopfs_factory("ext4")
    ok = write_script(os.path.join(plugin_dir, "ok"))
    etc.files({
        DROP_IN: plugin("db", ok),
        PLUGINHOST_PATH: "[pre_post]\nnumberOfPlugins: 1\npluginName0: x\n"
        "pluginConfigPath0: %s\n" % SCRIPT_PLUGIN_PATH,
        SCRIPT_PLUGIN_PATH: azure_json(
            pluginName="vmsnapshot",
            preScriptLocation=WRAPPER_DIR + "/pre-script.sh",
            postScriptLocation=WRAPPER_DIR + "/post-script.sh")})
    marker = str(tmp_path / "snapshot-ran")
    status, report = run(etc, mount, marker)
    assert (status, report["consistency"], report["errors"]) == (
        0, "application", []), report
    assert [s["plugin"] for s in report["scripts"]] == ["db"]
    assert report["mounts"][0]["frozen"] is True
