"""``generate``: one target, one verifier, one algorithm, one budget -> the best sample and its record."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from noisesearch._io import ensure_out_dir, save_png, write_json
from noisesearch._version import __version__
from noisesearch.accounting import check_nfe_convention, nfe_per_call
from noisesearch.algorithms import ALGORITHMS
from noisesearch.checks import (
    PROMPT_MAX_CHARS,
    check_budget,
    check_guidance,
    check_out_dir,
    check_positive_int,
    check_seed,
    check_steps,
)
from noisesearch.driver import SearchResult, check_final_steps, final_schedule, run_search
from noisesearch.errors import UserError
from noisesearch.models import MODELS
from noisesearch.registry import check_options, pick
from noisesearch.samplers import get_sampler
from noisesearch.verifiers import VERIFIERS
from noisesearch.verifiers.video import for_model as frames_of
from noisesearch.verifiers.video import split_options as split_video_options

PNG_SCALE = {"digits": 8}  # 8x8 digits are written enlarged 8x (nearest neighbour) to be visible


def build(
    model: str,
    verifier: str,
    algorithm: str,
    *,
    model_path=None,
    verifier_path=None,
    algorithm_params: dict | None = None,
    model_options: dict | None = None,
    verifier_options: dict | None = None,
):
    """Model, verifier and algorithm objects from registry names (checked against each other).

    ``model_options`` / ``verifier_options`` are keyword arguments of the factories (``device``,
    ``dtype``, ...); ``path`` is passed only when given.
    """
    names = (model, verifier, algorithm)
    model_factory, model_kwargs, verifier_factory, verifier_kwargs, video_options, algo = _checked(
        *names,
        model_path=model_path,
        verifier_path=verifier_path,
        algorithm_params=algorithm_params,
        model_options=model_options,
        verifier_options=verifier_options,
    )
    m = model_factory(**model_kwargs)
    domain = getattr(verifier_factory, "domain", None)
    if domain is not None and domain != getattr(m, "domain", None):
        raise UserError(f"verifier {verifier!r} scores {domain} images only; model {model!r} makes other images")
    v = frames_of(verifier_factory(**verifier_kwargs), m, **video_options, domain=domain)
    return m, v, algo


def precheck(model: str, verifier: str, algorithm: str, **options) -> None:
    """``build``'s checks without building anything (``options``: ``build``'s keywords): names, options, the
    algorithm's parameters and the model factory's own cheap checks (its ``precheck``; ``diffusers``: the pipeline
    folder and the pipeline arguments against its class), so a mistake is refused before anything is opened,
    created or loaded."""
    model_factory, model_kwargs, *_ = _checked(model, verifier, algorithm, **options)
    check = getattr(model_factory, "precheck", None)
    if check is not None:
        check(**model_kwargs)


def _checked(
    model,
    verifier,
    algorithm,
    *,
    model_path=None,
    verifier_path=None,
    algorithm_params: dict | None = None,
    model_options: dict | None = None,
    verifier_options: dict | None = None,
):
    """The factories and their keyword arguments, checked, and the algorithm (cheap: no weights)."""
    model_factory = pick(MODELS, model, "model")
    verifier_factory = pick(VERIFIERS, verifier, "verifier")
    algorithm_factory = pick(ALGORITHMS, algorithm, "algorithm")
    model_kwargs = {**(model_options or {}), **({"path": model_path} if model_path is not None else {})}
    verifier_kwargs = {**(verifier_options or {}), **({"path": verifier_path} if verifier_path is not None else {})}
    verifier_kwargs, video_options = split_video_options(verifier_kwargs)  # frames/combine: the video wrapper's
    check_options(algorithm_factory, algorithm_params or {}, "algorithm", algorithm)
    check_options(model_factory, model_kwargs, "model", model)
    check_options(verifier_factory, verifier_kwargs, "verifier", verifier)
    for flag, value in (("--model-path", model_path), ("--verifier-path", verifier_path)):
        if value is not None and not str(value).strip():
            raise UserError(f"{flag} is empty; give a weights file, a local folder or a hub id")
    try:  # validate cheap knobs before loading weights
        algo = algorithm_factory(**(algorithm_params or {}))
    except (TypeError, ValueError) as e:  # e.g. a word where a number goes: the knob's own check cannot compare it
        raise UserError(f"algorithm {algorithm!r}: bad parameter value in {algorithm_params!r} ({e})") from None
    return model_factory, model_kwargs, verifier_factory, verifier_kwargs, video_options, algo


def versions() -> dict[str, str]:
    """Versions that a record needs to be redone."""
    return {"noisesearch": __version__, "torch": torch.__version__, "python": platform.python_version()}


def check_one_candidate(budget: int, steps: int) -> None:
    """Refuse a budget that cannot pay for one finished candidate (at least 1 NFE per step)."""
    if steps > budget:
        raise UserError(
            f"budget {budget} is smaller than 1 candidate(s) ({steps} NFEs with {steps} steps at the least, "
            f"1 NFE per step); give --budget >= {steps} or fewer --steps"
        )


def check_target_text(target) -> None:
    """Refuse a prompt too long for any text encoder (they cut it and log the rest on every call)."""
    if isinstance(target, str) and len(target) > PROMPT_MAX_CHARS:
        raise UserError(
            f"prompt is {len(target):,} characters long; at most {PROMPT_MAX_CHARS:,} are accepted "
            "(text encoders read at most 512 tokens)"
        )


def make_record(
    result: SearchResult,
    m,
    v,
    algo,
    *,
    model: str,
    model_path,
    model_options: dict | None,
    verifier: str,
    verifier_path,
    verifier_options: dict | None,
    algorithm: str,
    steps: int,
    sampler: str,
    guidance: float,
    wall: float,
    pipeline_kwargs: dict | None = None,
    final_steps: int | None = None,
    nfe_convention: str = "rows",
) -> dict:
    """The JSON-ready record of one search (``generate`` and ``noisesearch.search`` write the same one).

    ``nfe_used`` (also ``nfe_search``) counts the search's NFEs, ``nfe_final`` those of the final render
    (``final_steps``; 0 without), both in the unit of ``nfe_convention``; ``best_score`` is the search's best
    score and ``final_score`` the verifier's score of the render (``best.png`` then shows the render).
    """
    return {
        "model": model,
        "model_path": str(model_path) if model_path else None,
        "model_options": model_options or {},
        "adapter": getattr(m, "adapter", "step"),  # "generic": the pipeline's own __call__ ran whole candidates
        **({"pipeline_kwargs": pipeline_kwargs} if pipeline_kwargs else {}),
        **({"latents": m.latents_note} if getattr(m, "latents_note", None) else {}),
        "target": result.target,
        "verifier": verifier,
        "verifier_path": str(verifier_path) if verifier_path else None,
        "verifier_options": verifier_options or {},
        "algorithm": algorithm,
        "algorithm_params": algo.params(),
        "seed": result.seed,
        "budget": result.budget,
        "steps": steps,
        "sampler": sampler,
        "guidance": guidance,
        "nfe_convention": nfe_convention,
        "nfe_per_full_candidate": get_sampler(sampler).nfe(m.schedule(steps))
        * nfe_per_call(m, guidance, nfe_convention),
        "nfe_used": result.nfe_used,
        "nfe_search": result.nfe_used,
        "final_steps": final_steps,
        "nfe_final": result.nfe_final,
        "final_score": result.final_score,
        "verifier_calls": result.verifier_calls,
        "best_score": None if result.best_image is None else result.best_score,
        "best_index": result.best_index,
        "nan_scores": result.nan_scores,
        "candidates": list(result.candidates),
        **result.ledger,  # costs: FLOPs, decodes, verifier FLOPs, API tokens and cost, seconds by kind
        **({"verifier_usage": dict(v.usage)} if getattr(v, "usage", None) else {}),  # e.g. an LLM grader's tokens
        **({"verifier_frames": v.describe()} if getattr(v, "video", False) and hasattr(v, "describe") else {}),
        "wall_time_s": round(wall, 4),
        "versions": versions(),
    }


def generate(
    *,
    model: str = "digits",
    target: Any,
    verifier: str = "classifier",
    algorithm: str = "random",
    algorithm_params: dict | None = None,
    budget: int,
    steps: int | None = None,
    sampler: str = "euler",
    guidance: float | None = None,
    seed: int = 0,
    model_path: str | None = None,
    verifier_path: str | None = None,
    model_options: dict | None = None,
    verifier_options: dict | None = None,
    out: Path | str | None = None,
    max_batch: int = 4096,
    progress=None,
    cache: Path | str | None = None,
    cache_max_mb: float | None = None,
    cache_images: str = "exact",
    final_steps: int | None = None,
    nfe_convention: str = "rows",
) -> tuple[SearchResult, dict]:
    """Search for the best sample of ``target`` within ``budget`` NFEs; write it if ``out`` is given.

    Returns the ``SearchResult`` and the record (a JSON-ready dict). With ``out``, writes
    ``out/best.png`` and ``out/record.json``. The same arguments give a byte-identical record
    apart from its wall times (``wall_time_s``, the ledger's ``seconds_*``).

    ``cache``: a replay-cache folder (``noisesearch.cache``; off when None) with an optional size cap
    ``cache_max_mb`` and ``cache_images`` "exact" or "uint8"; a replay changes only the record's
    ``nfe_computed``, ``replayed``, ``decode_computed`` and ``verify_computed``.

    ``final_steps``: denoise the best noise again with that many steps (``run_search``): ``best.png`` is that
    render, and the record adds ``nfe_final`` and ``final_score``; the budget bounds the search only.
    ``nfe_convention``: "rows" (a CFG step costs 2 NFEs) or "steps" (1 NFE per step, as the paper plots).

    Every argument is checked before any work (and ``out`` before anything is written there): a
    bad one raises ``UserError`` naming it. A search whose candidates all score NaN (a failing
    verifier) returns a record with ``best_score`` None and writes no ``best.png``.

    Example::

        result, record = generate(target=7, budget=64, steps=8, seed=0)
    """
    budget = check_budget(budget)
    steps = None if steps is None else check_steps(steps)
    seed = check_seed(seed)
    guidance = check_guidance(guidance)
    check_positive_int(max_batch, what="max batch")
    get_sampler(sampler)
    check_nfe_convention(nfe_convention)
    check_target_text(target)
    if steps is not None:
        check_one_candidate(budget, steps)
    out_dir = (
        None if out is None else check_out_dir(out, files=("best.png", "record.json", "best.webp", "keyframes.png"))
    )
    named = dict(
        model_path=model_path,
        verifier_path=verifier_path,
        algorithm_params=algorithm_params,
        model_options=model_options,
        verifier_options=verifier_options,
    )
    precheck(model, verifier, algorithm, **named)  # names, options, a pipeline folder and its arguments: cheap
    check_final_steps(final_steps, algorithm, sampler)
    from noisesearch.cache import check_settings, open_cache

    check_settings(cache_max_mb, cache_images)
    if isinstance(cache, (str, os.PathLike)) and str(cache).strip():
        check_out_dir(cache, what="--cache")  # could it be created? (without creating it: that waits for the model)
    m, v, algo = build(model, verifier, algorithm, **named)
    if steps is None:
        steps = m.default_steps
        check_one_candidate(budget, steps)
    guidance = m.default_guidance if guidance is None else guidance
    m.check_target(target)  # before the search starts, not inside it
    if final_steps is not None:  # what needs the model: a whole-trajectory pipeline, the render's schedule start
        check_final_steps(final_steps, algo, sampler, whole=getattr(m, "whole_trajectory", False))
        final_schedule(m, steps, final_steps)
    candidate_cache = open_cache(cache, max_mb=cache_max_mb, images=cache_images)  # created once all is accepted
    started = time.perf_counter()
    (result,) = run_search(
        m,
        v,
        algo,
        [target],
        seeds=[seed],
        budget=budget,
        steps=steps,
        sampler=sampler,
        guidance=guidance,
        max_batch=max_batch,
        progress=progress,
        cache=candidate_cache,
        final_steps=final_steps,
        nfe_convention=nfe_convention,
    )
    wall = time.perf_counter() - started
    record = make_record(
        result,
        m,
        v,
        algo,
        model=model,
        model_path=model_path,
        model_options=model_options,
        verifier=verifier,
        verifier_path=verifier_path,
        verifier_options=verifier_options,
        algorithm=algorithm,
        steps=steps,
        sampler=sampler,
        guidance=guidance,
        wall=wall,
        final_steps=final_steps,
        nfe_convention=nfe_convention,
    )
    if out_dir is not None:
        ensure_out_dir(out_dir)  # created only now: a refused run leaves nothing behind
        if result.best_image is not None and result.best_image.dim() == 4:  # a video (C, F, H, W)
            from noisesearch._video_io import write_video_outputs

            record["video"] = write_video_outputs(out_dir, result, v, fps=getattr(m, "fps", 16))
        elif result.best_image is not None:
            scale = PNG_SCALE.get(model, 1)  # real models' images are written at their own size
            save_png(out_dir / "best.png", result.best_image, scale=scale)
            record["image"] = {"path": "best.png", "scale": scale}
        write_json(out_dir / "record.json", record)
    return result, record
