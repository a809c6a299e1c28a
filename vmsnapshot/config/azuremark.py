"""The mark of Azure-extension mode: an Azure script plugin JSON whose
scripts are vmsnapshot's own wrappers for Microsoft's backup extension.

Such a JSON tells Microsoft's extension to call vmsnapshot; read as a
plugin source it would make vmsnapshot run the wrappers, which call
vmsnapshot again. So the loaders leave it out (design.md, "Configuration").
"""
from __future__ import annotations

import os
from typing import Optional

from vmsnapshot.config.model import Plugin

# Where the packages install the wrappers (adapters/azure/ in the tree).
WRAPPER_DIR = "/usr/share/vmsnapshot/adapters/azure"
# The wrappers and tests that run them from a work tree look here first.
ADAPTERS_ENV = "VMSNAPSHOT_ADAPTERS"


def wrapper_dirs() -> "tuple[str, ...]":
    dirs = [WRAPPER_DIR]
    override = os.environ.get(ADAPTERS_ENV)
    if override:
        dirs.append(os.path.join(override, "azure"))
    return tuple(dirs)


def _inside(path: str, directory: str) -> bool:
    for p in {os.path.normpath(path), os.path.realpath(path)}:
        for d in {os.path.normpath(directory), os.path.realpath(directory)}:
            if os.path.dirname(p) == d:
                return True
    return False


def is_extension_wrapper(plugin: Optional[Plugin]) -> bool:
    """True when either script of this Azure plugin is one of vmsnapshot's
    wrappers. Either is enough: even a lone wrapper would loop."""
    if plugin is None:
        return False
    scripts = [argv[0] for argv in (plugin.pre, plugin.post) if argv]
    return any(_inside(s, d) for s in scripts for d in wrapper_dirs())
