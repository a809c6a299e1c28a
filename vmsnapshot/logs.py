"""Loggers that import `logging` only when a message is emitted.

`logging` and what only it pulls in (traceback, textwrap and their
regular expressions) cost ~5 ms of each `run`, and a clean run at the
default level logs nothing.  get() returns a small proxy with the
methods the package uses; it forwards to logging.getLogger(name) unless
the message is below the threshold the CLI set (configure()) AND logging
is not imported yet.  The default threshold 0 forwards everything:
library use and tests (caplog) behave exactly as with plain logging.

The CLI's handler setup is applied once, by the one loader here, the
first time logging is loaded through a proxy, or at once if logging was
already imported.  Imports nothing of vmsnapshot.
"""
from __future__ import annotations

import _thread
import os
import sys
from typing import Any, Callable, Dict, List, Optional

# logging's numeric levels, without importing it.
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50

Setup = Callable[[Any], None]      # called with the logging module

_threshold = 0
_setup: Optional[Setup] = None
_waiting: List[Setup] = []
_module: Any = None                # logging, once loaded through here
_loading = False                   # the setup or a callback is running
# Reentrant: a setup or callback may log; proxies are used from the
# watchdog's and the workers' threads too.
_lock = _thread.RLock()


def _after_fork_in_child() -> None:
    # The history writer is a fork: a lock another thread held at the
    # fork would never be released in the child.
    global _lock
    _lock = _thread.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _load() -> Any:
    """The logging module, imported and set up (once) through here."""
    global _module, _loading
    module = _module
    if module is not None:
        return module
    with _lock:
        if _module is not None:
            return _module
        import logging
        if _loading:              # logged from the setup or a callback
            return logging
        _loading = True
        try:
            if _setup is not None:
                _setup(logging)
            while _waiting:
                _waiting.pop(0)(logging)
            _module = logging
        finally:
            _loading = False
        return logging


def configure(level: int, setup: Setup) -> None:
    """Messages below `level` may skip importing logging; `setup(logging)`
    installs the handlers, now if logging is already imported, else when a
    message first loads it."""
    global _threshold, _setup
    with _lock:
        _threshold = level
        _setup = setup
        if _module is not None:
            setup(_module)
        elif "logging" in sys.modules:
            _load()


def load_if_shown(level: int) -> None:
    """Import logging now if messages at LEVEL will be shown: called
    before a freeze, so that a verbose run does not import it (reading
    files, ~5 ms) inside the frozen window."""
    if level >= _threshold:
        _load()


def when_loaded(callback: Setup) -> Optional[Setup]:
    """Run callback(logging) once logging is loaded (after the setup): now
    if it is imported already (returns None), else when a message loads
    it (returns a token for cancel())."""
    with _lock:
        if _module is None and "logging" not in sys.modules:
            _waiting.append(callback)
            return callback
    callback(_load())
    return None


def cancel(token: Optional[Setup]) -> None:
    """Forget a when_loaded() callback that has not run; once this
    returns it never will."""
    with _lock:
        if token is not None and token in _waiting:
            _waiting.remove(token)


class Logger:
    """The part of logging.Logger the package uses."""

    __slots__ = ("name", "_real")

    def __init__(self, name: str) -> None:
        self.name = name
        self._real: Any = None

    def _logger(self) -> Any:
        real = self._real
        if real is None:
            real = self._real = _load().getLogger(self.name)
        return real

    def _skipped(self, level: int) -> bool:
        return (_module is None and level < _threshold
                and "logging" not in sys.modules)

    def _emit(self, level: int, msg: object, args: Any,
              kwargs: Dict[str, Any]) -> None:
        if self._skipped(level):
            return
        # One more frame (this proxy's) between the caller and logging:
        # records keep the caller's file, line and function.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
        self._logger().log(level, msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return not self._skipped(level) and self._logger().isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(ERROR, msg, args, kwargs)

    def critical(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(CRITICAL, msg, args, kwargs)

    def exception(self, msg: object, *args: Any, exc_info: Any = True,
                  **kwargs: Any) -> None:
        kwargs["exc_info"] = exc_info
        self._emit(ERROR, msg, args, kwargs)

    def __repr__(self) -> str:
        return "<vmsnapshot.logs.Logger %s>" % self.name


_loggers: Dict[str, Logger] = {}


def get(name: str) -> Logger:
    """The proxy for logging.getLogger(name); one per name."""
    proxy = _loggers.get(name)
    if proxy is None:
        proxy = _loggers.setdefault(name, Logger(name))
    return proxy
