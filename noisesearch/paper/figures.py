"""The curve figures of ``noisesearch paper`` (figs 1, 3-6, 10-14), drawn from the sweeps' rows only.

Every figure is a grid of panels of curves against NFEs (or FLOPs) with 95% CI bars over seeds,
a star at each held-out metric's best point, and one record per plotted point in ``figN.jsonl``.
IS is plotted as the whole-set score (``is_single_split``, "IS (whole set)"), which can still move
where the 10-split mean is capped by the split size, and every IS axis draws the protocol's
ceiling (the score of a perfect set, ``noisesearch.metrics.inception_score_ceiling``) as a dashed
line, recorded with metric ``is_ceiling``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from noisesearch import _io
from noisesearch.sweep.tables import CEILINGS, METRIC_NAMES, protocol_ceiling

IS = "is_single_split"  # the IS every figure plots: the whole set in one split
NAMES = {
    "fid": "FID (lower is better)",
    **METRIC_NAMES,
    "precision": "precision",
    "recall": "recall",
    "best_score": "search verifier score",
}
GUIDANCE = (("1.0", ""), ("1.35", "-135"), ("1.5", "-15"))  # scale, suffix of its sweeps' names
BASE = {"": "main", "-135": "guidance-135", "-15": "guidance-15"}  # per guidance: the step baseline's sweep


# ---------------------------------------------------------------------------------------------- data


def rows_of(out: Path, sweep: str) -> list[dict]:
    """The per-target rows of ``sweep`` (``out/sweeps/<sweep>/results.jsonl``)."""
    from noisesearch.records import read_rows

    return read_rows(out / "sweeps" / sweep / "results.jsonl")


def sets_of(out: Path, sweep: str, x: str = "nfe") -> list[dict]:
    """The sweep's sample sets as rows ``report.curves`` reads (``report.sets_as_rows``: the verifier, and the
    cost on axis ``x``, final-render NFEs included); sets of a cell without per-target rows are left out."""
    from noisesearch.records import read_sets
    from noisesearch.sweep.report import sets_as_rows

    path = out / "sweeps" / sweep / "sets.jsonl"
    rows = rows_of(out, sweep)
    cells = {r["cell"] for r in rows}
    sets = [s for s in (read_sets(path) if path.exists() else []) if s["cell"] in cells]
    return sets_as_rows(rows, sets, x)


def series_of(rows: list[dict], metric: str, x: str = "nfe", *, tag: str = "", keep=None) -> dict[str, list]:
    """``report.curves`` of ``rows`` (only those ``keep`` accepts), each label prefixed with ``tag``."""
    from noisesearch.sweep.report import curves

    chosen = [r for r in rows if keep is None or keep(r)]
    return {f"{tag}{name}": points for name, points in curves(chosen, metric, x).items()}


def is_baseline(row: dict) -> bool:
    return row["algorithm"] == "none"


def is_random(row: dict) -> bool:
    return row["algorithm"] == "random"


# ---------------------------------------------------------------------------------------------- drawing


class Figure:
    """Panels with 95% CI bars and a star at each held-out metric's best point; records every point."""

    def __init__(self, name: str, panels: int, title: str, *, columns: int = 3, size=(4.6, 3.6)):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.name, self.plt, self.records = name, plt, []
        columns = min(panels, columns)
        rows = math.ceil(panels / columns)
        self.fig, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows), squeeze=False)
        self.axes = list(axes.flat)
        for ax in self.axes[panels:]:
            ax.set_visible(False)
        self.fig.suptitle(title, fontsize=10)

    def record(self, **fields) -> None:
        self.records.append({"figure": self.name, **fields})

    def curves(self, k: int, series: dict[str, list], metric: str, sweep: str, *, sets=None, xlabel=None, log=2):
        """Draw ``series`` in panel ``k``; an IS panel also draws the ceiling of the ``sets`` it was drawn from."""
        from noisesearch.sweep.report import best_index

        ax = self.axes[k]
        for name, points in series.items():
            style = {}
            if name.endswith("more denoising steps (no search)"):  # dashed; black unless a tag tells models apart
                style = {
                    "linestyle": "--",
                    **({"color": "black"} if name == "more denoising steps (no search)" else {}),
                }
            line = ax.errorbar(
                [p[0] for p in points],
                [p[1] for p in points],
                yerr=[0 if math.isnan(p[2]) else p[2] for p in points],
                marker="o",
                markersize=3,
                capsize=2,
                label=name,
                **style,
            )
            best = best_index([p[1] for p in points], metric) if metric != "best_score" else None
            if best is not None:
                ax.plot(
                    points[best][0], points[best][1], marker="*", markersize=11, color=line[0].get_color(), mec="black"
                )
            for n, (xv, mean, ci) in enumerate(points):
                self.record(
                    panel=k,
                    metric=metric,
                    series=name,
                    x=xv,
                    mean=None if math.isnan(mean) else mean,
                    ci=None if math.isnan(ci) else ci,
                    peak=n == best,
                    sweep=sweep,
                )
        if metric in CEILINGS:
            self.ceiling(k, metric, sets, sweep)
        if log and all(p[0] > 0 for points in series.values() for p in points):
            ax.set_xscale("log", base=log)
        ax.set_xlabel(xlabel or "NFEs per sample", fontsize=8)
        ax.set_ylabel(NAMES.get(metric, metric), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        return ax

    def ceiling(self, k: int, metric: str, sets: list[dict] | None, sweep: str) -> None:
        """The dashed line of a perfect set's score of ``metric`` (the largest over ``sets``), and its record."""
        if sets is None:
            raise ValueError(f"{self.name} panel {k}: an IS panel needs the sets it is drawn from (sets=...)")
        top = protocol_ceiling(sets, metric)
        if top is None:  # sets of an older version, without the ceiling
            return
        self.axes[k].axhline(top, linestyle="--", linewidth=1, color="grey", label="perfect set (protocol ceiling)")
        self.record(
            panel=k, metric="is_ceiling", of=metric, series="perfect set", x=None, mean=top, ci=None, sweep=sweep
        )

    def save(self, out: Path) -> Path:
        import io

        self.fig.tight_layout()
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=80)
        self.plt.close(self.fig)
        path = out / f"{self.name}.png"
        _io.atomic_write_bytes(path, buf.getvalue())
        text = "".join(_io.dumps(r) + "\n" for r in self.records)
        _io.atomic_write_bytes(out / f"{self.name}.jsonl", text.encode())
        return path


