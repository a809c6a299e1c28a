"""Validated configuration records.

Every loader (Azure JSON, Azure plugin host INI, native TOML) produces these,
so nothing downstream knows which format a setting came from.
"""
from __future__ import annotations

import math
from dataclasses import field
from typing import Any, Optional, Tuple

from vmsnapshot.frozenrecord import frozen_record

DEFAULT_FREEZE_TIMEOUT = 60.0
DEFAULT_SCRIPT_TIMEOUT = 60.0
# A freeze longer than Proxmox's own limit (an hour) hangs every writer of
# the machine for longer than any backup agent waits; past it is a typo.
MAX_FREEZE_TIMEOUT = 3600.0


def freeze_timeout_problem(value: float) -> Optional[str]:
    """Why VALUE is not a usable watchdog deadline, or None. One rule for
    --freeze-timeout and [freeze] timeout: finite, above 0, at most an
    hour."""
    if not (math.isfinite(value) and 0 < value <= MAX_FREEZE_TIMEOUT):
        return ("must be a number of seconds above 0 and at most %g, not %s"
                % (MAX_FREEZE_TIMEOUT, value))
    return None


@frozen_record
class Plugin:
    """One application: its pre and post commands and their limits."""

    name: str
    pre: Optional[Tuple[str, ...]]    # argv; argv[0] is the script path
    post: Optional[Tuple[str, ...]]
    timeout: float = DEFAULT_SCRIPT_TIMEOUT  # per script, all attempts
    pre_retries: int = 0              # 0 = one attempt
    post_retries: int = 0
    hold: bool = False                # pre stays running until post phase
    source: str = ""                  # the file it came from, for messages
    plugin_path: str = ""             # Azure pluginPath<i>: recorded only
    # "file -> key" that defined it, for check; not part of its identity.
    origin: str = field(default="", compare=False)


@frozen_record
class Setting:
    """One setting a source gave explicitly (a default is not a Setting),
    so sources can be merged and check can say where a value came from."""

    key: str        # native spelling: "freeze.timeout"
    value: Any
    origin: str     # "file -> freeze -> timeout", "file -> fsFreezeEnabled"


@frozen_record
class FreezeSettings:
    """The [freeze] table."""

    enabled: bool = True
    timeout: float = DEFAULT_FREEZE_TIMEOUT
    include: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()
    presync: str = "auto"           # "auto" | "true" | "false"


@frozen_record
class Config:
    """Everything the configuration sources say, merged."""

    freeze: FreezeSettings = field(default_factory=FreezeSettings)
    continue_on_failure: bool = True
    plugins: Tuple[Plugin, ...] = ()
    sources: Tuple[str, ...] = ()     # files read, in order
    # What the sources set explicitly, in source order (config/merge.py).
    settings: Tuple[Setting, ...] = field(default=(), compare=False)
