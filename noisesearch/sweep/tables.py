"""The numbers of a sweep report: cost axes, legend labels, means with 95% confidence intervals, scaling curves,
hacking onsets and the tables (lists of rows of strings), from the JSONL rows alone."""

from __future__ import annotations

import math
import statistics

from noisesearch.errors import UserError

SET_METRICS = ("fid", "is", "is_single_split", "precision", "recall", "accuracy", "diversity")
# An IS protocol's ceiling (``metrics.inception_score_ceiling``: a perfect set's score; sets.jsonl key ``<metric>_ceiling``),
# drawn on every IS axis so that a reader sees how far the score can still move. ``is``: mean over 10 splits;
# ``is_single_split``: the whole set at once (its ceiling is the number of classes for a balanced set).
CEILINGS = {"is": "is_ceiling", "is_single_split": "is_single_split_ceiling"}
METRIC_NAMES = {"is": "IS (mean of 10 splits)", "is_single_split": "IS (whole set)"}
# --x name -> (the row's field, axis label): the cost a curve is drawn against, per sample (rows' ledger);
# "nfe" is the search's NFEs plus the final render's (``nfe_final``, from ``final_steps``), as the paper plots
AXES = {
    "nfe": ("nfe_used", "NFEs per sample (search + final render)"),
    "flops": ("total_flops", "FLOPs per sample (denoiser + decode + verifier)"),
    "seconds": ("seconds_total", "wall seconds per sample"),
    "dollars": ("api_cost_usd", "API cost per sample (USD)"),
}


def check_axis(rows: list[dict], x: str) -> str:
    """The row field behind axis ``x``; a ``UserError`` if the name is unknown or some rows lack the value."""
    if x not in AXES:
        raise UserError(f"--x {x!r} is not an axis; accepted: {', '.join(AXES)}")
    key = AXES[x][0]
    missing = sum(r.get(key) is None for r in rows) if x != "nfe" else 0
    if missing:
        raise UserError(
            f"--x {x}: {missing} of {len(rows)} rows have no {key!r} (rows from before the ledger, or a cost "
            f"that is unknown for this model or verifier); use another axis, e.g. --x nfe"
        )
    return key


def nfe_per_sample(row: dict) -> float:
    """A row's NFEs on the "nfe" axis: the search's (``nfe_used``, else its budget) plus its final render's
    (``nfe_final``; 0 for a row without one, e.g. from before ``final_steps``)."""
    return row.get("nfe_used", row["budget"]) + (row.get("nfe_final") or 0)


def cost(row: dict, x: str) -> float:
    """A row's cost per sample on axis ``x`` (see ``AXES``)."""
    return nfe_per_sample(row) if x == "nfe" else row[AXES[x][0]]


def label(row: dict) -> str:
    """Legend label: the more-steps baseline, or algorithm (+ parameters) and verifier."""
    if row["algorithm"] == "none":
        return "more denoising steps (no search)"
    params = ", ".join(f"{k}={v}" for k, v in sorted(row.get("params", {}).items()))
    return f"{row['algorithm']}{f' ({params})' if params else ''}, {row.get('verifier', '?')}"


def cell(values: list) -> str:
    """A table cell: "-" without values, the mean alone for one value (no interval to state), else mean ± 95% CI."""
    mean, ci = mean_ci(values)
    if math.isnan(mean):
        return "-"
    n = sum(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)
    return f"{mean:.4g}" if n == 1 else f"{mean:.4g} ± {ci:.2g}"


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (0 for a single value).

    The interval is Student's t with ``n - 1`` degrees of freedom (``t(0.975, 2) = 4.303`` for three seeds), not
    the normal approximation's 1.96, which is a 95% interval only for many values: with three seeds it is a 78%
    interval, and two curves would look separated when they are not.
    """
    from scipy.stats import t

    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], 0.0
    n = len(values)
    return statistics.fmean(values), float(t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def curves(rows: list[dict], metric: str, x: str = "nfe") -> dict[str, list[tuple[float, float, float]]]:
    """Label -> [(cost per sample on axis ``x`` (see ``AXES``), mean, CI half-width)] sorted by budget."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if metric in r:
            groups.setdefault((label(r), r["budget"]), []).append(r)
    out: dict[str, list] = {}
    for (name, _), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        spent = statistics.fmean(cost(g, x) for g in group)
        out.setdefault(name, []).append((spent, *mean_ci([g[metric] for g in group])))
    return out


LOWER_IS_BETTER = frozenset({"fid"})  # every other metric, per-target or set, is better higher


