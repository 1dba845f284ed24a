"""Studies on the digits world: a list of configurations -> sample sets, metrics, flat JSONL rows.

A configuration is one way to spend NFEs on every target of a class-balanced target set: either
more denoising steps with no search (``algorithm = "none"``) or a search algorithm with a verifier
at a budget. Each finished configuration appends one row to ``results.jsonl`` and writes its
samples as an ADM-style ``.npz``; rerunning in the same folder skips configurations whose row
and samples are already there. Plots and tables are computed from the rows alone.

Every configuration is checked before any work: a bad value is a ``UserError`` when the
``Config`` is made, and a configuration that cannot run (a budget below one candidate of its
algorithm, a baseline whose steps do not cost exactly its budget) is found by ``impossible()``
before the first search. With classifier-free guidance (guidance other than 1) a step costs
2 NFEs, so the step baseline at budget B runs B/2 steps and spends exactly B NFEs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from noisesearch._io import append_jsonl, ensure_out_dir, read_jsonl_tolerant, save_npz
from noisesearch.algorithms import ALGORITHMS, RandomSearch, derive_seed
from noisesearch.algorithms.base import Problem
from noisesearch.checks import (
    check_budget,
    check_guidance,
    check_out_dir,
    check_positive_int,
    check_seed,
    check_steps,
)
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.generate import build, check_options, pick, versions
from noisesearch.models import MODELS
from noisesearch.samplers import get_sampler
from noisesearch.verifiers import VERIFIERS

PER_CLASS_MAX = 10_000  # targets per class of one configuration (the digits data set has about 180)


@dataclass(frozen=True)
class Config:
    """One configuration of a study (``algorithm="none"``: no search, ``steps`` steps, 1 sample).

    ``guidance`` None is the model's default (no guidance on digits); with guidance other than 1 a
    step costs 2 NFEs. Every value is checked here, so a bad one is refused before any work.
    """

    algorithm: str
    steps: int
    budget: int
    verifier: str | None = None
    params: dict = field(default_factory=dict)
    model: str = "digits"
    per_class: int = 100
    seed: int = 0
    sampler: str = "euler"
    guidance: float | None = None

    def __post_init__(self):
        if self.algorithm != "none":
            pick(ALGORITHMS, self.algorithm, "algorithm")
            if self.verifier is None:
                raise UserError(f"algorithm {self.algorithm!r} needs a verifier to search with")
            pick(VERIFIERS, self.verifier, "verifier")
            check_options(ALGORITHMS[self.algorithm], self.params, "algorithm", self.algorithm)
        elif self.params:
            raise UserError(f"the no-search baseline takes no parameters, got {self.params!r}")
        pick(MODELS, self.model, "model")
        check_steps(self.steps)
        check_budget(self.budget)
        check_seed(self.seed)
        check_positive_int(self.per_class, what="per_class", most=PER_CLASS_MAX)
        get_sampler(self.sampler)
        if self.guidance is not None:
            object.__setattr__(self, "guidance", check_guidance(self.guidance))

    @property
    def key(self) -> str:
        """Stable identity of the configuration (used to resume; no guidance given: as before it existed)."""
        fields = asdict(self)
        if fields["guidance"] is None:
            del fields["guidance"]
        return json.dumps(fields, sort_keys=True)

    @property
    def slug(self) -> str:
        parts = [
            self.model,
            self.algorithm,
            self.verifier or "unscored",
            f"s{self.steps}",
            f"b{self.budget}",
            *(f"{k}{v}" for k, v in sorted(self.params.items())),
            *([f"g{self.guidance:g}"] if self.guidance is not None else []),
            f"seed{self.seed}",
        ]
        return "_".join(str(p) for p in parts)


class _Unscored:
    """Stand-in verifier for the no-search baseline: every image scores 0 (nothing is ranked)."""

    name = "none"
    preview_sigma = None

    def __call__(self, images, targets, *, previews=None):
        return torch.zeros(len(images))


def impossible(config: Config, model) -> str | None:
    """Why ``config`` cannot run on ``model`` (its budget cannot pay what it asks), or None.

    Asks the algorithm to plan one search (``init``, no model call); the step baseline must spend
    exactly its budget: ``steps`` steps at the model's NFEs per step (2 with guidance other than 1).
    """
    guidance = model.default_guidance if config.guidance is None else config.guidance
    per_call = model.nfe_per_call(guidance)
    sigmas = model.schedule(config.steps)
    if config.algorithm == "none":
        cost = get_sampler(config.sampler).nfe(sigmas) * per_call
        if cost != config.budget:
            return (
                f"{config.steps} steps cost {cost} NFEs at {per_call} NFE(s) per step (guidance {guidance:g}), "
                f"not the budget {config.budget}"
            )
        return None
    try:
        algorithm = ALGORITHMS[config.algorithm](**config.params)
        problem = Problem(
            0, derive_seed(config.seed, 0), config.budget, tuple(model.noise_shape), sigmas, config.sampler, per_call
        )
        algorithm.init(problem)
    except UserError as e:
        return str(e)
    return None


class NoSample(Exception):
    """A configuration whose searches left some target without a finished, scored sample."""


def run_config(config: Config, evaluator, *, max_batch: int = 4096) -> tuple[torch.Tensor, list[int], dict]:
    """Samples (N, C, H, W), their labels and a metrics row for one configuration.

    Raises ``NoSample`` when a target's candidates all scored NaN (its verifier failed on each):
    the set would miss that sample, so no row is made.
    """
    targets = [c for c in range(10) for _ in range(config.per_class)]
    seeds = [derive_seed(config.seed, i) for i in range(len(targets))]
    if config.algorithm == "none":
        model, _, _ = build(config.model, "classifier", "random")
        verifier, algorithm = _Unscored(), RandomSearch(candidates=1)
    else:
        model, verifier, algorithm = build(
            config.model, config.verifier, config.algorithm, algorithm_params=config.params
        )
    started = time.perf_counter()
    results = run_search(
        model,
        verifier,
        algorithm,
        targets,
        seeds=seeds,
        budget=config.budget,
        steps=config.steps,
        sampler=config.sampler,
        guidance=config.guidance,
        max_batch=max_batch,
    )
    wall = time.perf_counter() - started
    failed = [r for r in results if r.best_image is None]
    if failed:
        raise NoSample(
            f"{len(failed)} of {len(results)} targets got no sample: every candidate's score was NaN "
            f"({sum(r.nan_scores for r in results)} NaN scores); no row written"
        )
    images = torch.stack([r.best_image for r in results])  # (N, C, H, W)
    nfe = [r.nfe_used for r in results]
    row = {
        **{k: v for k, v in asdict(config).items()},
        "nfe_per_sample": sum(nfe) / len(nfe),
        "nfe_max": max(nfe),
        "nfe_per_step": model.nfe_per_call(model.default_guidance if config.guidance is None else config.guidance),
        "verifier_calls_per_sample": sum(r.verifier_calls for r in results) / len(results),
        "nan_scores": sum(r.nan_scores for r in results),
        "mean_best_score": None if config.algorithm == "none" else sum(r.best_score for r in results) / len(results),
        "n_samples": len(results),
        "wall_time_s": round(wall, 3),
        **evaluator(images, targets),
    }
    return images, targets, row


def run_study(
    configs: list[Config],
    out: Path,
    *,
    progress: Callable[[Config], None] | None = None,
    max_batch: int = 4096,
    skipped: list | None = None,
    counts: dict | None = None,
) -> list[dict]:
    """Run every configuration not yet in ``out/results.jsonl``; return the rows of ``configs``.

    Before any work: ``configs`` must be distinct ``Config`` objects, ``out`` a writable folder, and
    at least one configuration (and one search, if any were asked for) must be able to run;
    otherwise a ``UserError`` says which could not and why. With a ``skipped`` list, a
    configuration that cannot run (its budget below one candidate, or every score of some target
    NaN) is appended there as (config, reason) instead of stopping the study. ``counts``, if given,
    is filled with ``written``, ``already`` (rows found from an earlier run) and ``skipped``.
    """
    from noisesearch.metrics import DigitsEvaluator

    if not isinstance(configs, (list, tuple)) or not configs:
        raise UserError("a study needs a non-empty list of configurations")
    seen: dict[str, Config] = {}
    for config in configs:
        if not isinstance(config, Config):
            raise UserError(f"a study's configurations must be Config objects, got {config!r:.80}")
        if config.key in seen:
            raise UserError(f"configuration {config.slug} is given twice")
        seen[config.key] = config
    out = check_out_dir(out, files=("results.jsonl",))
    if (out / "samples").exists() and not (out / "samples").is_dir():
        raise UserError(f"{str(out / 'samples')!r} is a file; the study writes its sample sets in a folder there")
    results_path = out / "results.jsonl"
    done = _rows_by_key(results_path) if results_path.exists() else {}
    todo = [c for c in configs if c.key not in done or not (out / done[c.key]["samples"]).is_file()]
    models: dict[str, object] = {}
    reasons: dict[str, str] = {}
    for config in todo:
        if config.model not in models:
            models[config.model] = build(config.model, "classifier", "random")[0]
        reason = impossible(config, models[config.model])
        if reason is not None:
            if skipped is None:
                raise UserError(f"configuration {config.slug} cannot run: {reason}")
            reasons[config.key] = reason
    runnable = [c for c in configs if c.key not in reasons]  # rows already there count as runnable
    searches = [c for c in configs if c.algorithm != "none"]
    if not runnable or (searches and all(c.key in reasons for c in searches)):
        what = "configuration" if not runnable else "search configuration"
        shown: dict[tuple, str] = {}
        for c in todo:
            if c.key in reasons:
                shown.setdefault((c.algorithm, c.budget), reasons[c.key])
        raise UserError(
            f"nothing to compare: every {what} is impossible; "
            + "; ".join(f"{a} at {b} NFEs: {r}" for (a, b), r in shown.items())
        )
    del models

    out = ensure_out_dir(out)
    (out / "samples").mkdir(exist_ok=True)
    evaluator = DigitsEvaluator() if todo else None  # a finished study loads nothing
    rows = []
    tally = {"written": 0, "already": 0, "skipped": 0}
    for config in configs:
        row = done.get(config.key)
        if row is not None and (out / row["samples"]).is_file():
            tally["already"] += 1
        else:
            reason = reasons.get(config.key)
            if reason is None:
                try:
                    images, labels, row = run_config(config, evaluator, max_batch=max_batch)
                except NoSample as e:
                    if skipped is None:
                        raise UserError(f"configuration {config.slug}: {e}") from None
                    reason = str(e)
            if reason is not None:
                assert skipped is not None
                skipped.append((config, reason))
                tally["skipped"] += 1
                if progress:
                    progress(config)
                continue
            row["samples"] = f"samples/{config.slug}.npz"
            row["config_key"] = config.key
            row["versions"] = versions()
            save_npz(out / row["samples"], images, labels)
            append_jsonl(results_path, row)
            tally["written"] += 1
        rows.append(row)
        if progress:
            progress(config)
    if counts is not None:
        counts.update(tally)
    return rows


def _rows_by_key(path: Path) -> dict[str, dict]:
    """Rows of an earlier run by configuration key; a clear error for a row that is not one of ours."""
    done = {}
    for n, row in enumerate(read_jsonl_tolerant(path), start=1):
        if not isinstance(row, dict) or not isinstance(row.get("samples", ""), str):
            raise UserError(f"{str(path)!r} row {n} is not a study row (a JSON object with a 'samples' path)")
        if isinstance(row.get("config_key"), str) and isinstance(row.get("samples"), str):
            done[row["config_key"]] = row
    return done
