"""The run directory: /run/vmsnapshot (tmpfs, never frozen) holds the lock,
the freeze state file and the split cycle's sockets. A bottom module, so
the freeze state and the cycle's lock name it the same way."""
from __future__ import annotations

import os


def run_dir() -> str:
    """/run/vmsnapshot; tests point it elsewhere (VMSNAPSHOT_RUN_DIR)."""
    return os.environ.get("VMSNAPSHOT_RUN_DIR", "/run/vmsnapshot")
