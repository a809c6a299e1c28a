"""Native TOML: the design's shape, argv lists, unknown keys refused."""
from __future__ import annotations

import os
import re

import pytest

from tests.helpers.configfiles import TEMPLATE_TOML, write_file
from vmsnapshot.config import Config, FreezeSettings, Plugin, load_config
from vmsnapshot.config import validate_config
from vmsnapshot.errors import Catalogue

E305 = Catalogue.INCORRECT_JSON_CONFIG_FILE

FULL = """
[freeze]
enabled = false
timeout = 12.5
include = ["/data*", "/srv"]
exclude = ["/mnt/resource"]
presync = true

[policy]
continue_on_failure = false

[[plugin]]
name = "postgresql"
pre = ["/hooks/pg", "pre", "a b", "it's \\"q\\""]
post = ["/hooks/pg", "post"]
timeout = 30
retries = 2
hold = true

[[plugin]]
name = "cache"
post = ["/hooks/cache"]
"""


def test_full_file(tmp_path):
    path = write_file(str(tmp_path / "v.toml"), FULL)
    assert load_config(path) == Config(
        freeze=FreezeSettings(enabled=False, timeout=12.5,
                              include=("/data*", "/srv"),
                              exclude=("/mnt/resource",), presync="true"),
        continue_on_failure=False,
        plugins=(Plugin(name="postgresql",
                        pre=("/hooks/pg", "pre", "a b", "it's \"q\""),
                        post=("/hooks/pg", "post"), timeout=30.0,
                        pre_retries=2, post_retries=2, hold=True,
                        source=path),
                 Plugin(name="cache", pre=None, post=("/hooks/cache",),
                        source=path)),
        sources=(path,))


def test_empty_file_is_all_defaults(tmp_path):
    path = write_file(str(tmp_path / "v.toml"), "# nothing\n")
    assert load_config(path) == Config(sources=(path,))


def test_template_and_its_example_plugin(tmp_path):
    with open(TEMPLATE_TOML) as f:
        text = f.read()
    path = write_file(str(tmp_path / "v.toml"), text)
    config = load_config(path)
    # As shipped it sets nothing (so it never hides the Azure files).
    assert config == type(config)(sources=config.sources)
    # Uncommenting the settings, as its comment says, gives a valid plugin.
    text = re.sub(r"(?m)^# (?=\[|\w+ = )", "", text)
    write_file(path, text)
    (plugin,) = load_config(path).plugins
    assert plugin.name == "postgresql" and plugin.pre[1] == "pre"


