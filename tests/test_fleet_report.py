"""The consistency group's report (ansible/plugins/filter/group_report.py):
the group's level is the lowest of the hosts' and never claims more than
happened, whatever subset of hosts answered. Pure function: no Ansible
needed (the playbook's use of it is proven in test_fleet.py)."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "group_report", os.path.join(ROOT, "ansible", "plugins", "filter",
                                 "group_report.py"))
gr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gr)  # type: ignore[union-attr]


def cmd(rc: int, report=None, stderr: str = ""):
    return {"rc": rc, "stdout": json.dumps(report) if report else "",
            "stderr": stderr, "changed": rc == 0}


def rep(level: str, taken: bool = True):
    return {"consistency": level, "snapshot_taken": taken, "errors": []}


SNAP_OK = {"rc": 0, "cmd": ["snap"], "stderr": "", "delta": "0:00:01.5",
           "start": "2026-11-29 22:00:00.0", "end": "2026-11-29 22:00:01.5"}


def host(pre=None, post=None):
    h = {}
    if pre is not None:
        h["vmsnapshot_pre"] = pre
    if post is not None:
        h["vmsnapshot_post"] = post
    return h


def test_lowest_level_of_the_hosts() -> None:
    g = gr.group_report({
        "a": host(cmd(0), cmd(0, rep("application"))),
        "b": host(cmd(0), cmd(0, rep("filesystem")))}, SNAP_OK)
    assert g["level"] == "filesystem" and g["snapshot_taken"] and g["ok"]
    assert g["hosts"]["a"]["consistency"] == "application"
    assert g["hosts"]["a"]["fleet"] == {"pre_rc": 0, "post_rc": 0}
    assert g["snapshot"]["delta"] == "0:00:01.5"


def test_no_snapshot_is_failed_even_if_hosts_say_more() -> None:
    g = gr.group_report({"a": host(cmd(0), cmd(0, rep("application")))},
                        {"rc": 1, "cmd": ["snap"], "stderr": "quota"})
    assert g["level"] == "failed" and not g["snapshot_taken"]
    assert not g["ok"] and "below the required filesystem" in g["problems"][0]
    assert g["snapshot"]["returncode"] == 1 and g["snapshot"]["ran"]


def test_snapshot_skipped_when_a_pre_was_refused() -> None:
    refused = cmd(3, stderr="vmsnapshot pre: Pre-ScriptExecutionFailed (300):"
                            " script exited 7\nvmsnapshot pre: no snapshot")
    g = gr.group_report({"a": host(cmd(0), cmd(3, rep("failed", False))),
                         "b": host(refused, cmd(0))},
                        {"skipped": True, "changed": False})
    assert g["level"] == "failed" and not g["snapshot"]["ran"]
    b = g["hosts"]["b"]
    assert b["consistency"] == "failed"
    assert b["errors"] == [{"name": "Pre-ScriptExecutionFailed", "code": 300,
                            "message": "script exited 7"}]
    assert "refused" in b["fleet"]["note"]


def test_host_unreachable_for_post_after_the_snapshot_is_crash() -> None:
    g = gr.group_report({"a": host(cmd(0), cmd(0, rep("application"))),
                         "b": host(cmd(0))}, SNAP_OK)
    assert g["hosts"]["b"]["consistency"] == "crash"
    assert "watchdog" in g["hosts"]["b"]["fleet"]["note"]
    assert g["level"] == "crash" and not g["ok"]
    assert gr.group_report({"a": host(cmd(0), cmd(0, rep("application"))),
                            "b": host(cmd(0))}, SNAP_OK,
                           "crash")["ok"]


def test_unreachable_results_count_as_absent() -> None:
    g = gr.group_report({"a": host({"unreachable": True, "msg": "ssh"}),
                         "b": host(cmd(0))}, None)
    assert g["hosts"]["a"]["fleet"]["pre_rc"] is None
    assert "unreachable" in g["hosts"]["a"]["fleet"]["note"]
    assert g["level"] == "failed"


def test_a_failed_post_step_fails_the_group_but_keeps_the_level() -> None:
    g = gr.group_report({"a": host(cmd(0), cmd(1, rep("application")))},
                        SNAP_OK)
    assert g["level"] == "application" and not g["ok"]
    assert "post failed on a" in g["problems"][0]


def test_empty_group_is_failed() -> None:
    assert gr.group_report({}, SNAP_OK)["level"] == "failed"


def test_unknown_required_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown level 'best'"):
        gr.group_report({}, SNAP_OK, "best")


def test_levels_agree_with_the_package() -> None:
    from vmsnapshot.cycle import policy
    assert gr.LEVELS == policy.LEVELS
