"""`vmsnapshot azure enable|disable`: let Microsoft's backup extension
drive vmsnapshot.

enable points /etc/azure/VMSnapshotScriptPluginConfig.json at the wrappers
(adapters/azure/*.sh: pre --no-freeze / post, the extension freezes
itself). A plugin the administrator had in that file moves, unchanged in
meaning, to /etc/vmsnapshot/conf.d/azure-plugin.toml so it keeps running
(now under vmsnapshot's retries, kills and report), and the file itself is
kept byte for byte in /etc/vmsnapshot/azure-original.json. disable puts it
back. Nothing is changed when anything is in doubt.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from typing import List, Optional

from vmsnapshot import exitstatus, logs
from vmsnapshot.config.azuremode import (
    AZURE_JSON, PLUGIN_NAME, is_wrapper_config, wrapper_paths)
from vmsnapshot.config import azure_json
from vmsnapshot.config.model import Plugin
from vmsnapshot.config.problems import Problems
from vmsnapshot.errors import Catalogue, ErrorRecord

log = logs.get(__name__)

PLUGIN_HOST = "/etc/azure/VMSnapshotPluginHost.conf"
DROP_IN = "/etc/vmsnapshot/conf.d/azure-plugin.toml"
ORIGINAL = "/etc/vmsnapshot/azure-original.json"
MARK = "# Written by `vmsnapshot azure enable`"
# The extension caps a plugin's timeoutInSeconds at 1800 s.
AZURE_MAX_TIMEOUT = 1800
# Room for vmsnapshot's own start-up around the moved plugin's scripts.
TIMEOUT_MARGIN = 30


class AzureModeError(Exception):
    def __init__(self, entry: Catalogue, message: str) -> None:
        super().__init__(message)
        self.record = ErrorRecord(entry, message)


@dataclass(frozen=True)
class Paths:
    azure_json: str
    drop_in: str
    original: str
    plugin_host: str

    @classmethod
    def under(cls, root: str) -> "Paths":
        def at(path: str) -> str:
            return os.path.join(root, path.lstrip("/")) if root else path
        return cls(at(AZURE_JSON), at(DROP_IN), at(ORIGINAL),
                   at(PLUGIN_HOST))


def _other_host_plugins(path: str) -> List[str]:
    """JSON files the plugin host file names besides AZURE_JSON. The
    extension would run those plugins itself and vmsnapshot (which reads
    that file too) again: enable refuses rather than run them twice."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    found = re.findall(r"(?im)^\s*pluginConfigPath\d+\s*[:=]\s*(\S+)", text)
    return [p for p in found if os.path.normpath(p) != AZURE_JSON]


def _write(path: str, data: bytes, dir_mode: int) -> None:
    """Atomically replace PATH with DATA, root-only (600), its directory
    made DIR_MODE if missing."""
    os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    tmp = "%s.vmsnapshot-tmp" % path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise AzureModeError(Catalogue.INCORRECT_JSON_CONFIG_FILE,
                             "%s: cannot read: %s" % (path, e)) from None
    return data if isinstance(data, dict) else {}


