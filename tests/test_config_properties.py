"""Property tests: whatever is thrown at the three parsers, the answer is a
Config or named errors (304/305) with breadcrumbs, never a traceback."""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.configfiles import template, write_file
from vmsnapshot.config import Config, InvalidConfig, load_config
from vmsnapshot.config import validate_config
from vmsnapshot.config.azure_json import TEMPLATE_KEYS
from vmsnapshot.errors import Catalogue, ErrorRecord

E304 = Catalogue.INCORRECT_PLUGINHOST_FILE
E305 = Catalogue.INCORRECT_JSON_CONFIG_FILE

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=20)
           | st.floats(allow_nan=False) | st.sampled_from(["", "/", "/x/y"]))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("props"))


def check(path: str, root: str, entries) -> None:
    config, records = validate_config(path, root)
    assert all(isinstance(r, ErrorRecord) and r.entry in entries
               for r in records), records
    # Every message starts with the file it is about.
    assert all(r.message.startswith("/") for r in records), records
    if not records:
        assert isinstance(config, Config)
    try:
        loaded = load_config(path, root)
    except InvalidConfig as e:
        assert records and e.entry is records[0].entry
    else:
        assert not records and loaded == config
        for p in loaded.plugins:
            assert p.pre or p.post
            assert math.isfinite(p.timeout) and p.timeout > 0
            assert p.pre_retries >= 0 and p.post_retries >= 0
            # argv[0] a path; params exactly as listed, "" included.
            assert all(isinstance(a, str) for a in (p.pre or ()))
            assert not p.pre or p.pre[0]


def fresh(workdir: str, name: str, data: Any) -> str:
    d = tempfile.mkdtemp(dir=workdir)
    return write_file(os.path.join(d, name), data)


@SETTINGS
@given(value=json_values)
def test_any_json_value(workdir, value):
    check(fresh(workdir, "c.json", json.dumps(value)), "/", {E305})


@SETTINGS
@given(data=st.fixed_dictionaries({}, optional={
    k: json_values | st.just(template()[k]) for k in TEMPLATE_KEYS}),
    extra=st.dictionaries(st.text(max_size=12), json_values, max_size=3))
def test_template_keys_with_any_values(workdir, data, extra):
    extra.update(data)
    check(fresh(workdir, "c.json", json.dumps(extra)), "/", {E305})


@SETTINGS
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_each_format(workdir, raw):
    for name, entries in (("c.json", {E305}), ("c.toml", {E305}),
                          ("c.conf", {E304, E305})):
        check(fresh(workdir, name, raw), workdir, entries)


ini_keys = st.sampled_from([
    "timeoutInSeconds", "numberOfPlugins", "pluginName0", "pluginPath0",
    "pluginConfigPath0", "pluginName1", "pluginConfigPath1", "timeout",
    "PLUGINNAME0", "x"])
ini_values = st.sampled_from(
    ["1", "2", "0", "-1", "1.5", "1e3", "30", "", "nan", "inf",
     "/etc/azure/VMSnapshotScriptPluginConfig.json", "/etc/azure/b.json",
     "rel.json", "ScriptRunner", "%(x)s"]) | st.text(max_size=12).filter(
        lambda s: "\n" not in s and "\r" not in s)
ini_pair = st.tuples(ini_keys, st.sampled_from([": ", "=", " = "]),
                     ini_values).map("".join)
ini_lines = ini_pair | ini_pair | ini_pair | st.sampled_from(
    ["[pre_post]", "[DEFAULT]", "[other]", "# c", "  continued", "garbage"])


VALID_INI = ["[pre_post]", "timeoutInSeconds: 100", "numberOfPlugins: 2",
             "pluginName0: a", "pluginConfigPath0: /etc/azure/b.json",
             "pluginName1: b", "pluginPath1: /etc/azure",
             "pluginConfigPath1: /etc/azure/VMSnapshotScriptPluginConfig.json"]
# Either random lines, or the valid file with a few lines replaced/removed,
# so that deep paths (the JSON files, the cap) are reached too.
ini_docs = st.lists(ini_lines, max_size=10) | st.lists(
    st.tuples(st.integers(0, len(VALID_INI) - 1), ini_lines | st.just("")),
    max_size=2).map(lambda edits: [
        dict(edits).get(i, line) for i, line in enumerate(VALID_INI)])


@SETTINGS
@given(lines=ini_docs, json_doc=st.just(template()) | json_values)
def test_plugin_host_ini(workdir, lines, json_doc):
    root = tempfile.mkdtemp(dir=workdir)
    write_file(os.path.join(root, "etc/azure/VMSnapshotScriptPluginConfig."
                                  "json"), json.dumps(json_doc))
    write_file(os.path.join(root, "etc/azure/b.json"), json.dumps(
        dict(template(), preScriptLocation="/s/pre")))
    text = "\n".join(lines) + "\n"
    check(write_file(os.path.join(root, "host.conf"), text), root,
          {E304, E305})


