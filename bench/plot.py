"""``python -m bench.plot RESULTS.json OUTDIR``: draw the benchmark's JSON as PNG charts.

- ``wall-time.png``: wall time against tenant size (log-log), one line per contender, one panel per page
  latency, with pages × latency (what latency alone costs any client that follows nextLinks) for reference;
- ``peak-rss.png``: peak RSS against tenant size, one line per contender;
- ``delta.png``: the delta slot against the full slot before it (wall time and peak RSS), per tenant
  size and page latency.

A chart whose data the JSON lacks (``--scenario contenders`` or ``delta``) is not drawn. matplotlib
lives in .venv-bench only (requirements-bench.txt): ``python -m bench`` runs this module there, after
writing its JSON. The output is deterministic: the Agg backend, and no software or date in the PNGs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator  # noqa: E402

#: One colour, marker and label per contender, the same in every chart; ours is drawn heavier.
STYLE = {
    "floor": ("#7f7f7f", "s", "floor (plain GETs, body discarded)"),
    "ours": ("#1f5fbf", "o", "ours (graph_export run, end to end)"),
    "seed": ("#e07b00", "^", "seed (list of users, one json.dumps)"),
    "msgraph": ("#2a9d4b", "D", "msgraph (msgraph-sdk PageIterator)"),
}
FULL_COLOUR, DELTA_COLOUR = "#9bb7e0", "#1f5fbf"
RSS_NOTE = ("Peak RSS is ru_maxrss from wait4. Linux carries the spawning process's size over fork and exec, "
            "so no figure can be\nbelow the bench process's own size (about 55 MB): the floor's line is that "
            "bound, not the floor's own peak.")
WIDTH_IN, DPI = 10.0, 100  # 1,000 px wide: still readable scaled down to ~800 px
SAVE = {"dpi": DPI, "metadata": {"Software": None}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the JSON that python -m bench wrote")
    parser.add_argument("outdir", type=Path, help="where the PNGs go (created if missing)")
    args = parser.parse_args(argv)
    written = plot(json.loads(args.results.read_text()), args.outdir)
    for path in written:
        print(f"chart: {path}", file=sys.stderr)
    return 0


def plot(results: dict[str, Any], outdir: Path) -> list[Path]:
    """Write every chart the results have data for; return their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.titlesize": 14, "legend.fontsize": 10,
                         "axes.grid": True, "grid.alpha": 0.3, "grid.linestyle": "-"})
    written = []
    if results.get("summary"):
        written.append(_wall_time(results, outdir / "wall-time.png"))
        written.append(_peak_rss(results, outdir / "peak-rss.png"))
    if results.get("delta", {}).get("summary"):
        written.append(_delta(results["delta"], outdir / "delta.png"))
    return written


def _wall_time(results: dict[str, Any], path: Path) -> Path:
    rows = results["summary"]
    latencies = sorted({r["latency_ms"] for r in rows})
    fig, axes = plt.subplots(1, len(latencies), figsize=(WIDTH_IN, 5.2), squeeze=False, sharey=True)
    for ax, latency in zip(axes[0], latencies, strict=True):
        here = [r for r in rows if r["latency_ms"] == latency]
        for contender in _contenders(here):
            mine = sorted((r for r in here if r["contender"] == contender), key=lambda r: r["users"])
            _line(ax, contender, [r["users"] for r in mine], [r["wall_s"] for r in mine])
        if latency:
            floor = sorted({(r["users"], r["latency_floor_s"]) for r in here})
            ax.plot([u for u, _ in floor], [s for _, s in floor], color="black", linestyle="--", linewidth=1,
                    label="pages × latency (999 users a page)", zorder=1)
        ax.set_title(f"page latency {latency:g} ms")
        ax.set_xlabel("tenant size (users, log scale)")
        _log_axis(ax.xaxis, [r["users"] for r in here], _users)
        ax.set_yscale("log")
    axes[0][0].set_ylabel("wall time (s, log scale)")
    _log_axis(axes[0][0].yaxis, [r["wall_s"] for r in rows] + [r["latency_floor_s"] for r in rows if r["latency_ms"]],
              _seconds)
    _legend(fig, axes[0])
    fig.suptitle("Wall time of one full export against tenant size (lower is better)")
    fig.text(0.5, 0.005, _caption(results), ha="center", va="bottom", fontsize=9.5, color="#444444")
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    return _save(fig, path)


def _peak_rss(results: dict[str, Any], path: Path) -> Path:
    rows = results["summary"]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.6))
    peaks: dict[tuple[str, int], float] = {}
    for r in rows:  # RSS hardly depends on the page latency: the most of any latency
        key = (r["contender"], r["users"])
        peaks[key] = max(peaks.get(key, 0.0), r["peak_rss_mb"])
    for contender in _contenders(rows):
        sizes = sorted(u for c, u in peaks if c == contender)
        _line(ax, contender, sizes, [peaks[(contender, u)] for u in sizes])
    ax.set_yscale("log")
    _log_axis(ax.xaxis, [r["users"] for r in rows], _users)
    _log_axis(ax.yaxis, list(peaks.values()), lambda mb, _pos=None: f"{mb:,.0f}", steps=(1, 2, 5))
    ax.set_xlabel("tenant size (users, log scale)")
    ax.set_ylabel("peak RSS (MB, log scale)")
    ax.legend(loc="upper left", frameon=True)
    latencies = ", ".join(f"{x:g}" for x in sorted({r["latency_ms"] for r in rows}))
    ax.set_title(f"the most of page latencies {latencies} ms", fontsize=10.5, color="#444444")
    fig.suptitle("Peak RSS of the exporting process against tenant size (lower is better)")
    fig.text(0.5, 0.005, f"{RSS_NOTE}\n{_caption(results)}", ha="center", va="bottom", fontsize=9.5,
             color="#444444")
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return _save(fig, path)


