"""Every configuration source merged (design.md, "Configuration"):
vmsnapshot.toml, conf.d/*.toml in lexical order, then Azure's files;
plugins are the union, a duplicate name and a disagreeing setting are
ConfigConflict (132), run applies the safer value, and vmsnapshot's own
Azure-extension wrappers are not a plugin source."""
from __future__ import annotations

import logging
import os

import pytest

from tests.helpers.configfiles import azure_json, in_root, write_file
from vmsnapshot.config import (
    CONF_D, NATIVE_PATH, PLUGINHOST_PATH, SCRIPT_PLUGIN_PATH, InvalidConfig,
    load_config, read_sources, validate_config)
from vmsnapshot.config import merge
from vmsnapshot.config.azuremark import WRAPPER_DIR
from vmsnapshot.config.native_toml import FREEZE_KEYS
from vmsnapshot.errors import Catalogue

CONF = ("[pre_post]\nnumberOfPlugins: 1\npluginName0: ini\n"
        "pluginConfigPath0: %s\n" % SCRIPT_PLUGIN_PATH)


def plugin_toml(name: str, extra: str = "") -> str:
    return '%s\n[[plugin]]\nname = "%s"\npre = ["/usr/bin/%s"]\n' % (
        extra, name, name)


def native(root: str, text: str) -> str:
    return write_file(in_root(root, NATIVE_PATH), text)


def drop_in(root: str, name: str, text: str) -> str:
    return write_file(in_root(root, os.path.join(CONF_D, name)), text)


def azure(root: str, **keys) -> str:
    return write_file(in_root(root, SCRIPT_PLUGIN_PATH), azure_json(**keys))


def names(config):
    return [p.name for p in config.plugins]


def conflicts(records):
    return [r.message for r in records
            if r.entry is Catalogue.CONFIG_CONFLICT]


def test_native_key_no_longer_hides_azure_plugins(tmp_path):
    """The defect: a native file setting one key made vmsnapshot ignore
    the Azure JSON an admin had configured (its pre-script never ran)."""
    root = str(tmp_path)
    azure(root, pluginName="app", preScriptLocation="/usr/bin/app")
    native(root, "[freeze]\ntimeout = 20\n")
    config = load_config(root=root)
    assert names(config) == ["app"]
    assert config.freeze.timeout == 20
    assert config.sources == (in_root(root, NATIVE_PATH),
                              in_root(root, SCRIPT_PLUGIN_PATH))


def test_drop_ins_in_lexical_order_after_the_native_file(tmp_path):
    root = str(tmp_path)
    native(root, plugin_toml("main"))
    drop_in(root, "20-b.toml", plugin_toml("b"))
    drop_in(root, "10-a.toml", plugin_toml("a"))
    drop_in(root, "9-c.toml", plugin_toml("c"))     # "9" sorts after "2"
    # Not drop-ins: package manager leftovers, editor files, hidden files.
    drop_in(root, "10-a.toml.dpkg-old", plugin_toml("old"))
    drop_in(root, "b.toml~", plugin_toml("backup"))
    drop_in(root, ".hidden.toml", plugin_toml("hidden"))
    azure(root, pluginName="json", preScriptLocation="/usr/bin/j")
    found = read_sources(root=root)
    assert (found.errors, found.conflicts) == ((), ())
    assert names(found.config) == ["main", "a", "b", "c", "json"]
    skipped = {os.path.basename(f.path): f.skipped for f in found.files
               if f.skipped}
    assert set(skipped) == {"10-a.toml.dpkg-old", "b.toml~"}
    assert skipped["b.toml~"].startswith("not a drop-in: only *.toml")


def test_drop_in_without_native_file(tmp_path):
    root = str(tmp_path)
    drop_in(root, "pg.toml", plugin_toml("pg"))
    assert names(load_config(root=root)) == ["pg"]


