"""Every combination of the consistency rules in design.md."""
import itertools

import pytest

from vmsnapshot.cycle import policy
from vmsnapshot.cycle.policy import FreezeOutcome, PreOutcome


def pre(configured=True, ok=True, config_ok=True, cont=True, freeze=True):
    return PreOutcome(configured, ok, config_ok, cont, freeze)


HELD = FreezeOutcome(all_frozen=True, held_through_snapshot=True,
                     hooks_held=True)


def test_all_good_is_application():
    assert policy.may_proceed(pre())
    assert policy.level(pre(), HELD) == "application"


def test_no_scripts_is_at_best_filesystem():
    p = pre(configured=False)
    assert policy.may_proceed(p)
    assert policy.level(p, HELD) == "filesystem"


@pytest.mark.parametrize("failure", ["script", "config"])
def test_failed_pre_with_continue_is_filesystem(failure):
    p = pre(ok=failure != "script", config_ok=failure != "config")
    assert policy.may_proceed(p)
    assert policy.level(p, HELD) == "filesystem"


@pytest.mark.parametrize("failure", ["script", "config"])
def test_failed_pre_without_continue_stops(failure):
    p = pre(ok=failure != "script", config_ok=failure != "config",
            cont=False)
    assert not policy.may_proceed(p)


def test_freeze_disabled_and_failed_pre_stops_like_azure():
    assert not policy.may_proceed(pre(ok=False, freeze=False))


def test_freeze_disabled_with_good_scripts_is_application():
    p = pre(freeze=False)
    nothing = FreezeOutcome(False, False, True)
    assert policy.level(p, nothing) == "application"


def test_level_crash_when_freeze_disabled_without_scripts():
    p = pre(configured=False, freeze=False)
    assert policy.level(p, FreezeOutcome(False, False, True)) == "crash"


@pytest.mark.parametrize("all_frozen,held", [(False, True), (True, False),
                                             (False, False)])
def test_broken_freeze_is_crash(all_frozen, held):
    assert policy.level(pre(), FreezeOutcome(all_frozen, held, True)) \
        == "crash"


def test_held_hook_dying_drops_to_filesystem():
    assert policy.level(pre(), FreezeOutcome(True, True, False)) \
        == "filesystem"


def test_level_is_always_one_of_four():
    for args in itertools.product([True, False], repeat=8):
        p = PreOutcome(*args[:5])
        f = FreezeOutcome(*args[5:])
        assert policy.level(p, f) in policy_levels()


def policy_levels():
    return ("application", "filesystem", "crash", "failed")
