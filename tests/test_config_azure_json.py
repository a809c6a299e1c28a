"""Azure script plugin JSON: the template's fields, strict types, trust."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers.configfiles import (
    NOBODY, TEMPLATE_JSON, azure_json, write_file, write_script)
from tests.helpers.require import need_root
from vmsnapshot.config import (
    Config, FreezeSettings, load_config, validate_config)
from vmsnapshot.config.search import InvalidConfig
from vmsnapshot.errors import Catalogue, ConfigError

E305 = Catalogue.INCORRECT_JSON_CONFIG_FILE


def one_problem(path: str) -> str:
    config, records = validate_config(path)
    assert len(records) == 1, records
    assert records[0].entry is E305
    return records[0].message


def test_template_is_byte_for_byte_azures():
    with open(TEMPLATE_JSON, "rb") as f:
        data = f.read()
    assert data.startswith(b'{\n    "pluginName" : "ScriptRunner",\n')
    assert b'"ScriptsExecutionPollTimeSeconds" : 3\n}\n' in data
    assert len(data) == 373


def test_unedited_template_is_valid_and_runs_nothing(tmp_path):
    path = str(tmp_path / "VMSnapshotScriptPluginConfig.json")
    shutil.copy(TEMPLATE_JSON, path)
    os.chmod(path, 0o600)
    config = load_config(path)
    assert config == Config(freeze=FreezeSettings(enabled=True),
                            continue_on_failure=True, plugins=(),
                            sources=(path,))


def test_every_field_is_used(tmp_path):
    pre = write_script(str(tmp_path / "s" / "pre.sh"))
    post = write_script(str(tmp_path / "s" / "post.sh"))
    path = write_file(str(tmp_path / "c.json"), azure_json(
        pluginName="mysql", preScriptLocation=pre, postScriptLocation=post,
        preScriptParams=["", "a b", "it's \"quoted\"", ""],
        postScriptParams=["--post"], preScriptNoOfRetries=2,
        postScriptNoOfRetries=1, timeoutInSeconds=45,
        continueBackupOnFailure=False, fsFreezeEnabled=False,
        appName="ignored"))
    config = load_config(path)
    assert config.freeze == FreezeSettings(enabled=False)
    assert config.continue_on_failure is False
    (plugin,) = config.plugins
    assert plugin.name == "mysql"
    assert plugin.pre == (pre, "", "a b", "it's \"quoted\"", "")
    assert plugin.post == (post, "--post")
    assert (plugin.pre_retries, plugin.post_retries) == (2, 1)
    assert plugin.timeout == 45.0 and isinstance(plugin.timeout, float)
    assert plugin.source == path and not plugin.hold


def test_defaults_when_optional_keys_are_absent(tmp_path):
    path = write_file(str(tmp_path / "c.json"),
                      '{"preScriptLocation": "/x/pre", '
                      '"postScriptLocation": ""}')
    config = load_config(path)
    (plugin,) = config.plugins
    assert plugin.name == "ScriptRunner"
    assert plugin.pre == ("/x/pre",) and plugin.post is None
    assert plugin.timeout == 30.0          # Azure's documented default
    assert (plugin.pre_retries, plugin.post_retries) == (0, 0)
    assert config.freeze.enabled and config.continue_on_failure


def test_only_a_post_script(tmp_path):
    path = write_file(str(tmp_path / "c.json"),
                      azure_json(postScriptLocation="/x/post"))
    (plugin,) = load_config(path).plugins
    # The template's ["", ""]: two empty arguments, as Azure passes them.
    assert plugin.pre is None and plugin.post == ("/x/post", "", "")


@pytest.mark.parametrize("text, crumb, expected", [
    ('{"preScriptLocation": "", ', "not valid JSON", "line 1"),
    ('{"preScriptLocation": "",}', "not valid JSON", "commas"),
    ("", "the file is empty", "JSON object"),
    ("  \n", "the file is empty", "JSON object"),
    ('["pre", "post"]', "top level is not an object", "{...}"),
    ('{"postScriptLocation": ""}', "-> preScriptLocation: missing key",
     "absolute path of the pre-script"),
    ('{"preScriptLocation": ""}', "-> postScriptLocation: missing key",
     "absolute path of the post-script"),
    (azure_json(preScriptLocation="pre.sh"), "-> preScriptLocation: got",
     "not an absolute path"),
    (azure_json(preScriptLocation=7), "-> preScriptLocation: got 7",
     "absolute path"),
    (azure_json(preScriptLocation="/x\u0000y"), "NUL", "absolute path"),
    (azure_json(timeoutInSeconds=True), "-> timeoutInSeconds: got true "
     "(a boolean)", "positive number"),
    (azure_json(timeoutInSeconds="30"), "-> timeoutInSeconds: got '30' "
     "(a string)", "positive number"),
    (azure_json(timeoutInSeconds=-5), "-> timeoutInSeconds: got -5",
     "negative and 0 are not allowed"),
    (azure_json(timeoutInSeconds=0), "-> timeoutInSeconds: got 0",
     "a positive number of seconds, at most 86400"),
    (azure_json(timeoutInSeconds=86401), "-> timeoutInSeconds: got 86401",
     "at most 86400"),
    (azure_json(timeoutInSeconds=10 ** 400), "-> timeoutInSeconds: got a "
     "huge number", "at most 86400"),
    ('{"preScriptLocation": "", "postScriptLocation": "", '
     '"timeoutInSeconds": 1e400}', "-> timeoutInSeconds: got inf",
     "at most 86400"),
    (azure_json(preScriptNoOfRetries=-1), "-> preScriptNoOfRetries: got -1",
     "0 = one attempt"),
    (azure_json(postScriptNoOfRetries=1.5), "-> postScriptNoOfRetries: got "
     "1.5 (a number)", "whole number"),
    (azure_json(postScriptNoOfRetries=False), "-> postScriptNoOfRetries: "
     "got false", "whole number"),
    (azure_json(preScriptParams="a,b"), "-> preScriptParams: got 'a,b'",
     "list of strings"),
    (azure_json(postScriptParams=["ok", 3]), "-> postScriptParams -> [1]: "
     "got 3 (a number)", "a string"),
    (azure_json(postScriptParams=["ok", None]), "-> postScriptParams -> "
     "[1]: got null", "a string"),
    (azure_json(fsFreezeEnabled="false"), "-> fsFreezeEnabled: got 'false'",
     "true or false"),
    (azure_json(continueBackupOnFailure=1), "-> continueBackupOnFailure: "
     "got 1 (a number)", "true or false"),
    (azure_json(pluginName=["x"]), "-> pluginName: got a list", "a string"),
    ('{"preScriptLocation": "", "preScriptLocation": "/a", '
     '"postScriptLocation": ""}', "-> preScriptLocation: key given twice",
     "each key once"),
    ('{"preScriptLocation": "", "postScriptLocation": "", '
     '"timeoutInSeconds": NaN}', "NaN is not valid JSON", "JSON"),
    (azure_json(PreScriptLocation="/a"), "-> PreScriptLocation: unknown key "
     "(did you mean 'preScriptLocation'? keys are case-sensitive)",
     "spelling"),
])
def test_incorrect_json_config_file(tmp_path, text, crumb, expected):
    path = write_file(str(tmp_path / "c.json"), text)
    message = one_problem(path)
    assert message.startswith(path), message
    assert crumb in message and expected in message, message


def test_unknown_keys_are_accepted(tmp_path):
    path = write_file(str(tmp_path / "c.json"), azure_json(
        appName="postgres", ScriptsExecutionPollTimeSeconds=9,
        someFutureKey={"nested": [1, 2]}))
    assert validate_config(path)[1] == []


def test_not_utf8(tmp_path):
    path = write_file(str(tmp_path / "c.json"), b'{"a": "\xff"}')
    assert "byte 7 is not UTF-8 text" in one_problem(path)


def test_bom_is_tolerated(tmp_path):
    path = write_file(str(tmp_path / "c.json"),
                      b"\xef\xbb\xbf" + azure_json().encode())
    assert validate_config(path)[1] == []


def test_every_problem_is_listed(tmp_path):
    path = write_file(str(tmp_path / "c.json"), azure_json(
        preScriptLocation="rel", timeoutInSeconds=-1,
        postScriptParams=[1, 2], fsFreezeEnabled="yes"))
    config, records = validate_config(path)
    messages = [r.message for r in records]
    assert len(messages) == 5, messages
    assert any("[0]" in m for m in messages)
    assert any("[1]" in m for m in messages)
    with pytest.raises(InvalidConfig) as info:
        load_config(path)
    assert isinstance(info.value, ConfigError)
    assert info.value.entry is E305
    assert info.value.message == messages[0] + \
        " (and 4 more problems: run 'vmsnapshot check')"
    assert [r.message for r in info.value.records] == messages


# Trust: the file names programs run as root.

@pytest.mark.parametrize("mode, ok", [
    (0o600, True), (0o400, True), (0o644, False), (0o640, False),
    (0o604, False), (0o664, False), (0o646, False), (0o700, False),
    (0o610, False), (0o666, False), (0o777, False)])
def test_config_file_mode(tmp_path, mode, ok):
    # 600 as Azure requires: Microsoft's extension refuses a 644 file (its
    # error 317), and so does vmsnapshot, naming it.
    path = write_file(str(tmp_path / "c.json"), azure_json(), mode=mode)
    config, records = validate_config(path)
    if ok:
        assert records == []
        return
    assert records and all(r.entry is E305 for r in records)
    for record in records:
        assert record.message.startswith(path + ": not trusted: " + path
                                         + " ")
        assert "mode %04o" % mode in record.message
        assert "fix: chmod 600 %s" % path in record.message
    if mode & 0o077:
        assert "accessible by group or others" in records[0].message
        assert "error 317" in records[0].message


def test_config_in_a_writable_directory_is_refused(tmp_path):
    shared = str(tmp_path / "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    path = write_file(os.path.join(shared, "c.json"), azure_json())
    message = one_problem(path)
    assert message == (
        "%s: not trusted: directory %s is writable by group and others "
        "(owner root (uid 0), mode 0777); fix: chmod go-w %s; expected "
        "owner root, mode 600, in directories only root can write (as for "
        "scripts)" % (path, shared, shared))
    os.chmod(shared, 0o1777)    # sticky like /tmp: never the holder
    assert "its directory %s is world-writable (sticky)" % shared \
        in one_problem(path)


def test_config_through_a_users_symlink_is_refused(tmp_path):
    need_root("chown needs root")
    target = write_file(str(tmp_path / "real.json"), azure_json())
    link = str(tmp_path / "c.json")
    os.symlink(target, link)
    os.lchown(link, NOBODY, -1)
    message = one_problem(link)
    assert "not trusted: symlink %s is not owned by root (owner nobody " \
        "(uid 65534)" % link in message
    # A directory owned by a user on the way is refused the same way.
    theirs = str(tmp_path / "theirs")
    os.mkdir(theirs, 0o755)
    os.chown(theirs, NOBODY, -1)
    inner = write_file(os.path.join(theirs, "c.json"), azure_json())
    assert "not trusted: directory %s is not owned by root (owner nobody " \
        "(uid 65534)" % theirs in one_problem(inner)


def test_config_file_owner(tmp_path):
    need_root("chown needs root")
    path = write_file(str(tmp_path / "c.json"), azure_json(), uid=NOBODY)
    message = one_problem(path)
    assert "%s is not owned by root (owner nobody (uid 65534), mode 0600)" \
        % path in message
    assert "fix: chown root:root %s" % path in message


def test_symlink_target_is_checked(tmp_path):
    target = write_file(str(tmp_path / "real.json"), azure_json(), 0o666)
    link = str(tmp_path / "c.json")
    os.symlink(target, link)
    message = one_problem(link)
    assert "(symlink to %s)" % target in message
    assert "chmod 600 %s" % target in message


@pytest.mark.parametrize("kind", ["missing", "dangling", "directory", "fifo"])
def test_unusable_file(tmp_path, kind):
    path = str(tmp_path / "c.json")
    if kind == "dangling":
        os.symlink(str(tmp_path / "gone"), path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    message = one_problem(path)
    assert {"missing": "no such file", "dangling": "dangling symlink",
            "directory": "is a directory",
            "fifo": "not a regular file"}[kind] in message


def test_huge_file_is_refused(tmp_path):
    path = write_file(str(tmp_path / "c.json"), " " * (2 << 20))
    assert "expected a configuration file of at most" in one_problem(path)


# Lone surrogates: JSON can spell them ("\ud800"), UTF-8 cannot encode them,
# so they could neither be printed nor become an argv (was: exit 70).
@pytest.mark.parametrize("key, value, crumb", [
    ("pluginName", "a\ud800", "-> pluginName: "),
    ("preScriptLocation", "/x/\ud800", "-> preScriptLocation: "),
    ("postScriptLocation", "/x/\udcff", "-> postScriptLocation: "),
    ("preScriptParams", ["ok", "\ud800"], "-> preScriptParams -> [1]: "),
    ("postScriptParams", ["\udfff"], "-> postScriptParams -> [0]: "),
])
def test_lone_surrogate_is_a_named_config_error(tmp_path, key, value, crumb):
    path = write_file(str(tmp_path / "c.json"), azure_json(**{key: value}))
    message = one_problem(path)
    assert crumb in message and "not valid Unicode text" in message, message
    message.encode("utf-8")     # printable as it is


def test_lone_surrogate_in_a_key_is_printable(tmp_path):
    path = write_file(str(tmp_path / "c.json"),
                      azure_json(**{"PreScriptLocation\ud800": "/a"}))
    for record in validate_config(path)[1]:
        str(record).encode("utf-8")


@pytest.mark.parametrize("command", ["check", "run"])
def test_lone_surrogate_end_to_end(tmp_path, command):
    from tests.helpers.cli import run_vmsnapshot
    post = write_script(str(tmp_path / "s" / "post.sh"))
    # fsFreezeEnabled false: this test freezes nothing.
    path = write_file(str(tmp_path / "c.json"), azure_json(
        postScriptLocation=post, postScriptParams=["\ud800"],
        fsFreezeEnabled=False))
    args = ["--config", path] + (["--json", "--", "true"]
                                 if command == "run" else [])
    res = run_vmsnapshot(command, *args,
                         env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert res.returncode != 70, res.stderr
    assert "IncorrectJSONConfigFile" in res.stdout + res.stderr
    assert "internal error" not in res.stderr
