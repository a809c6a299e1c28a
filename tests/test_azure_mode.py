"""`vmsnapshot azure enable|disable` (files under --root), and the wrappers
it installs as Microsoft's plugin host runs them."""
from __future__ import annotations

import json
import os
import stat
from typing import Dict

import pytest

from tests.helpers.agents import azure_plugin_host
from tests.helpers.cli import ROOT, run_vmsnapshot
from tests.helpers.configfiles import write_file, write_script

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

ADAPTERS = os.path.join(ROOT, "adapters")
JSON_PATH = "etc/azure/VMSnapshotScriptPluginConfig.json"
DROP_IN = "etc/vmsnapshot/conf.d/azure-plugin.toml"
ORIGINAL = "etc/vmsnapshot/azure-original.json"


@pytest.fixture
def root(tmp_path) -> str:
    path = str(tmp_path / "root")
    os.makedirs(path, mode=0o755)
    return path


@pytest.fixture
def env() -> Dict[str, str]:
    return dict(os.environ, VMSNAPSHOT_ADAPTERS=ADAPTERS)


def azure(root: str, env: Dict[str, str], *args: str):
    return run_vmsnapshot("azure", *args, "--root", root, env=env, timeout=60)


def at(root: str, rel: str) -> str:
    return os.path.join(root, rel)


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def admin_json(root: str) -> str:
    pre = write_script(at(root, "opt/app/pre.sh"))
    post = write_script(at(root, "opt/app/post.sh"))
    text = json.dumps({
        "pluginName": "ScriptRunner", "preScriptLocation": pre,
        "postScriptLocation": post, "preScriptParams": ["--db", "main"],
        "postScriptParams": [], "preScriptNoOfRetries": 2,
        "postScriptNoOfRetries": 2, "timeoutInSeconds": 120,
        "continueBackupOnFailure": False, "fsFreezeEnabled": True,
        "ScriptsExecutionPollTimeSeconds": 3}, indent=4) + "\n"
    write_file(at(root, JSON_PATH), text, 0o600)
    return text


def test_enable_without_a_file_then_disable(root, env) -> None:
    res = azure(root, env, "enable")
    assert res.returncode == 0, res.stderr
    with open(at(root, JSON_PATH)) as f:
        data = json.load(f)
    assert data["pluginName"] == "vmsnapshot"
    assert data["preScriptLocation"] == os.path.join(
        ADAPTERS, "azure", "pre-script.sh")
    assert data["postScriptLocation"] == os.path.join(
        ADAPTERS, "azure", "post-script.sh")
    assert data["preScriptParams"] == data["postScriptParams"] == []
    assert (data["continueBackupOnFailure"], data["fsFreezeEnabled"]) == (
        True, True)
    assert 1 <= data["timeoutInSeconds"] <= 1800
    assert mode_of(at(root, JSON_PATH)) == 0o600
    assert not os.path.exists(at(root, DROP_IN))
    assert not os.path.exists(at(root, ORIGINAL))
    # Twice is harmless.
    res = azure(root, env, "enable")
    assert (res.returncode, res.stdout.split(":")[0]) == (0, "already enabled")

    res = azure(root, env, "disable")
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(at(root, JSON_PATH))
    res = azure(root, env, "disable")
    assert res.returncode == 0 and "not enabled" in res.stdout


