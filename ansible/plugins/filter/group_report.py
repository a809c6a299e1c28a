"""vmsnapshot.fleet.group_report: the consistency group's report.

The playbook hands over each host's variables (hostvars), where
`vmsnapshot_pre` and `vmsnapshot_post` are what its `vmsnapshot pre` and
`vmsnapshot post` returned (registered command results; absent when the
host was unreachable) and the group snapshot command's result; this turns them into
`{"level", "snapshot_taken", "hosts": {NAME: report}, ...}`. The group's
level is the lowest of the hosts' levels and never claims more than
happened: no snapshot is `failed`; a host whose own report is missing after
a snapshot (unreachable for post) counts as `crash`, since nothing vouches
that its freeze held.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional

LEVELS = ("failed", "crash", "filesystem", "application")   # lowest first
_PRE_ERROR = re.compile(r"^vmsnapshot (?:pre|post): (\S+) \((\d+)\): (.*)$")


def level_at_least(level: str, required: str) -> bool:
    """LEVEL is as good as REQUIRED or better (as `--require`)."""
    if required not in LEVELS:
        raise ValueError("unknown level %r (one of %s)"
                         % (required, ", ".join(LEVELS)))
    return level in LEVELS and LEVELS.index(level) >= LEVELS.index(required)


def _result(r: Any) -> Optional[Mapping[str, Any]]:
    """A registered result that ran, or None (unreachable, skipped, absent:
    Ansible hands an undefined or a skipped result over as such)."""
    if not isinstance(r, Mapping) or r.get("skipped") or r.get("unreachable"):
        return None
    return r if "rc" in r else None


def _errors_from(stderr: str) -> List[Dict[str, Any]]:
    found = []
    for line in (stderr or "").splitlines():
        m = _PRE_ERROR.match(line.strip())
        if m:
            found.append({"name": m.group(1), "code": int(m.group(2)),
                          "message": m.group(3)})
    return found


def _post_report(post: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if post is None:
        return None
    try:
        report = json.loads(post.get("stdout") or "")
    except ValueError:
        return None
    if isinstance(report, dict) and report.get("consistency") in LEVELS:
        return report
    return None


def host_report(pre_raw: Any, post_raw: Any, taken: bool) -> Dict[str, Any]:
    """The host's own report from `post --json`, or one made here that
    claims only what the controller knows."""
    pre, post = _result(pre_raw), _result(post_raw)
    fleet: Dict[str, Any] = {
        "pre_rc": None if pre is None else pre["rc"],
        "post_rc": None if post is None else post["rc"]}
    report = _post_report(post)
    if report is not None:
        return dict(report, fleet=fleet)
    if pre is None:
        note = "unreachable (or not run) for vmsnapshot pre"
    elif pre["rc"] != 0:
        note = "vmsnapshot pre refused (exit %d): nothing held" % pre["rc"]
    elif post is None:
        note = ("unreachable for vmsnapshot post: its watchdog thaws at its "
                "deadline; `vmsnapshot post` there later collects its report")
    else:
        note = "vmsnapshot post printed no report (exit %d)" % post["rc"]
    fleet["note"] = note
    errors = _errors_from(pre.get("stderr", "") if pre else "")
    if post is not None:
        errors += _errors_from(post.get("stderr", ""))
    # After a snapshot nothing vouches for this host's freeze: a disk
    # snapshot is crash-consistent at best. Without one: failed.
    return {"consistency": "crash" if taken else "failed",
            "snapshot_taken": taken, "errors": errors, "fleet": fleet}


def group_report(results: Mapping[str, Any], snapshot: Any = None,
                 require: str = "filesystem") -> Dict[str, Any]:
    level_at_least("failed", require)          # validates require
    snap = _result(snapshot)
    taken = snap is not None and snap["rc"] == 0
    hosts = {}
    for name in sorted(results):
        r = results[name] if isinstance(results[name], Mapping) else {}
        hosts[name] = host_report(r.get("vmsnapshot_pre"),
                                  r.get("vmsnapshot_post"), taken)
    levels = [h["consistency"] for h in hosts.values()]
    level = min(levels, key=LEVELS.index) if (taken and levels) else "failed"
    post_failed = sorted(
        n for n, h in hosts.items()
        if taken and h["fleet"]["post_rc"] not in (0, None))
    problems = []
    if not level_at_least(level, require):
        problems.append("level %s is below the required %s" % (level, require))
    if post_failed:
        problems.append("vmsnapshot post failed on %s (a post step failed: "
                        "the application may not have resumed)"
                        % ", ".join(post_failed))
    return {
        "level": level,
        "snapshot_taken": taken,
        "required": require,
        "ok": not problems,
        "problems": problems,
        "snapshot": {
            "ran": snap is not None,
            "command": snapshot.get("cmd")
            if isinstance(snapshot, Mapping) else None,
            "returncode": None if snap is None else snap["rc"],
            # when it ran and how long it took, for the timing rule
            "start": (snap or {}).get("start"),
            "end": (snap or {}).get("end"),
            "delta": (snap or {}).get("delta"),
            "stderr": ((snap or {}).get("stderr") or "")[-2000:]},
        "hosts": hosts,
    }


class FilterModule:
    def filters(self) -> Dict[str, Any]:
        return {"group_report": group_report,
                "level_at_least": level_at_least}
