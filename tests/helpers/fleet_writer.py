"""The distributed writer of the fleet tests: appends record k to A's
/data, then B's, then C's (each fsync'ed), and acknowledges k only when all
three hold it. Run as `python -m tests.helpers.fleet_writer ROOT...`.

Between two records it honours a pause asked by any root's pre-script
(ROOT/run/writer.pause): it answers ROOT/run/writer.paused in every root
that asked, and writes nothing until no root asks any more.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import List

RECORDS = "data/records"
PAUSE = "run/writer.pause"
PAUSED = "run/writer.paused"
ACKED = "run/writer.acked"       # in the first root: the last k acknowledged


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


def _forget(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_forever(roots: List[str]) -> None:
    files = [os.open(os.path.join(r, RECORDS),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
             for r in roots]
    acked = os.path.join(roots[0], ACKED)
    k = 0
    was_paused = False
    while True:
        asking = [r for r in roots if os.path.exists(os.path.join(r, PAUSE))]
        if asking:
            for r in asking:
                _touch(os.path.join(r, PAUSED))
            was_paused = True
            time.sleep(0.01)
            continue
        if was_paused:     # stale answers must not fool the next pause
            for r in roots:
                _forget(os.path.join(r, PAUSED))
            was_paused = False
        k += 1
        for fd in files:
            os.write(fd, b"%d\n" % k)
            os.fsync(fd)
        with open(acked + ".tmp", "w") as f:
            f.write(str(k))
        os.replace(acked + ".tmp", acked)
        time.sleep(0.002)


def acked(first_root: str) -> int:
    try:
        with open(os.path.join(first_root, ACKED)) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    write_forever(sys.argv[1:])