def test_enable_moves_the_admins_plugin_and_disable_restores_it(
        root, env) -> None:
    original = admin_json(root)
    res = azure(root, env, "enable")
    assert res.returncode == 0, res.stderr

    with open(at(root, ORIGINAL)) as f:
        assert f.read() == original
    assert mode_of(at(root, ORIGINAL)) == 0o600
    assert mode_of(at(root, DROP_IN)) == 0o600
    assert mode_of(at(root, "etc/vmsnapshot")) == 0o700
    with open(at(root, DROP_IN), "rb") as f:
        native = tomllib.load(f)
    assert native["policy"] == {"continue_on_failure": False}
    assert native["plugin"] == [{
        "name": "ScriptRunner",
        "pre": [at(root, "opt/app/pre.sh"), "--db", "main"],
        "post": [at(root, "opt/app/post.sh")],
        "timeout": 120, "retries": 2}]
    # The drop-in is valid native configuration that vmsnapshot accepts.
    res = run_vmsnapshot("check", "--config", at(root, DROP_IN), env=env)
    assert "IncorrectJSONConfigFile" not in res.stdout, res.stdout
    assert "pre %s --db main: ok" % at(root, "opt/app/pre.sh") in res.stdout, \
        res.stdout
    # The extension keeps the admin's policy for the wrappers.
    with open(at(root, JSON_PATH)) as f:
        data = json.load(f)
    assert data["continueBackupOnFailure"] is False
    assert data["timeoutInSeconds"] >= 120

    res = azure(root, env, "disable")
    assert res.returncode == 0, res.stderr
    with open(at(root, JSON_PATH)) as f:
        assert f.read() == original
    assert mode_of(at(root, JSON_PATH)) == 0o600
    assert not os.path.exists(at(root, DROP_IN))
    assert not os.path.exists(at(root, ORIGINAL))


def test_enable_refuses_a_broken_file_and_changes_nothing(root, env) -> None:
    write_file(at(root, JSON_PATH), '{"preScriptLocation": "relative.sh"',
               0o600)
    res = azure(root, env, "enable")
    assert res.returncode == 1
    assert "IncorrectJSONConfigFile (305)" in res.stderr
    assert "action:" in res.stderr
    with open(at(root, JSON_PATH)) as f:
        assert f.read() == '{"preScriptLocation": "relative.sh"'
    assert not os.path.exists(at(root, ORIGINAL))
    assert not os.path.exists(at(root, DROP_IN))


def test_enable_refuses_to_overwrite_a_drop_in(root, env) -> None:
    admin_json(root)
    write_file(at(root, DROP_IN), "# the admin's own\n", 0o600)
    res = azure(root, env, "enable")
    assert res.returncode == 1
    assert "ConfigConflict (132)" in res.stderr
    with open(at(root, DROP_IN)) as f:
        assert f.read() == "# the admin's own\n"


def test_disable_refuses_when_the_json_was_replaced_by_hand(root, env) -> None:
    admin_json(root)
    assert azure(root, env, "enable").returncode == 0
    write_file(at(root, JSON_PATH), "{}", 0o600)
    res = azure(root, env, "disable")
    assert res.returncode == 1
    assert "ConfigConflict (132)" in res.stderr
    assert os.path.exists(at(root, ORIGINAL))


def test_timeout_option_bounds(root, env) -> None:
    res = azure(root, env, "enable", "--timeout", "1801")
    assert res.returncode == 2 and "1 to 1800" in res.stderr
    res = azure(root, env, "enable", "--timeout", "soon")
    assert res.returncode == 2 and "1 to 1800" in res.stderr
    assert azure(root, env, "enable", "--timeout", "900").returncode == 0
    with open(at(root, JSON_PATH)) as f:
        assert json.load(f)["timeoutInSeconds"] == 900


def test_is_wrapper_config(monkeypatch) -> None:
    from vmsnapshot.config import azuremode
    monkeypatch.delenv("VMSNAPSHOT_ADAPTERS", raising=False)
    pre, post = azuremode.wrapper_paths()
    assert pre == "/usr/share/vmsnapshot/adapters/azure/pre-script.sh"
    assert azuremode.is_wrapper_config(
        {"preScriptLocation": pre, "postScriptLocation": post})
    assert not azuremode.is_wrapper_config(
        {"preScriptLocation": pre, "postScriptLocation": ""})
    assert not azuremode.is_wrapper_config(
        {"preScriptLocation": "/opt/pre.sh", "postScriptLocation": post})
    monkeypatch.setenv("VMSNAPSHOT_ADAPTERS", ADAPTERS)
    assert azuremode.is_wrapper_config(
        dict(zip(("preScriptLocation", "postScriptLocation"),
                 azuremode.wrapper_paths())))


