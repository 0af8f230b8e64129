"""The report's figures, drawn with matplotlib (Agg) and returned as inline SVG text, so the
page needs no other file. One panel per configuration (dtype, mask, level and whatever else
varies), one line per implementation, the same colour for an implementation in every figure.

Each function returns None when there is nothing to draw; the page then says why.
"""
from __future__ import annotations

import io
import math
import re

from harness.case import config_key, config_order, config_text, query_len, sweep_len
from harness.constants import ITEMSIZE
from harness.report.format import finite, fmt_tflops
from harness.report.run import Run
from harness.report.scaling import fit_lookup
from harness.report.shapes import impls_of, varying
from harness.units import MIB

MAX_HEATMAP_ROWS = 120  # beyond this a heatmap is unreadable; the table has every row


STYLE = {
    "svg.fonttype": "none",        # text stays text: smaller, crisp, searchable
    "svg.hashsalt": "attnbench",   # deterministic ids
    "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 7.5,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False,
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit: files only
    import matplotlib.pyplot as plt

    return plt


def _styled(draw):
    """Draw under the report's style without changing the caller's matplotlib settings."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with _plt().rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


_counter = [0]


def to_svg(fig) -> str:
    """The figure as an <svg> element: no XML header, ids made unique to this figure (several
    inline SVGs share one document, and matplotlib's ids are only unique within a file)."""
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    _counter[0] += 1
    prefix = f"f{_counter[0]}-"
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{prefix}{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)
    return text


def colors(impls: list[str]) -> dict[str, tuple]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(impls) <= 10 else "tab20")
    return {impl: cmap(i % cmap.N) for i, impl in enumerate(sorted(impls))}


MARKERS = "osD^vP*Xhp<>"


def _panels(records: list[dict]) -> dict[tuple, list[dict]]:
    """Records grouped by configuration (harness.case.config_key), in the tables' order."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        out.setdefault(config_key(r), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: config_order(kv[0])))


def panel_title(rs: list[dict], varying: list[str]) -> str:
    """The panel's configuration as the tables name it, with its level, and the fixed query
    length of a rectangular sweep (whose x axis is then the key length)."""
    title = config_text(rs[0], ["level", *(a for a in varying if a != "level")])
    q = query_len(rs[0])
    return title + (f", {q} queries against N keys" if q is not None else "")


def _grid(plt, n: int, width=4.4, height=4.4):
    if n == 1:  # one configuration: a larger panel
        width, height = 6.0, 5.2
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _series(rs: list[dict], field: str) -> dict[str, list[tuple]]:
    """{impl: [(N, value, low, high)]}: several records at one N (seeds) reduce to the median."""
    import numpy as np

    raw: dict[str, dict[int, list]] = {}
    for r in rs:
        v = finite(r[field])
        if r["status"] != "ok" or v is None or v <= 0:
            continue
        low = finite(r["ci_low_s"]) if field == "median_s" else None
        high = finite(r["ci_high_s"]) if field == "median_s" else None
        raw.setdefault(r["impl"], {}).setdefault(sweep_len(r), []).append((v, low, high))
    out = {}
    for impl, by_n in sorted(raw.items()):
        pts = []
        for n in sorted(by_n):
            vals = by_n[n]
            lows = [x[1] for x in vals if x[1] is not None]
            highs = [x[2] for x in vals if x[2] is not None]
            pts.append((n, float(np.median([x[0] for x in vals])),
                        min(lows) if lows else None, max(highs) if highs else None))
        out[impl] = pts
    return out


def _legend(ax):
    """Below the panel, so it never hides a line."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
              handlelength=1.8, columnspacing=1.2, borderaxespad=0.0)


def _panel_figure(run, ok: list[dict]):
    """What every per-configuration figure starts from: the panels of `ok` records, the axes
    that vary, one colour per implementation of the run, and a figure with a grid of axes."""
    panels = _panels(ok)
    fig, axes = _grid(_plt(), len(panels))
    return panels, varying(ok), colors(impls_of(run.records)), fig, axes


def _marker(color: dict, impl: str) -> str:
    return MARKERS[sorted(color).index(impl) % len(MARKERS)]


def _log_n_axis(ax, ns):
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns], rotation=0 if len(ns) <= 6 else 45)
    ax.minorticks_off()
    if len(ns) == 1:
        ax.set_xlim(ns[0] / 1.6, ns[0] * 1.6)
    ax.set_xlabel("seq_len N")


