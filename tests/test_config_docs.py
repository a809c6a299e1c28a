"""The man page and the templates say what the code does."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.helpers.configfiles import (
    ROOT, TEMPLATE_CONF, TEMPLATE_JSON, TEMPLATE_TOML)
from tests.helpers.require import need_tool
from vmsnapshot.config import azure_json, native_toml
from vmsnapshot.errors import Catalogue

MAN = os.path.join(ROOT, "man", "vmsnapshot.8")
ETC_README = os.path.join(ROOT, "etc", "README.md")


def words(text: str) -> str:
    # Lines may break after a hyphen; everything else is one space.
    return re.sub(r"\s+", " ", re.sub(r"-\n\s*", "-", text))


@pytest.fixture(scope="module")
def man_text() -> str:
    need_tool("groff")
    res = subprocess.run(
        ["groff", "-man", "-rHY=0", "-ww", "-Tascii", "-P-c", "-P-b", "-P-u", "-P-o",
         MAN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        check=True, env=dict(os.environ, MANWIDTH="80"))
    assert res.stderr == "", res.stderr       # no groff warning
    return words(res.stdout)


@pytest.mark.parametrize("entry", list(Catalogue), ids=lambda e: e.name)
def test_man_page_lists_every_error_with_its_action(man_text, entry):
    assert "%s (%d) %s" % (entry.error_name, entry.code,
                           words(entry.action)) in man_text


@pytest.mark.parametrize("text", [
    "vmsnapshot [-v] mounts", "vmsnapshot check", "vmsnapshot [-v] run",
    "vmsnapshot thaw --recover", "/etc/vmsnapshot/vmsnapshot.toml",
    "/etc/azure/VMSnapshotPluginHost.conf",
    "/etc/azure/VMSnapshotScriptPluginConfig.json", "EXIT STATUS",
    "is used for the native TOML file too",
] + ["%s" % k for k in azure_json.TEMPLATE_KEYS]
  + ["[freeze] %s" % k for k in ("enabled", "timeout", "presync")]
  + ["[policy] continue_on_failure", "numberOfPlugins", "pluginPath",
     "timeoutInSeconds"])
def test_man_page_mentions(man_text, text):
    assert text in man_text


def test_azure_template_keys():
    with open(TEMPLATE_JSON) as f:
        keys = list(json.load(f))
    assert keys == list(azure_json.TEMPLATE_KEYS) + [
        "ScriptsExecutionPollTimeSeconds"]
    with open(TEMPLATE_CONF) as f:
        assert f.read() == (
            "[pre_post]\ntimeoutInSeconds: 1800\nnumberOfPlugins: 1\n"
            "pluginName0: ScriptRunner\npluginPath0: /etc/azure\n"
            "pluginConfigPath0: /etc/azure/VMSnapshotScriptPluginConfig.json"
            "\n")


def test_native_template_shows_every_key():
    with open(TEMPLATE_TOML) as f:
        text = f.read()
    # Every setting is shipped commented out: "# key = value".
    data = native_toml.tomllib.loads(
        re.sub(r"(?m)^# (?=\[|\w+ = )", "", text))
    assert sorted(data) == sorted(native_toml.TOP_KEYS)
    assert sorted(data["freeze"]) == sorted(native_toml.FREEZE_KEYS)
    assert sorted(data["policy"]) == sorted(native_toml.POLICY_KEYS)
    assert sorted(data["plugin"][0]) == sorted(native_toml.PLUGIN_KEYS)


def test_etc_readme_documents_every_key():
    with open(ETC_README) as f:
        text = f.read()
    for key in (azure_json.TEMPLATE_KEYS + native_toml.FREEZE_KEYS
                + native_toml.POLICY_KEYS + native_toml.PLUGIN_KEYS
                + ("numberOfPlugins", "pluginName<i>", "pluginPath<i>",
                   "pluginConfigPath<i>")):
        assert "`%s" % key in text or " %s`" % key in text, key
