"""Scaling-curve plots and tables, computed only from flat result rows (``results.jsonl``)."""

from __future__ import annotations

from pathlib import Path

METRIC_LABELS = {"fid": "FID (lower is better)", "is": "IS (higher is better)",
                 "precision": "precision", "recall": "recall", "accuracy": "class accuracy"}


def series_label(row: dict) -> str:
    """Legend label of a row's line: the baseline, or algorithm + verifier."""
    if row["algorithm"] == "none":
        return "more denoising steps (no search)"
    return f"{row['algorithm']} search, {row['verifier']} verifier"


def group_series(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by line label, each line sorted by NFEs per sample."""
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(series_label(row), []).append(row)
    return {k: sorted(v, key=lambda r: r["nfe_per_sample"]) for k, v in series.items()}


def scaling_plot(rows: list[dict], path: Path, *, metrics=("fid", "is"), title: str | None = None) -> None:
    """One panel per metric: metric against NFEs per sample (log2 axis), one line per series."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisesearch._io import atomic_write_bytes

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, metric in zip(axes, metrics):
        for label, line in group_series(rows).items():
            style = {"linestyle": "--", "color": "black"} if label.startswith("more denoising") else {}
            ax.plot([r["nfe_per_sample"] for r in line], [r[metric] for r in line], marker="o", label=label, **style)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFEs per sample")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def results_table(rows: list[dict], *, title: str = "results"):
    """A rich Table of the rows: one line per configuration, a section per series."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("algorithm", "verifier", "steps", "NFE/sample", "FID", "IS", "prec.", "recall", "acc."):
        table.add_column(col, justify="left" if col in ("algorithm", "verifier") else "right")
    for line in group_series(rows).values():
        for n, r in enumerate(line):
            table.add_row(r["algorithm"], r.get("verifier") or "-", str(r["steps"]), f"{r['nfe_per_sample']:g}",
                          f"{r['fid']:.2f}", f"{r['is']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                          f"{r['accuracy']:.3f}", end_section=n == len(line) - 1)
    return table
