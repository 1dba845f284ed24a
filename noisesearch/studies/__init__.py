"""``demo`` and ``compare``: shipped sweep configurations run by the sweep engine, drawn by the report code.

Each study is one or more sweep configs (``configs/*.yaml``, full sizes) that the command's
options change in code before validation (``--quick``, ``--seed(s)``, ``--guidance``,
``--budgets``, ``--algorithms``, ``--verifier``, ``--model``). ``noisesearch.sweep.run`` runs them
(resumable, one row per target, one sample set per configuration and seed in ``samples/*.npz``
with its FID, IS, ... in ``sets.jsonl``); ``noisesearch.sweep.report`` aggregates and draws
(``scaling.png``, the table printed and written to ``table.md``). The spread everywhere is a 95%
confidence interval: over seeds for sample-set metrics, over seeds and targets for per-target
ones (the search verifier's ``best_score``).

The step baseline is the sweep's: one sample per target with as many Euler steps as its budget
buys exactly (half as many under classifier-free guidance), not scored by the search verifier
(``baseline_scored: false`` in both studies: there is nothing to rank).

- ``demo`` (``configs/demo.yaml`` into ``OUT``, and ``demo-selfsup.yaml`` into
  ``OUT/feature-similarity`` unless ``--quick``): more denoising steps from 1 step on, against
  random and zero-order search with the classifier verifier and random search with the
  self-supervised one; every search candidate has ``SEARCH_STEPS`` steps, so each search's first
  candidate is the no-search sample at that many steps. Under guidance a candidate costs twice
  as much, so a search's budgets below one candidate are left out (and reported).
- ``compare`` (``configs/compare.yaml`` into ``OUT``): every registered algorithm and the step
  baseline at the same budgets over several seeds. A budget an algorithm cannot spend (below
  one candidate) is left out of that algorithm's budgets and reported; if no search can run at
  all, a ``UserError`` says why for each.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from noisesearch.checks import check_budget, check_guidance, check_positive_int, check_seed
from noisesearch.errors import UserError
from noisesearch.sweep.tables import SET_METRICS as SET_METRIC_NAMES

CONFIG_DIR = Path(__file__).parent / "configs"
SEARCH_STEPS = 8  # Euler steps per search candidate (where the step curve has flattened); the configs' `steps`
DEMO_QUICK = {"per_class": 30, "baseline_steps": [1, 2, 4, 8, 16, 32], "budgets": [16, 32, 64, 128, 256]}
COMPARE_QUICK = {"per_class": 20, "budgets": [64, 128, 256]}
SEEDS_MAX = 1000  # each seed is a whole study; more would run for weeks
SET_METRICS = list(SET_METRIC_NAMES)  # the set metrics of sets.jsonl, as the report knows them


@dataclass
class Study:
    """The sweeps of one study: (config, folder under OUT) pairs, and the searches left out with why."""

    sweeps: list[tuple[object, str]]
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (algorithm, budget, reason)


def nfe_per_step(guidance: float | None) -> int:
    """NFEs of one digits step: 2 with classifier-free guidance (conditional and unconditional rows), else 1."""
    return 1 if guidance is None or guidance == 1.0 else 2


def _load(name: str) -> dict:
    from noisesearch.sweep.config import _read_yaml

    return _read_yaml(CONFIG_DIR / f"{name}.yaml")


def _validate(data: dict, name: str):
    from noisesearch.sweep.config import validate_config

    return validate_config(data, CONFIG_DIR / f"{name}.yaml")


def demo_study(*, quick: bool = False, seed: int = 0, model: str = "digits", guidance: float | None = None) -> Study:
    """The demo's sweeps (``quick``: 30 targets per class, budgets up to 256, no self-supervised sweep).

    With ``guidance`` other than 1 each baseline step costs 2 NFEs: ``steps`` steps are budgeted
    ``2 * steps`` NFEs, so every point sits at the NFEs it really spends.
    """
    check_seed(seed)
    guidance = check_guidance(guidance, what="--guidance")
    per_step = nfe_per_step(guidance)
    sweeps, skipped = [], []
    for name, folder in (("demo", "."), ("demo-selfsup", "feature-similarity")):
        if quick and name != "demo":
            continue
        data = _load(name)
        data.update(model=model, seeds=[seed], guidance=guidance)
        if quick:
            data["benchmark"] = {**data["benchmark"], "per_class": DEMO_QUICK["per_class"]}
            data["budgets"] = list(DEMO_QUICK["budgets"])
            data["chunk"] = 10 * DEMO_QUICK["per_class"]
        if data.get("baseline"):
            steps = DEMO_QUICK["baseline_steps"] if quick else data["baseline_budgets"]
            data["baseline_budgets"] = [s * per_step for s in steps]
        skipped += _fit_budgets(data, per_step)  # under guidance a candidate costs twice as much
        sweeps.append((_validate(data, name), folder))
    return Study(sweeps, skipped)


def _fit_budgets(data: dict, per_step: int) -> list[tuple[str, int, str]]:
    """Give each algorithm of ``data`` only the budgets it can spend; returns (algorithm, budget, why) left out.

    An algorithm that can spend none of them is dropped from ``data["algorithms"]``.
    """
    from noisesearch.sweep.config import cannot_spend

    specs, skipped = [], []
    for spec in data["algorithms"]:
        can = []
        for b in data["budgets"]:
            why = cannot_spend(
                spec["name"], spec.get("params", {}), b, data["steps"], data.get("sampler", "euler"), per_step
            )
            if why is None:
                can.append(b)
            else:
                skipped.append((spec["name"], b, why))
        if can:
            specs.append({**spec, **({} if can == data["budgets"] else {"budgets": can})})
    data["algorithms"] = specs
    return skipped


def parse_list(text: str, flag: str, example: str) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c']; a clear error for an empty item or one given twice."""
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise UserError(f"{flag} is empty; give a comma-separated list, e.g. {example}")
    for n, item in enumerate(items, start=1):
        if not item:
            raise UserError(f"{flag} {text!r}: item {n} is empty; give a comma-separated list, e.g. {example}")
        if item in items[: n - 1]:
            raise UserError(f"{flag} {text!r}: {item!r} is given twice")
    return items