def best_index(values: list[float], metric: str) -> int | None:
    """Index of the best value of ``metric`` (lowest FID, highest otherwise), the first on ties; None if all NaN."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    finite = [(sign * v, -k) for k, v in enumerate(values) if v is not None and not math.isnan(v)]
    return -max(finite)[1] if finite else None


def onsets(rows: list[dict], metrics: list[str]) -> dict[str, dict[str, dict]]:
    """Label -> held-out metric -> ``{"budget", "value", "at_end"}``: where the metric's mean over seeds peaks.

    ``at_end`` is true when the peak is at the configuration's largest budget (no hacking seen in
    the budgets run). The search verifier's own ``best_score`` is not held out and is left out.
    """
    out: dict[str, dict[str, dict]] = {}
    for metric in metrics:
        if metric == "best_score":
            continue
        groups: dict[tuple[str, int], list] = {}
        for r in rows:
            if metric in r:
                groups.setdefault((label(r), r["budget"]), []).append(r.get(metric))
        for name in sorted({name for name, _ in groups}):
            budgets = sorted(b for n, b in groups if n == name)
            means = [mean_ci(groups[(name, b)])[0] for b in budgets]
            k = best_index(means, metric)
            if k is not None:
                out.setdefault(name, {})[metric] = {
                    "budget": budgets[k],
                    "value": means[k],
                    "at_end": k == len(budgets) - 1,
                }
    return out


def onset_table(rows: list[dict], metrics: list[str]) -> list[list[str]]:
    """Header + one line per configuration: the budget where each held-out metric peaks, and its value there."""
    found = onsets(rows, metrics)
    held_out = [m for m in metrics if m != "best_score"]
    lines = [["configuration", *(f"{m}: peak budget (value)" for m in held_out)]]
    for name in sorted(found):
        cells = []
        for m in held_out:
            peak = found[name].get(m)
            if peak is None:
                cells.append("-")
            else:
                end = ", still improving at the largest budget" if peak["at_end"] else ""
                cells.append(f"{peak['budget']} ({peak['value']:.4g}{end})")
        lines.append([name, *cells])
    return lines


def per_target_metrics(rows: list[dict]) -> list[str]:
    return ["best_score"] + sorted({k for r in rows for k in r if k.startswith("eval_")})


def protocol_ceiling(rows: list[dict], metric: str) -> float | None:
    """The largest ceiling of ``metric``'s protocol over ``rows`` (sample sets; ``CEILINGS``), or None (no such key)."""
    key = CEILINGS.get(metric)
    values = [r[key] for r in rows if key is not None and isinstance(r.get(key), (int, float))]
    return max(values) if values else None


def table(rows: list[dict], metrics: list[str], budget: int, *, failures: bool = False) -> list[list[str]]:
    """Header + one line per configuration at ``budget``: mean ± CI of each metric.

    ``failures``: a last column counting the searches without a best image (``best_score`` null)
    out of all, with the failed candidate scores (``nan_scores``) they and the others had.
    """
    at = [r for r in rows if r["budget"] == budget]
    lines = [["configuration", *metrics, *(["failed searches (failed scores)"] if failures else [])]]
    for name in sorted({label(r) for r in at}):
        group = [r for r in at if label(r) == name]
        cells = []
        for m in metrics:
            cells.append(cell([g.get(m) for g in group]))
        if failures:
            failed = sum(g["best_score"] is None and g.get("scored", True) for g in group)  # unscored: no failure
            nan_scores = sum(g.get("nan_scores") or 0 for g in group)
            cells.append(f"{failed} of {len(group)} ({nan_scores})")
        lines.append([name, *cells])
    return lines


def category_table(rows: list[dict], metric: str, budget: int) -> list[list[str]]:
    """Header + one line per configuration: mean ``metric`` per benchmark category at ``budget``."""
    at = [r for r in rows if r["budget"] == budget]
    categories = sorted({r["category"] for r in at})
    lines = [["configuration", *categories]]
    for name in sorted({label(r) for r in at}):
        cells = []
        for c in categories:
            mean, _ = mean_ci([r.get(metric) for r in at if label(r) == name and r["category"] == c])
            cells.append("-" if math.isnan(mean) else f"{mean:.4g}")
        lines.append([name, *cells])
    return lines


def _cell_mean(rows: list[dict], cell: str, key: str) -> float:
    """A sample set's cost per sample: the mean over its cell's per-target rows."""
    return statistics.fmean(r[key] for r in rows if r["cell"] == cell)


def sets_as_rows(rows: list[dict], sets: list[dict], x: str = "nfe") -> list[dict]:
    """``sets.jsonl`` entries as rows ``curves`` and ``table`` read: the verifier, and the cost on axis ``x``.

    The cost of a set is its budget in NFEs plus the mean final-render NFEs of its cell's rows (``nfe_final``),
    or the mean over its cell's per-target rows on another axis.
    """
    key = AXES[x][0]
    out = []
    for s in sets:
        mine = [r for r in rows if r["cell"] == s["cell"]]
        out.append(
            {
                **s,
                "verifier": mine[0]["verifier"] if mine else "?",
                "nfe_used": s["budget"],
                "nfe_final": statistics.fmean(r.get("nfe_final") or 0 for r in mine) if mine else 0,
                **({} if x == "nfe" else {key: _cell_mean(rows, s["cell"], key)}),
            }
        )
    return out


def points_table(
    sets: list[dict], set_metrics: list[str], rows: list[dict] = (), target_metrics: list[str] = ()
) -> list[list[str]]:
    """Header + one line per point of the curves (configuration and budget): mean ± 95% CI of each metric.

    ``sets`` (from ``sets_as_rows``) give the sample-set metrics, the CI over seeds; ``rows`` (per
    target) give ``target_metrics``, the CI over seeds and targets. A metric a point lacks is "-".
    """
    groups: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for kind, group in (("sets", sets), ("rows", rows)):
        for r in group:
            groups.setdefault((label(r), r["budget"]), {"sets": [], "rows": []})[kind].append(r)
    lines = [["configuration", "budget", "NFEs per sample", "seeds", *set_metrics, *target_metrics]]
    for (name, budget), group in sorted(groups.items()):
        nfe = statistics.fmean(nfe_per_sample(r) for r in group["rows"] or group["sets"])  # sets: budget + final
        seeds = len({r["seed"] for r in group["sets"] + group["rows"]})
        cells = []
        for kind, metrics in (("sets", set_metrics), ("rows", target_metrics)):
            for m in metrics:
                cells.append(cell([g.get(m) for g in group[kind]]))
        lines.append([name, str(budget), f"{nfe:g}", str(seeds), *cells])
    return lines
