"""`post`'s side of the split cycle: ask the holder (vmsnapshot.cycle.holder)
to finish and collect its report; else take the report a holder left when
no `post` came in time; else, for a holder that was killed, run the
post-scripts nobody ran and say that nothing vouches for the snapshot."""
from __future__ import annotations

import json
import socket
from dataclasses import replace
from typing import Any, Dict, Optional, Tuple

from vmsnapshot.cycle import detach
from vmsnapshot.cycle import holder
from vmsnapshot.cycle import policy
from vmsnapshot.cycle.outcome import Outcomes, judge
from vmsnapshot.cycle.report import Report
from vmsnapshot.cycle.phases import RunOptions, load_run_config
from vmsnapshot.errors import Catalogue, ErrorRecord, VmsnapshotError
from vmsnapshot.scripts.oneshot import run_phase


def claim_unclaimed() -> Optional[Dict[str, Any]]:
    """The report a holder left when no post came in time, once."""
    try:
        with open(holder.path(holder.UNCLAIMED_NAME), encoding="utf-8") as f:
            data: Dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return None
    holder.forget(holder.UNCLAIMED_NAME)
    return data


def died_holder() -> Optional[Tuple[int, holder.HolderArgs]]:
    """(pid, arguments) of a holder that died without finishing (SIGKILL,
    OOM): its marker is left and no such process exists. Forgets it."""
    try:
        with open(holder.path(holder.MARKER_NAME), encoding="utf-8") as f:
            marker = json.load(f)
        pid, args = int(marker["pid"]), holder.HolderArgs.loads(marker["args"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if detach.running(pid):
        return None                     # alive (busy in its pre phase)
    holder.forget(holder.MARKER_NAME)
    return pid, args


def finish_for_dead_holder(pid: int, args: holder.HolderArgs) -> Report:
    """What `post` does when the holder was killed: its guardian thawed
    and its held scripts saw EOF, but nobody ran the post-scripts; run
    every plugin's (they undo what a pre-script may have done) and say
    that nothing vouches for the snapshot."""
    o = Outcomes(trigger=args.trigger, split=True,
                 agent_froze=args.no_freeze)
    o.config, errors = load_run_config(RunOptions(args.config_path))
    o.config_errors = tuple(errors)
    o.post = tuple(run_phase(o.config.plugins, "post"))
    o.interrupted = ErrorRecord(
        Catalogue.RUN_INTERRUPTED,
        "the holder process (pid %d) died before post; its guardian thawed "
        "what it had frozen" % pid)
    # The agent may have taken its snapshot while the mounts were still
    # frozen, or after the guardian thawed: crash is all one can vouch for.
    return replace(judge(o), consistency=policy.CRASH)


def ask_for_report(failed: bool) -> Optional[Dict[str, Any]]:
    """`post`'s side: tell the holder to finish; its report and summary,
    or None when no holder is listening."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(holder.path(holder.SOCKET_NAME))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    with sock:
        sock.sendall(b"post-failed\n" if failed else b"post\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    if not chunks:
        raise VmsnapshotError(
            "the holder ended without a report (see %s)"
            % holder.path(holder.STATUS_NAME),
            Catalogue.RUN_INTERRUPTED)
    result: Dict[str, Any] = json.loads(b"".join(chunks).decode())
    return result

