"""What a restore must contain: restored transactions against the ones
acknowledged before the snapshot, and the negative control's findings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Set, Tuple

from tests.helpers.dbproc import Server

Acks = Dict[int, List[Tuple[int, float]]]   # writer -> [(n, ack time)]


@dataclass
class Verdict:
    """Restored transactions against acknowledged ones. ``cutoff``: every
    transaction acknowledged before it must be there."""

    acked: int
    acked_before_cutoff: int
    acked_after_cutoff: int
    restored: int
    missing: List[Tuple[int, int]] = field(default_factory=list)
    unacknowledged: List[Tuple[int, int]] = field(default_factory=list)
    duplicates: List[Tuple[int, int]] = field(default_factory=list)
    gaps: List[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unacknowledged or self.duplicates
                    or self.gaps)

    def summary(self) -> str:
        return ("acknowledged %d (%d before the cutoff, %d after), restored "
                "%d; missing %d, never acknowledged %d, duplicated %d, "
                "gaps %d" % (self.acked, self.acked_before_cutoff,
                             self.acked_after_cutoff, self.restored,
                             len(self.missing), len(self.unacknowledged),
                             len(self.duplicates), len(self.gaps)))


def verdict(acks: Acks, restored: Dict[int, List[int]], cutoff: float
            ) -> Verdict:
    acked: Set[Tuple[int, int]] = {(w, n) for w, items in acks.items()
                                   for n, _ in items}
    before = {(w, n) for w, items in acks.items() for n, t in items
              if t < cutoff}
    after = {(w, n) for w, items in acks.items() for n, t in items
             if t >= cutoff}
    found = [(w, n) for w, ns in restored.items() for n in ns]
    found_set = set(found)
    v = Verdict(len(acked), len(before), len(after), len(found_set))
    v.missing = sorted(before - found_set)
    v.unacknowledged = sorted(found_set - acked)
    v.duplicates = sorted({x for x in found if found.count(x) > 1}) \
        if len(found) != len(found_set) else []
    # Each writer commits in order: what survives is 1..k, never a hole.
    for w, ns in restored.items():
        if sorted(set(ns)) != list(range(1, len(set(ns)) + 1)):
            v.gaps.append("writer %d: %d transactions, highest %d"
                          % (w, len(set(ns)), max(ns)))
    return v


def negative_control(db_name: str, report: dict,
                     restore: Callable[[], Server],
                     inspect: Callable[[Server], List[str]]) -> str:
    """Restore a snapshot taken without quiescer or freeze and say what
    came of it (printed, never asserted: it depends on timing)."""
    findings = ["report: consistency %s" % report.get("consistency")]
    try:
        server = restore()
    except AssertionError as exc:
        lines = str(exc).splitlines()
        errors = [line for line in lines
                  if any(m in line for m in ("ERROR", "FATAL", "PANIC"))]
        findings.append("restored server did not start: %s"
                        % " | ".join(errors[-3:] or lines[:1]))
    else:
        findings += inspect(server)
    line = "NEGATIVE CONTROL %s: %s" % (db_name, "; ".join(findings))
    print(line)
    return line
