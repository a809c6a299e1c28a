"""`vmsnapshot run`: the whole cycle, then the report and the exit status."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Sequence

from vmsnapshot import exitstatus, logs
from vmsnapshot.cycle import policy
from vmsnapshot.cycle.whole import RunOptions, run_cycle
from vmsnapshot.errors import Catalogue, ErrorRecord
from vmsnapshot.errtext import error_lines
from vmsnapshot.cycle.report import Report, write_status_file

log = logs.get(__name__)


def run_command(config_path: Optional[str], mounts: Sequence[str],
                exclude: Sequence[str], freeze_timeout: Optional[float],
                json_output: bool, status_file: Optional[str],
                snapshot: Sequence[str],
                require: str = policy.FILESYSTEM) -> int:
    report = run_cycle(RunOptions(config_path, tuple(mounts), tuple(exclude),
                                  freeze_timeout, tuple(snapshot)))
    status = deliver(report, json_output, status_file, require)
    from vmsnapshot.results import publish    # after the thaw, never before
    publish(report.to_json())
    return status


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
    if json_output and report["errors"]:   # the summary already lists them
        log.warning("%s", "\n".join(error_lines(
            [ErrorRecord(Catalogue.by_name(e["name"]), e["message"])
             for e in report["errors"]])))
    return status