def parse_budgets(text: str) -> list[int]:
    """'64,128,256' -> [64, 128, 256]; a clear error for anything else."""
    budgets = []
    for item in parse_list(text, "--budgets", "64,128,256"):
        try:
            budgets.append(int(item))
        except ValueError:
            raise UserError(
                f"--budgets {text!r} is not a comma-separated list of integers ({item!r}), e.g. 64,128,256"
            ) from None
        if budgets[-1] < 1:
            raise UserError(f"--budgets {text!r} must list positive NFE budgets, e.g. 64,128,256")
        if budgets[-1] in budgets[:-1]:
            raise UserError(f"--budgets {text!r}: {budgets[-1]} is given twice")
        check_budget(budgets[-1], what="--budgets item")
    return sorted(budgets)


def compare_study(
    *,
    model: str = "digits",
    budgets: list[int] | None = None,
    seeds: int = 3,
    verifier: str = "classifier",
    algorithms: list[str] | None = None,
    quick: bool = False,
    guidance: float | None = None,
) -> Study:
    """The matched-budget sweep (``quick``: 20 targets per class, budgets up to 256).

    ``budgets`` None: 64 to 1024 (``quick``: 64 to 256). With ``guidance`` other than 1 a step costs
    2 NFEs, so the step baseline at budget B runs B/2 steps (and every budget must be even).
    Budgets an algorithm cannot spend are dropped from its own budgets and listed in ``skipped``.
    """
    from noisesearch.models import digits_models
    from noisesearch.registry import pick
    from noisesearch.verifiers import VERIFIERS

    if model not in digits_models():
        raise UserError(
            f"compare runs on the built-in digits models; got --model {model!r}, accepted: {', '.join(digits_models())}"
        )
    pick(VERIFIERS, verifier, "verifier")
    if algorithms is not None and not algorithms:
        raise UserError("--algorithms is empty; give a comma-separated subset, e.g. random,zero-order")
    data = _load("compare")
    names = _algorithm_names(data, algorithms)
    check_positive_int(seeds, what="--seeds", most=SEEDS_MAX)
    guidance = check_guidance(guidance, what="--guidance")
    budgets = _compare_budgets(data, budgets, quick, guidance)
    per_step = nfe_per_step(guidance)
    data.update(budgets=sorted(budgets), algorithms=[{"name": name} for name in names])
    skipped = _fit_budgets(data, per_step)
    if not data["algorithms"]:
        reasons = {a: f"{a} at {b} NFEs: {r}" for a, b, r in reversed(skipped)}
        raise UserError("nothing to compare: every search configuration is impossible; " + "; ".join(reasons.values()))
    data.update(model=model, verifier={"name": verifier}, guidance=guidance)
    data["seeds"] = list(range(seeds))
    if quick:
        data["benchmark"] = {**data["benchmark"], "per_class": COMPARE_QUICK["per_class"]}
        data["chunk"] = 10 * COMPARE_QUICK["per_class"]
    return Study([(_validate(data, "compare"), ".")], skipped)


