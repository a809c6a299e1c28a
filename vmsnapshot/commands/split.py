"""`vmsnapshot pre` and `vmsnapshot post`: the split cycle, for backup
agents that take the snapshot themselves between two calls (VMware Tools,
Google's and AWS's agents, Veeam, Azure's extension, qemu-ga's hook).

`pre` starts the holder (vmsnapshot.cycle.holder) and returns once it says
whether the snapshot may be taken: 0 yes, 3 no (everything already
undone). `post` asks the holder to thaw, release and run the post phase,
and prints its report; exit status as for `run`.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

from vmsnapshot import exitstatus, logs
from vmsnapshot.cycle import collect
from vmsnapshot.cycle import detach
from vmsnapshot.cycle import holder
from vmsnapshot.cycle import policy
from vmsnapshot.commands.run import deliver_json
from vmsnapshot.errors import VmsnapshotError
from vmsnapshot.rundir import run_dir

log = logs.get(__name__)

# How long `pre` waits for a started holder to connect back.
START_TIMEOUT_S = 30.0


def pre_command(config_path: Optional[str], mounts: Sequence[str],
                exclude: Sequence[str], freeze_timeout: Optional[float],
                no_freeze: bool, trigger: str = "pre/post") -> int:
    args = holder.HolderArgs(config_path, tuple(mounts), tuple(exclude),
                             freeze_timeout, no_freeze, trigger)
    token = secrets.token_hex(6)
    os.makedirs(run_dir(), mode=0o700, exist_ok=True)
    notify_path = os.path.join(run_dir(), "pre-%s.sock" % token)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(notify_path)
        listener.listen(1)
        detach.start_holder(args.dumps(), notify_path,
                            "vmsnapshot-holder-%s" % token,
                            lambda: holder.hold(args, notify_path))
        listener.settimeout(START_TIMEOUT_S)
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            print("vmsnapshot pre: the holder did not start within %gs"
                  % START_TIMEOUT_S, file=sys.stderr)
            return exitstatus.FAILED
    finally:
        listener.close()
        os.unlink(notify_path)
    with conn:
        conn.settimeout(None)   # the pre phase and freeze take their time
        data = b"".join(iter(lambda: conn.recv(65536), b""))
    if not data:
        print("vmsnapshot pre: the holder ended before it could answer "
              "(see %s)" % holder.path(holder.STATUS_NAME), file=sys.stderr)
        return exitstatus.FAILED
    outcome = json.loads(data.decode())
    for error in outcome["errors"]:
        print("vmsnapshot pre: %s (%d): %s" % (
            error["name"], error["code"], error["message"]), file=sys.stderr)
    if not outcome["proceed"]:
        print("vmsnapshot pre: no snapshot may be taken (errors above); "
              "everything was undone", file=sys.stderr)
        return exitstatus.FAILED
    return exitstatus.OK


def _died(dead: Optional[Tuple[int, holder.HolderArgs]]
          ) -> Optional[Dict[str, Any]]:
    if dead is None:
        return None
    print("vmsnapshot post: the holder died before this post; running the "
          "post-scripts", file=sys.stderr)
    report = collect.finish_for_dead_holder(*dead)
    detach.sweep_dead_holders()
    from vmsnapshot.results import publish
    publish(report.to_json())
    return {"report": report.to_json(), "summary": report.summary()}


def post_command(failed: bool, require: str = policy.FILESYSTEM,
                 json_output: bool = False, status_file: Optional[str] = None,
                 lenient: bool = False) -> int:
    """lenient: with nothing to finish, exit 0 (qemu-ga's thaw hook runs
    even when its freeze hook refused)."""
    try:
        data = collect.ask_for_report(failed)
    except VmsnapshotError as e:
        print("vmsnapshot post: %s" % e.record(), file=sys.stderr)
        return exitstatus.NOT_CONSISTENT
    if data is None:
        data = collect.claim_unclaimed() or _died(collect.died_holder())
        if data is None:
            print("vmsnapshot post: no `vmsnapshot pre` is holding anything "
                  "(none ran, it was refused, or a post already finished it;"
                  " the last report is %s)" % holder.path(holder.STATUS_NAME),
                  file=sys.stderr)
            return exitstatus.OK if (lenient or failed) else exitstatus.FAILED
        print("vmsnapshot post: the holder gave up at its deadline, before "
              "this post; its report:", file=sys.stderr)
    return deliver_json(data, json_output, status_file, require)