def _toml_str(s: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(s, ensure_ascii=False)


def _toml_argv(argv: Optional[tuple]) -> str:
    return "[%s]" % ", ".join(_toml_str(a) for a in argv or ())


def drop_in_text(plugin: Plugin, continue_on_failure: bool,
                 original: str) -> str:
    """The native equivalent of the administrator's Azure plugin."""
    lines = [MARK + " from %s;" % AZURE_JSON,
             "# the original is %s. `vmsnapshot azure disable`" % original,
             "# removes this file and puts the original back.", ""]
    if not continue_on_failure:
        lines += ["[policy]", "continue_on_failure = false", ""]
    lines += ["[[plugin]]", "name = %s" % _toml_str(plugin.name)]
    if plugin.pre:
        lines.append("pre = %s" % _toml_argv(plugin.pre))
    if plugin.post:
        lines.append("post = %s" % _toml_argv(plugin.post))
    lines.append("timeout = %g" % plugin.timeout)
    retries = max(plugin.pre_retries, plugin.post_retries)
    if plugin.pre_retries != plugin.post_retries:
        lines.append("# Azure had preScriptNoOfRetries = %d, "
                     "postScriptNoOfRetries = %d; one value here."
                     % (plugin.pre_retries, plugin.post_retries))
    lines.append("retries = %d" % retries)
    return "\n".join(lines) + "\n"


def wrapper_json(timeout: int, continue_on_failure: bool,
                 fs_freeze_enabled: bool) -> str:
    pre, post = wrapper_paths()
    data = {
        "pluginName": PLUGIN_NAME,
        "preScriptLocation": pre,
        "postScriptLocation": post,
        "preScriptParams": [],
        "postScriptParams": [],
        "preScriptNoOfRetries": 0,
        "postScriptNoOfRetries": 0,
        "timeoutInSeconds": timeout,
        "continueBackupOnFailure": continue_on_failure,
        "fsFreezeEnabled": fs_freeze_enabled,
    }
    return json.dumps(data, indent=4) + "\n"


def _load_admin_plugin(path: str) -> azure_json.ScriptPluginFile:
    records: List[ErrorRecord] = []
    parsed = azure_json.read(Problems(path, Catalogue.INCORRECT_JSON_CONFIG_FILE,
                                      records))
    if records or parsed is None:
        raise AzureModeError(
            Catalogue.INCORRECT_JSON_CONFIG_FILE,
            "%s cannot be moved: %s" % (path, "; ".join(
                r.message for r in records) or "unreadable"))
    return parsed


def enable(paths: Paths, timeout: Optional[int] = None) -> List[str]:
    done: List[str] = []
    current = _read_json(paths.azure_json)
    if current is not None and is_wrapper_config(current):
        return ["already enabled: %s runs vmsnapshot's wrappers"
                % paths.azure_json]
    others = _other_host_plugins(paths.plugin_host)
    if others:
        raise AzureModeError(
            Catalogue.CONFIG_CONFLICT,
            "%s also names %s: the extension would run those plugins and "
            "vmsnapshot again; move them to /etc/vmsnapshot/conf.d/ first"
            % (paths.plugin_host, ", ".join(others)))
    if os.path.lexists(paths.original):
        raise AzureModeError(
            Catalogue.CONFIG_CONFLICT,
            "%s exists but %s does not name vmsnapshot's wrappers: "
            "a previous enable was undone by hand" % (
                paths.original, paths.azure_json))
    if os.path.lexists(paths.drop_in):
        raise AzureModeError(
            Catalogue.CONFIG_CONFLICT,
            "%s already exists; move it away first" % paths.drop_in)
    continue_on_failure, freeze, plugin_timeout = True, True, 0.0
    if current is not None:
        parsed = _load_admin_plugin(paths.azure_json)
        continue_on_failure = parsed.continue_on_failure
        freeze = parsed.fs_freeze_enabled
        with open(paths.azure_json, "rb") as f:
            _write(paths.original, f.read(), 0o700)
        done.append("kept %s as %s" % (paths.azure_json, paths.original))
        if parsed.plugin is not None:
            plugin_timeout = parsed.plugin.timeout
            _write(paths.drop_in, drop_in_text(
                parsed.plugin, continue_on_failure, ORIGINAL).encode(), 0o700)
            done.append("moved plugin %r to %s" % (parsed.plugin.name,
                                                   paths.drop_in))
    if timeout is None:
        timeout = min(AZURE_MAX_TIMEOUT,
                      max(60, int(plugin_timeout) + TIMEOUT_MARGIN))
    _write(paths.azure_json, wrapper_json(timeout, continue_on_failure,
                                          freeze).encode(), 0o755)
    done.append("%s now runs %s" % (paths.azure_json,
                                    " and ".join(wrapper_paths())))
    return done


def disable(paths: Paths) -> List[str]:
    current = _read_json(paths.azure_json)
    if current is None or not is_wrapper_config(current):
        if os.path.lexists(paths.original):
            raise AzureModeError(
                Catalogue.CONFIG_CONFLICT,
                "%s no longer names vmsnapshot's wrappers (edited by hand?); "
                "the original is still in %s: compare and restore it "
                "yourself" % (paths.azure_json, paths.original))
        return ["not enabled: nothing to do"]
    done: List[str] = []
    if os.path.lexists(paths.drop_in):
        with open(paths.drop_in, encoding="utf-8", errors="replace") as f:
            ours = f.readline().startswith(MARK)
        if ours:
            os.unlink(paths.drop_in)
            done.append("removed %s" % paths.drop_in)
        else:
            done.append("left %s (not written by enable)" % paths.drop_in)
    if os.path.lexists(paths.original):
        with open(paths.original, "rb") as f:
            _write(paths.azure_json, f.read(), 0o755)
        os.unlink(paths.original)
        done.append("restored %s from %s" % (paths.azure_json, paths.original))
    else:
        os.unlink(paths.azure_json)
        done.append("removed %s (there was none before enable)"
                    % paths.azure_json)
    return done


def azure_command(action: str, root: str = "",
                  timeout: Optional[int] = None) -> int:
    paths = Paths.under(root)
    try:
        done = enable(paths, timeout) if action == "enable" else \
            disable(paths)
    except AzureModeError as e:
        print("vmsnapshot azure %s: %s" % (action, e.record), file=sys.stderr)
        return exitstatus.PROBLEMS
    for line in done:
        print(line)
    return exitstatus.OK
