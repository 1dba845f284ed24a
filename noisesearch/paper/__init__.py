"""``noisesearch paper``: the findings of Ma et al. 2025 (arXiv 2501.09732), figure by figure, on the digits world.

The work is done by the sweep engine (``noisesearch.sweep``): twelve shipped sweep configurations
(``configs/*.yaml``, full sizes) run into ``DIR/sweeps/<name>/`` and resume like any sweep (a
rerun searches nothing that is already written). Each figure is then drawn from those rows only:
``DIR/figN.png`` and ``DIR/figN.jsonl``, one line per plotted point (figure, panel, series, x,
mean, 95% CI half-width, the sweep it came from), so every number in a figure can be read back. A rerun draws only the figures whose rows changed.

``--quick`` cuts every sweep to 2 targets per class, one seed and budgets up to 128 (at least the
two smallest of each sweep), in code, before validation; its sweeps are different configs and so
need their own ``--out``. Sample-set metrics (FID, IS, precision, recall, accuracy) come from
``sets.jsonl`` (the evaluation network); per-target ones from ``results.jsonl``. Every curve of a
held-out metric marks its best value with a star (``noisesearch.sweep.report.best_index``): a
star before the last budget is where searching further started to hurt it (verifier hacking).

The figures, and the digits analogue of each (see docs/PAPER.md for the readings):

- fig1: more denoising steps vs random search (supervised verifier), FID and IS against NFEs;
- fig3: random search with the oracle verifiers: ``oracle-fid-digits`` (one-image FID on the
  evaluation network's per-class statistics) and ``oracle-is`` (the evaluation network's log p);
- fig4: the step baseline and random search at classifier-free guidance 1.0, 1.35 and 1.5;
- fig5: the self-supervised verifier: left, its score against the supervised classifier's
  log-probability on unsearched samples (Pearson and Spearman r); right, its search curves;
- fig6: zero-order search and search over paths for several N, with random search for reference;
- fig10: random search with 2, 4, 8 and 16 NFEs per candidate at the same total budgets;
- fig11: ``digits`` vs ``digits-large`` against FLOPs per sample (the compute ledger's ``total_flops``);
- fig12: zero-order search's distance lambda (the paper's fixed-distance neighbourhood) and the
  path length L of search over paths;
- fig13: FID, IS, precision and recall of random search under the two supervised verifiers
  (``classifier``, and the evaluation network ``oracle-is``, the only other supervised one here);
- fig14: zero-order vs first-order search at aligned compute (first-order's backward passes
  are charged in NFEs, ``backward_cost`` forward NFEs each).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from noisesearch import _io
from noisesearch.errors import UserError
from noisesearch.sweep.config import SweepConfig

CONFIG_DIR = Path(__file__).parent / "configs"
SWEEPS = (
    "main",
    "variants",
    "paths",
    "oracle-fid",
    "oracle-is",
    "selfsup",
    "guidance-135",
    "guidance-15",
    "steps-2",
    "steps-4",
    "steps-16",
    "large",
)
FIGURES: dict[str, tuple[str, ...]] = {  # figure -> the sweeps it is drawn from
    "fig1": ("main",),
    "fig3": ("main", "oracle-fid", "oracle-is"),
    "fig4": ("main", "guidance-135", "guidance-15"),
    "fig5": ("main", "selfsup"),
    "fig6": ("main", "variants", "paths"),
    "fig10": ("main", "steps-2", "steps-4", "steps-16"),
    "fig11": ("main", "large"),
    "fig12": ("variants", "paths"),
    "fig13": ("main", "oracle-is"),
    "fig14": ("variants",),
}
QUICK = {"per_class": 2, "seeds": 1, "max_budget": 128}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def pick_figures(text: str | None) -> list[str]:
    """The figures named in a comma-separated list (all when None), in paper order; a ``UserError`` names a bad one."""
    if text is None:
        return list(FIGURES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in FIGURES]
    if bad or not names:
        raise UserError(
            f"--figures: unknown figure {', '.join(map(repr, bad)) or '(none)'}; accepted: {', '.join(FIGURES)}"
        )
    return [n for n in FIGURES if n in names]


def configs(
    *, quick: bool = False, per_class: int | None = None, seeds: int | None = None, max_budget: int | None = None
) -> dict[str, SweepConfig]:
    """The shipped sweep configs, validated; ``quick`` or the size overrides cut targets, seeds and budgets.

    ``per_class``: targets per digit class; ``seeds``: the first that many seeds; ``max_budget``:
    budgets up to it (at least the two smallest of each sweep are kept).
    """
    from noisesearch.sweep.config import _read_yaml, validate_config

    if quick:
        per_class = per_class or QUICK["per_class"]
        seeds = seeds or QUICK["seeds"]
        max_budget = max_budget or QUICK["max_budget"]
    out = {}
    for name in SWEEPS:
        path = CONFIG_DIR / f"{name}.yaml"
        data = _read_yaml(path)
        if per_class is not None:
            data["benchmark"] = {**data["benchmark"], "per_class": per_class}
        if seeds is not None:
            data["seeds"] = data["seeds"][:seeds]
        if max_budget is not None:
            budgets = sorted(data["budgets"])
            data["budgets"] = [b for b in budgets if b <= max_budget] or budgets[:2]
            if len(data["budgets"]) < 2:
                data["budgets"] = budgets[:2]
        out[name] = validate_config(data, path)
    return out


def run_paper(
    out: Path | str,
    *,
    quick: bool = False,
    figures: list[str] | None = None,
    sizes: dict | None = None,
    note: Callable[[str], None] = _stderr,
) -> dict:
    """Run (or resume) the sweeps the ``figures`` need into ``out/sweeps``, then draw each figure.

    Returns ``{"written": rows written per sweep, "figures": [paths of the PNGs], "drawn": [figures
    drawn now]}``. A figure newer than the rows it is drawn from is kept as it is (delete its PNG to
    redraw it). ``sizes``: overrides for ``configs`` (``per_class``, ``seeds``, ``max_budget``), for tests.
    """
    from noisesearch.checks import check_out_dir
    from noisesearch.sweep.run import run_sweep

    figures = list(FIGURES) if figures is None else figures
    bad = [f for f in figures if f not in FIGURES]
    if bad:
        raise UserError(f"unknown figure {bad[0]!r}; accepted: {', '.join(FIGURES)}")
    out = check_out_dir(out, files=tuple(f"{fig}{ext}" for fig in figures for ext in (".png", ".jsonl")))
    cfgs = configs(quick=quick, **(sizes or {}))
    needed = [s for s in SWEEPS if any(s in FIGURES[f] for f in figures)]
    out = _io.ensure_out_dir(out)
    written = {}
    for name in needed:
        started = time.perf_counter()
        counts = run_sweep(cfgs[name], out / "sweeps" / name, note=note)
        written[name] = counts["written"]
        note(
            f"sweep {name}: {counts['written']} rows written, {counts['skipped']} already there "
            f"({counts['cells']} configurations x {counts['targets']} targets, {time.perf_counter() - started:.0f} s)"
        )
    paths, drawn = [], []
    for fig in figures:
        if _up_to_date(out, fig):
            paths.append(out / f"{fig}.png")
            continue
        paths.append(DRAW[fig](out))
        drawn.append(fig)
        note(f"{fig}: {paths[-1]}")
    return {"written": written, "figures": paths, "drawn": drawn}


def _up_to_date(out: Path, fig: str) -> bool:
    """Whether ``fig``'s PNG and points exist and are newer than every rows file of its sweeps (then it is kept)."""
    made = [out / f"{fig}.png", out / f"{fig}.jsonl"]
    if not all(p.is_file() for p in made):
        return False
    inputs = [out / "sweeps" / s / n for s in FIGURES[fig] for n in ("results.jsonl", "sets.jsonl")]
    newest = max((p.stat().st_mtime_ns for p in inputs if p.exists()), default=0)
    return min(p.stat().st_mtime_ns for p in made) >= newest


