"""Executing one chunk of a sweep: the world a process loads once (model, verifiers, evaluator), the ``RunSpec``
of a (cell, chunk) task, and its search turned into rows. Every backend runs chunks with ``run_chunk``; only the
driver process files them (``filing.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from noisesearch.accounting import nfe_per_call
from noisesearch.algorithms import derive_seed
from noisesearch.errors import UserError
from noisesearch.records import sweep_row
from noisesearch.spec import RunSpec, run
from noisesearch.sweep.config import SweepConfig, baseline_steps
from noisesearch.sweep.plan import Cell


class Unscored:
    """The verifier of an unscored baseline: every image scores 0, so nothing is ranked (one candidate)."""

    name = "none"
    preview_sigma = None

    def __call__(self, images, targets, *, previews=None):
        return torch.zeros(len(images))

    def flops_per_row(self, key: tuple) -> float:
        return 0.0  # no network: what the FLOP counter would count, without running it (ledger.counted)


@dataclass
class World:
    """What a sweep loads once: model, search verifier, held-out verifiers, evaluator (digits only)."""

    model: object
    verifier: object
    eval_verifiers: dict
    evaluator: object | None


def load_world(config: SweepConfig) -> World:
    """Load the config's model, search verifier, held-out verifiers and set evaluator (once per process)."""
    from noisesearch.generate import build
    from noisesearch.registry import pick
    from noisesearch.verifiers import VERIFIERS

    model, verifier, _ = build(
        config.model,
        config.verifier.name,
        "random",
        model_path=config.model_path,
        verifier_path=config.verifier.path,
        model_options=config.model_options,
        verifier_options=config.verifier.options,
    )
    evals = {}
    for spec in config.eval_verifiers:
        factory = pick(VERIFIERS, spec.name, "verifier")
        v = factory(**spec.options, **({"path": spec.path} if spec.path else {}))
        if v.preview_sigma is not None:
            raise UserError(f"eval verifier {spec.name!r} needs x0-previews and cannot score finished images alone")
        evals[spec.name] = v
    return World(model, verifier, evals, evaluator_of(config.model))


def evaluator_of(model: str):
    """The set evaluator of ``model``'s images: ``DigitsEvaluator`` for the digits world, else None."""
    from noisesearch.models import domain_of

    if domain_of(model) != "digits":
        return None
    from noisesearch.metrics import DigitsEvaluator

    return DigitsEvaluator()


def run_chunk(config: SweepConfig, world: World, items, cell: Cell, chunk: list[int], *, cache=None):
    """Search every target of ``chunk`` for ``cell``; returns (cell, rows, best images or None).

    ``cache``: a ``noisesearch.cache.CandidateCache`` to replay candidates from, or None.
    """
    model = world.model
    steps = _baseline_steps(config, model, cell) if cell.algorithm == "none" else cell.steps
    scored = cell.algorithm != "none" or config.baseline_scored
    seeds = [derive_seed(cell.seed, i) for i in chunk]
    spec = cell_spec(config, cell, [items[i].target for i in chunk], seeds, steps).resolved(model)
    algorithm = spec.parts.algorithm
    verifier = world.verifier if scored else Unscored()
    started = time.perf_counter()
    results = run(spec, model, verifier, algorithm, cache=cache)
    wall = (time.perf_counter() - started) / len(chunk)
    images = [r.best_image for r in results]  # (C, H, W) each, None for a search without a real score
    evals = _eval_scores(world, images, results)
    rows = []
    for n, (i, r) in enumerate(zip(chunk, results)):
        columns = {
            "cell": cell.key,
            "target_index": i,
            "category": items[i].category,
            "benchmark": config.benchmark.name,
            "algorithm": cell.algorithm,
            "params": cell.params,
            **{f"eval_{name}": values[n] for name, values in evals.items()},
        }
        rows.append(sweep_row(spec, r, model, verifier, algorithm, wall=wall, scored=scored, columns=columns))
        if r.images:  # every finished candidate, with its score (keep_images: all)
            scores = {c["index"]: c["score"] for c in r.candidates}
            rows[-1]["_candidates"] = [(k, scores[k], image) for k, image in sorted(r.images.items())]
    return cell, rows, images


def _baseline_steps(config: SweepConfig, model, cell: Cell) -> int:
    """The steps that spend the baseline cell's budget exactly at the model's real NFEs per call."""
    guidance = model.default_guidance if config.guidance is None else config.guidance
    per_call = nfe_per_call(model, guidance, config.nfe_convention)
    steps = baseline_steps(cell.budget, config.sampler, per_call)
    if steps is None:
        raise UserError(
            f"the step baseline cannot spend budget {cell.budget} exactly: {config.model} costs {per_call} NFEs "
            f"per call at guidance {guidance}; use budgets it can, or baseline: false"
        )
    return steps


def _eval_scores(world: World, images: list, results: list) -> dict[str, list]:
    """Each held-out verifier's score of every search's best image (None for a search without one)."""
    present = [n for n, image in enumerate(images) if image is not None]
    evals: dict[str, list] = {}
    for name, v in world.eval_verifiers.items():
        evals[name] = [None] * len(images)
        if present:  # only searches that produced an image are scored
            values = v(torch.stack([images[n] for n in present]), [results[n].target for n in present]).tolist()
            for n, value in zip(present, values):
                evals[name][n] = value
    return evals


def cell_spec(config: SweepConfig, cell: Cell, targets: list, seeds: list[int], steps: int) -> RunSpec:
    """The ``RunSpec`` of a chunk of ``cell``'s targets (the baseline: one candidate of ``steps`` steps, no
    final render); checked (``RunSpec.validate``) as every entrance's run is."""
    baseline = cell.algorithm == "none"
    return RunSpec(
        model=config.model,
        model_path=config.model_path,
        model_options=config.model_options,
        verifier=config.verifier.name,
        verifier_path=config.verifier.path,
        verifier_options=config.verifier.options,
        algorithm="random" if baseline else cell.algorithm,
        algorithm_params={"candidates": 1} if baseline else cell.params,
        budget=cell.budget,
        targets=targets,
        seed=cell.seed,
        seeds=seeds,
        steps=steps,
        sampler=config.sampler,
        guidance=config.guidance,
        max_batch=config.max_batch,
        keep_images=config.keep_images == "all",
        final_steps=None if baseline else config.final_steps,  # the baseline is its own render
        nfe_convention=config.nfe_convention,
    ).validate()
