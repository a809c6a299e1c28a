"""@frozen_record: a frozen dataclass whose methods are shared functions
instead of per-class generated code (issue 15); @record, its mutable
sibling for the one accumulator a run fills step by step.

Python < 3.13 compiles every method dataclass() generates with its own
exec(): six per frozen class (__init__, __repr__, __eq__, __hash__,
__setattr__, __delattr__), ~1 ms a class, ~60 ms of a `run` that creates
its record classes before it can freeze anything.  Each of the six works
the same for every class once it knows the class's fields, so they are
written once here; the class stays a dataclass (fields(), replace(),
asdict(), is_dataclass()) and behaves as dataclass(frozen=True) would make
it:

- __init__: the init=True fields, positional or by keyword, in order;
  default and default_factory as declared; __post_init__ called if any;
- assigning or deleting an attribute raises FrozenInstanceError;
- repr: ``Name(a=1, b='x')``, fields with repr=False left out;
- ==: same class, and the compare=True fields equal in order, else
  NotImplemented;
- hash: of the tuple of those fields (hash=True/False overrides compare).

A method the class body defines itself is kept, as dataclass() keeps it.
dataclass() is called with frozen=False (it would compile the frozen
__setattr__ itself), so `_record_frozen` marks these classes instead of
__dataclass_params__.frozen; a stock frozen dataclass cannot inherit
from one.
"""
from __future__ import annotations

import reprlib
from dataclasses import MISSING, FrozenInstanceError, dataclass, fields
from typing import Any, Callable, Dict, Tuple, Type, TypeVar

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


# (name, default, default_factory, init) per field, MISSING where none.
_Spec = Tuple[Tuple[str, Any, Any, bool], ...]


def _missing(cls: type, names: Tuple[str, ...]) -> TypeError:
    return TypeError("%s.__init__() missing %d required argument%s: %s" % (
        cls.__qualname__, len(names), "s" if len(names) > 1 else "",
        ", ".join(repr(n) for n in names)))


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    spec: _Spec = cls._record_init
    positional = [s for s in spec if s[3]]
    if len(args) > len(positional):
        raise TypeError("%s.__init__() takes %d positional arguments but %d "
                        "were given" % (cls.__qualname__, len(positional) + 1,
                                        len(args) + 1))
    given: Dict[str, Any] = {s[0]: a for s, a in zip(positional, args)}
    for name, value in kwargs.items():
        if name in given:
            raise TypeError("%s.__init__() got multiple values for argument "
                            "%r" % (cls.__qualname__, name))
        if name not in cls._record_init_names:
            raise TypeError("%s.__init__() got an unexpected keyword argument"
                            " %r" % (cls.__qualname__, name))
        given[name] = value
    missing = tuple(s[0] for s in spec if s[3] and s[0] not in given
                    and s[1] is MISSING and s[2] is MISSING)
    if missing:
        raise _missing(cls, missing)
    for name, default, factory, init in spec:
        if init and name in given:
            value = given[name]
        elif default is not MISSING:
            value = default
        elif factory is not MISSING:
            value = factory()
        else:                   # init=False and no default: left unset
            continue
        object.__setattr__(self, name, value)
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError("cannot assign to field %r" % name)


def _delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError("cannot delete field %r" % name)


def frozen_record(cls: Type[T]) -> Type[T]:
    """dataclass(frozen=True), with the shared methods."""
    return _shared(cls, frozen=True)


def record(cls: Type[T]) -> Type[T]:
    """dataclass(), mutable (unhashable, as dataclass makes it), with the
    shared methods: for an accumulator filled step by step."""
    return _shared(cls, frozen=False)


def _shared(cls: Type[T], frozen: bool) -> Type[T]:
    own = dict(cls.__dict__)
    if own.get("__doc__") is None:
        # dataclass() would build one through inspect.signature(): slow.
        cls.__doc__ = cls.__name__
    cls = dataclass(init=False, repr=False, eq=False)(cls)
    if "__init__" not in own:
        cls.__init__ = _init                        # type: ignore[misc]
    if frozen:
        for name in ("__setattr__", "__delattr__"):
            if name in own:     # as dataclass(frozen=True)
                raise TypeError("cannot overwrite attribute %s in class %s"
                                % (name, cls.__name__))
        cls.__setattr__ = _setattr                  # type: ignore[assignment]
        cls.__delattr__ = _delattr                  # type: ignore[assignment]
    fs = fields(cls)
    if own.get("__doc__") is None:
        cls.__doc__ = "%s(%s)" % (cls.__name__, ", ".join(f.name for f in fs))
    cls._record_frozen = frozen                     # type: ignore[attr-defined]
    cls._record_init = tuple(                       # type: ignore[attr-defined]
        (f.name, f.default, f.default_factory, f.init) for f in fs)
    cls._record_init_names = frozenset(             # type: ignore[attr-defined]
        f.name for f in fs if f.init)
    if "__repr__" not in own:
        cls.__repr__ = _repr                        # type: ignore[assignment]
    if "__eq__" not in own:
        cls.__eq__ = _eq                            # type: ignore[assignment]
    # As dataclass(): frozen, a hash unless the body wrote one (an __eq__
    # alone leaves __hash__ None in the class dict: that is not writing
    # one); mutable, unhashable unless the body wrote one.
    if own.get("__hash__") is None:
        cls.__hash__ = _hash if frozen else None    # type: ignore[assignment]
    cls._record_repr = tuple(                       # type: ignore[attr-defined]
        f.name for f in fs if f.repr)
    cls._record_compare = tuple(                    # type: ignore[attr-defined]
        f.name for f in fs if f.compare)
    cls._record_hash = tuple(                       # type: ignore[attr-defined]
        f.name for f in fs if (f.compare if f.hash is None else f.hash))
    return cls