# ---------------------------------------------------------------------------------------------- data


def _rows(out: Path, sweep: str) -> list[dict]:
    from noisesearch.sweep.run import read_rows

    return read_rows(out / "sweeps" / sweep / "results.jsonl")


def _sets(out: Path, sweep: str, x: str = "nfe") -> list[dict]:
    """The sweep's sample sets as rows ``report.curves`` reads: the verifier, and the cost on axis ``x``."""
    from noisesearch.sweep.report import AXES
    from noisesearch.sweep.run import read_sets

    path = out / "sweeps" / sweep / "sets.jsonl"
    sets = read_sets(path) if path.exists() else []
    rows = _rows(out, sweep)
    key = AXES[x][0]
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], []).append(r)
    result = []
    for s in sets:
        group = by_cell.get(s["cell"], [])
        if not group:
            continue
        result.append(
            {
                **s,
                "verifier": group[0]["verifier"],
                "nfe_used": s["budget"],
                **({} if x == "nfe" else {key: statistics.fmean(g[key] for g in group)}),
            }
        )
    return result


def _series(rows: list[dict], metric: str, x: str = "nfe", *, tag: str = "", keep=None) -> dict[str, list]:
    """``report.curves`` of ``rows`` (only those ``keep`` accepts), each label prefixed with ``tag``."""
    from noisesearch.sweep.report import curves

    chosen = [r for r in rows if keep is None or keep(r)]
    return {f"{tag}{name}": points for name, points in curves(chosen, metric, x).items()}


