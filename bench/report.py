"""Summaries of the cycles: statistics, the printed table with ratios, the
issue's targets, the JSON file and the optional plot."""
from __future__ import annotations

import json
import statistics
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from bench.methods import BASELINES, NEEDS_FREEZER

METRICS = ("freeze_ms", "thaw_ms", "stall_ms", "quiesced_ms")
VMS = "vmsnapshot"
DEFAULT = "vmsnapshot-default"
SCRIPTS = "vmsnapshot-scripts"
STALL_FRACTION = 8      # issue 15: default stall <= 1/8 of fsfreeze's
THAW_TARGET_MS = 10.0


def stats(values: Sequence[float]) -> Optional[Dict[str, float]]:
    if not values:
        return None
    return {"median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}


def summarize(cycles: List[Dict[str, Any]], floor_mib_s: float
              ) -> List[Dict[str, Any]]:
    """One entry per (N, D, method), in the order first seen."""
    groups: Dict[Tuple[int, int, str], List[Dict[str, Any]]] = {}
    for c in cycles:
        groups.setdefault((c["n"], c["d_mib"], c["method"]), []).append(c)
    out = []
    for (n, d, method), cs in groups.items():
        ok = [c for c in cs if c["error"] is None]
        entry: Dict[str, Any] = {
            "n": n, "d_mib": d, "method": method, "runs": len(cs),
            "failed": len(cs) - len(ok),
            "floor_ms": round(n * d / floor_mib_s * 1000.0, 1)}
        for m in METRICS:
            entry[m] = stats([c[m] for c in ok if c.get(m) is not None])
        out.append(entry)
    return out


def _median(summary: List[Dict[str, Any]], n: int, d: int, method: str,
            metric: str) -> Optional[float]:
    for e in summary:
        if (e["n"], e["d_mib"], e["method"]) == (n, d, method) and e[metric]:
            return e[metric]["median"]
    return None


def _best_vms(summary: List[Dict[str, Any]], n: int, d: int,
              metric: str) -> Tuple[Optional[str], Optional[float]]:
    found = [(v, m) for m in NEEDS_FREEZER
             for v in [_median(summary, n, d, m, metric)] if v is not None]
    if not found:
        return None, None
    value, method = min(found)
    return method, value


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return round(a / b, 2)


def _fmt(s: Optional[Dict[str, float]]) -> str:
    if not s:
        return "%26s" % "failed"
    return "%8.1f %8.1f %8.1f" % (s["median"], s["min"], s["max"])


def table(summary: List[Dict[str, Any]], floor_mib_s: float) -> str:
    lines: List[str] = []
    configs = sorted({(e["n"], e["d_mib"]) for e in summary})
    for n, d in configs:
        rows = [e for e in summary if (e["n"], e["d_mib"]) == (n, d)]
        floor = rows[0]["floor_ms"]
        lines.append("")
        lines.append("N=%d  D=%d MiB  dirty %d MiB  floor %.0f ms (at %.0f "
                     "MiB/s)" % (n, d, n * d, floor, floor_mib_s))
        lines.append("%-19s %-26s %-26s %-26s %9s %7s %7s"
                     % ("method", "all frozen ms  med/min/max",
                        "thaw ms  med/min/max", "stall ms  med/min/max",
                        "quiesced", "frz/vms", "stl/vms"))
        ref_freeze = _median(summary, n, d, VMS, "freeze_ms")
        _, ref_stall = _best_vms(summary, n, d, "stall_ms")
        for e in rows:
            fr = _ratio(_median(summary, n, d, e["method"], "freeze_ms"),
                        ref_freeze)
            st = _ratio(_median(summary, n, d, e["method"], "stall_ms"),
                        ref_stall)
            q = e.get("quiesced_ms")
            lines.append("%-19s %s  %s  %s  %9s %7s %7s%s" % (
                e["method"], _fmt(e["freeze_ms"]), _fmt(e["thaw_ms"]),
                _fmt(e["stall_ms"]),
                "%.1f" % q["median"] if q else "-",
                "-" if fr is None else "%.2f" % fr,
                "-" if st is None else "%.2f" % st,
                "  (%d failed)" % e["failed"] if e["failed"] else ""))
    lines.append("")
    lines.append("frz/vms: median all-frozen time / vmsnapshot's;  stl/vms: "
                 "median stall / best vmsnapshot mode's;  quiesced: median "
                 "ms from the end of the pre phase (after the first "
                 "presync pass) to the thaw")
    return "\n".join(lines)


def _target(name: str, value: Optional[float], limit: Optional[float],
            detail: str) -> Dict[str, Any]:
    met = None if value is None or limit is None else value <= limit
    return {"target": name, "value": value, "limit": limit, "met": met,
            "detail": detail}


def targets(summary: List[Dict[str, Any]], cycles: List[Dict[str, Any]],
            threads: Optional[Dict[str, Any]], cap: Optional[int],
            quiet_thaw: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The issue's targets, each with its measured value and limit; met is
    None where the configuration was not run."""
    out = []
    n, d = 8, 64
    vms = _median(summary, n, d, VMS, "freeze_ms")
    base = _median(summary, n, d, "fsfreeze-loop", "freeze_ms")
    floor = next((e["floor_ms"] for e in summary
                  if (e["n"], e["d_mib"]) == (n, d)), None)
    out.append(_target(
        "N=8 D=64: all-frozen <= 1/2 of sequential fsfreeze", vms,
        None if base is None else base / 2,
        "vmsnapshot %s ms, fsfreeze-loop %s ms" % (vms, base)))
    out.append(_target(
        "N=8 D=64: all-frozen <= 1.3 x physical floor", vms,
        None if floor is None else round(floor * 1.3, 1),
        "vmsnapshot %s ms, floor %s ms" % (vms, floor)))
    mode, stall = _best_vms(summary, n, d, "stall_ms")
    for b in BASELINES:
        bs = _median(summary, n, d, b, "stall_ms")
        out.append(_target(
            "N=8 D=64: max write stall (best mode) <= 1/2 of %s" % b, stall,
            None if bs is None else bs / 2,
            "%s %s ms, %s %s ms" % (mode, stall, b, bs)))
    default = _median(summary, n, d, DEFAULT, "stall_ms")
    for b in BASELINES:
        bs = _median(summary, n, d, b, "stall_ms")
        out.append(_target(
            "N=8 D=64: default config max write stall <= 1/%d of %s"
            % (STALL_FRACTION, b), default,
            None if bs is None else round(bs / STALL_FRACTION, 1),
            "%s %s ms, %s %s ms" % (DEFAULT, default, b, bs)))
    # The stall with the default configuration as it ships (no script);
    # the time quiesced with pre-scripts configured, the only case where
    # an application is held: without one, the pass before the freeze
    # delays the snapshot but quiesces nothing (its figure is shown).
    for nn in (8, 64):
        for metric, what, method in (
                ("stall_ms", "max write stall", DEFAULT),
                ("quiesced_ms", "time quiesced (pre-scripts configured)",
                 SCRIPTS)):
            clean = _median(summary, nn, 0, method, metric)
            today = _median(summary, nn, 0, VMS, metric)
            shown = "%s %s ms, %s %s ms" % (method, clean, VMS, today)
            if method != DEFAULT:
                shown += "; without scripts %s %s ms" % (
                    DEFAULT, _median(summary, nn, 0, DEFAULT, metric))
            out.append(_target(
                "N=%d D=0: default config %s no worse than presync = "
                "false (x1.25 for noise)" % (nn, what), clean,
                None if today is None else round(today * 1.25, 1), shown))
    quiet = None
    if quiet_thaw and quiet_thaw["n"] == 64:
        quiet = quiet_thaw.get(VMS)
    busy = _median(summary, 64, 0, VMS, "thaw_ms")
    out.append(_target(
        "thaw of 64 filesystems <= %g ms" % THAW_TARGET_MS,
        quiet["median"] if quiet else None, THAW_TARGET_MS if quiet else None,
        "median without writers %s ms (worst %s); with a writer waking on "
        "each mount %s ms" % (quiet and quiet["median"],
                              quiet and quiet["max"], busy)))
    at64 = [c for c in cycles if c["n"] == 64 and c["method"] in NEEDS_FREEZER]
    works = bool(at64) and all(c["error"] is None for c in at64)
    extra = threads["peak_extra_threads"] if threads else None
    out.append({
        "target": "N=64 works with a fixed thread cap",
        "value": extra, "limit": None if cap is None else cap + 1,
        "met": (works and extra is not None and cap is not None
                and extra <= cap + 1) if at64 else None,
        "detail": "%d/%d cycles ok at N=64; peak extra threads %s with %s "
                  "mounts; cap %s workers + 1 watchdog"
                  % (sum(c["error"] is None for c in at64), len(at64), extra,
                     threads["mounts"] if threads else None, cap)})
    return out


def quiet_thaw_text(q: Dict[str, Any]) -> str:
    parts = ["%s %.1f/%.1f/%.1f" % (m, s["median"], s["min"], s["max"])
             for m, s in q.items() if m != "n" and s]
    return ("thaw alone of %d clean filesystems, no writers (ms, "
            "med/min/max): %s" % (q["n"], "; ".join(parts)))


def targets_text(items: Iterable[Dict[str, Any]]) -> str:
    word = {True: "MET", False: "MISSED", None: "not measured"}
    return "\n".join("%-13s %s  [%s]" % (word[t["met"]], t["target"],
                                        t["detail"]) for t in items)


def write_json(path: str, doc: Dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")


def plot(path: str, summary: List[Dict[str, Any]]) -> Optional[str]:
    """Time-to-all-frozen and stall vs N per method, at the dirty size that
    was run with the most values of N.  Returns a reason if skipped."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    by_d: Dict[int, set] = {}
    for e in summary:
        by_d.setdefault(e["d_mib"], set()).add(e["n"])
    d = max(by_d, key=lambda k: (len(by_d[k]), k))
    if len(by_d[d]) < 2:
        return "fewer than two values of N at one dirty size"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, metric, title in ((axes[0], "freeze_ms", "time until all frozen"),
                              (axes[1], "stall_ms", "max application write "
                               "stall")):
        methods = []
        for e in summary:
            if e["method"] not in methods:
                methods.append(e["method"])
        for m in methods:
            pts = sorted((e["n"], e[metric]) for e in summary
                         if e["method"] == m and e["d_mib"] == d and e[metric])
            if not pts:
                continue
            xs = [p[0] for p in pts]
            med = [p[1]["median"] for p in pts]
            lo = [p[1]["median"] - p[1]["min"] for p in pts]
            hi = [p[1]["max"] - p[1]["median"] for p in pts]
            ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3,
                        label=m)
        if metric == "freeze_ms":
            floor = sorted({(e["n"], e["floor_ms"]) for e in summary
                            if e["d_mib"] == d})
            if any(f for _, f in floor):
                ax.plot([f[0] for f in floor], [f[1] for f in floor], "k--",
                        label="physical floor")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(by_d[d]))
        ax.set_xticklabels([str(n) for n in sorted(by_d[d])])
        ax.set_yscale("log")
        ax.set_xlabel("filesystems (N)")
        ax.set_ylabel("ms")
        ax.set_title("%s, %d MiB dirty each" % (title, d))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
