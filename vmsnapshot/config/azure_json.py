"""Azure's script plugin file, /etc/azure/VMSnapshotScriptPluginConfig.json.

Every key of the published template keeps its documented meaning; keys this
loader does not know (appName, ScriptsExecutionPollTimeSeconds, ...) are
accepted, as Azure accepts them, except a known key in the wrong case
(PreScriptLocation), which Azure would silently ignore and so lose a script.
Every problem is IncorrectJSONConfigFile (305) naming this file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from vmsnapshot import logs
from vmsnapshot.config.model import Config, FreezeSettings, Plugin, Setting
from vmsnapshot.config.problems import (
    Problems, pick, read_config_file, suggest, want_abspath, want_bool,
    want_count, want_seconds, want_str, want_str_list)
from vmsnapshot.errors import Catalogue, ErrorRecord

log = logs.get(__name__)

TEMPLATE_KEYS = (
    "pluginName", "preScriptLocation", "postScriptLocation",
    "preScriptParams", "postScriptParams", "preScriptNoOfRetries",
    "postScriptNoOfRetries", "timeoutInSeconds", "continueBackupOnFailure",
    "fsFreezeEnabled")
# Azure's documented default ("Default is 30"), not the native one.
AZURE_SCRIPT_TIMEOUT = 30.0
DEFAULT_PLUGIN_NAME = "ScriptRunner"
# The file's two settings, by their native names (config/merge.py).
_FLAGS = {"freeze.enabled": "fsFreezeEnabled",
          "policy.continue_on_failure": "continueBackupOnFailure"}


@dataclass(frozen=True)
class ScriptPluginFile:
    """One parsed JSON file: its plugin (None when both locations are
    empty, as in the unedited template) and its two policy flags."""

    plugin: Optional[Plugin]
    fs_freeze_enabled: bool
    continue_on_failure: bool
    settings: Tuple[Setting, ...] = ()  # the two flags, where given


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    # json keeps the last of two equal keys; a second preScriptLocation
    # pasted below the first would silently replace it.
    seen: Dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not valid JSON" % name)


def parse(text: str, p: Problems) -> Optional[Dict[str, Any]]:
    """The top-level object, or None after recording why not."""
    if not text.strip():
        p.add((), "the file is empty",
              "a JSON object like the template's")
        return None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates,
                          parse_constant=_reject_constant)
    except _Duplicate as e:
        p.add((str(e),), "key given twice", "each key once")
        return None
    except json.JSONDecodeError as e:
        p.add((), "not valid JSON: %s at line %d column %d"
              % (e.msg, e.lineno, e.colno),
              "JSON like the template (double quotes, commas between "
              "entries, none after the last)")
        return None
    except (ValueError, RecursionError) as e:
        p.add((), "not valid JSON: %s" % (e if isinstance(e, ValueError)
                                          else "nested too deeply"),
              "JSON like the template")
        return None
    if not isinstance(data, dict):
        p.add((), "the top level is not an object",
              "a JSON object {...} like the template's")
        return None
    return data


def _script(p: Problems, data: Dict[str, Any], phase: str
            ) -> Optional[Tuple[str, ...]]:
    """argv of one phase: the location, then its params exactly as listed
    (Azure runs ``sh SCRIPT PARAM...``: the template's ["", ""] gives the
    script two empty arguments, and scripts written for Azure count on
    it)."""
    params = want_str_list(p, (phase + "ScriptParams",),
                           data.get(phase + "ScriptParams", []),
                           "a list of strings, like [\"--fast\", \"db1\"]")
    key = phase + "ScriptLocation"
    if key not in data:
        p.add((key,), "missing key",
              "the absolute path of the %s-script, or \"\" for none" % phase)
        return None
    if data[key] == "":
        return None
    path = want_abspath(p, (key,), data[key], "the %s-script" % phase)
    if path is None:
        return None
    return (path,) + tuple(params or [])


def read(p: Problems) -> Optional[ScriptPluginFile]:
    """Load one script plugin file; problems go to ``p``."""
    text = read_config_file(p)
    if text is None:
        return None
    data = parse(text, p)
    if data is None:
        return None
    for key in data:
        if key not in TEMPLATE_KEYS:
            hint = suggest(key, TEMPLATE_KEYS)
            if "case-sensitive" in hint:
                p.add((key,), "unknown key" + hint, "the template's spelling")
            else:
                log.debug("%s: ignoring unknown key %r", p.path, key)
    name = pick(p, data, (), "pluginName", want_str, DEFAULT_PLUGIN_NAME) \
        or DEFAULT_PLUGIN_NAME
    pre = _script(p, data, "pre")
    post = _script(p, data, "post")
    # Validated even when both locations are empty (the unedited template):
    # the user fills the locations next and should hear of the rest now.
    timeout, pre_retries, post_retries = (
        pick(p, data, (), key, check, default) for key, check, default in (
            ("timeoutInSeconds", want_seconds, AZURE_SCRIPT_TIMEOUT),
            ("preScriptNoOfRetries", want_count, 0),
            ("postScriptNoOfRetries", want_count, 0)))
    plugin = None
    if pre is not None or post is not None:
        plugin = Plugin(name=name, pre=pre, post=post, timeout=timeout,
                        pre_retries=pre_retries, post_retries=post_retries,
                        source=p.path, origin=p.path)
    else:
        log.info("%s: no preScriptLocation or postScriptLocation set; "
                 "no script to run", p.path)
    flags = {key: pick(p, data, (), azure_key, want_bool, True)
             for key, azure_key in _FLAGS.items()}
    return ScriptPluginFile(
        plugin=plugin,
        fs_freeze_enabled=flags["freeze.enabled"],
        continue_on_failure=flags["policy.continue_on_failure"],
        # The template lists both flags as true, so every file states
        # "true" whether or not anyone meant it, and against "false wins" a
        # true decides nothing: only a false is a stated setting.
        settings=tuple(Setting(key, False, "%s -> %s" % (p.path, azure))
                       for key, azure in _FLAGS.items()
                       if azure in data and flags[key] is False))



def load(path: str, records: List[ErrorRecord], root: str = "/"
         ) -> Optional[Config]:
    """The whole configuration when this JSON file is the one in use."""
    p = Problems(path, Catalogue.INCORRECT_JSON_CONFIG_FILE, records)
    parsed = read(p)
    if parsed is None:
        return None
    return Config(freeze=FreezeSettings(enabled=parsed.fs_freeze_enabled),
                  continue_on_failure=parsed.continue_on_failure,
                  plugins=(parsed.plugin,) if parsed.plugin else (),
                  sources=(path,), settings=parsed.settings)
