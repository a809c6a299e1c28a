"""`vmsnapshot run`: the whole cycle, then the report and the exit status."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

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
    """Status file, stdout, exit status. Everything is thawed by now; a
    full or read-only disk must not cost the report on stdout."""
    status = exitstatus.of_report(report.to_json(), require)
    if status_file:
        try:
            write_status_file(report, status_file)
        except OSError as e:
            log.error("could not write the status file %s: %s",
                      status_file, e.strerror or e)
            status = status or exitstatus.NOT_CONSISTENT
    out = report.dumps() if json_output else report.summary()
    try:
        print(out, flush=True)
    except OSError as e:
        log.error("could not print the report: %s", e)
    if json_output:     # the summary on stdout already lists them
        for error in report.errors:
            log.warning("%s", error)
    return status
