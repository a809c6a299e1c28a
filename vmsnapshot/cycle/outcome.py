"""What happened in one run, and the one place that judges it.

The cycle records each step's immutable result in :class:`Outcomes` as it
goes; :func:`judge` turns them into the report once, at the very end, after
the post phase, whatever cut the run short. So the level is computed from
everything (a held pre-script that fails at its release counts), and an
exception cannot throw away the script results already gathered.
"""
from __future__ import annotations

from dataclasses import field, replace
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import datetime

from vmsnapshot.frozenrecord import frozen_record, record
from vmsnapshot.cycle import policy
from vmsnapshot.cycle import meta as runmeta
from vmsnapshot.config.model import Config
from vmsnapshot.errors import Catalogue, ErrorRecord
from vmsnapshot.freeze.presync import PassReport, PresyncReport
from vmsnapshot.cycle.report import FreezeReport, MountReport, Report, SnapshotReport
from vmsnapshot.signames import signal_name

if TYPE_CHECKING:   # one-shot scripts load only when a plugin is configured
    from vmsnapshot.scripts.oneshot import ScriptResult


@frozen_record
class FreezeOutcome:
    """What the freeze phase of `run` did (None in Outcomes when it never
    started). Built from the freeze session's result."""

    mounts: Tuple[MountReport, ...]
    report: FreezeReport
    errors: Tuple[ErrorRecord, ...]
    all_frozen: bool       # every target frozen by this run
    any_frozen: bool       # at least one mount frozen by this run
    thawed_early: bool     # someone else thawed a mount before our thaw
    stopped_early: bool    # a signal cut the freeze short (all undone)


@record
class Outcomes:
    """Filled step by step by the cycle; each field is set once."""

    trigger: str = "run"           # run, hook, pre/post, an adapter's name
    started: datetime.datetime = field(default_factory=runmeta.utcnow)
    config: Config = field(default_factory=Config)
    refused: Optional[ErrorRecord] = None      # lock, stale state: nothing ran
    config_errors: Tuple[ErrorRecord, ...] = ()
    ready: Tuple[Optional[ErrorRecord], ...] = ()   # held hooks' READY wait
    pre: Tuple[ScriptResult, ...] = ()
    proceeded: bool = False        # the policy let freeze + snapshot go ahead
    # `run` only: the mounts it could not open or was told of but skips,
    # the reason no freeze could start, and the freeze itself.
    unopened: Tuple[MountReport, ...] = ()
    open_errors: Tuple[ErrorRecord, ...] = ()
    skipped_named: Tuple[MountReport, ...] = ()
    no_session: Optional[ErrorRecord] = None
    freeze: Optional[FreezeOutcome] = None
    # Split cycle (pre/post, hook): the agent takes the snapshot, and with
    # --no-freeze freezes too. post_in_time: its post came before the
    # deadline; agent_failed: post --failed, no snapshot was taken.
    split: bool = False
    agent_froze: bool = False
    post_in_time: Optional[bool] = None
    agent_failed: bool = False
    snapshot: Optional[SnapshotReport] = None  # None: never reached
    hooks_alive: bool = True       # held hooks alive when the snapshot ended
    released: Tuple[ScriptResult, ...] = ()
    post: Tuple[ScriptResult, ...] = ()
    presync: Tuple[PassReport, ...] = ()   # presync's passes, in order
    interrupted: Optional[ErrorRecord] = None
    internal_error: Optional[str] = None

    @property
    def pre_errors(self) -> List[ErrorRecord]:
        return ([e for e in self.ready if e is not None]
                + [s.error for s in self.pre if s.error is not None])

    def interrupt(self, signum: int, when: str) -> None:
        if self.interrupted is None:
            self.interrupted = ErrorRecord(
                Catalogue.RUN_INTERRUPTED,
                "received %s %s" % (signal_name(signum), when))


def _freeze_enabled(o: Outcomes) -> bool:
    return o.agent_froze or o.config.freeze.enabled


