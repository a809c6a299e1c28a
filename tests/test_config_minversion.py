"""`minimum_version = "X.Y"` in a native file: an older vmsnapshot refuses
the file by name and runs none of its plugins."""
from __future__ import annotations

import os

import pytest

import vmsnapshot
from tests.helpers.cli import run_vmsnapshot
from tests.helpers.configfiles import in_root, write_file
from vmsnapshot.config import (
    CONF_D, NATIVE_PATH, InvalidConfig, load_config, validate_config)
from vmsnapshot.errors import Catalogue

PLUGIN = '[[plugin]]\nname = "db"\npre = ["/usr/bin/db"]\n'


@pytest.fixture
def version(monkeypatch):
    def set_version(v: str) -> None:
        monkeypatch.setattr(vmsnapshot, "__version__", v)
    return set_version


@pytest.mark.parametrize("running, wanted, ok", [
    ("0.1.0", "0.1", True),
    ("0.1.0", "0.1.0", True),
    ("0.2.0", "0.1", True),
    ("0.1.0", "0.2", False),
    ("0.9.0", "0.10", False),        # not a string or float comparison
    ("0.10.0", "0.9", True),
    ("1.0rc1", "1.0", False),        # a pre-release is older
    ("1.0.0", "1.0rc1", True),
])
def test_compared_as_versions(tmp_path, version, running, wanted, ok):
    version(running)
    path = write_file(str(tmp_path / "v.toml"),
                      'minimum_version = "%s"\n%s' % (wanted, PLUGIN))
    config, records = validate_config(path)
    if ok:
        assert records == [] and [p.name for p in config.plugins] == ["db"]
    else:
        assert [r.entry for r in records] == [
            Catalogue.INCORRECT_JSON_CONFIG_FILE]


def test_newer_file_is_refused_by_name(tmp_path):
    """The message names the file, the version it needs and the running
    one; none of the file's keys are judged (they may be newer ones)."""
    path = write_file(str(tmp_path / "v.toml"),
                      'minimum_version = "99.1"\nnew_key = 1\n'
                      '[freeze]\nnewer = true\n' + PLUGIN)
    config, (record,) = validate_config(path)
    assert config is None
    assert record.message == (
        "%s -> minimum_version: this file requires vmsnapshot 99.1 or later "
        "and this is vmsnapshot %s: the file is refused, none of its "
        "plugins run and none of its settings apply; expected vmsnapshot "
        "upgraded to 99.1 or later on this machine (or the file kept off "
        "machines with an older vmsnapshot)" % (path, vmsnapshot.__version__))
    with pytest.raises(InvalidConfig):
        load_config(path)


def test_newer_drop_in_runs_none_of_its_plugins(tmp_path):
    root = str(tmp_path)
    write_file(in_root(root, NATIVE_PATH), PLUGIN)
    newer = write_file(in_root(root, os.path.join(CONF_D, "new.toml")),
                       'minimum_version = "99"\n[[plugin]]\nname = "new"\n'
                       'pre = ["/usr/bin/new"]\n')
    config, (record,) = validate_config(root=root)
    assert record.message.startswith(newer + " -> minimum_version: ")
    assert [p.name for p in config.plugins] == ["db"]
    assert newer not in config.sources


@pytest.mark.parametrize("value, expected", [
    ("0.2", 'got 0.2 (a number); expected a version in quotes, like "0.2"'),
    ('"soon"', "got 'soon' (a string), not a version; expected a version "
     'like "0.2" or "1.4.1"'),
    ("[1]", 'got a list; expected a version in quotes, like "0.2"'),
])
def test_unreadable_minimum_version(tmp_path, value, expected):
    path = write_file(str(tmp_path / "v.toml"),
                      "minimum_version = %s\n%s" % (value, PLUGIN))
    _, (record,) = validate_config(path)
    assert record.message == "%s -> minimum_version: %s" % (path, expected)


def test_check_cli_refuses_a_newer_file(tmp_path):
    path = write_file(str(tmp_path / "v.toml"),
                      'minimum_version = "99.0"\n' + PLUGIN)
    res = run_vmsnapshot("check", "--config", path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("IncorrectJSONConfigFile (305): %s -> minimum_version: this file "
            "requires vmsnapshot 99.0 or later" % path) in res.stdout
    assert "plugin db" not in res.stdout
