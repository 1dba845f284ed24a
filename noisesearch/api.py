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

from noisesearch.driver import SearchResult
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
    from noisesearch.records import record
    from noisesearch.spec import RunSpec, run
    from noisesearch.verifiers import as_verifier
    from noisesearch.verifiers.video import for_model, split_options

    spec = RunSpec(
        model=model,
        verifier=verifier,
        algorithm=algorithm,
        algorithm_params=algorithm_params,
        budget=budget,
        targets=[targets] if isinstance(targets, (str, int)) else list(targets),
        seed=seed,
        steps=steps,
        sampler=sampler,
        guidance=guidance,
        pipeline_kwargs=pipeline_kwargs,
        verifier_options=verifier_options,
        max_batch=max_batch,
        keep_images=keep_images,
        final_steps=final_steps,
        nfe_convention=nfe_convention,
    ).validate()  # every cheap check, before any work
    if not callable(getattr(model, "schedule", None)):  # not a Model: a pipeline object, or refused in one line
        model = from_pipeline(model)
    if pipeline_kwargs:
        with_kwargs = getattr(model, "with_pipeline_kwargs", None)
        if with_kwargs is None:
            raise UserError(f"model {model.name!r} takes no pipeline_kwargs (it is not a diffusers pipeline)")
        model = with_kwargs(pipeline_kwargs)
    options, video_options = split_options(verifier_options)  # frames/combine: scoring a video's frames
    v = for_model(as_verifier(verifier, **options), model, **video_options)
    spec = spec.resolved(model)
    from noisesearch.cache import open_cache

    candidate_cache = open_cache(cache)  # a folder is created only once everything else is accepted
    started = time.perf_counter()
    algo = spec.parts.algorithm
    results = run(spec, model, v, algo, progress=progress, cache=candidate_cache)
    wall = time.perf_counter() - started
    for r in results:
        r.record = record(spec, r, model, v, algo, wall=wall / len(results))
    return results


def describe(options: dict) -> dict:
    """``options`` as JSON-ready values (``records.describe``)."""
    from noisesearch.records import describe as describe_options

    return describe_options(options)
