"""`vmsnapshot mounts`: every mount, whether a run would freeze it, why not,
and its wave.  Read-only: nothing is opened or frozen."""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

from vmsnapshot import exitstatus, logs
from vmsnapshot.config import FreezeSettings, load_config
from vmsnapshot.errors import VmsnapshotError
from vmsnapshot.mounts.mountinfo import fstype_kind, read_mountinfo
from vmsnapshot.mounts.plan import format_table, plan, to_json

log = logs.get(__name__)


def freeze_settings(config_path: Optional[str]) -> FreezeSettings:
    """The configured include/exclude, so `mounts` shows what `run` would
    freeze; a broken configuration only costs a warning here."""
    try:
        return load_config(config_path).freeze
    except VmsnapshotError as e:
        log.warning("configuration ignored: %s", e.record())
        return FreezeSettings()


def mounts_command(json_output: bool, selected: Sequence[str],
                   exclude: Sequence[str], show_all: bool = True,
                   config_path: Optional[str] = None) -> int:
    settings = freeze_settings(config_path)
    try:
        decisions = plan(read_mountinfo(), selected=selected,
                         include=settings.include,
                         exclude=list(settings.exclude) + list(exclude))
    except VmsnapshotError as e:
        print("vmsnapshot: %s" % e.record(), file=sys.stderr)
        return exitstatus.USAGE
    if not show_all and not selected:
        # proc, sysfs, cgroup...: a dozen rows that never matter here.
        decisions = [d for d in decisions
                     if fstype_kind(d.info.fstype) != "pseudo filesystem"]
    if json_output:
        print(json.dumps(to_json(decisions), indent=2))
    else:
        sys.stdout.write(format_table(decisions))
    return exitstatus.OK
