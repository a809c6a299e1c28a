"""@frozen_record: a frozen dataclass whose __repr__, __eq__ and __hash__
are shared functions instead of per-class generated code (issue 15).

Python < 3.13 compiles every method dataclass() generates with its own
exec(): six per frozen class (__init__, __repr__, __eq__, __hash__,
__setattr__, __delattr__), ~1 ms a class, ~40 ms of a `run` that creates
36 record classes before it can freeze anything.  The three that only read
fields work the same for every class, so they are written once here; the
class stays a dataclass (fields(), replace(), asdict(), is_dataclass())
and behaves as dataclass(frozen=True) would make it:

- repr: ``Name(a=1, b='x')``, fields with repr=False left out;
- ==: same class, and the compare=True fields equal in order, else
  NotImplemented;
- hash: of the tuple of those fields (hash=True/False overrides compare).

A method the class body defines itself is kept, as dataclass() keeps it.
"""
from __future__ import annotations

import reprlib
from dataclasses import dataclass, fields
from typing import Any, Callable, Tuple, Type, TypeVar

T = TypeVar("T")


def _names(cls: type, attr: str, pick: Callable[[Any], bool]
           ) -> Tuple[str, ...]:
    names = cls.__dict__.get(attr)
    if names is None:       # a subclass: its own fields, computed once
        names = tuple(f.name for f in fields(cls) if pick(f))
        setattr(cls, attr, names)
    return names


def _repr_names(cls: type) -> Tuple[str, ...]:
    return _names(cls, "_record_repr", lambda f: f.repr)


def _compare_names(cls: type) -> Tuple[str, ...]:
    return _names(cls, "_record_compare", lambda f: f.compare)


def _hash_names(cls: type) -> Tuple[str, ...]:
    return _names(cls, "_record_hash",
                  lambda f: f.compare if f.hash is None else f.hash)


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    return "%s(%s)" % (type(self).__qualname__, ", ".join(
        "%s=%r" % (n, getattr(self, n)) for n in _repr_names(type(self))))


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = _compare_names(type(self))
    return (tuple(getattr(self, n) for n in names)
            == tuple(getattr(other, n) for n in names))


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in _hash_names(type(self))))


def frozen_record(cls: Type[T]) -> Type[T]:
    """dataclass(frozen=True), with the shared read-only methods."""
    own = dict(cls.__dict__)
    cls = dataclass(frozen=True, repr=False, eq=False)(cls)
    if "__repr__" not in own:
        cls.__repr__ = _repr                        # type: ignore[assignment]
    if "__eq__" not in own:
        cls.__eq__ = _eq                            # type: ignore[assignment]
    # As dataclass(): a hash unless the body wrote one (an __eq__ alone
    # leaves __hash__ None in the class dict: that is not writing one).
    if own.get("__hash__") is None:
        cls.__hash__ = _hash                        # type: ignore[assignment]
    cls._record_repr = tuple(                       # type: ignore[attr-defined]
        f.name for f in fields(cls) if f.repr)
    cls._record_compare = tuple(                    # type: ignore[attr-defined]
        f.name for f in fields(cls) if f.compare)
    cls._record_hash = tuple(                       # type: ignore[attr-defined]
        f.name for f in fields(cls)
        if (f.compare if f.hash is None else f.hash))
    return cls
