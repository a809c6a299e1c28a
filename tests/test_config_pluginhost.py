"""Azure plugin host INI: several plugins, the timeout cap, 304 vs 305."""
from __future__ import annotations

import pytest

from tests.helpers.configfiles import (
    TEMPLATE_CONF, TEMPLATE_JSON, azure_json, in_root, write_file)
from vmsnapshot.config import load_config, validate_config
from vmsnapshot.config.search import PLUGINHOST_PATH, SCRIPT_PLUGIN_PATH
from vmsnapshot.errors import Catalogue

E304 = Catalogue.INCORRECT_PLUGINHOST_FILE
E305 = Catalogue.INCORRECT_JSON_CONFIG_FILE


def conf(lines: str) -> str:
    return "[pre_post]\n" + lines


def test_templates_copied_to_etc_azure(tmp_path):
    root = str(tmp_path)
    for src, dst in ((TEMPLATE_CONF, PLUGINHOST_PATH),
                     (TEMPLATE_JSON, SCRIPT_PLUGIN_PATH)):
        with open(src) as f:
            write_file(in_root(root, dst), f.read(), 0o600)
    config = load_config(root=root)
    assert config.plugins == ()
    assert config.sources == (in_root(root, PLUGINHOST_PATH),
                              in_root(root, SCRIPT_PLUGIN_PATH))


def test_two_plugins_capped_and_combined(tmp_path):
    root = str(tmp_path)
    write_file(in_root(root, "/etc/azure/a.json"), azure_json(
        preScriptLocation="/s/a-pre", timeoutInSeconds=600,
        preScriptNoOfRetries=3))
    write_file(in_root(root, "/etc/azure/b.json"), azure_json(
        postScriptLocation="/s/b-post", postScriptParams=["x y"],
        timeoutInSeconds=20, fsFreezeEnabled=False,
        continueBackupOnFailure=False))
    # '=' and ':' both work, key names are case-insensitive (ConfigParser).
    write_file(in_root(root, PLUGINHOST_PATH), conf(
        "timeoutInSeconds = 100\nnumberofplugins: 2\n"
        "pluginName0: ScriptRunner\npluginPath0: /etc/azure\n"
        "pluginConfigPath0: /etc/azure/a.json\n"
        "PLUGINNAME1 = ScriptRunner\n"
        "pluginConfigPath1 = /etc/azure/b.json\n"))
    config = load_config(root=root)
    a, b = config.plugins
    assert (a.name, a.pre, a.post, a.timeout, a.pre_retries) == (
        "ScriptRunner", ("/s/a-pre", "", ""), None, 100.0, 3)
    assert a.plugin_path == "/etc/azure" and b.plugin_path == ""
    assert a.source == in_root(root, "/etc/azure/a.json")
    assert (b.name, b.pre, b.post, b.timeout) == (
        "ScriptRunner[1]", None, ("/s/b-post", "x y"), 20.0)
    # One plugin that cannot stand a freeze, or wants failures to stop the
    # backup, decides for all (Azure ANDs them).
    assert config.freeze.enabled is False
    assert config.continue_on_failure is False


def test_without_cap_the_json_timeout_stands(tmp_path):
    json_path = write_file(str(tmp_path / "p.json"),
                           azure_json(preScriptLocation="/s/pre",
                                      timeoutInSeconds=7200))
    path = write_file(str(tmp_path / "host.conf"), conf(
        "numberOfPlugins: 1\npluginName0: db\n"
        "pluginConfigPath0: %s\n" % json_path))
    (plugin,) = load_config(path).plugins
    assert plugin.timeout == 7200.0 and plugin.name == "db"


@pytest.mark.parametrize("text, message", [
    ("numberOfPlugins: 1\n", "line 1: 'numberOfPlugins: 1' comes before any "
     "section; expected [pre_post] as the first line"),
    ("[other]\na: b\n", ": no [pre_post] section; expected a [pre_post] "
     "section"),
    (conf("timeoutInSeconds: 5\n"), "-> [pre_post] -> numberOfPlugins: "
     "missing key"),
    (conf("numberOfPlugins: 0\n"), "-> numberOfPlugins: got '0'; expected a "
     "whole number, 1 or more"),
    (conf("numberOfPlugins: -1\n"), "-> numberOfPlugins: got '-1'"),
    (conf("numberOfPlugins: one\n"), "-> numberOfPlugins: got 'one'"),
    (conf("numberOfPlugins: 1.5\n"), "-> numberOfPlugins: got '1.5'"),
    (conf("numberOfPlugins: 1\npluginConfigPath0: /j.json\n"),
     "-> [pre_post] -> pluginName0: missing or empty; expected the plugin's "
     "name"),
    (conf("numberOfPlugins: 1\npluginName0: x\n"),
     "-> [pre_post] -> pluginConfigPath0: missing or empty; expected the "
     "absolute path of its JSON file"),
    (conf("numberOfPlugins: 1\npluginName0: x\npluginConfigPath0: j.json\n"),
     "-> pluginConfigPath0: got 'j.json', not an absolute path"),
    (conf("numberOfPlugins: 1\nnumberOfPlugins: 2\n"),
     "-> [pre_post] -> numberofplugins: key given twice (line 3)"),
    ("[pre_post]\n[pre_post]\n", "-> [pre_post]: section given twice"),
    (conf("numberOfPlugins: 1\nthis line is garbage\n"),
     "-> line 3: cannot parse 'this line is garbage'; expected 'key: value'"),
    (conf("numberOfPlugins: 1\n  indented: continuation\n"),
     "-> numberOfPlugins: got '1\\nindented: continuation'"),
    (conf("timeoutInSeconds: -3\nnumberOfPlugins: 1\npluginName0: x\n"
          "pluginConfigPath0: /nonexistent/p.json\n"),
     "-> timeoutInSeconds: got '-3'; expected a positive number"),
    (conf("numberOfPlugins: 1\npluginName0: x\npluginName1: y\n"
          "pluginConfigPath0: /nonexistent/p.json\n"),
     "-> pluginName1: index 1 is not below numberOfPlugins = 1"),
    (conf("numberOfPlugins: 1000000000\npluginName0: x\n"),
     "-> numberOfPlugins: is 1000000000 but only 2 keys are given"),
])
def test_incorrect_pluginhost_file(tmp_path, text, message):
    path = write_file(str(tmp_path / "host.conf"), text)
    config, records = validate_config(path)
    mine = [r.message for r in records if r.entry is E304]
    assert mine and all(m.startswith(path) for m in mine)
    assert any(message in m for m in mine), mine