def test_plugin_origins_name_file_and_key(tmp_path):
    root = str(tmp_path)
    path = drop_in(root, "pg.toml", plugin_toml("x") + plugin_toml("pg"))
    write_file(in_root(root, PLUGINHOST_PATH), CONF)
    json_path = azure(root, preScriptLocation="/usr/bin/j")
    origins = {p.name: p.origin for p in load_config(root=root).plugins}
    assert origins == {
        "x": path + " -> plugin -> [0]",
        "pg": path + " -> plugin -> [1]",
        "ini": "%s -> [pre_post] -> pluginName0 (%s)" % (
            in_root(root, PLUGINHOST_PATH), json_path)}


def test_json_listed_by_the_plugin_host_file_is_read_once(tmp_path):
    root = str(tmp_path)
    write_file(in_root(root, PLUGINHOST_PATH), CONF)
    azure(root, pluginName="json", preScriptLocation="/usr/bin/j")
    found = read_sources(root=root)
    assert (found.errors, found.conflicts) == ((), ())
    assert names(found.config) == ["ini"]
    (json_file,) = [f for f in found.files if f.skipped]
    assert json_file.path == in_root(root, SCRIPT_PLUGIN_PATH)
    assert "read through the plugin host file" in json_file.skipped


def test_duplicate_plugin_name_is_config_conflict(tmp_path):
    root = str(tmp_path)
    first = drop_in(root, "a.toml", plugin_toml("db"))
    second = drop_in(root, "b.toml", plugin_toml("db"))
    config, records = validate_config(root=root)
    assert [r.entry for r in records] == [Catalogue.CONFIG_CONFLICT]
    assert records[0].entry.code == 132
    assert records[0].message == (
        "plugin name 'db' is given twice: %s -> plugin -> [0] and %s -> "
        "plugin -> [0]; rename one or remove one (plugins are told apart "
        "by name in the run, the report and the log)" % (first, second))
    assert names(config) == ["db"]      # check goes on with the first
    # run refuses the configuration, as for any configuration error.
    with pytest.raises(InvalidConfig) as info:
        load_config(root=root)
    assert info.value.entry is Catalogue.CONFIG_CONFLICT


def test_duplicate_between_native_and_azure(tmp_path):
    root = str(tmp_path)
    native(root, plugin_toml("ScriptRunner"))
    azure(root, preScriptLocation="/usr/bin/j")
    _, records = validate_config(root=root)
    assert len(conflicts(records)) == 1
    assert "'ScriptRunner' is given twice" in records[0].message


@pytest.mark.parametrize("a, b, key, safer", [
    ("[policy]\ncontinue_on_failure = true\n",
     "[policy]\ncontinue_on_failure = false\n",
     "[policy] continue_on_failure", False),
    ("[freeze]\nenabled = true\n", "[freeze]\nenabled = false\n",
     "[freeze] enabled", False),
    ("[freeze]\ntimeout = 60\n", "[freeze]\ntimeout = 15\n",
     "[freeze] timeout", 15.0),
    ('[freeze]\ninclude = ["/a"]\n', '[freeze]\ninclude = ["/b", "/a"]\n',
     "[freeze] include", ("/a", "/b")),
    ("[freeze]\npresync = false\n", "[freeze]\npresync = true\n",
     "[freeze] presync", "true"),
])
def test_disagreement_check_reports_run_applies_safer(tmp_path, caplog, a,
                                                      b, key, safer):
    root = str(tmp_path)
    first, second = native(root, a), drop_in(root, "app.toml", b)
    _, records = validate_config(root=root)
    (message,) = conflicts(records)
    assert message.startswith("%s disagrees between sources: " % key)
    assert first in message and second in message
    caplog.set_level(logging.WARNING)
    config = load_config(root=root)         # not an error for run
    table, name = key.strip("[").split("] ")
    got = getattr(config.freeze, name) if table == "freeze" else \
        config.continue_on_failure
    assert got == safer
    assert message in caplog.text


