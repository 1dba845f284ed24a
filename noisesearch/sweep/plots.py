"""The plots of a sweep report: one panel per metric against a cost axis, 95% CI error bars, each held-out metric's
peak starred (the onset of verifier hacking) and an IS protocol's ceiling drawn."""

from __future__ import annotations

import io
import math

from noisesearch.sweep.tables import AXES, METRIC_NAMES, best_index, curves, protocol_ceiling


def plot(rows: list[dict], metrics: list[str], title: str, x: str = "nfe") -> bytes:
    """PNG bytes: one panel per metric against cost axis ``x`` (log scale), error bars = 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(5 * columns, 4 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    peaks = False
    for ax, metric in zip(axes.flat, metrics):
        peaks = _panel(ax, rows, metric, x) or peaks
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if peaks:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="*", markersize=10, color="grey", mec="black", linestyle=""))
        labels.append("best value of a held-out metric (hacking onset if before the last budget)")
    axes.flat[0].legend(handles, labels, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _panel(ax, rows: list[dict], metric: str, x: str) -> bool:
    """Draw ``metric``'s curves on ``ax``; returns whether a held-out metric's peak was starred."""
    positive, peaks = True, False
    for name, points in curves(rows, metric, x).items():
        positive = positive and all(p[0] > 0 for p in points)
        style = {"linestyle": "--", "color": "black"} if name.startswith("more denoising") else {}
        line = ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            marker="o",
            markersize=4,
            capsize=2,
            label=name,
            **style,
        )
        k = best_index([p[1] for p in points], metric) if metric != "best_score" else None
        if k is not None:  # the held-out metric's peak: the onset of verifier hacking
            ax.plot(points[k][0], points[k][1], marker="*", markersize=13, color=line[0].get_color(), mec="black")
            peaks = True
    if positive:  # a free verifier costs 0 dollars: no log axis then
        ax.set_xscale("log", base=2 if x == "nfe" else 10)
    ceiling = protocol_ceiling(rows, metric)
    if ceiling is not None:
        ax.axhline(ceiling, linestyle=":", color="grey")
        ax.annotate(f"a perfect set: {ceiling:.3f}", (0.01, ceiling), xycoords=("axes fraction", "data"), fontsize=7)
    ax.set_xlabel(AXES[x][1])
    ax.set_ylabel(METRIC_NAMES.get(metric, metric))
    ax.grid(alpha=0.3)
    return peaks
