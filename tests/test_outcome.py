"""The one place that judges a run (vmsnapshot.cycle.outcome): a property test
over every combination of script, freeze, release and snapshot outcomes
against the rules of design.md ("Consistency levels"), and a run cut short
by an exception, which must keep its report and leave nothing behind."""
from __future__ import annotations

import os
from typing import List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.configfiles import write_file, write_script
from tests.helpers.loopfs import is_frozen
from tests.helpers.scripts import make_dir
from vmsnapshot.cycle import policy
from vmsnapshot.freeze import state
from vmsnapshot.config.model import Config, FreezeSettings, Plugin
from vmsnapshot.errors import Catalogue, ErrorRecord
from vmsnapshot.cycle.outcome import FreezeOutcome, Outcomes, judge
from vmsnapshot.cycle.report import FreezeReport, MountReport, SnapshotReport
from vmsnapshot.scripts.oneshot import ScriptResult

RANK = {lvl: i for i, lvl in enumerate(policy.LEVELS)}
FAIL = ErrorRecord(Catalogue.PRE_SCRIPT_EXECUTION_FAILED, "exit 1")


def script(plugin: str, phase: str, ok: bool) -> ScriptResult:
    return ScriptResult(plugin, phase, "/x", 1, 0 if ok else 1, False, 1.0,
                        None if ok else FAIL, ())


@st.composite
def outcomes(draw) -> Outcomes:
    n = draw(st.integers(0, 3))
    held = [draw(st.booleans()) for _ in range(n)]
    plugins = tuple(Plugin("p%d" % i, ("/pre",), ("/post",), hold=h)
                    for i, h in enumerate(held))
    enabled = draw(st.booleans())
    config = Config(FreezeSettings(enabled=enabled, timeout=5),
                    draw(st.booleans()), plugins)
    o = Outcomes(config=config)
    if draw(st.booleans()):
        o.config_errors = (ErrorRecord(Catalogue.INCORRECT_JSON_CONFIG_FILE,
                                       "bad"),)
    o.ready = tuple(None if draw(st.booleans()) else FAIL
                    for p in plugins if p.hold)
    o.pre = tuple(script(p.name, "pre", draw(st.booleans()))
                  for p in plugins if not p.hold)
    o.proceeded = draw(st.booleans())
    if not o.proceeded:
        return o
    if enabled:
        kind = draw(st.sampled_from(
            ["frozen", "ebusy", "eopnotsupp", "watchdog", "foreign_thaw",
             "nothing_selected", "no_session", "unopened", "stopped"]))
        frozen = kind not in ("nothing_selected", "no_session", "stopped")
        others = draw(st.booleans())   # other mounts frozen alongside
        if kind == "nothing_selected":
            o.freeze = None
        elif kind == "no_session":
            o.no_session = ErrorRecord(Catalogue.FREEZE_MODULE_MISSING, "x")
        else:
            failed = kind in ("ebusy", "eopnotsupp")
            mounts = (MountReport("/a", "ext4", not failed),)
            errors = ((ErrorRecord(Catalogue.FROZEN_BY_ANOTHER_PROCESS,
                                   "busy"),) if kind == "ebusy" else ())
            o.freeze = FreezeOutcome(
                mounts, FreezeReport(True, 1.0, kind == "watchdog", 5),
                errors, all_frozen=kind not in ("ebusy", "stopped")
                and not (kind == "eopnotsupp" and not others),
                any_frozen=(frozen and not failed) or others,
                thawed_early=kind == "foreign_thaw",
                stopped_early=kind == "stopped")
            if kind == "unopened":
                o.unopened = (MountReport("/b", "xfs", False, error="x"),)
                o.open_errors = (ErrorRecord(Catalogue.UNABLE_TO_OPEN_MOUNT,
                                             "x"),)
    if draw(st.booleans()):
        command = ("snap",) if draw(st.booleans()) else ()
        o.snapshot = SnapshotReport(command, draw(st.sampled_from([0, 1])),
                                    1.0, draw(st.booleans()))
    o.hooks_alive = draw(st.booleans())
    o.released = tuple(script(p.name, "pre", draw(st.booleans()))
                       for p in plugins if p.hold)
    o.post = tuple(script(p.name, "post", draw(st.booleans()))
                   for p in plugins)
    return o


def bound(o: Outcomes) -> str:
    """The highest level design.md allows, written from the raw outcomes
    independently of vmsnapshot.cycle.outcome."""
    f = o.freeze
    if (not o.proceeded or o.snapshot is None
            or (f is not None and f.stopped_early)):
        return policy.FAILED
    best = policy.APPLICATION
    enabled = o.config.freeze.enabled
    if enabled:
        held = (f is not None and f.any_frozen and f.all_frozen
                and not o.unopened and o.no_session is None
                and not f.thawed_early and not f.report.auto_thawed
                and (not o.snapshot.command
                     or o.snapshot.finished_while_frozen))
        if not held:
            return policy.CRASH
    quiesced = (any(p.pre for p in o.config.plugins)
                and not o.config_errors
                and all(e is None for e in o.ready)
                and all(s.error is None for s in o.pre)
                and o.hooks_alive
                and all(r.error is None for r in o.released))
    if not quiesced:
        best = policy.FILESYSTEM if enabled else policy.CRASH
    return best