def test_disagreement_message(tmp_path):
    root = str(tmp_path)
    first = native(root, "[freeze]\ntimeout = 60\n")
    second = drop_in(root, "db.toml", "[freeze]\ntimeout = 12.5\n")
    _, (record,) = validate_config(root=root)
    assert str(record).splitlines()[0] == (
        "ConfigConflict (132): [freeze] timeout disagrees between sources: "
        "60 in %s -> freeze -> timeout, 12.5 in %s -> freeze -> timeout; a "
        "run uses 12.5 (the shorter deadline wins)" % (first, second))


def test_azure_flags_against_native(tmp_path):
    root = str(tmp_path)
    native(root, "[freeze]\nenabled = true\n")
    json_path = azure(root, fsFreezeEnabled=False,
                      continueBackupOnFailure=True)
    config, records = validate_config(root=root)
    (message,) = conflicts(records)
    assert "false in %s -> fsFreezeEnabled" % json_path in message
    assert config.freeze.enabled is False


def test_defaults_never_disagree(tmp_path):
    """Only what a source states counts: an Azure fsFreezeEnabled false
    against a native file that says nothing about it is no conflict."""
    root = str(tmp_path)
    native(root, "[freeze]\ntimeout = 30\n")
    azure(root, fsFreezeEnabled=False, continueBackupOnFailure=None)
    config, records = validate_config(root=root)
    assert records == []
    assert (config.freeze.enabled, config.freeze.timeout,
            config.continue_on_failure) == (False, 30, True)


def test_azure_template_flags_state_nothing(tmp_path):
    """Azure's template lists fsFreezeEnabled and continueBackupOnFailure
    as true in every file; a drop-in's false wins without a conflict."""
    root = str(tmp_path)
    drop_in(root, "app.toml", "[freeze]\nenabled = false\n"
            "[policy]\ncontinue_on_failure = false\n")
    azure(root, preScriptLocation="/usr/bin/j", fsFreezeEnabled=True,
          continueBackupOnFailure=True)
    config, records = validate_config(root=root)
    assert records == []
    assert (config.freeze.enabled, config.continue_on_failure) == (
        False, False)


def test_agreeing_sources_and_exclusions_add_up(tmp_path):
    root = str(tmp_path)
    native(root, '[freeze]\ntimeout = 30\nexclude = ["/mnt/resource"]\n')
    drop_in(root, "a.toml", '[freeze]\ntimeout = 30\nexclude = ["/srv/*"]\n')
    config, records = validate_config(root=root)
    assert records == []
    assert config.freeze.exclude == ("/mnt/resource", "/srv/*")


def test_every_native_key_has_a_merge_rule():
    assert {"freeze." + k for k in FREEZE_KEYS} | {
        "policy.continue_on_failure"} <= set(merge.RULES)


def test_explicit_config_is_that_file_alone(tmp_path):
    """--config FILE: a drop-in validated on its own (Ansible's validate)."""
    root = str(tmp_path)
    native(root, plugin_toml("db") + "[policy]\ncontinue_on_failure = true\n")
    path = drop_in(root, "db.toml", plugin_toml(
        "db", "[policy]\ncontinue_on_failure = false\n"))
    config, records = validate_config(path, root=root)
    assert records == []
    assert (names(config), config.sources) == (["db"], (path,))
    assert config.continue_on_failure is False


def test_broken_drop_in_refuses_the_configuration(tmp_path):
    root = str(tmp_path)
    native(root, plugin_toml("main"))
    bad = drop_in(root, "bad.toml", "[freeze\n")
    config, records = validate_config(root=root)
    assert [r.entry for r in records] == [Catalogue.INCORRECT_JSON_CONFIG_FILE]
    assert records[0].message.startswith(bad + ": not valid TOML")
    assert names(config) == ["main"]        # check still inspects the rest
    with pytest.raises(InvalidConfig):
        load_config(root=root)


# Azure-extension mode: the JSON points Microsoft's extension at
# vmsnapshot's wrappers; reading it as a plugin source would loop.

