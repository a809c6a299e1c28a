"""The native file, /etc/vmsnapshot/vmsnapshot.toml (shape in design.md).

Unlike the Azure files, unknown keys are errors: the native format has no
legacy to tolerate, and a typo (continue_on_faliure) must not silently turn
into the default.  Commands are argv lists, never shell strings.  Problems
are IncorrectJSONConfigFile (305), the catalogue's "configuration file"
error, naming this file.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vmsnapshot.config.minversion import minimum_version_ok
from vmsnapshot.config.model import (
    DEFAULT_FREEZE_TIMEOUT, DEFAULT_SCRIPT_TIMEOUT, Config, FreezeSettings,
    Plugin, Setting, freeze_timeout_problem)
from vmsnapshot.config.problems import (
    Crumb, Problems, describe, pick, read_config_file, reject_unknown,
    want_abspath, want_bool, want_count, want_seconds, want_str,
    want_str_list)
from vmsnapshot.errors import Catalogue, ErrorRecord
from vmsnapshot.freeze.presync import normalize_mode

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.8-3.10 only
    import tomli as tomllib

TOP_KEYS = ("freeze", "policy", "plugin", "minimum_version")
FREEZE_KEYS = ("enabled", "timeout", "include", "exclude", "presync")
POLICY_KEYS = ("continue_on_failure",)
PLUGIN_KEYS = ("name", "pre", "post", "timeout", "retries", "hold")


def _table(p: Problems, data: Dict[str, Any], key: str
           ) -> Dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        p.add((key,), "got " + describe(value), "a [%s] table" % key)
        return {}
    return value


def _globs(p: Problems, where: Sequence[Crumb], value: Any) -> Optional[tuple]:
    items = want_str_list(p, where, value,
                          "a list of mount-point globs, like [\"/mnt/*\"]")
    if items is None:
        return None
    for i, glob in enumerate(items):
        if not glob.startswith("/"):
            p.add(list(where) + [i], "got %s" % describe(glob),
                  "an absolute mount-point glob, starting with /")
            return None
    return tuple(items)


def _presync(p: Problems, where: Sequence[Crumb], value: Any
             ) -> Optional[str]:
    mode = normalize_mode(value)
    if mode is None:
        p.add(where, "got " + describe(value), 'true, false or "auto"')
    return mode


def _argv(p: Problems, where: Sequence[Crumb], value: Any
          ) -> Optional[Tuple[str, ...]]:
    if isinstance(value, str):
        p.add(where, "got a string; commands are argv lists, never run "
              "through a shell", "a list like [\"/path/to/script\", \"arg\"]")
        return None
    argv = want_str_list(p, where, value,
                         "a list like [\"/path/to/script\", \"arg\"]")
    if argv is None:
        return None
    if not argv:
        p.add(where, "empty list", "the script's path first, then arguments")
        return None
    if want_abspath(p, list(where) + [0], argv[0], "the script") is None:
        return None
    return tuple(argv)


def _freeze_timeout(p: Problems, where: Sequence[Crumb], value: Any
                    ) -> Optional[float]:
    """[freeze] timeout: the same bounds as --freeze-timeout."""
    seconds = want_seconds(p, where, value)
    if seconds is None:
        return None
    problem = freeze_timeout_problem(seconds)
    if problem is not None:
        p.add(where, "got %r" % value, "a watchdog deadline that " + problem)
        return None
    return seconds


def _plugin(p: Problems, index: int, table: Any, names: Dict[str, int]
            ) -> Optional[Plugin]:
    where: List[Crumb] = ["plugin", index]
    if not isinstance(table, dict):
        p.add(where, "got " + describe(table), "a [[plugin]] table")
        return None
    before = p.count
    reject_unknown(p, where, table, PLUGIN_KEYS)
    name = None
    if "name" not in table:
        p.add(where + ["name"], "missing key", "the plugin's name")
    else:
        name = want_str(p, where + ["name"], table["name"],
                        "the plugin's name (a string)")
        if name == "":
            p.add(where + ["name"], "empty", "the plugin's name")
        elif name is not None and name in names:
            p.add(where + ["name"], "%r is also plugin [%d]'s name"
                  % (name, names[name]), "a unique name")
        elif name is not None:
            names[name] = index
    pre = pick(p, table, where, "pre", _argv, None)
    post = pick(p, table, where, "post", _argv, None)
    if "pre" not in table and "post" not in table:
        p.add(where, "neither pre nor post is given", "a pre or post command")
    hold = pick(p, table, where, "hold", want_bool, False)
    if hold and "pre" not in table:
        p.add(where + ["hold"], "true without a pre command",
              "hold = true only with a pre command")
    retries = pick(p, table, where, "retries", want_count, 0)
    timeout = pick(p, table, where, "timeout", want_seconds,
                   DEFAULT_SCRIPT_TIMEOUT)
    if p.count != before or not name:
        return None
    return Plugin(name=name, pre=pre, post=post, timeout=timeout,
                  pre_retries=retries, post_retries=retries, hold=hold,
                  source=p.path,
                  origin="%s -> plugin -> [%d]" % (p.path, index))


def parse(text: str, p: Problems) -> Optional[Config]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        p.add((), "not valid TOML: %s" % e,
              "TOML like etc/vmsnapshot/vmsnapshot.toml")
        return None
    except RecursionError:
        p.add((), "not valid TOML: nested too deeply", "TOML")
        return None
    if not minimum_version_ok(p, data):
        return None     # a newer format: none of its keys may be trusted
    reject_unknown(p, (), data, TOP_KEYS)
    freeze_t = _table(p, data, "freeze")
    reject_unknown(p, ["freeze"], freeze_t, FREEZE_KEYS)
    w = ["freeze"]
    freeze = FreezeSettings(
        enabled=pick(p, freeze_t, w, "enabled", want_bool, True),
        timeout=pick(p, freeze_t, w, "timeout", _freeze_timeout,
                     DEFAULT_FREEZE_TIMEOUT),
        include=pick(p, freeze_t, w, "include", _globs, ()),
        exclude=pick(p, freeze_t, w, "exclude", _globs, ()),
        presync=pick(p, freeze_t, w, "presync", _presync, "auto"))
    policy_t = _table(p, data, "policy")
    reject_unknown(p, ["policy"], policy_t, POLICY_KEYS)
    keep_going = pick(p, policy_t, ["policy"], "continue_on_failure",
                      want_bool, True)
    plugins: List[Plugin] = []
    tables = data.get("plugin", [])
    if not isinstance(tables, list):
        p.add(("plugin",), "got " + describe(tables),
              "[[plugin]] tables (double brackets), one per plugin")
        tables = []
    names: Dict[str, int] = {}
    for i, table in enumerate(tables):
        plugin = _plugin(p, i, table, names)
        if plugin is not None:
            plugins.append(plugin)
    return Config(freeze=freeze, continue_on_failure=keep_going,
                  plugins=tuple(plugins), sources=(p.path,),
                  settings=_given(p.path, freeze_t, freeze, policy_t,
                                  keep_going))


def _given(path: str, freeze_t: Dict[str, Any], freeze: FreezeSettings,
           policy_t: Dict[str, Any], keep_going: bool
           ) -> Tuple[Setting, ...]:
    """The settings this file states (not its defaults), for merging."""
    given = [Setting("freeze." + key, getattr(freeze, key),
                     "%s -> freeze -> %s" % (path, key))
             for key in FREEZE_KEYS if key in freeze_t]
    if "continue_on_failure" in policy_t:
        given.append(Setting("policy.continue_on_failure", keep_going,
                             "%s -> policy -> continue_on_failure" % path))
    return tuple(given)


def load(path: str, records: List[ErrorRecord], root: str = "/"
         ) -> Optional[Config]:
    p = Problems(path, Catalogue.INCORRECT_JSON_CONFIG_FILE, records)
    text = read_config_file(p)
    return None if text is None else parse(text, p)
