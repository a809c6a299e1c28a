"""`vmsnapshot thaw --recover`: thaw what a killed run left frozen, under
the run lock (the algorithm is vmsnapshot.freeze.recover)."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

from vmsnapshot import exitstatus
from vmsnapshot.cycle.lock import RunLock
from vmsnapshot.errors import VmsnapshotError
from vmsnapshot.freeze import state
from vmsnapshot.freeze.recover import Recovery, recover


USAGE = """\
vmsnapshot thaw: nothing done. 'vmsnapshot thaw --recover' thaws what a
killed vmsnapshot run left frozen (its state file in /run/vmsnapshot), and
only that. A run that ends normally thaws by itself; to thaw a freeze made
by another program, use 'fsfreeze -u MOUNTPOINT'."""


def thaw_command(recover_asked: bool, json_output: bool) -> int:
    if not recover_asked:
        print(USAGE, file=sys.stderr)
        return exitstatus.USAGE
    entries: Optional[List[state.FrozenEntry]] = None
    results: List[Recovery] = []
    try:
        with RunLock():     # never while a run may be freezing
            entries = state.read_state()
            if entries is not None:
                results = recover(entries)
    except VmsnapshotError as e:
        print("vmsnapshot: %s" % e.record(), file=sys.stderr)
        return exitstatus.FAILED
    if json_output:
        print(json.dumps({"recovered": [r.to_json() for r in results]},
                         indent=2))
    elif entries is None:
        print("nothing to recover: no state file at %s"
              % state.state_path())
    else:
        for r in results:
            print("%-30s %-11s %s" % (r.path, r.action, r.detail))
    return exitstatus.PROBLEMS if any(r.keep for r in results) \
        else exitstatus.OK
