"""The tests' door to the shared loop-filesystem module (loopfs/ at the
top of the tree, also used by the bench and the demo).

Only filesystems made there may ever be frozen by the suite (see the
freeze guard in tests/helpers/fixtures.py).
"""
from __future__ import annotations

from loopfs import (MKFS, SIZE_MB, LoopFS, attach, destroy_loopfs, detach,
                    is_frozen, make_image, make_loopfs, mount_image,
                    ours_under, run, sweep_under, thaw, unmount)

__all__ = ["MKFS", "SIZE_MB", "LoopFS", "attach", "destroy_loopfs", "detach",
           "is_frozen", "make_image", "make_loopfs", "mount_image",
           "ours_under", "run", "sweep_under", "thaw", "unmount"]
