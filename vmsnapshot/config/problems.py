"""What the loaders share: a problem list with breadcrumbs, typed value
checks, and reading a configuration file only after its trust check.

Loaders never stop at the first problem: each one is recorded as
``file -> key -> [index]: what was wrong; expected what`` (cfgv's validation
contexts) so ``vmsnapshot check`` can list them all at once.
"""
from __future__ import annotations

import datetime
import math
import os
from typing import Any, Iterable, List, Optional, Sequence, Union

from vmsnapshot import trust
from vmsnapshot.errors import Catalogue, ErrorRecord

Crumb = Union[str, int]

# A configuration file is a few hundred bytes; refusing huge ones keeps a
# mistaken --config /var/log/big.log from eating memory.
MAX_CONFIG_BYTES = 1 << 20
# A day: longer is a typo, and waits beyond what threading and the C
# watchdog's nanosecond arithmetic accept would fail at run time instead.
MAX_SECONDS = 86400
_TRUSTED = ("owner root, mode 600, in directories only root can write "
            "(as for scripts)")


class Problems:
    """The problems of one configuration file, appended to a shared list."""

    def __init__(self, path: str, entry: Catalogue,
                 records: List[ErrorRecord]) -> None:
        self.path = path
        self.entry = entry
        self.records = records
        self.count = 0

    def add(self, where: Sequence[Crumb], what: str,
            expected: Optional[str] = None) -> None:
        crumbs = [self.path] + ["[%d]" % c if isinstance(c, int) else c
                                for c in where]
        message = " -> ".join(crumbs) + ": " + what
        if expected:
            message += "; expected " + expected
        self.records.append(ErrorRecord(self.entry, printable(message)))
        self.count += 1


def printable(text: str) -> str:
    """TEXT, with what UTF-8 cannot encode (a lone surrogate from JSON's
    "\\ud800", a non-UTF-8 byte of a path) escaped, so a message about it
    can always be printed, logged and stored."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:    # a path's non-UTF-8 byte (surrogateescape) shows as \xff
        raw = text.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe(value: Any) -> str:
    """The value as the user wrote it, with its kind, for 'got ...'."""
    if isinstance(value, bool):
        return "%s (a boolean)" % ("true" if value else "false")
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "%r (a number)" % value
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return "%r (a string)" % shown
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table/object"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    return type(value).__name__


def suggest(key: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for a near miss, including a case-only one."""
    known = list(known)
    for k in known:
        if k.lower() == key.lower():
            return " (did you mean %r? keys are case-sensitive)" % k
    import difflib      # only for a typo: not on every run
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return " (did you mean %r?)" % close[0] if close else ""


# Typed checks: each returns the value, or None after recording a problem.

def want_bool(p: Problems, where: Sequence[Crumb], value: Any
              ) -> Optional[bool]:
    if isinstance(value, bool):
        return value
    p.add(where, "got " + describe(value), "true or false")
    return None