def _algorithm_names(data: dict, algorithms: list[str] | None) -> list[str]:
    """The algorithms compare runs: the config's (``algorithms`` None), else the ones given, each registered, once."""
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.registry import pick

    names = [spec["name"] for spec in data["algorithms"]] if algorithms is None else list(algorithms)
    for n, name in enumerate(names):
        pick(ALGORITHMS, name, "algorithm")
        if name in names[:n]:
            raise UserError(f"--algorithms: {name!r} is given twice")
    return names


def _compare_budgets(data: dict, budgets: list[int] | None, quick: bool, guidance: float | None) -> list[int]:
    """compare's budgets (the config's, or ``--quick``'s, when None), each valid, once, and spendable in whole steps."""
    if budgets is None:
        budgets = list(COMPARE_QUICK["budgets"] if quick else data["budgets"])
    budgets = list(budgets)
    if not budgets:
        raise UserError("--budgets is empty; give a comma-separated list, e.g. 64,128,256")
    for b in budgets:
        check_budget(b, what="--budgets item")
    if len(set(budgets)) != len(budgets):
        raise UserError(f"--budgets {budgets}: a budget is given twice")
    if quick and max(budgets) > max(COMPARE_QUICK["budgets"]):
        raise UserError(
            f"--quick runs budgets up to {max(COMPARE_QUICK['budgets'])}; got {max(budgets)}: drop --quick or give "
            "smaller budgets"
        )
    per_step = nfe_per_step(guidance)
    odd = [b for b in budgets if b % per_step]
    if odd:
        raise UserError(
            f"--budgets {odd[0]} cannot be spent exactly with --guidance {guidance:g}: every step costs "
            f"{per_step} NFEs, so budgets must be even"
        )
    return budgets


