"""`vmsnapshot thaw --recover`: thaw what a killed run left frozen.

Only the superblocks listed in the state file are touched, found by device
id in the current mount table, so a remount or a new mount at the same path
since the run is never thawed by mistake.
"""
from __future__ import annotations

import errno
import json
import os
import sys
from typing import Dict, List

from vmsnapshot import freezer, mountinfo, runstate
from vmsnapshot.errors import VmsnapshotError
from vmsnapshot.runlock import RunLock

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_REFUSED = 3


def _recover_one(entry: runstate.FrozenEntry,
                 by_dev: Dict[tuple, List[str]]) -> Dict[str, object]:
    result: Dict[str, object] = {"path": entry.path,
                                 "device": "%d:%d" % (entry.major,
                                                      entry.minor)}
    paths = by_dev.get((entry.major, entry.minor))
    if not paths:
        result.update(action="none", detail="no longer mounted")
        return result
    fd = os.open(paths[0], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        err = freezer.thaw_fd(fd)
    finally:
        os.close(fd)
    if err == 0:
        result.update(action="thawed", detail="thawed at %s" % paths[0])
    elif err == errno.EINVAL:
        # FITHAW on a filesystem that is not frozen: nothing was left.
        result.update(action="none", detail="was not frozen")
    else:
        result.update(action="failed", detail=os.strerror(err))
    return result


def thaw_command(json_output: bool) -> int:
    try:
        with RunLock():
            entries = runstate.read_state()
            if entries is None:
                results: List[Dict[str, object]] = []
            else:
                by_dev: Dict[tuple, List[str]] = {}
                for m in mountinfo.read_mountinfo():
                    by_dev.setdefault(m.dev, []).append(m.mount_point)
                results = [_recover_one(e, by_dev) for e in entries]
                if not any(r["action"] == "failed" for r in results):
                    runstate.clear_state()
    except VmsnapshotError as e:
        print("vmsnapshot: %s" % e.record(), file=sys.stderr)
        return EXIT_REFUSED
    failed = any(r["action"] == "failed" for r in results)
    if json_output:
        print(json.dumps({"recovered": results}, indent=2))
    elif entries is None:
        print("nothing to recover: no state file at %s"
              % runstate.state_path())
    else:
        for r in results:
            print("%-30s %-8s %s" % (r["path"], r["action"], r["detail"]))
    return EXIT_PROBLEMS if failed else EXIT_OK
