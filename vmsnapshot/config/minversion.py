"""`minimum_version = "X.Y"` in a native file: a fleet can roll out keys
that older agents do not know, and those agents refuse the file by name
instead of guessing (design.md, "Configuration").

Compared with packaging.version, so "0.10" is newer than "0.9" and a
pre-release such as "1.0rc1" is older than "1.0".
"""
from __future__ import annotations

from typing import Any, Dict

import vmsnapshot
from vmsnapshot.config.problems import Problems, describe

KEY = "minimum_version"


def running_version() -> str:
    return vmsnapshot.__version__


def minimum_version_ok(p: Problems, data: Dict[str, Any]) -> bool:
    """False, after recording why, when the file asks for a newer
    vmsnapshot (or says it unreadably): then nothing of the file may be
    used, since its other keys may mean what this version cannot know."""
    if KEY not in data:
        return True
    # Imported only for files that use the key: most runs never pay for it.
    from packaging.version import InvalidVersion, Version
    value = data[KEY]
    if not isinstance(value, str):
        # A TOML float would turn "0.10" into 0.1: demand the quotes.
        p.add((KEY,), "got " + describe(value),
              'a version in quotes, like "0.2"')
        return False
    try:
        wanted = Version(value)
    except InvalidVersion:
        p.add((KEY,), "got %s, not a version" % describe(value),
              'a version like "0.2" or "1.4.1"')
        return False
    running = running_version()
    if Version(running) < wanted:
        p.add((KEY,), "this file requires vmsnapshot %s or later and this "
              "is vmsnapshot %s: the file is refused, none of its plugins "
              "run and none of its settings apply" % (value, running),
              "vmsnapshot upgraded to %s or later on this machine (or the "
              "file kept off machines with an older vmsnapshot)" % value)
        return False
    return True
