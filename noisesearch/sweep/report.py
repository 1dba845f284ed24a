"""``report``: scaling curves, paper-style tables and a self-contained HTML page, from JSONL rows only.

Per-target metrics (the search verifier's best score, every held-out ``eval_*`` score) are
averaged over seeds and targets with a 95% confidence interval (Student's t with n - 1 degrees of
freedom: 4.30 standard errors for 3 seeds, 1.96 only as n grows large); set metrics from ``sets.jsonl`` (FID, IS, ... on the digits models) over
seeds. The HTML page embeds its plots and images (base64) and escapes every piece of user text.

A report only reads the rows and writes only ``FOLDER/report`` (checked before any work: a folder,
or missing and creatable; a report that fails on a full disk removes the files it wrote into a
``report`` folder it made, and the folder). A half-written last line (a sweep that crashed mid-write) is left out
with a warning, and only the next ``sweep`` repairs the file. A search without a best image (all
its scores failed) has ``best_score: null``; the tables count such searches per configuration
(``failed searches``); an unscored baseline's rows (``scored: false``) have ``best_score: null`` too
and are no failure.

Verifier hacking: for every configuration and every held-out metric (every metric but the search
verifier's own ``best_score``), the budget at which the metric's mean is best (``onsets``); FID
is better lower, everything else higher. A peak before the largest budget means more search made
the held-out metric worse from there on: the onset of hacking. The curves mark each peak with a
star, and the tables list its budget.
"""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from noisesearch._io import atomic_write_bytes
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
        positive = True
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
            ax.annotate(
                f"a perfect set: {ceiling:.3f}", (0.01, ceiling), xycoords=("axes fraction", "data"), fontsize=7
            )
        ax.set_xlabel(AXES[x][1])
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
        ax.grid(alpha=0.3)
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


