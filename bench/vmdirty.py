"""Keep the kernel from writing the bench's dirty data back before the
freeze does: raise vm.dirty_* for the run, restore the old values after.

The old values are also saved to a file first, so a bench killed with
SIGKILL is repaired by the next start (``recover``).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict

log = logging.getLogger(__name__)

PROC = "/proc/sys/vm/"
KEYS = ("dirty_background_bytes", "dirty_background_ratio", "dirty_bytes",
        "dirty_ratio", "dirty_expire_centisecs")
SAVED = "/run/vmsnapshot-bench-vm-dirty.json"
# Lowest value the kernel accepts for dirty_bytes is two pages.
MIN_BYTES = 2 * 4096


def read() -> Dict[str, int]:
    out = {}
    for key in KEYS:
        with open(PROC + key) as f:
            out[key] = int(f.read())
    return out


def _write(key: str, value: int) -> None:
    with open(PROC + key, "w") as f:
        f.write("%d\n" % value)


def restore(saved: Dict[str, int]) -> None:
    """Writing *_bytes zeroes *_ratio and vice versa, so write back the one
    of each pair that was in force (non-zero)."""
    for by, ratio in (("dirty_background_bytes", "dirty_background_ratio"),
                      ("dirty_bytes", "dirty_ratio")):
        if saved[by] >= MIN_BYTES:
            _write(by, saved[by])
        else:
            _write(ratio, saved[ratio])
    _write("dirty_expire_centisecs", saved["dirty_expire_centisecs"])


def recover() -> None:
    """Restore what a killed bench left behind, if anything."""
    try:
        with open(SAVED) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return
    log.warning("restoring vm.dirty_* left by an interrupted bench: %s",
                saved)
    restore(saved)
    os.unlink(SAVED)


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def apply(dirty_bytes: int) -> Dict[str, int]:
    """Allow DIRTY_BYTES of the bench's dirty page cache without writeback:
    no age-based flush, and a background threshold with headroom for what
    the rest of the machine dirties meanwhile (crossing it would flush the
    bench's data too).  Returns the values in force before."""
    saved = read()
    with open(SAVED, "w") as f:
        json.dump(saved, f)
    limit = dirty_bytes + max(2 * 2**30, _mem_total() // 4)
    _write("dirty_bytes", 2 * limit)
    _write("dirty_background_bytes", limit)
    _write("dirty_expire_centisecs", 360000)
    return saved


def release(saved: Dict[str, int]) -> None:
    restore(saved)
    try:
        os.unlink(SAVED)
    except OSError:
        pass
