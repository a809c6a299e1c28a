"""The environment every script, held hook and snapshot command gets:
minimal and fixed, so nothing leaks from whoever called vmsnapshot (a
backup agent's PATH, proxies, locale) into programs run as root."""
from __future__ import annotations

import pwd
from typing import Dict, Mapping, Optional

SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _root_home() -> str:
    try:
        return pwd.getpwuid(0).pw_dir or "/root"
    except KeyError:
        return "/root"


ROOT_HOME = _root_home()


def clean_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The minimal environment scripts get (nothing leaks from the caller)."""
    env = {"PATH": SCRIPT_PATH, "LANG": "C.UTF-8", "HOME": ROOT_HOME}
    env.update(extra or {})
    return env
