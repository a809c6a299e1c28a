"""One way to wait for something in a test: poll a predicate with a
deadline, and fail saying what never happened."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float,
         interval: float = 0.02) -> T:
    """The predicate's first truthy value, or its last (falsy) one once
    TIMEOUT seconds have passed; it is always called at least once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.02) -> T:
    """The predicate's first truthy value; AssertionError naming WHAT if
    none came within TIMEOUT seconds."""
    value = poll(predicate, timeout, interval)
    assert value, "not within %gs: %s" % (timeout, what)
    return value