@pytest.mark.parametrize("text, message", [
    ("[freeze\n", "not valid TOML: "),
    ("colour = 1\n", "-> colour: unknown key; expected one of freeze, "
     "policy, plugin, minimum_version"),
    ("[freeze]\ntimout = 5\n", "-> freeze -> timout: unknown key (did you "
     "mean 'timeout'?)"),
    ("[policy]\ncontinue_on_faliure = true\n", "-> policy -> "
     "continue_on_faliure: unknown key (did you mean 'continue_on_failure'?)"),
    ("freeze = 3\n", "-> freeze: got 3 (a number); expected a [freeze] "
     "table"),
    ("[freeze]\nenabled = \"yes\"\n", "-> freeze -> enabled: got 'yes' "
     "(a string); expected true or false"),
    ("[freeze]\ntimeout = true\n", "-> freeze -> timeout: got true"),
    ("[freeze]\ntimeout = -1\n", "-> freeze -> timeout: got -1"),
    ("[freeze]\ntimeout = inf\n", "-> freeze -> timeout: got inf"),
    ("[freeze]\ntimeout = 1979-05-27\n", "got a date/time"),
    ("[freeze]\nexclude = \"/mnt\"\n", "-> freeze -> exclude: got '/mnt' "
     "(a string); expected a list of mount-point globs"),
    ("[freeze]\ninclude = [\"data\"]\n", "-> freeze -> include -> [0]: got "
     "'data' (a string); expected an absolute mount-point glob"),
    ("[[plugin]]\nname = \"a\"\npre = \"/x/pre --fast\"\n",
     "-> plugin -> [0] -> pre: got a string; commands are argv lists, never "
     "run through a shell"),
    ("[[plugin]]\nname = \"a\"\npre = []\n", "-> plugin -> [0] -> pre: empty "
     "list"),
    ("[[plugin]]\nname = \"a\"\npost = [\"post.sh\"]\n",
     "-> plugin -> [0] -> post -> [0]: got 'post.sh' (a string), not an "
     "absolute path"),
    ("[[plugin]]\nname = \"a\"\npre = [\"/x\", 5]\n",
     "-> plugin -> [0] -> pre -> [1]: got 5 (a number)"),
    ("[[plugin]]\nname = \"a\"\n", "-> plugin -> [0]: neither pre nor post"),
    ("[[plugin]]\npre = [\"/x\"]\n", "-> plugin -> [0] -> name: missing key"),
    ("[[plugin]]\nname = \"\"\npre = [\"/x\"]\n", "-> name: empty"),
    ("[[plugin]]\nname = \"a\"\npre = [\"/x\"]\n"
     "[[plugin]]\nname = \"a\"\npre = [\"/y\"]\n",
     "-> plugin -> [1] -> name: 'a' is also plugin [0]'s name"),
    ("[[plugin]]\nname = \"a\"\npost = [\"/x\"]\nhold = true\n",
     "-> hold: true without a pre command"),
    ("[[plugin]]\nname = \"a\"\npre = [\"/x\"]\nretries = -2\n",
     "-> retries: got -2"),
    ("[[plugin]]\nname = \"a\"\npre = [\"/x\"]\nretry = 2\n",
     "-> plugin -> [0] -> retry: unknown key (did you mean 'retries'?)"),
    ("[plugin]\nname = \"a\"\n", "-> plugin: got a table/object; expected "
     "[[plugin]] tables (double brackets)"),
    ("plugin = [1]\n", "-> plugin -> [0]: got 1 (a number); expected a "
     "[[plugin]] table"),
])
def test_native_problems(tmp_path, text, message):
    path = write_file(str(tmp_path / "v.toml"), text)
    config, records = validate_config(path)
    assert records and all(r.entry is E305 for r in records)
    assert records[0].message.startswith(path)
    assert any(message in r.message for r in records), records


def test_toml_syntax_error_has_position(tmp_path):
    path = write_file(str(tmp_path / "v.toml"), "[freeze]\nenabled = tru\n")
    config, (record,) = validate_config(path)
    assert config is None
    assert "(at line 2, column 11)" in record.message


def test_native_file_trust(tmp_path):
    path = write_file(str(tmp_path / "v.toml"), "", mode=0o602)
    config, (record,) = validate_config(path)
    assert record.entry is E305
    assert "is accessible by group or others (owner root (uid 0), mode " \
        "0602); expected mode 600" in record.message


@pytest.mark.parametrize("value", ["0", "-1", "3601", "1e300", "inf", "nan",
                                   "86400"])
def test_freeze_timeout_is_bounded(tmp_path, value):
    # One rule with --freeze-timeout (config.model.freeze_timeout_problem):
    # a watchdog deadline beyond an hour is a typo, not a wish.
    path = write_file(str(tmp_path / "v.toml"),
                      "[freeze]\ntimeout = %s\n" % value)
    config, records = validate_config(path)
    assert records and all(r.entry is E305 for r in records), records
    assert any(r.message.startswith(path + " -> freeze -> timeout: ")
               for r in records), records


def test_freeze_timeout_of_an_hour_is_accepted(tmp_path):
    path = write_file(str(tmp_path / "v.toml"), "[freeze]\ntimeout = 3600\n")
    assert load_config(path).freeze.timeout == 3600.0


@pytest.mark.parametrize("text, message", [
    ('[[plugin]]\nname = "a"\npre = ["/x/\\ud800"]\n',
     "not valid TOML: Escaped character is not a Unicode scalar value"),
    (b'[[plugin]]\nname = "a"\npre = ["/x/\xff"]\n', "is not UTF-8 text"),
])
def test_surrogates_and_non_utf8_bytes(tmp_path, text, message):
    path = write_file(str(tmp_path / "v.toml"), text)
    config, (record,) = validate_config(path)
    assert record.entry is E305 and message in record.message


def test_non_utf8_config_path_is_printable(tmp_path):
    path = write_file(os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xff.toml"),
                      "[freeze]\ntimeout = 0\n")
    config, (record,) = validate_config(path)
    assert record.message.startswith(str(tmp_path) + "/\\xff.toml -> ")
    record.message.encode("utf-8")
