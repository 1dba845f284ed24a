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

The parts, each name importable from here as before: ``tables`` (axes, means and CIs, curves, onsets, tables),
``plots`` (the PNG curves) and ``page`` (HTML and markdown, image grids). This module reads the rows and writes
the files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from noisesearch._io import atomic_write_bytes
from noisesearch.errors import UserError
from noisesearch.sweep.page import (
    STYLE,
    Page,
    _img,
    _markdown_table,  # noqa: F401  (the studies draw their table with it)
    image_grids,
)
from noisesearch.sweep.plots import plot
from noisesearch.sweep.tables import (
    AXES,
    CEILINGS,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    SET_METRICS,
    best_index,
    category_table,
    cell,
    check_axis,
    cost,
    curves,
    label,
    mean_ci,
    nfe_per_sample,
    onset_table,
    onsets,
    per_target_metrics,
    points_table,
    protocol_ceiling,
    sets_as_rows,
    table,
)

__all__ = [
    "AXES",
    "CEILINGS",
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "REPORT_FILES",
    "SET_METRICS",
    "STYLE",
    "best_index",
    "build_report",
    "category_table",
    "cell",
    "check_axis",
    "cost",
    "curves",
    "image_grids",
    "label",
    "mean_ci",
    "nfe_per_sample",
    "onset_table",
    "onsets",
    "per_target_metrics",
    "plot",
    "points_table",
    "protocol_ceiling",
    "sets_as_rows",
    "table",
]

REPORT_FILES = ("index.html", "tables.md", "per_target.png", "sets.png")


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


def _read(folder: Path, warn) -> tuple[list[dict], list[dict]]:
    """The sweep's rows (at least one) and its sample sets."""
    from noisesearch.records import read_rows, read_sets

    path = folder / "results.jsonl"
    rows = read_rows(path, warn=warn)
    if not rows:
        raise UserError(f"{str(path)!r} has no rows yet")
    sets = read_sets(folder / "sets.jsonl", warn=warn) if (folder / "sets.jsonl").exists() else []
    return rows, sets


def _build(folder: Path, report: Path, budget, x: str, warn, written: list[Path]) -> Path:
    """``build_report`` after its checks; each file written is added to ``written``."""

    def write(name: str, data: bytes) -> None:
        atomic_write_bytes(report / name, data)
        written.append(report / name)

    rows, sets = _read(folder, warn)
    check_axis(rows, x)
    budgets = sorted({r["budget"] for r in rows})
    budget = budget if budget is not None else budgets[-1]
    if budget not in budgets:
        raise UserError(f"--budget {budget} is not one of the sweep's budgets {budgets}")
    report.mkdir(exist_ok=True)
    metrics = per_target_metrics(rows)
    page = Page(folder.name)
    target_png = plot(rows, metrics, "per-target scores (mean, 95% CI over seeds and targets)", x)
    write("per_target.png", target_png)
    page.add_html(f"<h2>Scaling curves</h2>{_img(target_png, 'per-target scaling curves')}")
    set_metrics = [m for m in SET_METRICS if any(m in s for s in sets)]
    set_rows = sets_as_rows(rows, sets, x) if set_metrics else []
    if set_metrics:
        set_png = plot(set_rows, set_metrics, "sample-set metrics (mean, 95% CI over seeds)", x)
        write("sets.png", set_png)
        page.add_html(_img(set_png, "sample-set scaling curves"))
    _add_tables(page, rows, set_rows, metrics, set_metrics, budget)
    primary = metrics[1] if len(metrics) > 1 else metrics[0]
    page.add_html(f"<h2>Images: worst, median and best</h2>{image_grids(rows, folder, primary, budget)}")
    write("index.html", page.html(f"{len(rows)} rows, budgets {budgets}, {len({r['cell'] for r in rows})} cells"))
    write("tables.md", page.markdown_text())
    return report / "index.html"


def _add_tables(page: Page, rows: list[dict], set_rows: list[dict], metrics, set_metrics, budget: int) -> None:
    """The report's tables at ``budget``: per-target and sample-set metrics, per category, hacking onsets."""
    page.add_table(f"Per-target metrics at budget {budget}", table(rows, metrics, budget, failures=True))
    if set_metrics:
        page.add_table(f"Sample-set metrics at budget {budget}", table(set_rows, set_metrics, budget))
    primary = metrics[1] if len(metrics) > 1 else metrics[0]
    page.add_table(f"{primary} per category at budget {budget}", category_table(rows, primary, budget))
    hacking = [("per-target", onset_table(rows, metrics))]
    if set_metrics:
        hacking.append(("sample-set", onset_table(set_rows, set_metrics)))
    for kind, lines in hacking:
        if len(lines[0]) == 1:  # no held-out metric of this kind
            continue
        page.add_table(f"Verifier hacking: budget where each held-out {kind} metric peaks", lines)
