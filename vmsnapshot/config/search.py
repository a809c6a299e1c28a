"""Which configuration files are read, in which order and format, and the
two entry points: ``validate_config`` (every problem, for check) and
``load_config`` (raises on the first problem list, for run). The merging
itself is config/merge.py."""
from __future__ import annotations

import importlib
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

from vmsnapshot import logs
from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.config.azuremark import is_extension_wrapper
from vmsnapshot.config.merge import merge
from vmsnapshot.config.model import Config
from vmsnapshot.config.problems import under_root
from vmsnapshot.errors import ConfigError, ErrorRecord

log = logs.get(__name__)

NATIVE_PATH = "/etc/vmsnapshot/vmsnapshot.toml"
PLUGINHOST_PATH = "/etc/azure/VMSnapshotPluginHost.conf"
SCRIPT_PLUGIN_PATH = "/etc/azure/VMSnapshotScriptPluginConfig.json"
# Drop-ins: conf.d/*.toml, read right after NATIVE_PATH.
CONF_D = "/etc/vmsnapshot/conf.d"
SEARCH_ORDER = (NATIVE_PATH, PLUGINHOST_PATH, SCRIPT_PLUGIN_PATH)

Loader = Callable[[str, List[ErrorRecord], str], Optional[Config]]


def _lazy(module: str) -> Loader:
    """A format's loader, imported on first use: `run` pays only for the
    formats present on the machine (issue 15's fixed cost)."""
    def load(path: str, records: List[ErrorRecord], root: str = "/"
             ) -> Optional[Config]:
        mod = importlib.import_module("vmsnapshot.config." + module)
        return mod.load(path, records, root)
    return load


LOADERS: Dict[str, Loader] = {
    "toml": _lazy("native_toml"),
    "ini": _lazy("pluginhost"),
    "json": _lazy("azure_json"),
}
FORMAT_NAMES = {"toml": "native TOML", "ini": "Azure plugin host INI",
                "json": "Azure script plugin JSON"}
_EXTENSIONS = {".toml": "toml", ".conf": "ini", ".ini": "ini",
               ".json": "json"}


class InvalidConfig(ConfigError):
    """Every problem found in the configuration; the exception itself
    carries the first one's catalogue entry and message."""

    def __init__(self, records: List[ErrorRecord]) -> None:
        first = records[0]
        message = first.message
        if len(records) > 1:
            message += " (and %d more problem%s: run 'vmsnapshot check')" % (
                len(records) - 1, "" if len(records) == 2 else "s")
        super().__init__(message, first.entry)
        self.records = tuple(records)


def drop_ins(root: str = "/") -> Tuple[List[str], List[str]]:
    """(the *.toml files of conf.d in lexical byte order, the other
    entries there, which are not read: .dpkg-old, .rpmnew, editor
    leftovers). Hidden names are neither."""
    directory = under_root(CONF_D, root)
    try:
        names = sorted(os.listdir(directory), key=os.fsencode)
    except FileNotFoundError:
        return [], []
    except OSError as e:
        log.warning("cannot list %s: %s", directory, e.strerror or e)
        return [], []
    names = [n for n in names if not n.startswith(".")]
    return ([os.path.join(directory, n) for n in names if n.endswith(".toml")],
            [os.path.join(directory, n) for n in names
             if not n.endswith(".toml")])


def found_configs(root: str = "/") -> List[str]:
    """Every source that exists, in merge order (design.md): the native
    file, its drop-ins, the plugin host file, the script plugin JSON.
    A dangling symlink counts: it is a mistake to report, not to skip."""
    found = []
    for p in SEARCH_ORDER:
        path = under_root(p, root)
        if os.path.lexists(path):
            found.append(path)
        if p == NATIVE_PATH:
            found += drop_ins(root)[0]
    return found


def detect_format(path: str) -> str:
    """By extension, else by content: '{' starts JSON, a [pre_post] section
    means the plugin host INI, anything else is read as TOML."""
    ext = os.path.splitext(path)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8-sig", "replace")
    except OSError:
        return "toml"   # the loader reports why it cannot be read
    if head.lstrip().startswith("{"):
        return "json"
    if re.search(r"^\s*\[\s*pre_post\s*\]", head, re.M | re.I):
        return "ini"
    return "toml"