def _freeze_facts(o: Outcomes) -> Tuple[bool, bool, List[ErrorRecord]]:
    """(every selected mount frozen by this run, nobody thawed before the
    snapshot finished, the errors that explain a no)."""
    if o.agent_froze:
        errors = [] if o.post_in_time else [ErrorRecord(
            Catalogue.FS_FREEZE_TIMEOUT,
            "no post within %gs of the pre: the held pre-scripts were "
            "released" % o.config.freeze.timeout)]
        return True, bool(o.post_in_time), errors
    if not o.config.freeze.enabled:
        return True, True, []
    errors = list(o.open_errors)
    if o.no_session is not None:
        errors.append(o.no_session)
    f = o.freeze
    if f is not None:
        errors += f.errors
    if f is None or not f.any_frozen:
        if f is not None and f.report.auto_thawed:
            errors.append(ErrorRecord(
                Catalogue.FS_FREEZE_TIMEOUT,
                "the watchdog fired after %gs, before any mount finished "
                "freezing" % f.report.timeout_s))
        elif not errors and not (f is not None and f.stopped_early):
            # Nothing else explains it: nothing selected, or nothing that
            # can freeze (EOPNOTSUPP is no error of its own).
            errors.append(ErrorRecord(
                Catalogue.NOTHING_FROZEN,
                "freezing is enabled but no selected filesystem was frozen "
                "(%s)" % _why_nothing(o)))
        return False, False, errors
    held = not f.thawed_early and not f.report.auto_thawed
    snap = o.snapshot
    # In a split cycle the snapshot is the agent's, between pre and post:
    # it "finished while frozen" only if post came in time.
    if snap is not None and (snap.command or o.split):
        held = held and snap.finished_while_frozen
    late = (o.split and o.post_in_time is False
            and o.interrupted is None)     # a signal is said as such
    if f.report.auto_thawed or late:   # late: the holder and the
        # watchdog race at the deadline; either way it is the timeout
        held = False
        errors.append(ErrorRecord(
            Catalogue.FS_FREEZE_TIMEOUT,
            "the watchdog thawed after %gs, before the snapshot finished"
            % f.report.timeout_s if not late else
            "no post within %gs of the freeze: thawed at the deadline"
            % f.report.timeout_s))
    return (f.all_frozen and not o.open_errors and o.no_session is None,
            held, errors)


def _why_nothing(o: Outcomes) -> str:
    if o.no_session is not None:
        return "the freeze could not start"
    if o.freeze is None and not o.unopened:
        return "no mount was selected: check [freeze] include / --mount"
    return "every selected mount failed or cannot be frozen"


def _snapshot_errors(snap: Optional[SnapshotReport]) -> List[ErrorRecord]:
    if snap is None or not snap.command or snap.returncode == 0:
        return []
    return [ErrorRecord(Catalogue.SNAPSHOT_COMMAND_FAILED, "%s: %s" % (
        " ".join(snap.command), _exit_text(snap)))]


def _exit_text(snap: SnapshotReport) -> str:
    if snap.killed:
        return "killed: it outlived the watchdog's deadline"
    if snap.returncode is None:
        return "could not be started"
    if snap.returncode < 0:
        return "killed by %s" % signal_name(-snap.returncode)
    return "exit status %d" % snap.returncode


def judge(o: Outcomes) -> Report:
    """The report of the run: errors in the order things happened, and the
    level, computed once from all of it."""
    meta = runmeta.finish(o.trigger, o.started, sources=o.config.sources)
    if o.refused is not None:
        return Report(policy.FAILED, False, (o.refused,), meta=meta)
    pre_errors = o.pre_errors
    errors: List[ErrorRecord] = list(o.config_errors) + pre_errors
    pre = policy.PreOutcome(
        scripts_configured=any(p.pre for p in o.config.plugins),
        scripts_ok=not pre_errors, config_ok=not o.config_errors,
        continue_on_failure=o.config.continue_on_failure,
        freeze_enabled=_freeze_enabled(o))
    level = policy.FAILED
    freeze_report = FreezeReport(o.config.freeze.enabled, None, False,
                                 o.config.freeze.timeout)
    mounts: Sequence[MountReport] = ()
    snapshot_taken = False
    if o.proceeded:
        all_frozen, held, freeze_errors = _freeze_facts(o)
        errors += freeze_errors
        if o.freeze is not None:
            freeze_report = o.freeze.report
            mounts = o.freeze.mounts
        mounts = tuple(mounts) + o.unopened + o.skipped_named
        errors += _snapshot_errors(o.snapshot)
        if o.agent_failed:
            errors.append(ErrorRecord(
                Catalogue.SNAPSHOT_COMMAND_FAILED,
                "the backup agent took no snapshot (post --failed)"))
        if o.split:
            snapshot_taken = bool(o.post_in_time) and not o.agent_failed
        elif o.snapshot is not None:
            snapshot_taken = (bool(o.snapshot.command)
                              and o.snapshot.returncode == 0)
        released_ok = all(r.error is None or r.error in pre_errors
                          for r in o.released)
        stopped = o.freeze is not None and o.freeze.stopped_early
        if o.snapshot is not None and not stopped and not o.agent_failed:
            # Only a run that reached its snapshot has a level above failed.
            level = policy.level(pre, policy.FreezeOutcome(
                all_frozen, held, o.hooks_alive and released_ok))
    if o.interrupted is not None:
        errors.append(o.interrupted)
    errors += [r.error for r in o.released
               if r.error is not None and r.error not in pre_errors]
    errors += [s.error for s in o.post if s.error is not None]
    if o.presync:
        freeze_report = replace(freeze_report, presync=PresyncReport(
            o.config.freeze.presync, o.presync))
    snapshot = o.snapshot if o.snapshot is not None else SnapshotReport()
    if o.freeze is not None and o.freeze.thawed_early:
        # Another process thawed it meanwhile, even if it froze it again.
        snapshot = replace(snapshot, finished_while_frozen=False)
    return Report(level, snapshot_taken, tuple(errors),
                  tuple(o.released) + tuple(o.pre) + tuple(o.post),
                  tuple(mounts), freeze_report, snapshot,
                  internal_error=o.internal_error, meta=meta)
