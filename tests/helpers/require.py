"""What a test needs from the machine: skip when it is missing, fail in CI.

CI sets VMSNAPSHOT_REQUIRE_ROOT=1: a test that cannot run there is a
failure, never a silent skip.
"""
from __future__ import annotations

import os
import shutil

import pytest

REQUIRE = os.environ.get("VMSNAPSHOT_REQUIRE_ROOT") == "1"

MKFS_TOOL = {"ext4": "mkfs.ext4", "xfs": "mkfs.xfs", "btrfs": "mkfs.btrfs"}


def skip_or_fail(reason: str) -> None:
    """In CI (VMSNAPSHOT_REQUIRE_ROOT=1) a missing requirement is a failure."""
    if REQUIRE:
        pytest.fail("required but missing: " + reason, pytrace=False)
    pytest.skip(reason)


def need_root(why: str = "not root") -> None:
    if os.geteuid() != 0:
        skip_or_fail(why)


def need_tool(tool: str) -> None:
    if shutil.which(tool) is None:
        skip_or_fail("%s not installed" % tool)


def need_mkfs(fstype: str) -> None:
    need_tool(MKFS_TOOL[fstype])
