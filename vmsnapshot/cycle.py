"""The whole cycle of `vmsnapshot run`, in order: lock, configuration, mount
plan, pre-scripts, freeze, snapshot, thaw, post-scripts, report.

Each phase lives in its own module; this one only orders them and applies
the failure policy, so the sequence can be read top to bottom.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

from vmsnapshot import mountinfo, mounts, policy, presync, runstate
from vmsnapshot.config import load_config
from vmsnapshot.config.model import Config, FreezeSettings
from vmsnapshot.errors import Catalogue, ErrorRecord, VmsnapshotError
from vmsnapshot.freezing import FreezeSession, close_targets, open_targets
from vmsnapshot.heldlog import logs_held_in_memory
from vmsnapshot.held import HeldHook, start_held
from vmsnapshot.report import (FreezeReport, MountReport, Report,
                               SnapshotReport)
from vmsnapshot.runlock import RunLock
from vmsnapshot.scripts import ScriptResult, run_phase
from vmsnapshot.signals import SignalTrap
from vmsnapshot.snapshot import run_snapshot
from vmsnapshot.spawn import signal_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """The command line of `run`."""

    config_path: Optional[str] = None
    mounts: Sequence[str] = ()
    exclude: Sequence[str] = ()
    freeze_timeout: Optional[float] = None
    snapshot: Sequence[str] = ()


def run_cycle(opts: RunOptions) -> Report:
    try:
        with RunLock():
            stale = runstate.read_state()
            if stale is not None:
                raise VmsnapshotError(
                    "the state file %s lists filesystems a killed run froze "
                    "(%s)" % (runstate.state_path(),
                              ", ".join(e.path for e in stale) or "unknown"),
                    Catalogue.STALE_FREEZE_STATE)
            with SignalTrap() as trap:
                return _locked_cycle(opts, trap)
    except VmsnapshotError as e:
        return Report(policy.FAILED, False, [e.record()])


def load_run_config(opts: RunOptions) -> Tuple[Config, List[ErrorRecord]]:
    """A broken configuration runs no script but still freezes with the
    defaults: a filesystem-consistent snapshot beats none."""
    try:
        config = load_config(opts.config_path)
        errors: List[ErrorRecord] = []
    except VmsnapshotError as e:
        config = Config()
        errors = list(getattr(e, "records", ())) or [e.record()]
    settings: FreezeSettings = config.freeze
    if opts.freeze_timeout is not None:
        settings = replace(settings, timeout=opts.freeze_timeout)
    if opts.exclude:
        settings = replace(settings,
                           exclude=tuple(settings.exclude) + tuple(opts.exclude))
    return replace(config, freeze=settings), errors


def _locked_cycle(opts: RunOptions, trap: SignalTrap) -> Report:
    config, errors = load_run_config(opts)
    settings = config.freeze
    decisions = mounts.plan(mountinfo.read_mountinfo(), selected=opts.mounts,
                            include=settings.include,
                            exclude=settings.exclude)
    # Presync's bulk pass, while applications still run (issue 15).
    early = presync.before_pre(settings.presync, decisions, settings.enabled,
                               settings.timeout,
                               any(p.pre for p in config.plugins))

    # Pre phase: held hooks first (they must be READY before the freeze;
    # their deadlines run from their start, so waiting in turn is as fast
    # as waiting in parallel), then the one-shot pre-scripts in parallel.
    held = [start_held(p) for p in config.plugins if p.hold and p.pre]
    held_errors = [e for e in (h.wait_ready() for h in held) if e is not None]
    scripts = run_phase(config.plugins, "pre")
    pre_errors = held_errors + [s.error for s in scripts if s.error]
    pre = policy.PreOutcome(
        scripts_configured=any(p.pre for p in config.plugins),
        scripts_ok=not pre_errors,
        config_ok=not errors,
        continue_on_failure=config.continue_on_failure,
        freeze_enabled=settings.enabled)

    report = Report(policy.FAILED, False, errors + pre_errors)
    report.freeze = replace(report.freeze, presync=presync.PresyncReport(
        settings.presync, (early,)))
    try:
        if trap.received:
            report.errors.append(_interrupted(trap, "before the freeze"))
        elif policy.may_proceed(pre):
            _freeze_and_snapshot(opts, settings, decisions, pre, held, trap,
                                 report, early)
    finally:
        post_phase(config, held, held_errors, scripts, report)
    return report


def post_phase(config: Config, held: Sequence[HeldHook],
               held_errors: List[ErrorRecord], scripts: List[ScriptResult],
               report: Report) -> None:
    # Post phase, after the thaw: release held hooks, then post-scripts of
    # every plugin whose pre-script ran (also when it failed).
    released = [hook.release() for hook in held]
    report.errors += [r.error for r in released
                      if r.error is not None and r.error not in held_errors]
    ran = {s.plugin for s in scripts + released if s.attempts > 0}
    post = run_phase(
        [p for p in config.plugins if p.name in ran or not p.pre], "post")
    report.scripts = released + scripts + post
    report.errors += [s.error for s in post if s.error is not None]


def _freeze_and_snapshot(opts: RunOptions, settings: FreezeSettings,
                         decisions: Sequence[mounts.MountDecision],
                         pre: policy.PreOutcome, held: Sequence[HeldHook],
                         trap: SignalTrap, report: Report,
                         early: Optional[presync.PassReport] = None) -> None:
    all_frozen = True
    held_through = True
    session: Optional[FreezeSession] = None
    targets = []
    if settings.enabled:
        targets, report.mounts, open_errors = open_targets(decisions)
        report.mounts += _named_but_not_frozen(decisions, opts.mounts)
        report.errors += open_errors
        all_frozen = not open_errors
    try:
        if targets:
            try:
                session = FreezeSession(targets, settings.timeout,
                                        settings.presync, early)
            except VmsnapshotError as e:
                # No freeze is possible (module missing, guardian not
                # started, guard refusal): a crash-consistent snapshot
                # still beats none, and the report says so.
                report.errors.append(e.record())
                all_frozen = False
        with logs_held_in_memory():
            if session is not None:
                session.freeze()
            report.snapshot = run_snapshot(opts.snapshot, session, trap)
            hooks_held = all(h.alive() for h in held)
            if session is not None:
                session.thaw()
    finally:
        if session is not None:
            session.close()
        close_targets(targets)

    if session is not None:
        mount_reports, report.freeze, freeze_errors, frozen = session.report()
        report.freeze = replace(report.freeze, presync=presync.PresyncReport(
            settings.presync, tuple(p for p in (early, session.presync_pass)
                                    if p is not None)))
        report.mounts = mount_reports + report.mounts
        report.errors += freeze_errors
        all_frozen = all_frozen and frozen
        held_through = report.snapshot.finished_while_frozen or (
            not opts.snapshot and not report.freeze.auto_thawed)
        if report.freeze.auto_thawed:
            report.errors.append(ErrorRecord(
                Catalogue.FS_FREEZE_TIMEOUT,
                "the watchdog thawed after %gs, before the snapshot "
                "finished" % settings.timeout))
    else:
        report.freeze = FreezeReport(
            settings.enabled, None, False, settings.timeout,
            presync.PresyncReport(settings.presync,
                                  (early,) if early else ()))
    snap = report.snapshot
    report.snapshot_taken = bool(opts.snapshot) and snap.returncode == 0
    if opts.snapshot and snap.returncode != 0:
        report.errors.append(ErrorRecord(
            Catalogue.SNAPSHOT_COMMAND_FAILED,
            "%s: %s" % (" ".join(opts.snapshot), _exit_text(snap))))
    if trap.received:
        report.errors.append(_interrupted(trap, "while frozen"))
    report.consistency = policy.level(
        pre, policy.FreezeOutcome(all_frozen, held_through, hooks_held))


def _named_but_not_frozen(decisions: Sequence[mounts.MountDecision],
                          selected: Sequence[str]) -> List[MountReport]:
    """A --mount that is not frozen (pseudo, read-only, excluded...) is
    listed with the reason, so the report never hides it. One that shares
    a frozen superblock is covered by that freeze and not repeated."""
    named = {os.path.realpath(p) for p in selected}
    return [MountReport(d.info.mount_point, d.info.fstype, False,
                        error="not frozen: %s" % d.reason)
            for d in decisions
            if d.info.mount_point in named and not d.freeze and d.reason
            and not d.reason.startswith("same superblock")]


def _exit_text(snap: SnapshotReport) -> str:
    if snap.killed:
        return "killed: it outlived the watchdog's deadline"
    if snap.returncode is None:
        return "could not be started"
    if snap.returncode < 0:
        return "killed by %s" % signal_name(-snap.returncode)
    return "exit status %d" % snap.returncode


def _interrupted(trap: SignalTrap, when: str) -> ErrorRecord:
    return ErrorRecord(Catalogue.RUN_INTERRUPTED,
                       "received %s %s" % (trap.name, when))