def run_study(
    study: Study, out: Path, *, progress: Callable[[int, int, str], None] | None = None, keep_cache: bool = False
) -> dict:
    """Run (or resume) every sweep of ``study`` under ``out``; returns the rows written and already there.

    Each sweep replays candidates from its ``cache/`` folder (the budgets share their candidates). Once
    the sweep has finished, unless ``keep_cache``, the study removes what is its own there: on the full
    demo it is about 170 MB that a finished study never reads again. Only the cache's own files and
    folders are ever removed (``noisesearch.cache.remove_created``): a file put there by anyone else stays,
    and so does its folder. Which of them are the study's (``_clear_cache``):

    - a cache folder a run of the study made is the study's: a run that keeps it (``keep_cache``, or one
      that stops early, so that the resume replays what was computed) marks it (``STUDY_MARK``), and the
      next run that finishes removes all of it;
    - in a cache folder that was there already, unmarked, only what this run wrote goes: everything it
      held stays as it was.
    """
    from noisesearch import _io
    from noisesearch.cache import cache_entries, holds_entries, remove_created
    from noisesearch.checks import check_out_dir
    from noisesearch.sweep.run import run_sweep

    out = check_out_dir(out, files=("results.jsonl",))
    out = _io.ensure_out_dir(out)
    counts = {"written": 0, "already": 0, "sets": 0}
    for config, folder in study.sweeps:
        cache = out / folder / "cache"
        before = cache_entries(cache)
        made = cache not in before  # it did not exist: whatever this run leaves there is the study's
        try:
            got = run_sweep(config, out / folder, progress=progress)
        except BaseException:
            if made and holds_entries(cache):
                _mark(cache)  # kept for the resume, which then removes it
            elif made:
                remove_created(cache, before)  # nothing cached (a refusal): no folder left behind
            raise
        if keep_cache:
            if made:
                _mark(cache)
        else:
            _clear_cache(cache, before)
        counts["written"] += got["written"]
        counts["already"] += got["skipped"]
        counts["sets"] += got["sets"]
    return counts


STUDY_MARK = ".made-by-noisesearch-study"  # in a cache folder a study made and kept: the next run may remove it


def _mark(cache: Path) -> None:
    """Mark the cache folder ``cache`` (which this run made) as the study's; never over an existing file."""
    try:
        with open(cache / STUDY_MARK, "x") as f:
            f.write("a noisesearch study made this replay cache; its next finished run removes the cache's files\n")
    except OSError:  # no folder (nothing was cached), or the name is taken: left unmarked, so kept
        pass


def _clear_cache(cache: Path, before: set[Path]) -> None:
    """Remove the study's own part of the cache folder ``cache`` after a finished sweep (see ``run_study``):
    the cache's own files and folders not in ``before`` (``noisesearch.cache.cache_entries`` taken before
    the sweep: empty when this run made the folder), or all of them when it holds the study's mark."""
    import stat

    from noisesearch.cache import remove_created

    mark = cache / STUDY_MARK
    try:
        marked = stat.S_ISREG(os.lstat(mark).st_mode)
    except OSError:
        marked = False
    if marked:
        try:
            mark.unlink()
        except OSError:
            return  # it stays the study's: the next run tries again
    remove_created(cache, set() if marked else before)


def read_study(study: Study, out: Path) -> tuple[list[dict], list[dict]]:
    """The per-target rows and the sample sets (as ``report.sets_as_rows``) of every sweep of ``study``."""
    from noisesearch.records import read_rows, read_sets
    from noisesearch.sweep.report import sets_as_rows

    rows, sets = [], []
    for _, folder in study.sweeps:
        here = read_rows(Path(out) / folder / "results.jsonl")
        path = Path(out) / folder / "sets.jsonl"
        rows += here
        sets += sets_as_rows(here, read_sets(path) if path.exists() else [])
    return rows, sets


def draw(study: Study, out: Path, *, metrics: list[str], title: str) -> list[list[str]]:
    """``out/scaling.png`` (``metrics`` against NFEs, 95% CI over seeds) and ``out/table.md``; returns the table.

    The table has one line per point: every sample-set metric and the search verifier's mean best
    score (the baseline's is "-": it is not scored).
    """
    from noisesearch._io import atomic_write_bytes
    from noisesearch.sweep.report import _markdown_table, plot, points_table

    rows, sets = read_study(study, out)
    atomic_write_bytes(Path(out) / "scaling.png", plot(sets, metrics, title))
    present = [m for m in SET_METRICS if any(m in s for s in sets)]
    lines = points_table(sets, present, rows, ["best_score"])
    atomic_write_bytes(Path(out) / "table.md", _markdown_table(lines).encode())
    return lines
