"""`vmsnapshot mounts`: every mount, whether a run would freeze it, why not,
and its wave.  Read-only: nothing is opened or frozen."""
from __future__ import annotations

import json
import sys
from typing import Sequence

from vmsnapshot.errors import VmsnapshotError
from vmsnapshot.mounts.mountinfo import fstype_kind, read_mountinfo
from vmsnapshot.mounts.plan import format_table, plan, to_json

EXIT_OK = 0
EXIT_USAGE = 2


def mounts_command(json_output: bool, selected: Sequence[str],
                   exclude: Sequence[str], include: Sequence[str] = (),
                   show_all: bool = True) -> int:
    try:
        decisions = plan(read_mountinfo(), selected=selected,
                         include=include, exclude=exclude)
    except VmsnapshotError as e:
        print("vmsnapshot: %s" % e.record(), file=sys.stderr)
        return EXIT_USAGE
    if not show_all and not selected:
        # proc, sysfs, cgroup...: a dozen rows that never matter here.
        decisions = [d for d in decisions
                     if fstype_kind(d.info.fstype) != "pseudo filesystem"]
    if json_output:
        print(json.dumps(to_json(decisions), indent=2))
    else:
        sys.stdout.write(format_table(decisions))
    return EXIT_OK
