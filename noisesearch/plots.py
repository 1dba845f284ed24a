"""Scaling-curve plots and tables, computed only from flat result rows (``results.jsonl``).

Rows that differ only in their seed are one point: the mean, with the standard deviation over
seeds as the spread (error bars in plots, ``mean ± std`` in tables).
"""

from __future__ import annotations

import statistics
from pathlib import Path

METRICS = ("fid", "is", "precision", "recall", "accuracy", "diversity", "mean_best_score")
METRIC_LABELS = {
    "fid": "FID (lower is better)",
    "is": "IS (higher is better)",
    "precision": "precision",
    "recall": "recall",
    "accuracy": "class accuracy",
    "diversity": "diversity (1 = real data)",
    "mean_best_score": "mean best verifier score",
}


def series_label(row: dict) -> str:
    """Legend label of a row's line: the baseline, or algorithm + verifier."""
    if row["algorithm"] == "none":
        return "more denoising steps (no search)"
    return f"{row['algorithm']} search, {row['verifier']} verifier"


def aggregate(rows: list[dict]) -> dict[str, list[dict]]:
    """Series label -> points sorted by budget; each point holds ``metric`` (mean over seeds),
    ``metric_std`` and ``seeds`` for every metric present, plus ``nfe_per_sample``."""
    points: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (series_label(row), row["algorithm"], row.get("verifier"), row["steps"], row["budget"])
        points.setdefault(key, []).append(row)
    series: dict[str, list[dict]] = {}
    for (label, algorithm, verifier, steps, budget), group in points.items():
        point = {
            "algorithm": algorithm,
            "verifier": verifier,
            "steps": steps,
            "budget": budget,
            "seeds": len(group),
            "nfe_per_sample": statistics.fmean(r["nfe_per_sample"] for r in group),
        }
        for metric in METRICS:
            values = [r[metric] for r in group if r.get(metric) is not None]
            if values:
                point[metric] = statistics.fmean(values)
                point[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        series.setdefault(label, []).append(point)
    return {k: sorted(v, key=lambda p: p["budget"]) for k, v in series.items()}


def scaling_plot(rows: list[dict], path: Path, *, metrics=("fid", "is"), title: str | None = None) -> None:
    """One panel per metric: metric against NFEs per sample (log2 axis), one line per series,
    error bars over seeds where there are several; a star at each series' best value (lowest FID,
    highest otherwise: ``sweep.report.best_index``), the onset of verifier hacking when it is not the last."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisesearch._io import atomic_write_bytes
    from noisesearch.sweep.report import best_index

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, metric in zip(axes, metrics):
        for label, line in aggregate(rows).items():
            style = {"linestyle": "--", "color": "black"} if label.startswith("more denoising") else {}
            bars = ax.errorbar(
                [p["nfe_per_sample"] for p in line],
                [p[metric] for p in line],
                yerr=[p[f"{metric}_std"] for p in line],
                marker="o",
                markersize=4,
                capsize=2,
                label=label,
                **style,
            )
            best = best_index([p[metric] for p in line], metric)
            if best is not None:  # every metric here is held out: its best budget, where hacking starts
                peak = line[best]
                ax.plot(
                    peak["nfe_per_sample"],
                    peak[metric],
                    marker="*",
                    markersize=12,
                    color=bars[0].get_color(),
                    mec="black",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFEs per sample")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def _cell(point: dict, metric: str, digits: int) -> str:
    if metric not in point:
        return "-"
    value = f"{point[metric]:.{digits}f}"
    return value + (f" ± {point[f'{metric}_std']:.{digits}f}" if point["seeds"] > 1 else "")


COLUMNS = [
    ("FID", "fid", 2),
    ("IS", "is", 2),
    ("prec.", "precision", 3),
    ("recall", "recall", 3),
    ("acc.", "accuracy", 3),
    ("div.", "diversity", 3),
    ("verifier", "mean_best_score", 4),
]


def results_table(rows: list[dict], *, title: str = "results"):
    """A rich Table: one line per configuration (mean ± std over seeds), a section per series."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("algorithm", "verifier", "steps", "NFE/sample", "seeds", *(c[0] for c in COLUMNS)):
        table.add_column(col, justify="left" if col in ("algorithm", "verifier") else "right")
    for line in aggregate(rows).values():
        for n, p in enumerate(line):
            table.add_row(
                p["algorithm"],
                p["verifier"] or "-",
                str(p["steps"]),
                f"{p['nfe_per_sample']:g}",
                str(p["seeds"]),
                *(_cell(p, m, d) for _, m, d in COLUMNS),
                end_section=n == len(line) - 1,
            )
    return table


def markdown_table(rows: list[dict]) -> str:
    """The same table as GitHub markdown (for docs/RESULTS.md)."""
    head = ["algorithm", "verifier", "steps", "NFE/sample", "seeds", *(c[0] for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in aggregate(rows).values():
        for p in line:
            cells = [
                p["algorithm"],
                p["verifier"] or "-",
                str(p["steps"]),
                f"{p['nfe_per_sample']:g}",
                str(p["seeds"]),
                *(_cell(p, m, d) for _, m, d in COLUMNS),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
