"""`vmsnapshot run`: the whole cycle, then the report and the exit status."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from vmsnapshot import runmeta
from vmsnapshot.cycle import RunOptions, run_cycle
from vmsnapshot.errors import Catalogue
from vmsnapshot.errtext import error_lines
from vmsnapshot.report import Report, write_status_file

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_CONSISTENT = 1   # crash level, or the snapshot command failed
EXIT_FAILED = 3           # the policy (or a refusal) stopped the run

# Errors that make the exit status non-zero even at a good level: the
# snapshot the agent asked for does not exist or was cut short.
_FATAL = (Catalogue.SNAPSHOT_COMMAND_FAILED, Catalogue.RUN_INTERRUPTED)


def exit_status(report: Report, require: str = "filesystem") -> int:
    # 0 only at --require or better (design.md); the lead reconciles.
    order = ("failed", "crash", "filesystem", "application")
    if report.consistency == "failed":
        return EXIT_FAILED
    if any(e.entry in _FATAL for e in report.errors):
        return EXIT_NOT_CONSISTENT
    if order.index(report.consistency) < order.index(require):
        return EXIT_NOT_CONSISTENT
    return EXIT_OK


def run_command(config_path: Optional[str], mounts: Sequence[str],
                exclude: Sequence[str], freeze_timeout: Optional[float],
                json_output: bool, status_file: Optional[str],
                snapshot: Sequence[str], require: str = "filesystem") -> int:
    started = runmeta.utcnow()
    report = run_cycle(RunOptions(config_path, tuple(mounts), tuple(exclude),
                                  freeze_timeout, tuple(snapshot)))
    report.meta = runmeta.finish("run", started, config_path)
    status = exit_status(report, require)
    # Everything is thawed by now; a full or read-only disk must not cost
    # the report on stdout.
    if status_file:
        try:
            write_status_file(report, status_file)
        except OSError as e:
            log.error("could not write the status file %s: %s",
                      status_file, e.strerror or e)
            status = status or EXIT_NOT_CONSISTENT
    out = report.dumps() if json_output else report.summary()
    try:
        print(out, flush=True)
    except OSError as e:
        log.error("could not print the report: %s", e)
    if json_output:     # the summary on stdout already lists them
        if report.errors:
            log.warning("%s", "\n".join(error_lines(report.errors)))
    from vmsnapshot.results import publish    # after the thaw, never before
    publish(report.to_json())
    return status
