"""Search order, --config and format detection."""
from __future__ import annotations

import os

import pytest

from tests.helpers.configfiles import azure_json, in_root, write_file
from vmsnapshot.config import (
    NATIVE_PATH, PLUGINHOST_PATH, SCRIPT_PLUGIN_PATH, Config, InvalidConfig,
    load_config, validate_config)
from vmsnapshot.errors import Catalogue

NATIVE = '[[plugin]]\nname = "native"\npre = ["/n"]\n'
JSON = azure_json(pluginName="json", preScriptLocation="/j")
CONF = ("[pre_post]\nnumberOfPlugins: 1\npluginName0: ini\n"
        "pluginConfigPath0: %s\n" % SCRIPT_PLUGIN_PATH)


def names(config: Config):
    return [p.name for p in config.plugins]


def test_no_file_at_all_is_freeze_only(tmp_path):
    assert validate_config(root=str(tmp_path)) == (Config(), [])
    assert load_config(root=str(tmp_path)) == Config()


def test_search_order(tmp_path):
    # Every source is merged; the JSON a plugin host file lists is read
    # through it, once.
    root = str(tmp_path)
    write_file(in_root(root, SCRIPT_PLUGIN_PATH), JSON)
    assert names(load_config(root=root)) == ["json"]
    write_file(in_root(root, PLUGINHOST_PATH), CONF)
    assert names(load_config(root=root)) == ["ini"]
    write_file(in_root(root, NATIVE_PATH), NATIVE)
    assert names(load_config(root=root)) == ["native", "ini"]


def test_first_file_wins_even_when_broken(tmp_path):
    # Falling back to a lower file would run scripts the admin replaced.
    root = str(tmp_path)
    write_file(in_root(root, SCRIPT_PLUGIN_PATH), JSON)
    write_file(in_root(root, NATIVE_PATH), "[freeze\n")
    with pytest.raises(InvalidConfig) as info:
        load_config(root=root)
    assert info.value.entry is Catalogue.INCORRECT_JSON_CONFIG_FILE
    assert in_root(root, NATIVE_PATH) in info.value.message


def test_dangling_symlink_in_search_path_is_reported(tmp_path):
    root = str(tmp_path)
    path = in_root(root, NATIVE_PATH)
    os.makedirs(os.path.dirname(path))
    os.symlink("/nonexistent/vmsnapshot.toml", path)
    config, (record,) = validate_config(root=root)
    assert "no such file; expected an existing file (a dangling symlink " \
        "counts as missing)" in record.message


@pytest.mark.parametrize("name, text, plugin", [
    ("a.toml", NATIVE, "native"),
    ("a.json", JSON, "json"),
    ("a.conf", CONF, "ini"),
    ("a.ini", CONF, "ini"),
    ("noext", NATIVE, "native"),
    ("noext", "\n  " + JSON, "json"),
    ("noext", "# comment\n" + CONF, "ini"),
    ("a.cfg", JSON, "json"),
])
def test_explicit_config_format(tmp_path, name, text, plugin):
    # pluginConfigPath in CONF is /etc/azure/...: resolved under root.
    root = str(tmp_path / "root")
    write_file(in_root(root, SCRIPT_PLUGIN_PATH), JSON)
    path = write_file(str(tmp_path / name), text)
    assert names(load_config(path, root=root)) == [plugin]


def test_explicit_config_missing(tmp_path):
    with pytest.raises(InvalidConfig) as info:
        load_config(str(tmp_path / "nope.toml"))
    assert info.value.message == "%s: no such file; expected an existing " \
        "file" % (tmp_path / "nope.toml")


def test_explicit_ini_missing_is_304(tmp_path):
    with pytest.raises(InvalidConfig) as info:
        load_config(str(tmp_path / "nope.conf"))
    assert info.value.entry is Catalogue.INCORRECT_PLUGINHOST_FILE
    assert info.value.record().to_json()["code"] == 304


def test_native_file_no_longer_shadows_azure_files(tmp_path):
    root = str(tmp_path)
    write_file(in_root(root, SCRIPT_PLUGIN_PATH), JSON)
    write_file(in_root(root, NATIVE_PATH), "[policy]\n")
    assert names(load_config(root=root)) == ["json"]


def test_shipped_native_template_does_not_hide_azure_files(tmp_path):
    """The packaged /etc/vmsnapshot/vmsnapshot.toml is all comments; an
    admin who then edits the Azure JSON gets the Azure configuration."""
    import shutil
    from tests.helpers.cli import ROOT
    root = tmp_path / "root"
    (root / "etc/vmsnapshot").mkdir(parents=True)
    (root / "etc/azure").mkdir(parents=True)
    native = root / "etc/vmsnapshot/vmsnapshot.toml"
    shutil.copy(os.path.join(ROOT, "etc/vmsnapshot/vmsnapshot.toml"), native)
    azure = root / "etc/azure/VMSnapshotScriptPluginConfig.json"
    azure.write_text('{"pluginName": "ScriptRunner", '
                     '"preScriptLocation": "/p", "postScriptLocation": "",'
                     ' "fsFreezeEnabled": false}')
    for f in (native, azure):
        os.chmod(f, 0o600)
    config = load_config(root=str(root))
    assert config.freeze.enabled is False
    assert [p.name for p in config.plugins] == ["ScriptRunner"]
    # Once the native file sets something, both are merged.
    with open(native, "a") as f:
        f.write("\n[freeze]\ntimeout = 5\n")
    config = load_config(root=str(root))
    assert config.freeze.timeout == 5
    assert config.freeze.enabled is False
    assert [p.name for p in config.plugins] == ["ScriptRunner"]
