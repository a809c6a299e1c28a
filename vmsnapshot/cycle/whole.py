"""The whole cycle of `vmsnapshot run` in one process, in order: lock,
configuration, mount plan, pre-scripts, freeze, snapshot, thaw,
post-scripts, report.

The steps live in phases.py (shared with the split cycle's holder); this
module only orders them and applies the failure policy, so the sequence can
be read top to bottom. vmsnapshot.cycle.outcome.judge makes the report from
the Outcomes record once, after the post phase, even when a bug cut the
run short.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence

from vmsnapshot.cycle.frozenlog import logs_held_in_memory
from vmsnapshot.cycle.lock import RunLock
from vmsnapshot.cycle.outcome import Outcomes, judge
from vmsnapshot.cycle.phases import (FreezeStep, RunOptions, load_run_config,
                                     plan_mounts, post_phase, pre_phase)
from vmsnapshot.cycle.report import Report
from vmsnapshot.cycle.signals import SignalTrap
from vmsnapshot.cycle.snapshot import prepare, run_snapshot
from vmsnapshot.errors import Catalogue, VmsnapshotError
from vmsnapshot.freeze import state
from vmsnapshot.mounts import plan

if TYPE_CHECKING:
    from vmsnapshot.scripts.held import HeldHook

__all__ = ["RunOptions", "run_cycle"]


def run_cycle(opts: RunOptions) -> Report:
    o = Outcomes()
    try:
        with RunLock():
            stale = state.read_state()
            if stale is not None:
                raise VmsnapshotError(
                    "the state file %s lists filesystems a killed run froze "
                    "(%s)" % (state.state_path(),
                              ", ".join(e.path for e in stale) or "unknown"),
                    Catalogue.STALE_FREEZE_STATE)
            with SignalTrap() as trap:
                _locked_cycle(opts, trap, o)
    except VmsnapshotError as e:
        o.refused = e.record()
    except Exception as e:  # a bug: keep what was gathered, log the rest
        # Everything is thawed by now (the finally blocks ran).
        from vmsnapshot.results import internal_error
        internal_error(e, "the run")
        o.internal_error = "%s: %s" % (type(e).__name__, e)
    return judge(o)


def _locked_cycle(opts: RunOptions, trap: SignalTrap, o: Outcomes) -> None:
    o.config, errors = load_run_config(opts)
    o.config_errors = tuple(errors)
    decisions = plan_mounts(opts.mounts, o)
    held: List[HeldHook] = []
    try:
        held = pre_phase(o.config, trap, o)
        if o.proceeded:
            _freeze_and_snapshot(opts, decisions, held, trap, o)
    finally:
        post_phase(o.config, held, o)


def _freeze_and_snapshot(opts: RunOptions,
                         decisions: Sequence[plan.MountDecision],
                         held: Sequence[HeldHook], trap: SignalTrap,
                         o: Outcomes) -> None:
    step = FreezeStep(decisions, opts.mounts, o)
    prepare(opts.snapshot)      # every import before the first FIFREEZE
    try:
        with logs_held_in_memory():
            step.start(trap)
            if trap.received:
                o.interrupt(trap.received, "during the freeze")
            else:
                o.snapshot = run_snapshot(opts.snapshot, step.session, trap)
                o.hooks_alive = all(h.alive() for h in held)
                if trap.received:
                    o.interrupt(trap.received, "while frozen")
            step.thaw()
    finally:
        step.finish()
