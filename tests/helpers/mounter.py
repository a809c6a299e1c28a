"""mount(8) for tests that stack bind, tmpfs and subvolume mounts; a
fixture plugin (registered in tests/conftest.py)."""
from __future__ import annotations

import os
import subprocess
from typing import Iterator, List

import pytest

from tests.helpers.require import skip_or_fail


class Mounter:
    """mount(8) wrapper that unmounts everything it mounted, newest first
    (so stacked mounts come off in order), even when a test fails."""

    def __init__(self) -> None:
        self.targets: List[str] = []

    def __call__(self, *args: str) -> str:
        subprocess.run(["mount", *args], check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
        if not args[0].startswith("--make-"):  # those only change a flag
            self.targets.append(args[-1])
        return args[-1]

    def tmpfs(self, target: str, source: str = "vms-test") -> str:
        os.makedirs(target, exist_ok=True)
        return self("-t", "tmpfs", source, target)

    def cleanup(self) -> List[str]:
        problems = []
        for target in reversed(self.targets):
            res = subprocess.run(["umount", target], stderr=subprocess.PIPE,
                                 text=True)
            if res.returncode:
                problems.append("umount %r: %s" % (target, res.stderr))
                subprocess.run(["umount", "-l", target])
        return problems


@pytest.fixture
def mounter() -> Iterator[Mounter]:
    """Request it AFTER loopfs_factory so its mounts (stacked on loop
    filesystems) come off before the loop filesystems are destroyed."""
    if os.geteuid() != 0:
        skip_or_fail("not root")
    m = Mounter()
    yield m
    problems = m.cleanup()
    assert not problems, problems
