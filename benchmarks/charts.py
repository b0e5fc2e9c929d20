"""The plots more than one report draws: a lateness CDF, a burst's drain, a median with
min–max bars; the colours of the file-store systems; matplotlib, headless.

matplotlib (the ``bench`` extra) is imported by :func:`pyplot` only, on the first plot: a
measurement process never draws, and reading a report's tables does not need it.
"""

from __future__ import annotations

from typing import Any, Optional

from .stats import Stat, ok

COLORS = {"timewheel": "#1f77b4", "huey": "#ff7f0e", "huey-normal": "#ffbb78",
          "apscheduler": "#2ca02c", "apscheduler-nograce": "#98df8a", "sqlite3": "#7f7f7f"}


def pyplot() -> Any:
    """``matplotlib.pyplot`` drawing to files (the Agg backend: no display needed)."""
    import matplotlib  # optional (bench extra): only the plots need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig: Any, path: str) -> None:
    """Lay out ``fig``, write it to ``path`` (PNG) and free it."""
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)


def median_bars(ax: Any, points: "list[tuple[float, Stat]]", **style: Any) -> None:
    """One line through the medians at each ``(x, Stat)`` that has values, bars from min to max."""
    xs, med, lo, hi = [], [], [], []
    for x, s in points:
        if s:
            xs.append(x)
            med.append(s.med)
            lo.append(s.med - s.lo)
            hi.append(s.hi - s.med)
    if xs:
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=4, **style)


def lateness_cdf(per_system: "dict[str, list[dict]]", ran_key: str, floor_ms: float, target_ms: float,
                 xlabel: str, title: str, path: str, colors: Optional[dict[str, str]] = None) -> None:
    """One CDF line per system of every run's lateness quantiles (``cdf_ms``) pooled, scaled by
    the share of tasks that ran (``ran_key`` / ``n``), a dotted line at ``target_ms``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for system, ms in per_system.items():
        vals = sorted(v for r in ok(ms) for v in r["cdf_ms"])
        if not vals:
            continue
        ran = Stat(r[ran_key] / r["n"] for r in ok(ms)).med
        ys = [ran * (k + 1) / len(vals) for k in range(len(vals))]
        ax.plot([max(v, floor_ms) for v in vals], ys, color=(colors or COLORS).get(system), lw=1.8,
                label=f"{system} (ran {100 * ran:.0f}%)")
    ax.set_xscale("log")
    ax.axvline(target_ms, color="red", ls=":", lw=1)
    ax.text(target_ms * 1.06, 0.02, f"{target_ms:g} ms", color="red", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of tasks started")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    save(fig, path)


def burst_drain(per_system: "dict[str, list[dict]]", title: str, path: str,
                colors: Optional[dict[str, str]] = None, target_s: Optional[float] = None) -> None:
    """Tasks started against time after the due instant, one line per run (``drain_curve_s``,
    quantiles of the start offsets), the burst's size dotted, ``target_s`` in red."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for system, ms in per_system.items():
        for k, r in enumerate(ok(ms)):
            curve = r["drain_curve_s"]
            if not curve:
                continue
            ys = [r["ran"] * q / (len(curve) - 1) for q in range(len(curve))]
            ax.plot([max(x, 1e-3) for x in curve], ys, color=(colors or COLORS).get(system), lw=1.5,
                    alpha=0.8, label=system if k == 0 else None)
    ax.axhline(next((r["n"] for ms in per_system.values() for r in ok(ms)), 0), color="black", lw=0.7, ls=":")
    if target_s is not None:
        ax.axvline(target_s, color="red", lw=1, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("seconds after the due instant (log)")
    ax.set_ylabel("tasks started")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    save(fig, path)