def config_file(path: Optional[str] = None, root: str = "/"
                ) -> Tuple[Optional[str], Optional[str]]:
    """(file, format) of PATH, or of the first source found; (None, None)
    when there is none. Every source is read: see read_sources."""
    if path is None:
        found = found_configs(root)
        if not found:
            return None, None
        path = found[0]
    return path, detect_format(path)


@frozen_record
class Source:
    """One configuration file found on the search path."""

    path: str
    fmt: str                # a LOADERS key, "" for a file never parsed
    skipped: str = ""       # why it adds nothing; "" when it was read
    also: Tuple[str, ...] = ()  # files it named that were read with it


@frozen_record
class Sources:
    """What read_sources found. ``config`` is None when nothing could be
    parsed at all; with errors it is a best effort for check only."""

    config: Optional[Config]
    errors: Tuple[ErrorRecord, ...]     # run refuses the configuration
    conflicts: Tuple[ErrorRecord, ...]  # run applies the safer value
    files: Tuple[Source, ...]


def _real(path: str) -> str:
    return os.path.realpath(path)


def read_sources(path: Optional[str] = None, root: str = "/") -> Sources:
    """Every source merged (design.md, "Configuration"), or PATH alone."""
    candidates = [path] if path is not None else found_configs(root)
    records: List[ErrorRecord] = []
    configs: List[Config] = []
    files: List[Source] = []
    listed: set = set()     # JSON files a plugin host file read
    script_plugin = under_root(SCRIPT_PLUGIN_PATH, root)
    for cand in candidates:
        fmt = detect_format(cand)
        if path is None and cand == script_plugin and _real(cand) in listed:
            files.append(Source(cand, fmt, "read through the plugin host "
                                "file, which lists it"))
            continue
        mine: List[ErrorRecord] = []
        config = LOADERS[fmt](cand, mine, root)
        if fmt == "json" and config is not None and any(
                is_extension_wrapper(p) for p in config.plugins):
            files.append(Source(cand, fmt, "Azure-extension mode: it points "
                                "Microsoft's extension at vmsnapshot's own "
                                "wrappers, so it is not a plugin source"))
            continue
        records += mine
        also = tuple(config.sources[1:]) if config is not None else ()
        files.append(Source(cand, fmt, also=also))
        if config is not None:
            configs.append(config)
            listed |= {_real(s) for s in also}
    if path is None:
        files += [Source(p, "", "not a drop-in: only *.toml files in %s are "
                         "read" % under_root(CONF_D, root))
                  for p in drop_ins(root)[1]]
    if not candidates:
        log.info("no configuration file (searched %s): freeze only",
                 ", ".join(under_root(p, root) for p in SEARCH_ORDER[:1]
                           + (CONF_D + "/*.toml",) + SEARCH_ORDER[1:]))
    merged = merge(configs)
    parsed_nothing = bool(records) and not configs
    return Sources(None if parsed_nothing else merged.config,
                   tuple(records) + merged.errors, merged.conflicts,
                   tuple(files))


def validate_config(path: Optional[str] = None, root: str = "/"
                    ) -> Tuple[Optional[Config], List[ErrorRecord]]:
    """The merged configuration and every problem in it, conflicts
    included (for check).

    The Config is None when no source could be read or parsed at all;
    with problems but something parsed it is a best effort (wrong values
    replaced by defaults, broken plugins left out) so check can go on to
    inspect the scripts.  Never run a Config that came with problems.
    No configuration file at all gives the empty Config (freeze only).
    """
    found = read_sources(path, root)
    return found.config, list(found.errors) + list(found.conflicts)


def load_config(path: Optional[str] = None, root: str = "/") -> Config:
    """The validated, merged configuration; raises InvalidConfig (a
    ConfigError carrying IncorrectJSONConfigFile, IncorrectPluginhostFile
    or ConfigConflict for a duplicate plugin name). Disagreeing settings
    are not fatal: the safer value is used and the disagreement logged."""
    found = read_sources(path, root)
    if found.errors or found.config is None:
        raise InvalidConfig(list(found.errors))
    for record in found.conflicts:
        log.warning("%s", record.message)
    return found.config
