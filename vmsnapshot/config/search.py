"""Which configuration file is used, in which format, and the two entry
points: ``validate_config`` (every problem, for check) and ``load_config``
(raises on the first problem list, for run)."""
from __future__ import annotations

import importlib
import logging
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

from vmsnapshot.config.model import Config
from vmsnapshot.config.problems import under_root
from vmsnapshot.errors import ConfigError, ErrorRecord

log = logging.getLogger(__name__)

NATIVE_PATH = "/etc/vmsnapshot/vmsnapshot.toml"
PLUGINHOST_PATH = "/etc/azure/VMSnapshotPluginHost.conf"
SCRIPT_PLUGIN_PATH = "/etc/azure/VMSnapshotScriptPluginConfig.json"
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


def _sets_nothing(path: str) -> bool:
    """A native file of only comments and blank lines (the shipped
    template) configures nothing, and must not hide the Azure files an
    admin edits as Azure's documentation says."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return False    # unreadable: the loader reports why
    return all(not line.strip() or line.lstrip().startswith("#")
               for line in text.splitlines())


def found_configs(root: str = "/") -> List[str]:
    """Every file of the search order that exists, first = the one used.
    A dangling symlink counts: it is a mistake to report, not to skip.
    A native file that sets nothing is passed over."""
    found = []
    for p in SEARCH_ORDER:
        path = under_root(p, root)
        if not os.path.lexists(path):
            continue
        if p == NATIVE_PATH and _sets_nothing(path):
            log.info("%s sets nothing: looking further", path)
            continue
        found.append(path)
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
    """(file, format) that would be used; (None, None) when there is none.
    An explicit path is used as given (root only moves the search)."""
    if path is None:
        found = found_configs(root)
        if not found:
            return None, None
        path = found[0]
    return path, detect_format(path)


def validate_config(path: Optional[str] = None, root: str = "/"
                    ) -> Tuple[Optional[Config], List[ErrorRecord]]:
    """The configuration and every problem in it.

    The Config is None when the file could not be read or parsed at all;
    with problems but a parsed file it is a best effort (wrong values
    replaced by defaults, broken plugins left out) so check can go on to
    inspect the scripts.  Never run a Config that came with problems.
    No configuration file at all gives the empty Config (freeze only).
    """
    explicit = path
    path, fmt = config_file(path, root)
    if path is None or fmt is None:
        log.info("no configuration file (searched %s): freeze only",
                 ", ".join(under_root(p, root) for p in SEARCH_ORDER))
        return Config(), []
    records: List[ErrorRecord] = []
    config = LOADERS[fmt](path, records, root)
    if explicit is None:
        used = set(config.sources) if config else {path}
        for other in found_configs(root):
            if other not in used:
                # The classic trap: a packaged vmsnapshot.toml hiding the
                # Azure files the admin just edited.
                log.warning("%s is not used: %s comes first in the search "
                            "order", other, path)
    return config, records


def load_config(path: Optional[str] = None, root: str = "/") -> Config:
    """The validated configuration; raises InvalidConfig (a ConfigError
    carrying IncorrectJSONConfigFile or IncorrectPluginhostFile)."""
    config, records = validate_config(path, root)
    if records or config is None:
        raise InvalidConfig(records)
    return config
