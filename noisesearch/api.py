"""The Python front door: ``from_pipeline`` (any diffusers pipeline object -> a ``Model``; defined with the
registry of adapters in ``noisesearch.models``) and ``search``.

Example::

    import noisesearch as ns

    model = ns.from_pipeline(pipe)     # the pipeline as you set it up: LoRA, offload, compile kept
    results = ns.search(model, ["a red cube on a blue sphere"], verifier=my_reward, budget=120, steps=30)
    results[0].best_image              # (C, H, W) in [0, 1]
"""

from __future__ import annotations

import time

import torch

from noisesearch.driver import SearchResult, run_search
from noisesearch.errors import UserError
from noisesearch.models import from_pipeline


def search(
    model,
    targets,
    *,
    verifier,
    algorithm: str = "random",
    budget: int,
    steps: int | None = None,
    seed: int = 0,
    guidance: float | None = None,
    sampler: str = "euler",
    pipeline_kwargs: dict | None = None,
    verifier_options: dict | None = None,
    max_batch: int = 4096,
    keep_images: bool = False,
    progress=None,
    cache=None,
    final_steps: int | None = None,
    nfe_convention: str = "rows",
    **algorithm_params,
) -> list[SearchResult]:
    """Search the noises of ``model`` for each target within ``budget`` NFEs each; one result per target.

    Args:
        model: a ``Model`` (``from_pipeline``, ``MODELS[...]()``) or a diffusers pipeline object
            (then ``from_pipeline(model)``).
        targets: prompts (or class ids for class-conditional models); a single one may be given bare.
        verifier: a registry name (``noisesearch list``) or any callable ``f(images, prompts) -> scores``
            (images (B, C, H, W) in [0, 1], scores (B,), higher is better; a score that is not finite,
            NaN, +inf or -inf, is a failed one: recorded as null, counted in ``nan_scores``, never the best).
        algorithm: a registry name; its hyperparameters come as ``**algorithm_params``.
        budget: hard NFE limit per target; ``steps``: denoising steps per candidate (default: the model's).
        seed: the search seed (every target's search uses it: common random numbers across targets).
        pipeline_kwargs: extra pipeline ``__call__`` arguments applied to every candidate, checked against its
            signature and annotations (``models._pipeline_args.check_pipeline_kwargs``); an image argument may be a path.
        verifier_options: the verifier factory's keywords, or a callable's ``name``, ``batch``, ``device``,
            ``cache_key`` (a callable's scores are replayed from a cache only with a declared key); for a
            video model also ``frames`` (keyframes k, or "all") and ``combine`` ("mean", "min"): verifiers/video.py.
        cache: a folder or a ``noisesearch.cache.CandidateCache``: candidates found there are replayed
            instead of computed (the budget is still charged; the ledger's ``nfe_computed`` and
            ``replayed`` say what was saved); None (default) computes everything.
        final_steps: "search cheap, render once": denoise each best noise again with this many steps; the
            render is ``best_image`` (``final_score``, ``nfe_final``); the budget bounds the search only.
        nfe_convention: "rows" (default: a CFG step costs 2 NFEs, one per model row) or "steps" (1 NFE per
            denoising step whatever the guidance, as the paper's figures count).

    Returns:
        One ``SearchResult`` per target: ``best_image`` (C, H, W) in [0, 1], ``best_score``,
        ``candidates`` and ``record`` (the same JSON-ready record as ``noisesearch generate`` writes).

    Example::

        import noisesearch as ns

        model = ns.from_pipeline(pipe)
        (result,) = ns.search(model, "a red cube", verifier=lambda im, p: im.mean(dim=(1, 2, 3)), budget=120, steps=30)
        result.best_image.shape                  # (3, H, W)
    """
    from noisesearch.accounting import check_nfe_convention
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.checks import check_budget, check_guidance, check_seed, check_steps
    from noisesearch.driver import check_final_steps, final_schedule
    from noisesearch.generate import make_record
    from noisesearch.registry import check_options, pick
    from noisesearch.verifiers import as_verifier

    budget, seed = check_budget(budget), check_seed(seed)  # numbers first: one line each, before any work
    steps = None if steps is None else check_steps(steps)
    guidance = check_guidance(guidance)
    check_nfe_convention(nfe_convention)
    factory = pick(ALGORITHMS, algorithm, "algorithm")
    check_options(factory, algorithm_params, "algorithm", algorithm)
    algo = factory(**algorithm_params)  # cheap validation first
    check_final_steps(final_steps, algo, sampler)
    if not callable(getattr(model, "schedule", None)):  # not a Model: a pipeline object, or refused in one line
        model = from_pipeline(model)
    if pipeline_kwargs:
        with_kwargs = getattr(model, "with_pipeline_kwargs", None)
        if with_kwargs is None:
            raise UserError(f"model {model.name!r} takes no pipeline_kwargs (it is not a diffusers pipeline)")
        model = with_kwargs(pipeline_kwargs)
    from noisesearch.verifiers.video import for_model, split_options

    options, video_options = split_options(verifier_options)  # frames/combine: scoring a video's frames
    v = for_model(as_verifier(verifier, **options), model, **video_options)
    targets = [targets] if isinstance(targets, (str, int)) else list(targets)
    if not targets:
        raise UserError("targets must hold at least one prompt or class id")
    steps = model.default_steps if steps is None else steps
    guidance = model.default_guidance if guidance is None else float(guidance)
    if final_steps is not None:  # what needs the model: a whole-trajectory pipeline, the render's schedule start
        check_final_steps(final_steps, algo, sampler, whole=getattr(model, "whole_trajectory", False))
        final_schedule(model, steps, final_steps)
    from noisesearch.cache import open_cache

    candidate_cache = open_cache(cache)  # a folder is created only once everything else is accepted
    started = time.perf_counter()
    results = run_search(
        model,
        v,
        algo,
        targets,
        seeds=[seed] * len(targets),
        budget=budget,
        steps=steps,
        sampler=sampler,
        guidance=guidance,
        max_batch=max_batch,
        progress=progress,
        keep_images=keep_images,
        cache=candidate_cache,
        final_steps=final_steps,
        nfe_convention=nfe_convention,
    )
    wall = time.perf_counter() - started
    for r in results:
        r.record = make_record(
            r,
            model,
            v,
            algo,
            model=model.name,
            model_path=None,
            model_options={},
            verifier=v.name,
            verifier_path=None,
            verifier_options=describe(verifier_options or {}),
            algorithm=algorithm,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            wall=wall / len(results),
            pipeline_kwargs=describe(pipeline_kwargs or {}),
            final_steps=final_steps,
            nfe_convention=nfe_convention,
        )
    return results


def describe(options: dict) -> dict:
    """``options`` as JSON-ready values: numbers, strings and containers as they are, others by type (and shape)."""

    def one(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return [one(x) for x in v]
        if isinstance(v, dict):
            return {str(k): one(x) for k, x in v.items()}
        shape = getattr(v, "shape", None) or getattr(v, "size", None)
        return (
            f"<{type(v).__name__} {tuple(shape)}>"
            if isinstance(shape, (tuple, torch.Size))
            else f"<{type(v).__name__}>"
        )

    return {k: one(v) for k, v in options.items()}