@_styled
def latency(run: Run) -> str | None:
    """Median latency vs N, log-log, error bars = 95% CI of the median, k in the legend."""
    ok = [r for r in run.records if r["status"] == "ok" and finite(r["median_s"])]
    if not ok:
        return None
    panels, varying, color, fig, axes = _panel_figure(run, ok)
    fits = fit_lookup(run)
    for ax, (config, rs) in zip(axes, panels.items()):
        series = _series(rs, "median_s")
        for i, (impl, pts) in enumerate(series.items()):
            ns = [p[0] for p in pts]
            ys = [p[1] * 1e3 for p in pts]
            lo = [(p[1] - (p[2] if p[2] is not None else p[1])) * 1e3 for p in pts]
            hi = [((p[3] if p[3] is not None else p[1]) - p[1]) * 1e3 for p in pts]
            fit = fits.get((impl, "time", *config))
            k = fit.get("exponent") if fit else None
            label = f"{impl}  k={k:.2f}" if k is not None else f"{impl}  k: –"
            ax.errorbar(ns, ys, yerr=[lo, hi], label=label, color=color[impl],
                        marker=_marker(color, impl), markersize=3.5,
                        linewidth=1.3, capsize=2.5, elinewidth=1)
        ax.set_yscale("log")
        _log_n_axis(ax, sorted({sweep_len(r) for r in rs}))
        ax.set_ylabel("median latency (ms)")
        ax.set_title(panel_title(rs, varying))
        _legend(ax)
    fig.tight_layout()
    return to_svg(fig)


@_styled
def memory(run: Run) -> str | None:
    """Peak extra memory vs N, log-log, with one score matrix (B·H·N·N_kv·itemsize) drawn."""
    ok = [r for r in run.records if r["status"] == "ok" and (finite(r["peak_mem_bytes"]) or 0) > 0]
    if not ok:
        return None
    panels, varying, color, fig, axes = _panel_figure(run, ok)
    fits = fit_lookup(run)
    for ax, (config, rs) in zip(axes, panels.items()):
        series = _series(rs, "peak_mem_bytes")
        for impl, pts in series.items():
            fit = fits.get((impl, "memory", *config))
            k = fit.get("exponent") if fit else None
            label = f"{impl}  k={k:.2f}" if k is not None else impl
            ax.plot([p[0] for p in pts], [p[1] / MIB for p in pts], label=label,
                    color=color[impl], marker=_marker(color, impl),
                    markersize=3.5, linewidth=1.3)
        ns = sorted({sweep_len(r) for r in rs})
        first = rs[0]
        itemsize = ITEMSIZE.get(first["dtype"])
        if itemsize and first["batch"] and first["heads"]:
            q = query_len(first)
            ax.plot(ns, [first["batch"] * first["heads"] * (q or n) * n * itemsize / MIB
                         for n in ns],
                    color="0.35", linestyle="--", linewidth=1.2,
                    label=f"one score matrix B·H·N²·{itemsize} B")
        ax.set_yscale("log")
        _log_n_axis(ax, ns)
        ax.set_ylabel("peak extra memory (MiB)")
        ax.set_title(panel_title(rs, varying))
        _legend(ax)
    fig.tight_layout()
    return to_svg(fig)


@_styled
def throughput(run: Run) -> str | None:
    """Achieved TFLOP/s vs N, with the machine's measured matmul peak and a % of peak axis."""
    ok = [r for r in run.records if r["status"] == "ok" and finite(r["tflops"])]
    if not ok:
        return None
    panels, varying, color, fig, axes = _panel_figure(run, ok)
    peaks = run.env.get("peaks") or {}
    for ax, (config, rs) in zip(axes, panels.items()):
        top = 0.0
        for impl, pts in _series(rs, "tflops").items():
            top = max([top, *(p[1] for p in pts)])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=impl, color=color[impl],
                    marker=_marker(color, impl), markersize=3.5,
                    linewidth=1.3)
        ns = sorted({sweep_len(r) for r in rs})
        _log_n_axis(ax, ns)
        device, dtype = rs[0]["device"], rs[0]["dtype"]
        peak = (peaks.get(device) or {}).get("matmul_tflops", {}).get(dtype)
        if peak:
            ax.axhline(peak, color="0.35", linestyle="--", linewidth=1.2,
                       label=f"measured matmul peak {fmt_tflops(peak)} TFLOP/s")
            ax.set_ylim(0, max(peak, top) * 1.08)
            ax.secondary_yaxis("right", functions=(lambda y, p=peak: y / p * 100,
                                                   lambda q, p=peak: q * p / 100)
                               ).set_ylabel("% of measured peak")
        else:
            ax.set_ylim(bottom=0)
        ax.set_ylabel("achieved TFLOP/s")
        ax.set_title(panel_title(rs, varying))
        _legend(ax)
    fig.tight_layout()
    return to_svg(fig)