def _html_table(lines: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in lines[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in lines[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_table(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines[1:]]
    return "\n".join(out) + "\n"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _figure(out: Path, path: str, caption: str) -> str:
    if not (out / path).is_file():
        return ""
    text = html.escape(caption)
    return f"<figure>{_img((out / path).read_bytes(), caption)}<figcaption>{text}</figcaption></figure>"


def image_grids(rows: list[dict], out: Path, metric: str, budget: int, *, max_targets: int = 12) -> str:
    """Per target, the worst, median and best images with their scores.

    With ``keep_images: all``: the candidates of one search (the first configuration at ``budget``,
    lowest seed), ranked by the search verifier. Otherwise: the kept best images of every
    configuration, ranked by ``metric``.
    """
    searches: dict[int, dict] = {}
    for r in sorted(
        (r for r in rows if r.get("candidate_images") and r["budget"] == budget), key=lambda r: (label(r), r["seed"])
    ):
        searches.setdefault(r["target_index"], r)
    parts = []
    if searches:
        for index in sorted(searches)[:max_targets]:
            r = searches[index]
            kept = sorted((c for c in r["candidate_images"] if c["score"] is not None), key=lambda c: c["score"])
            if not kept:
                continue
            picks = [("worst", kept[0]), ("median", kept[len(kept) // 2]), ("best", kept[-1])]
            figures = "".join(_figure(out, c["image"], f"{kind} of {len(kept)}: {c['score']:.4g}") for kind, c in picks)
            title = f"{r['target']} ({label(r)}, budget {r['budget']}, seed {r['seed']})"
            parts.append(f"<section class='grid'><h3>{html.escape(str(title))}</h3>{figures}</section>")
        return "".join(parts)
    by_target: dict[int, list[dict]] = {}
    for r in rows:
        if r.get("image") and r.get(metric) is not None:
            by_target.setdefault(r["target_index"], []).append(r)
    for index in sorted(by_target)[:max_targets]:
        group = sorted(by_target[index], key=lambda r: r[metric])
        picks = [("worst", group[0]), ("median", group[len(group) // 2]), ("best", group[-1])]
        figures = "".join(
            _figure(out, r["image"], f"{kind}: {r[metric]:.4g} - {label(r)}, budget {r['budget']}") for kind, r in picks
        )
        parts.append(f"<section class='grid'><h3>{html.escape(str(group[0]['target']))}</h3>{figures}</section>")
    return "".join(parts) or "<p>No images were kept (set <code>keep_images: true</code> in the config).</p>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{image-rendering:pixelated;max-width:100%}
figure{display:inline-block;margin:0 1em 1em 0;font-size:12px;width:160px}figure img{width:128px}"""


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


def _stderr(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)


def build_report(
    folder: Path, *, budget: int | None = None, x: str = "nfe", warn: Callable[[str], None] = _stderr
) -> Path:
    """Write ``folder/report/index.html`` (+ PNG plots and markdown tables) from the sweep's rows.

    Reads ``results.jsonl`` and ``sets.jsonl`` without changing them; ``warn`` gets one line for a
    half-written last line (ignored). A row of the wrong shape is a ``UserError`` naming its line.
    ``x``: the cost axis of the curves (``AXES``: nfe, flops, seconds, dollars).
    """
    if x not in AXES:
        raise UserError(f"--x {x!r} is not an axis; accepted: {', '.join(AXES)}")
    from noisesearch.checks import check_out_dir

    if not str(folder if folder is not None else "").strip():
        raise UserError("the sweep folder is empty; give a sweep's output folder")
    folder = Path(folder)
    path = folder / "results.jsonl"
    if not path.is_file():
        raise UserError(f"{str(folder)!r} has no results.jsonl; run `noisesearch sweep CONFIG --out {folder}` first")
    report = check_out_dir(folder / "report", what="the report folder", files=REPORT_FILES)
    made = not report.exists()
    written: list[Path] = []
    try:
        return _build(folder, report, budget, x, warn, written)
    except Exception:
        if made:  # a report that could not be finished leaves no half report behind in a folder it made
            for done in written:
                done.unlink(missing_ok=True)
            try:
                report.rmdir()
            except OSError:
                pass
        raise


REPORT_FILES = ("index.html", "tables.md", "per_target.png", "sets.png")


def _build(folder: Path, report: Path, budget, x: str, warn, written: list[Path]) -> Path:
    """``build_report`` after its checks; each file written is added to ``written``."""
    from noisesearch.records import read_rows, read_sets

    path = folder / "results.jsonl"

    def write(name: str, data: bytes) -> None:
        atomic_write_bytes(report / name, data)
        written.append(report / name)

    rows = read_rows(path, warn=warn)
    if not rows:
        raise UserError(f"{str(path)!r} has no rows yet")
    sets = read_sets(folder / "sets.jsonl", warn=warn) if (folder / "sets.jsonl").exists() else []
    check_axis(rows, x)
    budgets = sorted({r["budget"] for r in rows})
    budget = budget if budget is not None else budgets[-1]
    if budget not in budgets:
        raise UserError(f"--budget {budget} is not one of the sweep's budgets {budgets}")
    report.mkdir(exist_ok=True)
    metrics = per_target_metrics(rows)
    primary = metrics[1] if len(metrics) > 1 else metrics[0]
    target_png = plot(rows, metrics, "per-target scores (mean, 95% CI over seeds and targets)", x)
    write("per_target.png", target_png)
    sections = [f"<h2>Scaling curves</h2>{_img(target_png, 'per-target scaling curves')}"]
    markdown = [
        f"# Sweep report: {folder.name}\n",
        f"## Per-target metrics at budget {budget}\n",
        _markdown_table(table(rows, metrics, budget, failures=True)),
    ]
    set_metrics = [m for m in SET_METRICS if any(m in s for s in sets)]
    if set_metrics:
        set_rows = sets_as_rows(rows, sets, x)
        set_png = plot(set_rows, set_metrics, "sample-set metrics (mean, 95% CI over seeds)", x)
        write("sets.png", set_png)
        sections.append(_img(set_png, "sample-set scaling curves"))
        markdown += [
            f"## Sample-set metrics at budget {budget}\n",
            _markdown_table(table(set_rows, set_metrics, budget)),
        ]
    sections.append(
        f"<h2>Per-target metrics at budget {budget}</h2>{_html_table(table(rows, metrics, budget, failures=True))}"
    )
    if set_metrics:
        sections.append(
            f"<h2>Sample-set metrics at budget {budget}</h2>{_html_table(table(set_rows, set_metrics, budget))}"
        )
    sections.append(
        f"<h2>{html.escape(primary)} per category at budget {budget}</h2>"
        f"{_html_table(category_table(rows, primary, budget))}"
    )
    markdown += [
        f"## {primary} per category at budget {budget}\n",
        _markdown_table(category_table(rows, primary, budget)),
    ]
    hacking = [("per-target", onset_table(rows, metrics))]
    if set_metrics:
        hacking.append(("sample-set", onset_table(set_rows, set_metrics)))
    for kind, lines in hacking:
        if len(lines[0]) == 1:  # no held-out metric of this kind
            continue
        title = f"Verifier hacking: budget where each held-out {kind} metric peaks"
        sections.append(f"<h2>{html.escape(title)}</h2>{_html_table(lines)}")
        markdown += [f"## {title}\n", _markdown_table(lines)]
    sections.append(f"<h2>Images: worst, median and best</h2>{image_grids(rows, folder, primary, budget)}")
    config_note = html.escape(f"{len(rows)} rows, budgets {budgets}, {len({r['cell'] for r in rows})} cells")
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>noisesearch report</title>"
        f"<style>{STYLE}</style></head><body><h1>noisesearch sweep report</h1><p>{config_note}</p>"
        f"{''.join(sections)}</body></html>"
    )
    write("index.html", page.encode())
    write("tables.md", "\n".join(markdown).encode())
    return report / "index.html"
