"""@frozen_record behaves as dataclass(frozen=True) (issue 15: the shared
repr/eq/hash spare ~half the class-creation cost of every record)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from tests.helpers.cli import ROOT
from vmsnapshot.frozenrecord import frozen_record, record


def _pair():
    def body(deco):
        @deco
        class Row:
            """A row."""
            path: str
            n: int = 0
            tags: Tuple[str, ...] = ()
            secret: str = field(default="", repr=False)
            note: Optional[str] = field(default=None, compare=False)
            key: int = field(default=0, hash=False)
        return Row
    return body(dataclass(frozen=True)), body(frozen_record)


VALUES = [("/a",), ("/a", 1, ("x",), "s", "note", 3), ("/b", 2, (), "", None),
          ("/a", 1, ("x",), "s", "other", 3), ("/a", 1, ("x",), "t", "n", 4)]


def test_repr_eq_hash_as_a_frozen_dataclass():
    Stock, Lean = _pair()
    for a in VALUES:
        assert repr(Lean(*a)).replace("Lean", "Stock") == repr(Stock(*a))
        assert repr(Lean(*a)) == repr(Stock(*a))
        for b in VALUES:
            assert (Lean(*a) == Lean(*b)) == (Stock(*a) == Stock(*b)), (a, b)
            assert (Lean(*a) != Lean(*b)) == (Stock(*a) != Stock(*b)), (a, b)
        assert hash(Lean(*a)) == hash(Stock(*a))
    assert Lean("/a") != Stock("/a")        # another class: not equal
    assert Lean("/a").__eq__(("/a",)) is NotImplemented


def test_still_a_frozen_dataclass():
    _, Lean = _pair()
    r = Lean("/a", 1)
    assert dataclasses.is_dataclass(Lean)
    assert [f.name for f in dataclasses.fields(r)][:2] == ["path", "n"]
    assert dataclasses.replace(r, n=2) == Lean("/a", 2)
    assert dataclasses.asdict(r)["path"] == "/a"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.n = 3                                      # type: ignore[misc]
    assert Lean.__doc__ == "A row."
    assert len({Lean("/a"), Lean("/a"), Lean("/b")}) == 2


CALLS = [((), {}), (("/a",), {}), ((), {"path": "/a", "n": 2}),
         (("/a", 1), {"key": 5}), (("/a",), {"path": "/b"}),
         (("/a",), {"nope": 1}), (("/a", 1, (), "", None, 0, "extra"), {}),
         ((), {"n": 1})]


def test_init_binds_arguments_as_a_frozen_dataclass():
    Stock, Lean = _pair()
    for args, kwargs in CALLS:
        try:
            want = repr(Stock(*args, **kwargs)).replace("Stock", "Lean")
        except TypeError:
            with pytest.raises(TypeError):
                Lean(*args, **kwargs)
        else:
            assert repr(Lean(*args, **kwargs)) == want, (args, kwargs)


def test_defaults_factories_and_post_init():
    made = []

    @frozen_record
    class Box:
        items: list = field(default_factory=list)
        count: int = field(default=7, init=False)

        def __post_init__(self) -> None:
            made.append(self.items)
    a, b = Box(), Box()
    assert a.items == [] and a.items is not b.items and a.count == 7
    assert made == [[], []] and Box([1]).items == [1]
    with pytest.raises(TypeError):
        Box(count=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.items
    assert Box.__doc__ == "Box(items, count)"


def test_a_method_of_the_body_is_kept():
    @frozen_record
    class Own:
        """Own."""
        a: int

        def __repr__(self) -> str:
            return "own"

        def __eq__(self, other: object) -> bool:
            return True
    assert repr(Own(1)) == "own" and Own(1) == Own(2)
    assert hash(Own(1)) == hash(Own(1))      # as dataclass: hash added


COUNT = """
import dataclasses, json, sys
calls = []
orig = dataclasses._create_fn
def count(name, *a, **k):
    calls.append(name)
    return orig(name, *a, **k)
dataclasses._create_fn = count
import vmsnapshot.cli, vmsnapshot.commands.run, vmsnapshot.results.publishing
print(json.dumps(calls))
"""


def test_the_run_path_compiles_no_record_method():
    """Before: six exec()-compiled methods per frozen record (init, repr,
    eq, hash, setattr, delattr), ~220 on `run`'s imports; then three per
    record and Outcomes' own three."""
    res = subprocess.run([sys.executable, "-c", COUNT], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True, check=True,
                         timeout=60)
    assert json.loads(res.stdout) == []


def test_a_mutable_record_as_a_dataclass():
    @record
    class Acc:
        n: int = 0
        items: list = field(default_factory=list)
    a = Acc()
    a.n = 3
    a.items.append(1)
    assert a == Acc(3, [1]) and a != Acc() and repr(a).endswith(".Acc(n=3, items=[1])")
    assert Acc.__hash__ is None and dataclasses.is_dataclass(a)
    assert dataclasses.replace(a, n=4).n == 4
    del a.n     # mutable: allowed, as in a dataclass