def toml_str(text: str) -> str:
    # TOML basic strings: JSON's escapes, but DEL must be escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or \
            math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join("%s = %s" % (toml_str(k), toml_value(v))
                           for k, v in value.items()) + "}"


def toml_table(header: str, table: dict) -> str:
    body = "".join("%s = %s\n" % (toml_str(k), toml_value(v))
                   for k, v in table.items())
    return "%s\n%s" % (header, body)


no_surrogates = st.text(st.characters(blacklist_categories=("Cs",)),
                        max_size=10)
toml_scalars = (st.booleans() | st.integers(-5, 10 ** 12) | st.floats()
                | no_surrogates | st.sampled_from(["/x", "/data*"]))
toml_values = st.recursive(
    toml_scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(no_surrogates, inner, max_size=3), max_leaves=8)
argv = st.lists(st.sampled_from(["/bin/true", "pre", "a b", "", "rel"])
                | no_surrogates, max_size=3)


def tables(keys, values):
    return st.dictionaries(st.sampled_from(keys) | no_surrogates,
                           values, max_size=len(keys))


def good_or_any(good):
    return good | good | toml_values


good_argv = st.lists(st.sampled_from(["pre", "a b", "", "it's"]),
                     max_size=2).map(lambda a: ["/bin/true"] + a)
good_freeze = st.fixed_dictionaries({}, optional={
    "enabled": good_or_any(st.booleans()),
    "timeout": good_or_any(st.floats(0.5, 1e6) | st.integers(1, 3600)),
    "include": good_or_any(st.lists(st.sampled_from(["/data*", "/srv"]))),
    "exclude": good_or_any(st.lists(st.sampled_from(["/mnt/*", "/"]))),
    "presync": good_or_any(st.booleans()
                           | st.sampled_from(["auto", "true", "false"]))})
good_plugin = st.fixed_dictionaries(
    {"name": good_or_any(st.sampled_from(["a", "b", "db"]))}, optional={
        "pre": good_or_any(good_argv), "post": good_or_any(good_argv),
        "timeout": good_or_any(st.integers(1, 100)),
        "retries": good_or_any(st.integers(0, 3)),
        "hold": good_or_any(st.booleans())})


@SETTINGS
@given(freeze=good_freeze | tables(
           ["enabled", "timeout", "include", "exclude", "presync"],
           toml_values),
       policy=tables(["continue_on_failure"], st.booleans() | toml_values),
       plugins=st.lists(good_plugin | good_plugin | tables(
           ["name", "pre", "post", "timeout", "retries", "hold"],
           argv | toml_values), max_size=3),
       top=st.just({}) | st.dictionaries(no_surrogates, toml_scalars,
                                         max_size=1))
def test_native_toml_documents(workdir, freeze, policy, plugins, top):
    text = "".join("%s = %s\n" % (toml_str(k), toml_value(v))
                   for k, v in top.items())
    text += toml_table("[freeze]", freeze) + toml_table("[policy]", policy)
    text += "".join(toml_table("[[plugin]]", p) for p in plugins)
    check(fresh(workdir, "v.toml", text), "/", {E305})


@SETTINGS
@given(enabled=st.booleans(), timeout=st.integers(1, 3600),
       exclude=st.lists(st.sampled_from(["/mnt/*", "/srv", "/d b"])),
       keep_going=st.booleans(),
       plugins=st.lists(st.tuples(good_argv | st.none(), good_argv,
                                  st.integers(0, 5), st.booleans()),
                        max_size=4))
def test_valid_native_documents_load_exactly(workdir, enabled, timeout,
                                             exclude, keep_going, plugins):
    text = toml_table("[freeze]", {"enabled": enabled, "timeout": timeout,
                                   "exclude": exclude})
    text += toml_table("[policy]", {"continue_on_failure": keep_going})
    for i, (pre, post, retries, hold) in enumerate(plugins):
        table = {"name": "p%d" % i, "post": post, "retries": retries,
                 "hold": hold and pre is not None}
        if pre is not None:
            table["pre"] = pre
        text += toml_table("[[plugin]]", table)
    path = fresh(workdir, "v.toml", text)
    config = load_config(path)
    assert (config.freeze.enabled, config.freeze.timeout,
            config.freeze.exclude, config.continue_on_failure) == (
        enabled, float(timeout), tuple(exclude), keep_going)
    assert [(p.name, p.pre, p.post, p.pre_retries, p.hold)
            for p in config.plugins] == [
        ("p%d" % i, tuple(pre) if pre else None, tuple(post), retries,
         hold and pre is not None)
        for i, (pre, post, retries, hold) in enumerate(plugins)]