def _fig1(out: Path) -> Path:
    f = Figure("fig1", 2, "Fig. 1: more denoising steps vs random search (classifier verifier)")
    sets = sets_of(out, "main")
    for k, metric in enumerate(("fid", IS)):
        f.curves(k, series_of(sets, metric), metric, "main", sets=sets)
    return f.save(out)


def _fig3(out: Path) -> Path:
    f = Figure("fig3", 6, "Fig. 3: random search with oracle verifiers at guidance 1.0 / 1.35 / 1.5")
    for col, (g, suffix) in enumerate(GUIDANCE):
        names = (BASE[suffix], f"oracle-fid{suffix}", f"oracle-is{suffix}")
        base, fid, is_ = (sets_of(out, name) for name in names)
        for row, metric in enumerate(("fid", IS)):
            series = series_of(base, metric, tag=f"g={g}: ", keep=is_baseline)
            series.update(series_of(fid, metric, tag=f"g={g}: "))
            series.update(series_of(is_, metric, tag=f"g={g}: "))
            f.curves(3 * row + col, series, metric, "+".join(names), sets=base + fid + is_)
    return f.save(out)


def _fig4(out: Path) -> Path:
    f = Figure(
        "fig4", 6, "Fig. 4: classifier verifier at guidance 1.0 / 1.35 / 1.5 (one NFE per denoising step, as the paper)"
    )
    for col, (g, suffix) in enumerate(GUIDANCE):
        sets = sets_of(out, BASE[suffix])
        for row, metric in enumerate(("fid", IS)):
            f.curves(3 * row + col, series_of(sets, metric, tag=f"g={g}: "), metric, BASE[suffix], sets=sets)
    return f.save(out)


def correlation(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Pearson and Spearman correlation of two equal-length lists (ranks by order; NaN below 3 points)."""
    import numpy as np

    if len(xs) < 3:
        return math.nan, math.nan
    a, b = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    pearson = float(np.corrcoef(a, b)[0, 1])
    ra, rb = a.argsort(kind="stable").argsort(), b.argsort(kind="stable").argsort()
    return pearson, float(np.corrcoef(ra, rb)[0, 1])


def _scatter(f: Figure, k: int, rows: list[dict], sweep: str, g: str) -> None:
    """Fig. 5 left: the feature-similarity score of unsearched samples against the classifier's log p."""
    first = min(r["budget"] for r in rows)  # one candidate per search: plain samples
    pairs = [
        (r["best_score"], r["eval_classifier"])
        for r in rows
        if r["budget"] == first and r["best_score"] is not None and r.get("eval_classifier") is not None
    ]
    pearson, spearman = correlation([p[0] for p in pairs], [p[1] for p in pairs])
    ax = f.axes[k]
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=6, alpha=0.6)
    ax.set_xlabel("feature-similarity score", fontsize=8)
    ax.set_ylabel("classifier log p(target)", fontsize=8)
    ax.set_title(f"g={g}, {len(pairs)} samples: Pearson {pearson:.2f}, Spearman {spearman:.2f}", fontsize=8)
    f.record(
        panel=k,
        metric="correlation",
        guidance=float(g),
        budget=first,
        samples=len(pairs),
        pearson=pearson,
        spearman=spearman,
        sweep=sweep,
    )


def _fig5(out: Path) -> Path:
    f = Figure("fig5", 9, "Fig. 5: the self-supervised verifier (feature-similarity) at guidance 1.0 / 1.35 / 1.5")
    for col, (g, suffix) in enumerate(GUIDANCE):
        selfsup = f"selfsup{suffix}"
        _scatter(f, col, rows_of(out, selfsup), selfsup, g)
        base, searched = sets_of(out, BASE[suffix]), sets_of(out, selfsup)
        for row, metric in ((1, "fid"), (2, IS)):
            series = series_of(base, metric, tag=f"g={g}: ")
            series.update(series_of(searched, metric, tag=f"g={g}: "))
            f.curves(3 * row + col, series, metric, f"{BASE[suffix]}+{selfsup}", sets=base + searched)
    return f.save(out)


