"""The statistics of the benchmarks and the markdown they are shown in: percentiles and
quantiles of what a measurement saw, medians and ranges over the repetitions of a case, ratios,
verdicts and tables.  Pure functions of lists and of a run's JSON: no I/O.

Cases are labelled ``system@number`` where a workload has several per system (``timewheel@10000``:
10,000 tasks; ``sqlite3@100000``: 100,000 pending): :func:`case_system`, :func:`case_number`.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from typing import Any, Iterable

from .harness import Measurement


# -- within one measurement -------------------------------------------------------------------
def pct(s: list[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0..100) of a sorted list; NaN if it is empty."""
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def quantiles(values: list[float], points: int = 201) -> list[float]:
    """``points`` evenly spaced quantiles (0 %..100 %) of ``values``: a compact CDF of what
    the runs noted, kept in the results instead of every value."""
    if not values:
        return []
    s = sorted(values)
    n = len(s)
    return [s[min(n - 1, round(q * (n - 1) / (points - 1)))] for q in range(points)]


# -- over the repetitions of a case -----------------------------------------------------------
class Stat:
    """Median and range of one metric over the repetitions of one case."""

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = [v for v in values if isinstance(v, (int, float)) and v == v]

    def __bool__(self) -> bool:
        return bool(self.values)

    @property
    def med(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    def fmt(self, f: str = "{:,.0f}", scale: float = 1.0) -> str:
        if not self.values:
            return "n/a"
        if len(self.values) == 1:
            return f.format(self.med * scale)
        return f"{f.format(self.med * scale)} ({f.format(self.lo * scale)}–{f.format(self.hi * scale)})"


def group(doc: dict, workload: str) -> "OrderedDict[str, list[Measurement]]":
    """Results of one workload by case, in plan order; failed measurements kept aside."""
    out: "OrderedDict[str, list[Measurement]]" = OrderedDict()
    for m in doc["measurements"]:
        if m["workload"] == workload:
            out.setdefault(m["case"], []).append(m)
    return out


def ok(ms: list[Measurement]) -> list[dict]:
    """The results of the measurements that did not fail."""
    return [m["result"] for m in ms if "error" not in m["result"]]


def errors(ms: list[Measurement]) -> list[str]:
    return [str(m["result"]["error"]) for m in ms if "error" in m["result"]]


def stat(ms: list[Measurement], key: str) -> Stat:
    return Stat(r.get(key) for r in ok(ms))


def case_system(case: str) -> str:
    return case.split("@", 1)[0]


def case_number(case: str) -> int:
    return int(case.split("@", 1)[1]) if "@" in case else 0


# -- verdicts and tables ----------------------------------------------------------------------
def ratio(x: float, ref: float) -> str:
    if not (x == x and ref == ref) or ref == 0:
        return "n/a"
    return f"{x / ref:.2f}×"


def worst(s: Stat, limit: float, unit: str) -> str:
    """Targets on a noisy machine are judged on the median; say so when a run was over."""
    over = sum(1 for v in s.values if v > limit)
    return f"; {over} of {len(s.values)} runs over (worst {s.hi:.3g} {unit})" if over else ""


def verdict(good: bool) -> str:
    return "met" if good else "**MISSED**"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
