"""vmsnapshot.childwait: the one wait for a child's exit (spawn and the
guardian), with a pidfd and with the fallback; it never reaps."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.require import skip_or_fail
from vmsnapshot.childwait import ChildWatch
from vmsnapshot.freeze import guardian as guardian_mod


@pytest.fixture(params=["pidfd", "fallback"])
def flavour(request, monkeypatch) -> str:
    if request.param == "fallback":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        skip_or_fail("this Python has no os.pidfd_open")
    return request.param


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code],
                            stdin=subprocess.PIPE)


def test_waits_for_the_exit_without_reaping(flavour) -> None:
    p = child("import sys; sys.stdin.read(); sys.exit(5)")
    w = ChildWatch(p.pid)
    try:
        assert (w.pidfd is None) == (flavour == "fallback")
        assert not w.exited()
        assert not w.wait(0.05), "no exit yet: the timeout says so"
        p.stdin.close()
        assert w.wait(30)
        assert w.exited() and w.exited_at is not None
        # Still a zombie: its owner reaps it and gets the status.
        assert os.waitpid(p.pid, 0)[1] >> 8 == 5
        p.returncode = 5
        assert w.exited(), "a reaped child stays exited"
    finally:
        w.close()
        w.close()   # idempotent
        if p.returncode is None:
            p.kill()
            p.wait()


def test_should_stop_ends_the_wait(flavour) -> None:
    p = child("import sys; sys.stdin.read()")
    w = ChildWatch(p.pid)
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 3

    try:
        assert not w.wait(None, should_stop=stop)
        assert len(asked) == 3 and p.poll() is None
    finally:
        w.close()
        p.stdin.close()
        p.wait()


def test_the_guardian_waits_with_it() -> None:
    """The guardian's stop() waits through ChildWatch (no sleep loop of its
    own): one way to wait for a child in the whole package."""
    assert guardian_mod.ChildWatch is ChildWatch
    assert not hasattr(guardian_mod, "time"), "a polling loop came back"
