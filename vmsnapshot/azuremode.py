"""Azure-extension mode: Microsoft's backup extension runs vmsnapshot's
wrappers, named in /etc/azure/VMSnapshotScriptPluginConfig.json.

That JSON is then not a plugin source for vmsnapshot (the wrappers would
call vmsnapshot, which would run the wrappers...): the config loader asks
:func:`is_wrapper_config` and skips a file it says yes to.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

AZURE_JSON = "/etc/azure/VMSnapshotScriptPluginConfig.json"
INSTALLED_ADAPTERS = "/usr/share/vmsnapshot/adapters"
PLUGIN_NAME = "vmsnapshot"


def adapters_dir() -> str:
    """Where the adapters are; VMSNAPSHOT_ADAPTERS (the variable the
    wrappers read too) points a test at a work tree."""
    return os.environ.get("VMSNAPSHOT_ADAPTERS") or INSTALLED_ADAPTERS


def wrapper_paths(base: str = "") -> "tuple[str, str]":
    base = base or adapters_dir()
    return (os.path.join(base, "azure", "pre-script.sh"),
            os.path.join(base, "azure", "post-script.sh"))


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and a != "" and (
        a == b or os.path.realpath(a) == os.path.realpath(b))


def is_wrapper_config(data: Mapping[str, Any]) -> bool:
    """True when a parsed script plugin JSON names vmsnapshot's own Azure
    wrappers as both scripts (installed ones, or VMSNAPSHOT_ADAPTERS')."""
    pre, post = data.get("preScriptLocation"), data.get("postScriptLocation")
    for base in {INSTALLED_ADAPTERS, adapters_dir()}:
        want_pre, want_post = wrapper_paths(base)
        if _same(pre, want_pre) and _same(post, want_post):
            return True
    return False
