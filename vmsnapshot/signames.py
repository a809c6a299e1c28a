"""A signal's name for reports ("SIGTERM"), and "SIG<n>" for a number
Python does not know.  Its own module so that the run's outcome can word a
signal without importing the script runners' records (issue 15)."""
from __future__ import annotations

import signal


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "SIG%d" % signum