def _is_baseline(row: dict) -> bool:
    return row["algorithm"] == "none"


# ---------------------------------------------------------------------------------------------- drawing


class _Figure:
    """Panels of curves with 95% CI bars and a star at each held-out metric's best point; records every point."""

    def __init__(self, name: str, panels: int, title: str):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.name, self.plt, self.records = name, plt, []
        columns = min(panels, 3)
        self.fig, axes = plt.subplots(
            math.ceil(panels / columns),
            columns,
            figsize=(4.6 * columns, 3.6 * math.ceil(panels / columns)),
            squeeze=False,
        )
        self.axes = list(axes.flat)
        for ax in self.axes[panels:]:
            ax.set_visible(False)
        self.fig.suptitle(title, fontsize=10)

    def curves(self, k: int, series: dict[str, list], metric: str, sweep: str, *, xlabel="NFEs per sample", log=2):
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
                self.records.append(
                    {
                        "figure": self.name,
                        "panel": k,
                        "metric": metric,
                        "series": name,
                        "x": xv,
                        "mean": None if math.isnan(mean) else mean,
                        "ci": None if math.isnan(ci) else ci,
                        "peak": n == best,
                        "sweep": sweep,
                    }
                )
        if log and all(p[0] > 0 for points in series.values() for p in points):
            ax.set_xscale("log", base=log)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        return ax

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
    f = _Figure("fig1", 2, "Fig. 1: more denoising steps vs random search (classifier verifier)")
    sets = _sets(out, "main")
    for k, metric in enumerate(("fid", "is")):
        f.curves(k, _series(sets, metric), metric, "main")
    return f.save(out)


def _fig3(out: Path) -> Path:
    f = _Figure("fig3", 2, "Fig. 3: random search with oracle verifiers")
    main, fid, is_ = _sets(out, "main"), _sets(out, "oracle-fid"), _sets(out, "oracle-is")
    for k, metric in enumerate(("fid", "is")):
        series = _series(main, metric, keep=_is_baseline)
        series.update(_series(fid, metric))
        series.update(_series(is_, metric))
        f.curves(k, series, metric, "main+oracle-fid+oracle-is")
    return f.save(out)


def _fig4(out: Path) -> Path:
    f = _Figure("fig4", 6, "Fig. 4: classifier verifier at guidance 1.0 / 1.35 / 1.5 (CFG: 2 NFEs per model call)")
    for col, (sweep, g) in enumerate((("main", "1.0"), ("guidance-135", "1.35"), ("guidance-15", "1.5"))):
        sets = _sets(out, sweep)
        for row, metric in enumerate(("fid", "is")):
            f.curves(3 * row + col, _series(sets, metric, tag=f"g={g}: "), metric, sweep)
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


def _fig5(out: Path) -> Path:
    f = _Figure("fig5", 3, "Fig. 5: the self-supervised verifier (feature-similarity)")
    rows = _rows(out, "selfsup")
    first = min(r["budget"] for r in rows)  # one candidate per search: plain samples
    pairs = [
        (r["best_score"], r["eval_classifier"])
        for r in rows
        if r["budget"] == first and r["best_score"] is not None and r.get("eval_classifier") is not None
    ]
    pearson, spearman = correlation([p[0] for p in pairs], [p[1] for p in pairs])
    ax = f.axes[0]
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=6, alpha=0.6)
    ax.set_xlabel("feature-similarity score", fontsize=8)
    ax.set_ylabel("classifier log p(target)", fontsize=8)
    ax.set_title(f"{len(pairs)} samples, budget {first}: Pearson {pearson:.2f}, Spearman {spearman:.2f}", fontsize=8)
    f.records.append(
        {
            "figure": "fig5",
            "panel": 0,
            "metric": "correlation",
            "budget": first,
            "samples": len(pairs),
            "pearson": pearson,
            "spearman": spearman,
            "sweep": "selfsup",
        }
    )
    main, selfsup = _sets(out, "main"), _sets(out, "selfsup")
    for k, metric in ((1, "fid"), (2, "is")):
        series = _series(main, metric)
        series.update(_series(selfsup, metric))
        f.curves(k, series, metric, "main+selfsup")
    return f.save(out)


