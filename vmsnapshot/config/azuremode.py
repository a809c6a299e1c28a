"""Azure-extension mode as `vmsnapshot azure enable` writes it: Microsoft's
backup extension runs vmsnapshot's wrappers, named in
/etc/azure/VMSnapshotScriptPluginConfig.json.

The config loaders recognise that JSON through
vmsnapshot.config.azuremark (either script a wrapper: not a plugin source);
this module answers the stricter question enable/disable ask of the raw
file: does it name both wrappers, i.e. is the mode on?
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Tuple

from vmsnapshot.config.azuremark import ADAPTERS_ENV, wrapper_dirs

AZURE_JSON = "/etc/azure/VMSnapshotScriptPluginConfig.json"
PLUGIN_NAME = "vmsnapshot"
PRE, POST = "pre-script.sh", "post-script.sh"


def wrapper_paths() -> Tuple[str, str]:
    """The wrappers enable writes into the JSON: the installed ones, or a
    work tree's when VMSNAPSHOT_ADAPTERS points there (tests)."""
    directory = wrapper_dirs()[-1] if os.environ.get(ADAPTERS_ENV) \
        else wrapper_dirs()[0]
    return os.path.join(directory, PRE), os.path.join(directory, POST)


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and a != "" and (
        os.path.normpath(a) == b or os.path.realpath(a) == os.path.realpath(b))


def is_wrapper_config(data: Mapping[str, Any]) -> bool:
    """True when a parsed script plugin JSON names vmsnapshot's own Azure
    wrappers as both scripts."""
    pre, post = data.get("preScriptLocation"), data.get("postScriptLocation")
    return any(_same(pre, os.path.join(d, PRE)) and
               _same(post, os.path.join(d, POST)) for d in wrapper_dirs())