@settings(max_examples=600, deadline=None)
@given(outcomes())
def test_level_never_above_what_design_allows(o: Outcomes) -> None:
    report = judge(o)
    assert RANK[report.consistency] <= RANK[bound(o)], (report, o)
    names = [e.entry for e in report.errors]
    if report.consistency in (policy.APPLICATION, policy.FILESYSTEM):
        # A good level carries no freeze error.
        assert not {Catalogue.NOTHING_FROZEN, Catalogue.FS_FREEZE_TIMEOUT,
                    Catalogue.THAWED_BY_ANOTHER_PROCESS} & set(names)
    if o.freeze is not None and o.freeze.thawed_early:
        assert report.consistency in (policy.CRASH, policy.FAILED)


def test_everything_held_is_application() -> None:
    plugins = (Plugin("db", ("/pre",), ("/post",), hold=True),)
    o = Outcomes(config=Config(FreezeSettings(timeout=5), True, plugins))
    o.ready, o.proceeded = (None,), True
    o.freeze = FreezeOutcome((MountReport("/a", "ext4", True),),
                             FreezeReport(True, 1.0, False, 5), (), True,
                             True, False, False)
    o.snapshot = SnapshotReport(("snap",), 0, 1.0, True)
    o.released = (script("db", "pre", True),)
    assert judge(o).consistency == policy.APPLICATION
    o.released = (script("db", "pre", False),)        # lost at release
    assert judge(o).consistency == policy.FILESYSTEM


# ---- an exception between the state file and the thaw ----

@pytest.fixture
def plugin_config(tmp_path) -> str:
    d = make_dir(tmp_path / "plugin", 0o700)
    pre = write_script(os.path.join(d, "pre"), "exit 0\n")
    post = write_script(os.path.join(d, "post"), "echo post > %s/post.out\n"
                        % tmp_path)
    return write_file(os.path.join(d, "v.toml"),
                      '[[plugin]]\nname = "app"\npre = ["%s"]\n'
                      'post = ["%s"]\n' % (pre, post))


def test_exception_while_frozen_keeps_the_report_and_no_state(
        loopfs_factory, plugin_config, tmp_path, monkeypatch) -> None:
    from vmsnapshot.cycle import whole
    a = loopfs_factory("ext4")
    seen: List[Optional[list]] = []

    def broken_snapshot(argv, window, trap):
        seen.append(state.read_state())
        raise RuntimeError("injected")

    monkeypatch.setattr(whole, "run_snapshot", broken_snapshot)
    report = whole.run_cycle(whole.RunOptions(
        plugin_config, (str(a),), (), None, ("true",)))
    assert seen and seen[0], "the state file existed while frozen"
    assert report.internal_error == "RuntimeError: injected"
    assert report.consistency == policy.FAILED
    assert [(s.plugin, s.phase, s.returncode) for s in report.scripts] == [
        ("app", "pre", 0), ("app", "post", 0)]
    assert (tmp_path / "post.out").read_text() == "post\n"
    assert not is_frozen(str(a))
    assert state.read_state() is None, "stale state file left"
    monkeypatch.undo()
    again = whole.run_cycle(whole.RunOptions(plugin_config, (str(a),)))
    assert again.consistency == policy.APPLICATION, again.errors


def test_split_post_never_came_holder_thawed_first_is_crash() -> None:
    """A split cycle whose post never came: the holder's own wait ends at
    the deadline and it thaws before the C watchdog fires (they race), so
    auto_thawed is false. Nothing vouches for a snapshot then: crash with
    FsFreezeTimeout, as when the watchdog wins (seen as a flaky level
    `filesystem` with exit 0 in the fleet's killed-controller test)."""
    o = Outcomes(config=Config(FreezeSettings(timeout=5), True, ()),
                 split=True)
    o.proceeded = True
    o.freeze = FreezeOutcome((MountReport("/a", "ext4", True),),
                             FreezeReport(True, 5000.0, False, 5), (), True,
                             True, False, False)
    o.post_in_time = False
    o.snapshot = SnapshotReport((), 0, 5000.0, finished_while_frozen=False)
    report = judge(o)
    assert report.consistency == policy.CRASH
    assert Catalogue.FS_FREEZE_TIMEOUT in [e.entry for e in report.errors]
    assert report.snapshot_taken is False
