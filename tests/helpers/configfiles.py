"""Real configuration files and scripts on disk, with real owners and modes,
for the config and check tests."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TEMPLATE_JSON = os.path.join(ROOT, "etc", "azure",
                             "VMSnapshotScriptPluginConfig.json")
TEMPLATE_CONF = os.path.join(ROOT, "etc", "azure", "VMSnapshotPluginHost.conf")
TEMPLATE_TOML = os.path.join(ROOT, "etc", "vmsnapshot", "vmsnapshot.toml")
NOBODY = 65534


def write_file(path: str, text: Any, mode: int = 0o600,
               uid: Optional[int] = None) -> str:
    """Write ``text`` (str or bytes) at ``path`` with ``mode``; parents are
    created root-owned 0755 so script trust checks pass above them."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def write_script(path: str, body: str = "exit 0\n", mode: int = 0o700,
                 uid: Optional[int] = None) -> str:
    return write_file(path, "#!/bin/sh\n" + body, mode, uid)


def template() -> Dict[str, Any]:
    with open(TEMPLATE_JSON) as f:
        return json.load(f)


def azure_json(**overrides: Any) -> str:
    """The Azure template with some keys replaced (None removes a key)."""
    data = template()
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data, indent=4)


def in_root(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))