@_styled
def speedup_heatmap(speed: dict) -> str | None:
    """Shapes × implementations, colour = log2(speedup over the baseline), green is faster."""
    rows = speed["rows"][:MAX_HEATMAP_ROWS]
    if not rows or not speed["impls"]:
        return None
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    plt = _plt()
    data = np.array([[math.log2(x) if x else np.nan for x in row["ratios"]] for row in rows])
    drawn = data[np.isfinite(data)]
    span = max(1.0, float(np.abs(drawn).max())) if drawn.size else 1.0
    height = 0.26 * len(rows) + 1.6
    width = 0.95 * len(speed["impls"]) + 2.8
    fig, ax = plt.subplots(figsize=(width, height))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="0.9")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto",
                      norm=TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span))
    ax.grid(False)
    ax.set_xticks(range(len(speed["impls"])))
    ax.set_xticklabels(speed["impls"], rotation=35, ha="right")
    ax.xaxis.tick_top()
    ax.set_xticklabels(speed["impls"], rotation=35, ha="left")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([" ".join(row["labels"][:-1]) + f"  N={row['labels'][-1]}"
                        if speed["columns"][-1] == "N" else " ".join(row["labels"])
                        for row in rows])
    for i, row in enumerate(rows):
        for j, text in enumerate(row["texts"]):
            if text:
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="black" if abs(data[i, j]) < span * 0.6 else "white")
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    step = max(1, math.ceil(span / 3))
    ticks = [t for t in range(-int(span), int(span) + 1) if t % step == 0]
    bar.set_ticks(ticks)
    bar.set_ticklabels([f"{2 ** t}×" if t >= 0 else f"1/{2 ** -t}×" for t in ticks])
    bar.set_label(f"speedup over {speed['baseline']}")
    fig.tight_layout()
    return to_svg(fig)


@_styled
def roofline(run: Run, view: dict) -> str | None:
    """Achieved TFLOP/s against arithmetic intensity (FLOP/byte), log-log, under the roof
    min(matmul peak, intensity × copy bandwidth) measured on this machine; one panel per
    (device, dtype), one marker per implementation, hollow where the figure is unstable."""
    if not view["rows"]:
        return None
    import numpy as np

    panels: dict[tuple, list[dict]] = {}
    for p in view["rows"]:
        panels.setdefault((p["device"], p["dtype"]), []).append(p)
    fig, axes = _grid(_plt(), len(panels))
    color = colors(impls_of(run.records))
    for ax, ((device, dtype), pts) in zip(axes, sorted(panels.items())):
        roof = next(r for r in view["roofs"] if (r["device"], r["dtype"]) == (device, dtype))
        xs = [p["intensity"] for p in pts]
        lo, hi = min(min(xs), roof["ridge"]) / 3, max(max(xs), roof["ridge"]) * 3
        grid = np.geomspace(lo, hi, 200)
        ax.plot(grid, np.minimum(roof["peak_tflops"], grid * roof["bandwidth_gbs"] / 1e3),
                color="0.25", linewidth=1.6,
                label=f"roof: {fmt_tflops(roof['peak_tflops'])} TFLOP/s, "
                      f"{roof['bandwidth_gbs']:.3g} GB/s")
        for impl in sorted({p["impl"] for p in pts}):
            mine = [p for p in pts if p["impl"] == impl]
            for hollow in (False, True):
                some = [p for p in mine if p["unstable"] == hollow]
                if some:
                    ax.scatter([p["intensity"] for p in some],
                               [p["achieved_tflops"] for p in some], s=22,
                               marker=_marker(color, impl), edgecolors=color[impl],
                               facecolors="none" if hollow else color[impl],
                               label=impl + (" (unstable)" if hollow else ""), zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("arithmetic intensity (FLOP/byte, bytes model in the text)")
        ax.set_ylabel("achieved TFLOP/s")
        ax.set_title(f"{device} {dtype}")
        _legend(ax)
    fig.tight_layout()
    return to_svg(fig)