def test_plugin_host_runs_the_enabled_wrappers(root, env, tmp_path) -> None:
    """After enable, Microsoft's plugin host (sh SCRIPT, pipes never read,
    polled) runs exactly `pre --no-freeze` and `post` with trigger azure."""
    record = str(tmp_path / "record")
    fake = write_script(str(tmp_path / "fake-vmsnapshot"),
                        'echo "$* stdin=$(readlink /proc/self/fd/0)" >> "%s"\n'
                        'exit "${FAKE_RC:-0}"\n' % record)
    env = dict(env, VMSNAPSHOT="sh " + fake)
    assert azure(root, env, "enable").returncode == 0
    json_path = at(root, JSON_PATH)
    pre = azure_plugin_host(json_path, "pre", env, poll_s=0.2)
    post = azure_plugin_host(json_path, "post", env, poll_s=0.2)
    assert (pre.verdict, post.verdict) == ("success", "success")
    with open(record) as f:
        assert f.read().splitlines() == [
            "pre --no-freeze --trigger azure stdin=/dev/null",
            "post stdin=/dev/null"]
    # vmsnapshot's usage error (2) must not read as Azure's "warning".
    env["FAKE_RC"] = "2"
    res = azure_plugin_host(json_path, "post", env, poll_s=0.2)
    assert (res.returncode, res.verdict) == (1, "failed")
    env["FAKE_RC"] = "3"
    res = azure_plugin_host(json_path, "pre", env, poll_s=0.2)
    assert (res.returncode, res.verdict) == (3, "failed")


def test_enable_refuses_plugins_the_plugin_host_file_adds(root, env) -> None:
    """Plugins named in VMSnapshotPluginHost.conf would run twice (by the
    extension and by vmsnapshot): refuse; naming only the JSON is fine."""
    host = at(root, "etc/azure/VMSnapshotPluginHost.conf")
    write_file(host, "[pre_post]\nnumberOfPlugins: 2\n"
               "pluginName0: ScriptRunner\npluginPath0: /etc/azure\n"
               "pluginConfigPath0: /etc/azure/VMSnapshotScriptPluginConfig.json\n"
               "pluginName1: Oracle\npluginPath1: /etc/azure\n"
               "pluginConfigPath1: /etc/azure/oracle.json\n", 0o600)
    res = azure(root, env, "enable")
    assert res.returncode == 1
    assert "ConfigConflict (132)" in res.stderr
    assert "/etc/azure/oracle.json" in res.stderr
    assert not os.path.exists(at(root, JSON_PATH))
    write_file(host, "[pre_post]\nnumberOfPlugins: 1\n"
               "pluginName0: ScriptRunner\npluginPath0: /etc/azure\n"
               "pluginConfigPath0: /etc/azure/VMSnapshotScriptPluginConfig.json\n",
               0o600)
    assert azure(root, env, "enable").returncode == 0


def test_after_enable_the_sources_hold_the_moved_plugin_once(
        root, env, monkeypatch) -> None:
    """With every source merged: the drop-in brings the admin's plugin, the
    wrappers' JSON brings nothing (no loop), so it runs exactly once."""
    from vmsnapshot.config import load_config
    admin_json(root)
    assert azure(root, env, "enable").returncode == 0
    monkeypatch.setenv("VMSNAPSHOT_ADAPTERS", ADAPTERS)
    config = load_config(root=root)
    assert [(p.name, p.pre, p.post) for p in config.plugins] == [(
        "ScriptRunner",
        (at(root, "opt/app/pre.sh"), "--db", "main"),
        (at(root, "opt/app/post.sh"),))]
    assert config.continue_on_failure is False
    assert azure(root, env, "disable").returncode == 0
    config = load_config(root=root)
    assert [p.name for p in config.plugins] == ["ScriptRunner"]
