"""``noisesearch paper``: the findings of Ma et al. 2025 (arXiv 2501.09732), item by item, on the digits world.

The work is done by the sweep engine (``noisesearch.sweep``): the shipped sweep configurations
(``configs/*.yaml``, full sizes, three seeds each) run into ``DIR/sweeps/<name>/`` and resume like
any sweep (a rerun searches nothing that is already written). They share one replay cache,
``DIR/cache``: random search at one seed, guidance, step count and sampler draws the same
candidates whatever its budget or verifier, so most samples are replays (the cache key holds the
model, sampler, schedule, guidance, target and noise). Each item is then drawn from those rows
only: ``DIR/figN.png`` (``DIR/table2.md`` for the table) and a JSONL file with one line per
plotted point or table cell (mean, 95% CI half-width over seeds, the sweep it came from), so every
number can be read back. A rerun draws only the items whose rows changed.

``--quick`` cuts every sweep to 2 targets per class, one seed and budgets up to 128 (at least the
two smallest of each list of budgets), in code, before
validation; ``fig7``'s sweep (four named targets, one seed) is the same in both. Its sweeps are
different configs and so need their own ``--out``. Sample-set metrics (FID, IS, precision, recall)
come from ``sets.jsonl`` (the evaluation network); per-target ones from ``results.jsonl``. IS is
drawn as the whole-set score ("IS (whole set)", ``is_single_split``): the mean over 10 splits is
capped by the split size (about 8.2 for 200 perfect digits), the whole set's only by the classes
(10). Every IS axis draws the protocol's ceiling, a perfect set's score, as a dashed line. Every
curve of a held-out metric marks its best value with a star (``noisesearch.sweep.report.best_index``):
a star before the last budget is where searching further started to hurt it (verifier hacking).

The items, and the digits analogue of each (see docs/PAPER.md for the readings):

- fig1: more denoising steps vs random search (supervised verifier), FID and IS against NFEs;
- fig3: random search with the oracle verifiers, ``oracle-fid-digits`` (one-image FID on the
  evaluation network's per-class statistics) and ``oracle-is`` (the evaluation network's log p),
  with the step baseline, at classifier-free guidance 1.0, 1.35 and 1.5 (a column each);
- fig4: the step baseline and random search at guidance 1.0, 1.35 and 1.5;
- fig5: the self-supervised verifier at guidance 1.0, 1.35 and 1.5: top, its score against the
  supervised classifier's log-probability on unsearched samples (Pearson and Spearman r); below,
  its search curves beside the classifier's;
- fig6: zero-order search (its defaults: cosine neighbourhood, restarts) and search over paths (its
  end-state score) for N = 1, 2, 4, with random search for reference;
- fig7: four targets, each a row: the sample with 2, 4, 8 denoising steps, then the best sample of
  random search (classifier) at 16, 64, 256, 1024 NFEs;
- fig8: relative gain (%) of every metric over the 8-step sample, random search at 128 NFEs with
  each verifier (classifier, feature-similarity, oracle-is, oracle-fid-digits, and the ensemble of
  the first two);
- fig9: the same gains for random search with the ensemble, against NFEs;
- fig10: random search with 2, 4, 8 and 16 NFEs per candidate at the same total budgets, the best noise
  then denoised again with a fixed 16 steps (``final_steps``), as the paper's fixed final denoising;
- fig11: ``digits`` vs ``digits-large`` against FLOPs per sample (the compute ledger's ``total_flops``);
- fig12: zero-order search's step size lambda (the Euclidean neighbourhood, N = 4) and the path
  length L of search over paths (N = 4);
- fig13: FID, IS, precision and recall of random search under the two supervised verifiers
  (``classifier``, and the evaluation network ``oracle-is``, the only other supervised one here);
- fig14: zero-order vs first-order search at aligned compute (first-order's backward passes
  are charged in NFEs, ``backward_cost`` forward NFEs each);
- table2: the five verifiers x {random, zero-order N=2, paths N=2} at 128 NFEs, and the 8-step
  sample first, each scored by every verifier and by the set metrics (mean ± 95% CI over seeds;
  a verifier scoring its own search is marked, as not held out).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from noisesearch import _io
from noisesearch.errors import UserError
from noisesearch.paper.figures import correlation
from noisesearch.sweep.config import SweepConfig

__all__ = ["FIGURES", "QUICK", "SWEEPS", "configs", "correlation", "pick_figures", "run_paper"]

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
    "oracle-fid-135",
    "oracle-fid-15",
    "oracle-is-135",
    "oracle-is-15",
    "selfsup-135",
    "selfsup-15",
    "steps-2",
    "steps-4",
    "steps-8",
    "steps-16",
    "large",
    "table2-classifier",
    "table2-selfsup",
    "table2-oracle-is",
    "table2-oracle-fid",
    "table2-ensemble",
    "fig7",
)
_GUIDED = ("main", "guidance-135", "guidance-15")
_TABLE2 = ("table2-classifier", "table2-selfsup", "table2-oracle-is", "table2-oracle-fid", "table2-ensemble")
FIGURES: dict[str, tuple[str, ...]] = {  # item -> the sweeps it is drawn from, in paper order
    "fig1": ("main",),
    "fig3": (*_GUIDED, "oracle-fid", "oracle-fid-135", "oracle-fid-15", "oracle-is", "oracle-is-135", "oracle-is-15"),
    "fig4": _GUIDED,
    "fig5": (*_GUIDED, "selfsup", "selfsup-135", "selfsup-15"),
    "fig6": ("main", "variants", "paths"),
    "fig7": ("fig7",),
    "fig8": _TABLE2,
    "fig9": ("table2-ensemble",),
    "fig10": ("steps-2", "steps-4", "steps-8", "steps-16"),
    "fig11": ("main", "large"),
    "fig12": ("variants", "paths"),
    "fig13": ("main", "oracle-is"),
    "fig14": ("variants",),
    "table2": _TABLE2,
}
FIXED = ("fig7",)  # sweeps that --quick and the size overrides leave as they are (already tiny)
QUICK = {"per_class": 2, "seeds": 1, "max_budget": 128}


def outputs(item: str) -> tuple[str, str]:
    """The two files an item writes: its PNG (a table: its markdown) and its JSONL records."""
    return (f"{item}.md" if item.startswith("table") else f"{item}.png"), f"{item}.jsonl"


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


def _cut(budgets: list[int], max_budget: int) -> list[int]:
    """``budgets`` up to ``max_budget``, sorted; at least the two smallest (all of a shorter list)."""
    budgets = sorted(budgets)
    kept = [b for b in budgets if b <= max_budget]
    return kept if len(kept) >= 2 else budgets[:2]


def _resized(data: dict, per_class: int | None, seeds: int | None, max_budget: int | None) -> dict:
    """A config's data with fewer targets, seeds and budgets (the sweep's, the baseline's, each algorithm's)."""
    if per_class is not None:
        data["benchmark"] = {**data["benchmark"], "per_class": per_class}
    if seeds is not None:
        data["seeds"] = data["seeds"][:seeds]
    if max_budget is not None:
        data["budgets"] = _cut(data["budgets"], max_budget)
        if data.get("baseline_budgets"):
            data["baseline_budgets"] = _cut(data["baseline_budgets"], max_budget)
        data["algorithms"] = [
            {**spec, "budgets": _cut(spec["budgets"], max_budget)} if spec.get("budgets") else spec
            for spec in data["algorithms"]
        ]
    return data


def configs(
    *, quick: bool = False, per_class: int | None = None, seeds: int | None = None, max_budget: int | None = None
) -> dict[str, SweepConfig]:
    """The shipped sweep configs, validated; ``quick`` or the size overrides cut targets, seeds and budgets.

    ``per_class``: targets per digit class; ``seeds``: the first that many seeds; ``max_budget``:
    budgets up to it (at least the two smallest of each list are kept; an algorithm's own budgets
    and the baseline's are cut alike). The sweeps in ``FIXED`` are not cut.
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
        if name not in FIXED:
            data = _resized(data, per_class, seeds, max_budget)
        out[name] = validate_config(data, path)
    return out


def _draw(item: str, out: Path) -> Path:
    from noisesearch.paper import figures, items

    return {**figures.DRAW, **items.DRAW}[item](out)


def run_paper(
    out: Path | str,
    *,
    quick: bool = False,
    figures: list[str] | None = None,
    sizes: dict | None = None,
    note: Callable[[str], None] = _stderr,
) -> dict:
    """Run (or resume) the sweeps the ``figures`` (items: figures and tables) need into ``out/sweeps``, then draw each.

    The sweeps share one replay cache, ``out/cache``. Returns ``{"written": rows written per sweep,
    "figures": [paths of the PNGs], "tables": [paths of the markdown tables], "drawn": [items drawn
    now]}``. An item newer than the rows it is drawn from is kept as it is (delete its PNG or table to
    redraw it). ``sizes``: overrides for ``configs`` (``per_class``, ``seeds``, ``max_budget``), for tests.
    """
    from noisesearch.checks import check_out_dir
    from noisesearch.sweep.run import run_sweep

    figures = list(FIGURES) if figures is None else figures
    bad = [f for f in figures if f not in FIGURES]
    if bad:
        raise UserError(f"unknown figure {bad[0]!r}; accepted: {', '.join(FIGURES)}")
    out = check_out_dir(out, files=tuple(name for fig in figures for name in outputs(fig)))
    check_out_dir(out / "cache", what="the cache folder")
    cfgs = configs(quick=quick, **(sizes or {}))
    needed = [s for s in SWEEPS if any(s in FIGURES[f] for f in figures)]
    out = _io.ensure_out_dir(out)
    written = {}
    for name in needed:
        started = time.perf_counter()
        counts = run_sweep(cfgs[name], out / "sweeps" / name, note=note, cache=out / "cache")
        written[name] = counts["written"]
        note(
            f"sweep {name}: {counts['written']} rows written, {counts['skipped']} already there "
            f"({counts['cells']} configurations x {counts['targets']} targets, {time.perf_counter() - started:.0f} s)"
        )
    paths, drawn = [], []
    for fig in figures:
        if _up_to_date(out, fig):
            paths.append(out / outputs(fig)[0])
            continue
        paths.append(_draw(fig, out))
        drawn.append(fig)
        note(f"{fig}: {paths[-1]}")
    return {
        "written": written,
        "figures": [p for p in paths if p.suffix == ".png"],
        "tables": [p for p in paths if p.suffix == ".md"],
        "drawn": drawn,
    }


def _up_to_date(out: Path, fig: str) -> bool:
    """Whether ``fig``'s files exist and are newer than every rows file of its sweeps (then it is kept)."""
    made = [out / name for name in outputs(fig)]
    if not all(p.is_file() for p in made):
        return False
    inputs = [out / "sweeps" / s / n for s in FIGURES[fig] for n in ("results.jsonl", "sets.jsonl")]
    newest = max((p.stat().st_mtime_ns for p in inputs if p.exists()), default=0)
    return min(p.stat().st_mtime_ns for p in made) >= newest