def want_seconds(p: Problems, where: Sequence[Crumb],
                 value: Any) -> Optional[float]:
    """A positive number of seconds, at most MAX_SECONDS; bool is not a
    number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        p.add(where, "got " + describe(value),
              "a positive number of seconds")
        return None
    try:
        seconds = float(value)
    except OverflowError:       # an int beyond any float
        seconds = math.inf
    if not 0 < seconds <= MAX_SECONDS:
        shown = "a huge number" if seconds == math.inf and \
            isinstance(value, int) else repr(value)
        p.add(where, "got " + shown, "a positive number of seconds, at "
              "most %d (negative and 0 are not allowed)" % MAX_SECONDS)
        return None
    return seconds


def want_count(p: Problems, where: Sequence[Crumb], value: Any
               ) -> Optional[int]:
    """A whole number >= 0 (retries)."""
    if isinstance(value, bool) or not isinstance(value, int):
        p.add(where, "got " + describe(value), "a whole number, 0 or more")
        return None
    if value < 0:
        p.add(where, "got %d" % value,
              "a whole number, 0 or more (0 = one attempt)")
        return None
    return value


def want_str(p: Problems, where: Sequence[Crumb], value: Any,
             expected: str = "a string") -> Optional[str]:
    if not isinstance(value, str):
        p.add(where, "got " + describe(value), expected)
        return None
    if "\0" in value:
        p.add(where, "contains a NUL character", expected)
        return None
    try:
        # Every string ends up in an argv, a message or the report, all
        # UTF-8: a lone surrogate ("\ud800" in JSON) cannot get there.
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        p.add(where, "got %s: character %d is a lone surrogate, not valid "
              "Unicode text" % (describe(value), e.start), expected)
        return None
    return value


def want_abspath(p: Problems, where: Sequence[Crumb], value: Any,
                 what: str) -> Optional[str]:
    """An absolute path; relative paths would depend on the cwd, which is
    '/' for scripts but not for whoever runs check."""
    text = want_str(p, where, value, "the absolute path of " + what)
    if text is None:
        return None
    if not text.startswith("/"):
        p.add(where, "got %s, not an absolute path" % describe(text),
              "the absolute path of " + what + ", starting with /")
        return None
    return text


def want_str_list(p: Problems, where: Sequence[Crumb], value: Any,
                  expected: str) -> Optional[List[str]]:
    """A list of strings; every bad item is reported with its index."""
    if not isinstance(value, list):
        p.add(where, "got " + describe(value), expected)
        return None
    before = p.count
    items = [want_str(p, list(where) + [i], item, "a string (in quotes)")
             for i, item in enumerate(value)]
    if p.count != before:
        return None
    return [item for item in items if item is not None]


def pick(p: Problems, table: dict, where: Sequence[Crumb], key: str,
         check: Any, default: Any) -> Any:
    """table[key] through ``check``; the default if absent or wrong."""
    if key not in table:
        return default
    value = check(p, list(where) + [key], table[key])
    return default if value is None else value


def reject_unknown(p: Problems, where: Sequence[Crumb], table: dict,
                   known: Sequence[str]) -> None:
    """Typos in the native file must not pass silently."""
    for key in table:
        if key not in known:
            p.add(list(where) + [key], "unknown key" + suggest(key, known),
                  "one of " + ", ".join(known))


def read_config_file(p: Problems) -> Optional[str]:
    """The file's text, read from the very fd the trust walk opened and
    checked (vmsnapshot.trust: every directory and symlink on the way
    root-only; the file root's, mode 600).  None if it cannot be read or
    its path is not trusted; the file's own owner/mode problems are
    recorded but the text is still returned, so check can report the
    content's problems too."""
    path = p.path
    try:
        trusted, problems = trust.walk(path, trust.config_problems)
    except trust.Refusal as r:
        if not r.missing:
            p.add((), "not trusted: " + r.detail, _TRUSTED)
        elif os.path.islink(path) and not os.path.exists(path):
            p.add((), "no such file", "an existing file (a dangling "
                  "symlink counts as missing)")
        elif r.detail == "%s does not exist" % path:
            p.add((), "no such file", "an existing file")
        else:
            p.add((), "no such file (%s)" % r.detail, "an existing file")
        return None
    except OSError as e:
        p.add((), "cannot open: %s" % (e.strerror or e), "a readable file")
        return None
    fd = trusted.fd
    try:
        real = trusted.real_path
        via = "" if real == path else " (symlink to %s)" % real
        for what in problems:
            p.add((), "not trusted%s: %s" % (via, what), _TRUSTED)
        st = os.fstat(fd)
        if st.st_size > MAX_CONFIG_BYTES:
            p.add((), "is %d bytes" % st.st_size,
                  "a configuration file of at most %d bytes"
                  % MAX_CONFIG_BYTES)
            return None
        data = b""
        while len(data) <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        p.add((), "cannot read: %s" % (e.strerror or e), "a readable file")
        return None
    finally:
        os.close(fd)
    try:
        # utf-8-sig: editors on Windows add a BOM; Azure's reader tolerated it.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        p.add((), "byte %d is not UTF-8 text" % e.start, "a UTF-8 text file")
        return None


def under_root(path: str, root: str) -> str:
    """An absolute configuration path as seen from ``root`` (tests, images)."""
    if root in ("", "/"):
        return path
    return os.path.join(root, path.lstrip("/"))