def _fig6(out: Path) -> Path:
    f = Figure("fig6", 4, "Fig. 6: zero-order search and search over paths against N (classifier verifier)")
    main, variants, paths = sets_of(out, "main"), sets_of(out, "variants"), sets_of(out, "paths")

    def zero_n(r):
        return r["algorithm"] == "zero-order" and set(r["params"]) == {"neighbours"}

    def paths_n(r):
        return r["algorithm"] == "paths" and r["params"].get("path_length") == 2

    for k, metric in enumerate(("fid", IS)):
        series = series_of(main, metric, keep=is_random)
        series.update(series_of(variants, metric, keep=zero_n))
        f.curves(k, series, metric, "main+variants", sets=main + variants)
        series = series_of(main, metric, keep=is_random)
        series.update(series_of(paths, metric, keep=paths_n))
        f.curves(2 + k, series, metric, "main+paths", sets=main + paths)
    return f.save(out)


def _fig10(out: Path) -> Path:
    f = Figure(
        "fig10",
        2,
        "Fig. 10: NFEs per search iteration at a fixed final denoising (16 steps), random search; x: search + final NFEs",
    )
    plan = (("steps-2", 2), ("steps-4", 4), ("steps-8", 8), ("steps-16", 16))
    every = {sweep: sets_of(out, sweep) for sweep, _ in plan}
    for k, metric in enumerate(("fid", IS)):
        series: dict = {}
        for sweep, steps in plan:
            series.update(series_of(every[sweep], metric, tag=f"{steps} NFEs/candidate: ", keep=is_random))
        f.curves(k, series, metric, "+".join(s for s, _ in plan), sets=[s for v in every.values() for s in v])
    return f.save(out)


def _fig11(out: Path) -> Path:
    from noisesearch.sweep.report import AXES

    f = Figure("fig11", 2, "Fig. 11: digits vs digits-large, compute in FLOPs per sample")
    main, large = sets_of(out, "main", "flops"), sets_of(out, "large", "flops")
    for k, metric in enumerate(("fid", IS)):
        series = series_of(main, metric, "flops", tag="digits: ")
        series.update(series_of(large, metric, "flops", tag="digits-large: "))
        f.curves(k, series, metric, "main+large", sets=main + large, xlabel=AXES["flops"][1], log=10)
    return f.save(out)


EUCLIDEAN = ("euclidean", "distance")  # one neighbourhood, two names (older folders record "distance")


def _fig12(out: Path) -> Path:
    f = Figure("fig12", 4, "Fig. 12: zero-order step size lambda (Euclidean, N=4) and path length L (N=4)")
    variants, paths = sets_of(out, "variants"), sets_of(out, "paths")

    def lam(r):
        return r["algorithm"] == "zero-order" and r["params"].get("neighbourhood") in EUCLIDEAN

    def length(r):
        return r["algorithm"] == "paths" and r["params"].get("initial") == 4

    for k, metric in enumerate(("fid", IS)):
        f.curves(k, series_of(variants, metric, keep=lam), metric, "variants", sets=variants)
        f.curves(2 + k, series_of(paths, metric, keep=length), metric, "paths", sets=paths)
    return f.save(out)


def _fig13(out: Path) -> Path:
    f = Figure("fig13", 4, "Fig. 13: random search under two supervised verifiers")
    main, oracle = sets_of(out, "main"), sets_of(out, "oracle-is")
    for k, metric in enumerate(("fid", IS, "precision", "recall")):
        series = series_of(main, metric, keep=is_random)
        series.update(series_of(oracle, metric))
        f.curves(k, series, metric, "main+oracle-is", sets=main + oracle)
    return f.save(out)


def _fig14(out: Path) -> Path:
    f = Figure("fig14", 3, "Fig. 14: zero-order (N=4) vs first-order search at aligned compute (NFEs incl. backward)")
    variants = sets_of(out, "variants")
    rows = rows_of(out, "variants")

    def keep(r):
        return r["algorithm"] == "first-order" or (r["algorithm"] == "zero-order" and r["params"] == {"neighbours": 4})

    for k, metric in enumerate(("fid", IS)):
        f.curves(k, series_of(variants, metric, keep=keep), metric, "variants", sets=variants)
    f.curves(2, series_of(rows, "best_score", keep=keep), "best_score", "variants")
    return f.save(out)


DRAW: dict[str, Callable[[Path], Path]] = {
    "fig1": _fig1,
    "fig3": _fig3,
    "fig4": _fig4,
    "fig5": _fig5,
    "fig6": _fig6,
    "fig10": _fig10,
    "fig11": _fig11,
    "fig12": _fig12,
    "fig13": _fig13,
    "fig14": _fig14,
}