def wrapper_json(root: str, **keys) -> str:
    return azure(root, pluginName="vmsnapshot",
                 preScriptLocation=WRAPPER_DIR + "/pre-script.sh",
                 postScriptLocation=WRAPPER_DIR + "/post-script.sh", **keys)


def test_extension_wrappers_are_not_a_plugin_source(tmp_path):
    root = str(tmp_path)
    native(root, plugin_toml("pg"))
    path = wrapper_json(root, fsFreezeEnabled=False,
                        continueBackupOnFailure=False)
    found = read_sources(root=root)
    assert (found.errors, found.conflicts) == ((), ())
    assert names(found.config) == ["pg"]
    # Its flags are the extension's business, not settings of vmsnapshot.
    assert found.config.freeze.enabled is True
    assert found.config.continue_on_failure is True
    (skipped,) = [f for f in found.files if f.skipped]
    assert skipped.path == path
    assert skipped.skipped.startswith("Azure-extension mode")


def test_a_lone_wrapper_is_enough(tmp_path):
    root = str(tmp_path)
    azure(root, preScriptLocation="/usr/bin/app",
          postScriptLocation=WRAPPER_DIR + "/post-script.sh")
    assert load_config(root=root).plugins == ()


def test_extension_wrappers_listed_by_the_plugin_host_file(tmp_path):
    root = str(tmp_path)
    write_file(in_root(root, PLUGINHOST_PATH), CONF)
    wrapper_json(root)
    config, records = validate_config(root=root)
    assert (records, config.plugins) == ([], ())


def test_wrapper_directory_from_the_environment(tmp_path, monkeypatch):
    # The adapters' tests run the wrappers from a work tree.
    root = str(tmp_path)
    monkeypatch.setenv("VMSNAPSHOT_ADAPTERS", "/work/tree/adapters")
    azure(root, preScriptLocation="/work/tree/adapters/azure/pre-script.sh")
    assert load_config(root=root).plugins == ()
    monkeypatch.delenv("VMSNAPSHOT_ADAPTERS")
    assert names(load_config(root=root)) == ["ScriptRunner"]


def test_json_named_by_the_plugin_host_file_against_native(tmp_path):
    # Among the plugin host file's JSON files a false wins, as Azure ANDs
    # them; against the native file's true it is a disagreement.
    root = str(tmp_path)
    a = write_file(in_root(root, "/etc/azure/a.json"), azure_json(
        pluginName="a", preScriptLocation="/usr/bin/a"))
    b = write_file(in_root(root, "/etc/azure/b.json"), azure_json(
        pluginName="b", preScriptLocation="/usr/bin/b",
        continueBackupOnFailure=False))
    host = write_file(in_root(root, PLUGINHOST_PATH), (
        "[pre_post]\nnumberOfPlugins: 2\npluginName0: a\npluginConfigPath0:"
        " /etc/azure/a.json\npluginName1: b\n"
        "pluginConfigPath1: /etc/azure/b.json\n"))
    native(root, "[policy]\ncontinue_on_failure = true\n")
    config, records = validate_config(root=root)
    (message,) = conflicts(records)
    assert "false in %s -> continueBackupOnFailure" % b in message
    assert config.continue_on_failure is False
    assert names(config) == ["a", "b"]
    assert config.sources == (in_root(root, NATIVE_PATH), host, a, b)


def test_check_with_a_conflict_predicts_the_merged_run(tmp_path, capsys):
    from vmsnapshot.commands.check import check_command
    root = str(tmp_path)
    native(root, "[freeze]\nenabled = true\n")
    drop_in(root, "app.toml", "[freeze]\nenabled = false\n")
    assert check_command(None, root) == 1
    out = capsys.readouterr().out
    assert "freeze: disabled by configuration" in out
    assert "mount plan: freezing disabled by configuration" in out
    assert out.splitlines()[-1] == (
        "summary: 1 problem: a run would be crash-consistent at best (no "
        "pre-script would quiesce anything and the freeze is disabled)")
