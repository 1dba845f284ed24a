"""The items of ``noisesearch paper`` that are not curves: Table 2, Fig. 7 (samples), Figs. 8 and 9 (gains).

- Table 2 (``table2.md``, ``table2.jsonl``): each search verifier x {random, zero-order N=2, paths
  N=2} at one budget, and the 8-step sample without search first; each cell scored by every
  verifier and by the held-out set metrics, mean ± 95% CI over seeds (per-target scores are
  averaged over targets within a seed first). A verifier that took part in the search (the search
  verifier, or a member of the ensemble) is not held out (marked ``*``). ``feature-similarity`` and ``ensemble`` need the x0-previews of a search and
  score only their own searches ("-" elsewhere).
- Fig. 8: the relative gain (%) of each metric over the no-search sample, random search with each
  verifier at Table 2's budget (the same rows); positive is better for every metric (FID's sign
  is turned).
- Fig. 9: the same gains for random search with the ensemble verifier, against NFEs.
- Fig. 7: per target (a row), the sample with more denoising steps (left) and the best sample of
  random search with increasing NFEs (right), from the PNGs of ``keep_images: best``.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from noisesearch import _io
from noisesearch.paper.figures import IS, NAMES, Figure, rows_of, sets_of
from noisesearch.sweep.report import mean_ci
from noisesearch.sweep.tables import LOWER_IS_BETTER

TABLE2 = (  # search verifier -> its sweep
    ("classifier", "table2-classifier"),
    ("feature-similarity", "table2-selfsup"),
    ("oracle-is", "table2-oracle-is"),
    ("oracle-fid-digits", "table2-oracle-fid"),
    ("ensemble", "table2-ensemble"),
)
ALGORITHMS = (("random", {}), ("zero-order", {"neighbours": 2}), ("paths", {"initial": 2}))
NO_SEARCH = "table2-classifier"  # the sweep whose 8-step baseline is Table 2's first row
SET_COLUMNS = ("fid", IS, "precision", "recall")
GAIN_METRICS = ("eval_classifier", "eval_oracle-is", "eval_oracle-fid-digits", *SET_COLUMNS)
ENSEMBLE_MEMBERS = ("classifier", "feature-similarity")  # table2-ensemble.yaml's members (a test holds them equal)


def scores_its_own_search(searched_with: str | None, scorer: str) -> bool:
    """Whether verifier ``scorer`` took part in the search (``searched_with``, or a member of the ensemble): then its
    score of the result is not held out."""
    return scorer == searched_with or (searched_with == "ensemble" and scorer in ENSEMBLE_MEMBERS)


def table_budget(rows: list[dict]) -> int:
    """The budget Table 2 compares at: the largest that zero-order and paths searches of ``rows`` ran."""
    return max((r["budget"] for r in rows if r["algorithm"] in ("zero-order", "paths")), default=0)


def per_seed(rows: list[dict], metric: str) -> dict[int, float]:
    """Seed -> the mean of ``metric`` over the rows of that seed that have it (a set row is one value)."""
    values: dict[int, list[float]] = {}
    for r in rows:
        v = r.get(metric)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            values.setdefault(r["seed"], []).append(v)
    return {seed: statistics.fmean(vs) for seed, vs in sorted(values.items())}


def _picked(rows: list[dict], algorithm: str, params: dict, budget: int | None = None) -> list[dict]:
    return [
        r
        for r in rows
        if r["algorithm"] == algorithm and r["params"] == params and (budget is None or r["budget"] == budget)
    ]


def _baseline(rows: list[dict]) -> list[dict]:
    """The rows of the plain sample: the step baseline at its smallest budget (8 NFEs in Table 2's sweeps)."""
    none = [r for r in rows if r["algorithm"] == "none"]
    first = min((r["budget"] for r in none), default=None)
    return [r for r in none if r["budget"] == first]


def _cell(values: dict[int, float]) -> tuple[float, float, int]:
    mean, ci = mean_ci(list(values.values()))
    return mean, ci, len(values)


def _text(mean: float, ci: float, n: int, *, own: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:.4g}" if n < 2 else f"{mean:.4g} ± {ci:.2g}"
    return f"{text} *" if own else text


def _row_values(rows: list[dict], sets: list[dict], verifier: str | None) -> dict[str, tuple[dict, bool]]:
    """Column -> (seed -> value, held out) for one row of Table 2; ``verifier`` None for the no-search row."""
    values: dict[str, tuple[dict, bool]] = {}
    for v, _ in TABLE2:
        if v == verifier:
            values[v] = (per_seed(rows, "best_score"), False)
        else:
            values[v] = (per_seed(rows, f"eval_{v}"), not scores_its_own_search(verifier, v))
    for m in SET_COLUMNS:
        values[m] = (per_seed(sets, m), True)
    return values


def _no_search_values(out: Path) -> dict[str, tuple[dict, bool]]:
    """Table 2's first row: the 8-step sample; a verifier without an eval column scores it in its own sweep."""
    rows = _baseline(rows_of(out, NO_SEARCH))
    sets = _baseline(sets_of(out, NO_SEARCH))
    values = _row_values(rows, sets, None)
    for v, sweep in TABLE2:
        if not values[v][0] and v != "ensemble":  # a lone sample's rank in the ensemble says nothing
            values[v] = (per_seed(_baseline(rows_of(out, sweep)), "best_score"), True)
    return values


def draw_table2(out: Path) -> Path:
    """``table2.md`` and ``table2.jsonl``: Table 2 on digits (see the module docstring)."""
    columns = [v for v, _ in TABLE2] + list(SET_COLUMNS)
    lines, records = [], []

    def add(name: str, verifier: str | None, algorithm: str, params: dict, values: dict, sweep: str, budget):
        cells = []
        for c in columns:
            seeds, held_out = values[c]
            mean, ci, n = _cell(seeds)
            cells.append(_text(mean, ci, n, own=not held_out))
            records.append(
                {
                    "table": "table2",
                    "row": name,
                    "verifier": verifier,
                    "algorithm": algorithm,
                    "params": params,
                    "budget": budget,
                    "column": c,
                    "mean": None if math.isnan(mean) else mean,
                    "ci": None if math.isnan(ci) else ci,
                    "seeds": n,
                    "held_out": held_out,
                    "sweep": sweep,
                }
            )
        lines.append([name, *cells])

    base = _baseline(rows_of(out, NO_SEARCH))
    steps = base[0]["budget"] if base else 8
    add(f"no search ({steps} NFEs)", None, "none", {}, _no_search_values(out), NO_SEARCH, steps)
    budget = 0
    for verifier, sweep in TABLE2:
        rows, sets = rows_of(out, sweep), sets_of(out, sweep)
        budget = table_budget(rows) or budget
        for algorithm, params in ALGORITHMS:
            name = f"{verifier} + {algorithm}" + (
                f" ({', '.join(f'N={n}' for n in params.values())})" if params else ""
            )
            picked = (_picked(rows, algorithm, params, budget), _picked(sets, algorithm, params, budget))
            add(name, verifier, algorithm, params, _row_values(*picked, verifier), sweep, budget)
    header = ["search (verifier + algorithm)", *(f"scored by {v}" for v, _ in TABLE2), "FID ↓", "IS (whole set) ↑"]
    header += ["precision ↑", "recall ↑"]
    text = [
        "# Table 2 on digits: search algorithms x verifiers\n",
        f"Each search spends {budget} NFEs per sample; the first row is the {steps}-step sample without search. "
        "Mean ± 95% CI over seeds (per-target scores averaged over the targets of a seed first). `*`: a verifier "
        "that took part in the search (the search verifier, or a member of the ensemble) scoring it: not held out. `-`: feature-similarity and the ensemble need the "
        "x0-previews of a search and score only their own; a lone sample has no rank in the ensemble. "
        "IS (whole set) of a perfect set is 10.\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(line) + " |" for line in lines),
    ]
    _io.atomic_write_bytes(out / "table2.jsonl", "".join(_io.dumps(r) + "\n" for r in records).encode())
    path = out / "table2.md"
    _io.atomic_write_bytes(path, ("\n".join(text) + "\n").encode())
    return path


# ---------------------------------------------------------------------------------------------- gains


def gains(searched: dict[int, float], plain: dict[int, float], metric: str) -> dict[int, float]:
    """Seed -> relative gain (%) of ``searched`` over ``plain`` at the same seed; positive is better."""
    out = {}
    for seed, value in searched.items():
        base = plain.get(seed)
        if base is not None and base != 0:
            change = (base - value) if metric in LOWER_IS_BETTER else (value - base)
            out[seed] = 100.0 * change / abs(base)
    return out


def _metric_values(rows: list[dict], sets: list[dict], metric: str) -> dict[int, float]:
    return per_seed(sets if metric in SET_COLUMNS else rows, metric)


def _gain_of(rows, sets, base_rows, base_sets, metric) -> dict[int, float]:
    return gains(_metric_values(rows, sets, metric), _metric_values(base_rows, base_sets, metric), metric)


def _label(metric: str) -> str:
    return NAMES.get(metric, metric).replace(" (lower is better)", "").removeprefix("eval_")


def draw_fig8(out: Path) -> Path:
    """Fig. 8: relative gain (%) of each metric, random search with each verifier at Table 2's budget."""
    import numpy as np

    f = Figure("fig8", 1, "Fig. 8: relative gain (%) over no search, random search with each verifier", columns=1)
    f.fig.set_size_inches(11, 4.2)
    ax = f.axes[0]
    width = 0.8 / len(TABLE2)
    for j, (verifier, sweep) in enumerate(TABLE2):
        rows, sets = rows_of(out, sweep), sets_of(out, sweep)
        budget = table_budget(rows)
        picked = (_picked(rows, "random", {}, budget), _picked(sets, "random", {}, budget))
        base = (_baseline(rows), _baseline(sets))
        means, cis = [], []
        for metric in GAIN_METRICS:
            mean, ci, n = _cell(_gain_of(*picked, *base, metric))
            own = metric.startswith("eval_") and scores_its_own_search(verifier, metric.removeprefix("eval_"))
            means.append(mean)
            cis.append(0.0 if math.isnan(ci) else ci)
            f.record(
                panel=0,
                metric="relative gain (%)",
                of=metric,
                series=verifier,
                x=metric,
                budget=budget,
                mean=None if math.isnan(mean) else mean,
                ci=None if math.isnan(ci) else ci,
                seeds=n,
                held_out=not own,
                sweep=sweep,
            )
        where = np.arange(len(GAIN_METRICS)) + (j - (len(TABLE2) - 1) / 2) * width
        bars = ax.bar(where, means, width, yerr=cis, capsize=2, label=verifier)
        for bar, metric in zip(bars, GAIN_METRICS):
            if metric.startswith("eval_") and scores_its_own_search(verifier, metric.removeprefix("eval_")):
                bar.set_hatch("//")  # scored by a verifier that took part in the search: not held out
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(GAIN_METRICS)), [_label(m) for m in GAIN_METRICS], fontsize=7)
    ax.set_ylabel("relative gain over no search (%)", fontsize=8)
    ax.set_title("hatched: scored by the search verifier or a member of it (not held out)", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return f.save(out)


def draw_fig9(out: Path) -> Path:
    """Fig. 9: the ensemble's relative gains (%) against NFEs, random search, the no-search sample at 0%."""
    sweep = "table2-ensemble"
    rows, sets = rows_of(out, sweep), sets_of(out, sweep)
    base = (_baseline(rows), _baseline(sets))
    start = base[0][0]["budget"] if base[0] else None
    budgets = sorted({r["budget"] for r in rows if r["algorithm"] == "random"})
    title = "Fig. 9: random search with the Verifier Ensemble, relative gain (%) over no search"
    f = Figure("fig9", 1, title, columns=1, size=(7.5, 4.2))
    series = {}
    for metric in GAIN_METRICS:
        points = [(start, 0.0, 0.0)] if start is not None else []
        for b in budgets:
            mean, ci, _ = _cell(_gain_of(_picked(rows, "random", {}, b), _picked(sets, "random", {}, b), *base, metric))
            points.append((b, mean, ci))
        series[_label(metric)] = points
    f.curves(0, series, "relative gain (%)", sweep)
    f.axes[0].axhline(0, color="black", linewidth=0.8)
    return f.save(out)


# ---------------------------------------------------------------------------------------------- samples


def draw_fig7(out: Path) -> Path:
    """Fig. 7: per target, the sample with more steps (left) and the best sample of more search (right)."""
    import matplotlib.image

    sweep = "fig7"
    rows = [r for r in rows_of(out, sweep) if r.get("image")]
    targets = sorted({r["target_index"] for r in rows})
    steps = sorted({r["budget"] for r in rows if r["algorithm"] == "none"})
    search = sorted({r["budget"] for r in rows if r["algorithm"] != "none"})
    plan = [("none", b) for b in steps] + [("search", b) for b in search]
    title = "Fig. 7: left, more denoising steps; right, random search (classifier verifier), NFEs per sample"
    f = Figure("fig7", max(1, len(targets) * len(plan)), title, columns=max(1, len(plan)), size=(1.5, 1.6))
    for i, target in enumerate(targets):
        for j, (kind, budget) in enumerate(plan):
            k = i * len(plan) + j
            ax = f.axes[k]
            ax.set_xticks([])
            ax.set_yticks([])
            match = [
                r
                for r in rows
                if r["target_index"] == target
                and r["budget"] == budget
                and (r["algorithm"] == "none") == (kind == "none")
            ]
            if i == 0:
                ax.set_title(f"{'steps' if kind == 'none' else 'search'}: {budget}", fontsize=7)
            if not match:
                continue
            r = match[0]
            ax.imshow(matplotlib.image.imread(out / "sweeps" / sweep / r["image"]), cmap="gray")
            if j == 0:
                ax.set_ylabel(f"digit {r['target']}", fontsize=7)
            score = r.get("eval_oracle-is")
            ax.set_xlabel("" if score is None else f"oracle-is {score:.2f}", fontsize=6)
            f.record(
                panel=k,
                metric="sample",
                target=r["target"],
                kind="steps" if kind == "none" else "search",
                x=budget,
                steps=r["steps"],
                image=f"sweeps/{sweep}/{r['image']}",
                oracle_is=score,
                sweep=sweep,
            )
    return f.save(out)


DRAW = {"fig7": draw_fig7, "fig8": draw_fig8, "fig9": draw_fig9, "table2": draw_table2}