def test_same_json_twice(tmp_path):
    json_path = write_file(str(tmp_path / "p.json"),
                           azure_json(preScriptLocation="/s/pre"))
    path = write_file(str(tmp_path / "host.conf"), conf(
        "numberOfPlugins: 2\npluginName0: a\npluginConfigPath0: %s\n"
        "pluginName1: b\npluginConfigPath1: %s\n" % (json_path, json_path)))
    config, records = validate_config(path)
    assert [(r.entry, r.message) for r in records] == [
        (E304, "%s -> [pre_post] -> pluginConfigPath1: same file as "
         "pluginConfigPath0; expected one JSON file per plugin (its scripts "
         "would run twice)" % path)]


def test_json_problems_name_the_json_file(tmp_path):
    good = write_file(str(tmp_path / "good.json"),
                      azure_json(preScriptLocation="/s/pre"))
    bad = write_file(str(tmp_path / "bad.json"),
                     azure_json(timeoutInSeconds=-1))
    path = write_file(str(tmp_path / "host.conf"), conf(
        "numberOfPlugins: 3\npluginName0: a\npluginConfigPath0: %s\n"
        "pluginName1: b\npluginConfigPath1: %s\n"
        "pluginName2: c\npluginConfigPath2: %s/missing.json\n"
        % (good, bad, tmp_path)))
    config, records = validate_config(path)
    assert [(r.entry, r.message.split(" -> ")[0].split(":")[0])
            for r in records] == [(E305, bad), (E305, "%s/missing.json"
                                                % tmp_path)]
    assert "no such file" in records[1].message
    # Best effort for check: the good plugin is still there.
    assert [p.name for p in config.plugins] == ["a"]


def test_percent_and_default_section_are_literal(tmp_path):
    json_path = write_file(str(tmp_path / "50%.json"),
                           azure_json(preScriptLocation="/s/pre"))
    path = write_file(str(tmp_path / "host.conf"),
                      "[DEFAULT]\nnumberOfPlugins: 7\n" + conf(
                          "numberOfPlugins: 1\npluginName0: a\n"
                          "pluginConfigPath0: %s\n" % json_path))
    assert [p.name for p in load_config(path).plugins] == ["a"]


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o664, 0o755])
def test_pluginhost_mode_is_checked(tmp_path, mode):
    json_path = write_file(str(tmp_path / "p.json"), azure_json())
    path = write_file(str(tmp_path / "host.conf"), conf(
        "numberOfPlugins: 1\npluginName0: a\npluginConfigPath0: %s\n"
        % json_path), mode)
    config, records = validate_config(path)
    if mode == 0o600:
        assert records == []
        return
    record = records[0]
    assert all(r.entry is E304 for r in records)
    assert record.message.startswith(path + ": not trusted: ")
    assert "mode %04o" % mode in record.message
    assert "fix: chmod 600 " + path in record.message


def test_non_utf8_bytes_and_surrogates(tmp_path):
    # A non-UTF-8 byte in the INI is its own error; a surrogate in the JSON
    # it names is the JSON's (305), and both messages stay printable.
    path = write_file(str(tmp_path / "host.conf"),
                      b"[pre_post]\nnumberOfPlugins: 1\npluginName0: a\n"
                      b"pluginConfigPath0: /x/\xff.json\n")
    (record,) = validate_config(path)[1]
    assert record.entry is E304 and "is not UTF-8 text" in record.message
    json_path = write_file(str(tmp_path / "p.json"),
                           azure_json(preScriptLocation="/s/pre\udc80"))
    path = write_file(str(tmp_path / "host2.conf"), conf(
        "numberOfPlugins: 1\npluginName0: a\npluginConfigPath0: %s\n"
        % json_path))
    (record,) = validate_config(path)[1]
    assert record.entry is E305 and "lone surrogate" in record.message
    str(record).encode("utf-8")