def _delta(delta: dict[str, Any], path: Path) -> Path:
    rows = sorted(delta["summary"], key=lambda r: (r["users"], r["latency_ms"]))
    fig, (walls, rss) = plt.subplots(1, 2, figsize=(WIDTH_IN, 5.6))
    groups = [f"{_users(r['users'])} users\n{r['latency_ms']:g} ms\n{r['change_records']:,.0f} changes" for r in rows]
    at = list(range(len(rows)))
    width = 0.38
    left, right = [x - width / 2 for x in at], [x + width / 2 for x in at]

    walls.bar(left, [r["full_wall_s"] for r in rows], width, color=FULL_COLOUR, label="full slot (slot A)")
    walls.bar(right, [r["delta_wall_s"] for r in rows], width, color=DELTA_COLOUR, label="delta slot (slot B)")
    walls.set_yscale("log")
    _log_axis(walls.yaxis, [r["full_wall_s"] for r in rows] + [r["delta_wall_s"] for r in rows], _seconds)
    for x, r in zip(right, rows, strict=True):
        walls.annotate(f"{_percent(r['delta_over_full'])}\nof full", (x, r["delta_wall_s"]), xytext=(0, 3),
                       textcoords="offset points", ha="center", va="bottom", fontsize=9)
    walls.set_ylabel("wall time (s, log scale)")
    walls.set_title("wall time")

    rss.bar(left, [r["full_peak_rss_mb"] for r in rows], width, color=FULL_COLOUR, label="full slot (slot A)")
    rss.bar(right, [r["delta_peak_rss_mb"] for r in rows], width, color=DELTA_COLOUR, label="delta slot (slot B)")
    for xs, key in ((left, "full_peak_rss_mb"), (right, "delta_peak_rss_mb")):
        for x, r in zip(xs, rows, strict=True):
            rss.annotate(f"{r[key]:.0f}", (x, r[key]), xytext=(0, 2), textcoords="offset points", ha="center",
                         va="bottom", fontsize=9)
    rss.set_ylabel("peak RSS (MB)")
    rss.set_title("peak RSS")
    rss.set_ylim(0, max(max(r["full_peak_rss_mb"], r["delta_peak_rss_mb"]) for r in rows) * 1.18)

    for ax in (walls, rss):
        ax.set_xticks(at, groups, fontsize=9.5)
        ax.grid(axis="x", visible=False)
        ax.margins(y=0.12)
    walls.set_ylim(top=walls.get_ylim()[1] * 1.8)  # room for the labels on a log axis
    walls.legend(loc="upper left")
    repetitions = max((r.get("repetitions", 1) for r in rows), default=1)
    fig.suptitle(f"Delta mode: a slot made from {delta.get('percent', 1):g} % of changes against the full slot "
                 "before it")
    fig.text(0.5, 0.005, f"{_repetitions(repetitions)}; changes: the users/delta records the delta slot read.\n"
             "Peak RSS is ru_maxrss from wait4, which cannot be below the bench process's own size (about 55 MB).",
             ha="center", va="bottom", fontsize=9.5, color="#444444")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)


def _contenders(rows: list[dict[str, Any]]) -> list[str]:
    present = {r["contender"] for r in rows}
    return [c for c in STYLE if c in present] + sorted(present - set(STYLE))


def _line(ax: Any, contender: str, xs: list[float], ys: list[float]) -> None:
    colour, marker, label = STYLE.get(contender, (None, "x", contender))
    ours = contender == "ours"
    ax.plot(xs, ys, color=colour, marker=marker, label=label, linewidth=2.6 if ours else 1.6,
            markersize=7 if ours else 6, zorder=3 if ours else 2)
    ax.set_xscale("log")


def _legend(fig: Any, axes: Any) -> None:
    """One legend for the figure: every line of every panel, once."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, 0.035))


def _log_axis(axis: Any, values: list[float], label: Any, steps: tuple[int, ...] = (1, 2, 5)) -> None:
    """Ticks at 1-2-5 steps (or powers of ten for tenant sizes) spanning the data, in plain numbers."""
    positive = [v for v in values if v > 0]
    low, high = min(positive), max(positive)
    if label is _users:
        steps = (1,)
    ticks, decade = [], 10.0 ** (len(str(int(low))) - 1) if low >= 1 else 0.01
    while decade <= high * 10:
        ticks += [decade * s for s in steps if low / 1.5 <= decade * s <= high * 1.5]
        decade *= 10
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _users(n: float, _pos: Any = None) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:g}{suffix}"
    return f"{n:g}"


def _seconds(s: float, _pos: Any = None) -> str:
    return f"{s:g}" if s < 1000 else f"{s:,.0f}"


def _percent(ratio: float) -> str:
    return f"{100 * ratio:.1f} %" if ratio < 0.1 else f"{100 * ratio:.0f} %"


def _repetitions(n: int) -> str:
    return "one repetition" if n == 1 else f"median of {n} repetitions"


def _caption(results: dict[str, Any]) -> str:
    runs = results.get("runs", [])
    repetitions = max((r["repetition"] for r in runs if r["contender"] != "msgraph"), default=0) + 1
    caption = f"{_repetitions(repetitions)} per point"
    if "msgraph" in {r["contender"] for r in results["summary"]}:
        caption += " (msgraph-sdk: one, and up to 100,000 users)"
    else:
        caption += "; msgraph-sdk was not run for these charts: its figures are in docs/performance.md's table"
    return caption


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, **SAVE)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
