"""`vmsnapshot run`: the whole cycle, then the report and the exit status."""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Optional, Sequence

from vmsnapshot import exitstatus, policy
from vmsnapshot.cycle import RunOptions, run_cycle
from vmsnapshot.report import Report, write_status_file

log = logging.getLogger(__name__)


def run_command(config_path: Optional[str], mounts: Sequence[str],
                exclude: Sequence[str], freeze_timeout: Optional[float],
                json_output: bool, status_file: Optional[str],
                snapshot: Sequence[str],
                require: str = policy.FILESYSTEM) -> int:
    report = run_cycle(RunOptions(config_path, tuple(mounts), tuple(exclude),
                                  freeze_timeout, tuple(snapshot)))
    return deliver(report, json_output, status_file, require)


def deliver(report: Report, json_output: bool, status_file: Optional[str],
            require: str) -> int:
    return deliver_json({"report": report.to_json(),
                         "summary": report.summary()},
                        json_output, status_file, require)


def deliver_json(data: Dict[str, Any], json_output: bool,
                 status_file: Optional[str], require: str) -> int:
    """Status file, stdout, exit status, from a report's JSON and summary
    (`post` gets them from the holder). Everything is thawed by now; a
    full or read-only disk must not cost the report on stdout."""
    report = data["report"]
    status = exitstatus.of_report(report, require)
    if status_file:
        try:
            write_status_file(report, status_file)
        except OSError as e:
            log.error("could not write the status file %s: %s",
                      status_file, e.strerror or e)
            status = status or exitstatus.NOT_CONSISTENT
    try:
        print(json.dumps(report, indent=2) if json_output
              else data["summary"], flush=True)
    except OSError as e:
        log.error("could not print the report: %s", e)
    if json_output:     # the summary on stdout already lists them
        for error in report["errors"]:
            log.warning("%s (%d): %s", error["name"], error["code"],
                        error["message"])
    return status