def _fig6(out: Path) -> Path:
    f = _Figure("fig6", 4, "Fig. 6: zero-order search and search over paths against N (classifier verifier)")
    main, variants, paths = _sets(out, "main"), _sets(out, "variants"), _sets(out, "paths")

    def zero_n(r):
        return r["algorithm"] == "zero-order" and set(r["params"]) == {"neighbours"}

    def paths_n(r):
        return r["algorithm"] == "paths" and r["params"].get("path_length") == 2

    random = {"keep": lambda r: r["algorithm"] == "random"}
    for k, metric in enumerate(("fid", "is")):
        series = _series(main, metric, **random)
        series.update(_series(variants, metric, keep=zero_n))
        f.curves(k, series, metric, "main+variants")
        series = _series(main, metric, **random)
        series.update(_series(paths, metric, keep=paths_n))
        f.curves(2 + k, series, metric, "main+paths")
    return f.save(out)


def _fig10(out: Path) -> Path:
    f = _Figure("fig10", 2, "Fig. 10: NFEs per candidate (denoising steps) at the same total budgets, random search")
    for k, metric in enumerate(("fid", "is")):
        series: dict = {}
        for sweep, steps in (("steps-2", 2), ("steps-4", 4), ("main", 8), ("steps-16", 16)):
            sets = _sets(out, sweep)
            series.update(
                _series(sets, metric, tag=f"{steps} NFEs/candidate: ", keep=lambda r: r["algorithm"] == "random")
            )
        f.curves(k, series, metric, "steps-2+steps-4+main+steps-16")
    return f.save(out)


def _fig11(out: Path) -> Path:
    from noisesearch.sweep.report import AXES

    f = _Figure("fig11", 2, "Fig. 11: digits vs digits-large, compute in FLOPs per sample")
    for k, metric in enumerate(("fid", "is")):
        series = {}
        for sweep, model in (("main", "digits"), ("large", "digits-large")):
            series.update(_series(_sets(out, sweep, "flops"), metric, "flops", tag=f"{model}: "))
        f.curves(k, series, metric, "main+large", xlabel=AXES["flops"][1], log=10)
    return f.save(out)


def _fig12(out: Path) -> Path:
    f = _Figure("fig12", 4, "Fig. 12: zero-order distance lambda (N=4) and path length L (N=4)")
    variants, paths = _sets(out, "variants"), _sets(out, "paths")

    def lam(r):
        return r["algorithm"] == "zero-order" and r["params"].get("neighbourhood") == "distance"

    def length(r):
        return r["algorithm"] == "paths" and r["params"].get("initial") == 4

    for k, metric in enumerate(("fid", "is")):
        f.curves(k, _series(variants, metric, keep=lam), metric, "variants")
        f.curves(2 + k, _series(paths, metric, keep=length), metric, "paths")
    return f.save(out)


def _fig13(out: Path) -> Path:
    f = _Figure("fig13", 4, "Fig. 13: random search under two supervised verifiers")
    main, oracle = _sets(out, "main"), _sets(out, "oracle-is")
    for k, metric in enumerate(("fid", "is", "precision", "recall")):
        series = _series(main, metric, keep=lambda r: r["algorithm"] == "random")
        series.update(_series(oracle, metric))
        f.curves(k, series, metric, "main+oracle-is")
    return f.save(out)


def _fig14(out: Path) -> Path:
    f = _Figure("fig14", 3, "Fig. 14: zero-order (N=4) vs first-order search at aligned compute (NFEs incl. backward)")
    variants = _sets(out, "variants")
    rows = _rows(out, "variants")

    def keep(r):
        return r["algorithm"] == "first-order" or (r["algorithm"] == "zero-order" and r["params"] == {"neighbours": 4})

    for k, metric in enumerate(("fid", "is")):
        f.curves(k, _series(variants, metric, keep=keep), metric, "variants")
    f.curves(2, _series(rows, "best_score", keep=keep), "best_score", "variants")
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
