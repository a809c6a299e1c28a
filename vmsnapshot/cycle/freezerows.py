"""The freeze session's records as the report's rows and catalogue errors.

What an errno means comes from the one policy table
(vmsnapshot.freeze.errnos); this module only words the rows and decides
which outcome counts against "every mount frozen".
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from vmsnapshot.errors import Catalogue, ErrorRecord
from vmsnapshot.freeze import errnos
from vmsnapshot.freeze.result import SessionResult, TargetResult, Unopened
from vmsnapshot.cycle.outcome import FreezeOutcome
from vmsnapshot.cycle.report import FreezeReport, MountReport


def unopened_rows(unopened: Sequence[Unopened]
                  ) -> Tuple[Tuple[MountReport, ...],
                             Tuple[ErrorRecord, ...]]:
    """Rows and errors for the mounts that could not even be opened."""
    return (tuple(MountReport(u.path, u.fstype, False, error=u.problem,
                              wave=u.wave) for u in unopened),
            tuple(ErrorRecord(Catalogue.UNABLE_TO_OPEN_MOUNT, u.problem)
                  for u in unopened))


def judge_freeze(r: SessionResult) -> FreezeOutcome:
    """The freeze phase's outcome for the report and the level."""
    rows: List[MountReport] = []
    errors: List[ErrorRecord] = []
    all_frozen = True
    thawed_early = False
    for t in r.targets:
        row, errs, counts = _row(t, r.stopped_early)
        rows.append(row)
        errors += errs
        all_frozen = all_frozen and counts
        thawed_early = thawed_early or (t.outcome.frozen
                                        and t.outcome.thawed_early)
    if r.guardian_lost:
        errors.append(ErrorRecord(
            Catalogue.FS_FREEZE_FAILED,
            "the guardian process died during the freeze; everything "
            "was thawed at once"))
    return FreezeOutcome(tuple(rows),
                         FreezeReport(True, r.window_ms, r.fired,
                                      r.timeout_s),
                         tuple(errors), all_frozen,
                         any(row.frozen for row in rows), thawed_early,
                         r.stopped_early)


def _row(t: TargetResult, stopped_early: bool
         ) -> Tuple[MountReport, List[ErrorRecord], bool]:
    """(row, its errors, whether it keeps "every mount frozen" true)."""
    o, errors, counts, error = t.outcome, [], True, None
    if o.state == "failed":
        rule = errnos.freeze_rule(o.freeze_errno)
        error = errnos.freeze_text(t.path, o.freeze_errno)
        if rule.entry is not None:
            # A filesystem that cannot freeze is skipped and said so: it
            # does not count against the others.
            errors.append(ErrorRecord(rule.entry, error))
            counts = False
    elif o.state == "skipped":
        error = ("not attempted: the run was interrupted" if stopped_early
                 else "not attempted: the watchdog fired first")
        counts = False
    elif not o.frozen:
        error = "not frozen (%s)" % o.state
        counts = False
    if o.frozen and o.thawed_early:
        # Our FITHAW then failed with EINVAL or, after a thaw and a
        # refreeze by the same third party, succeeded: either way the
        # snapshot was not taken under our freeze.
        error = ("%s was thawed by another process before the snapshot "
                 "ended" % t.path)
        errors.append(ErrorRecord(Catalogue.THAWED_BY_ANOTHER_PROCESS,
                                  error))
    if errnos.thaw_failed(o.thaw_errno):
        error = errnos.thaw_text(t.path, o.thaw_errno)
        errors.append(ErrorRecord(Catalogue.FS_FREEZE_FAILED, error))
    row = MountReport(t.path, t.fstype, o.frozen,
                      o.freeze_ms if o.frozen else None,
                      o.thaw_ms if o.frozen else None, error, t.wave,
                      o.thawed_by_watchdog)
    return row, errors, counts
