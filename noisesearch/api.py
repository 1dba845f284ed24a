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
from dataclasses import dataclass
from typing import Any

from noisesearch.driver import SearchResult
from noisesearch.errors import UserError
from noisesearch.keywords import accepted, declare, split
from noisesearch.models import from_pipeline


def search(model, targets, **keywords) -> list[SearchResult]:
    """Search the noises of ``model`` for each target within ``budget`` NFEs each; one result per target.

    Args:
        model: a ``Model`` (``from_pipeline``, ``MODELS[...]()``) or a diffusers pipeline object
            (then ``from_pipeline(model)``).
        targets: prompts (or class ids for class-conditional models); a single one may be given bare.
        verifier: a registry name (``noisesearch list``) or any callable ``f(images, prompts) -> scores``
            (images (B, C, H, W) in [0, 1], scores (B,), higher is better; a score that is not finite,
            NaN, +inf or -inf, is a failed one: recorded as null, counted in ``nan_scores``, never the best).
        algorithm: a registry name; its hyperparameters come as ``**algorithm_params``: every keyword that is not
            one of ``SearchOptions`` (the keywords documented here).
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
    options, algorithm_params = split(SearchOptions, keywords, where="search")
    spec = _spec(model, targets, options, algorithm_params).validate()  # every cheap check, before any work
    model = _model(model, options.pipeline_kwargs)
    from noisesearch.cache import open_cache
    from noisesearch.records import record
    from noisesearch.spec import run

    verifier = _verifier(options, model)
    spec = spec.resolved(model)
    candidate_cache = open_cache(options.cache)  # a folder is created only once everything else is accepted
    started = time.perf_counter()
    algo = spec.parts.algorithm
    results = run(spec, model, verifier, algo, progress=options.progress, cache=candidate_cache)
    wall = time.perf_counter() - started
    for r in results:
        r.record = record(spec, r, model, verifier, algo, wall=wall / len(results))
    return results


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """``search``'s keywords (documented there); any other keyword is a parameter of the algorithm."""

    verifier: Any
    algorithm: str = "random"
    budget: int
    steps: int | None = None
    seed: int = 0
    guidance: float | None = None
    sampler: str = "euler"
    pipeline_kwargs: dict | None = None
    verifier_options: dict | None = None
    max_batch: int = 4096
    keep_images: bool = False
    progress: Any = None
    cache: Any = None
    final_steps: int | None = None
    nfe_convention: str = "rows"


declare(search, SearchOptions, rest="algorithm_params")

# the run's fields of ``search``'s keywords (``progress`` and ``cache`` are how it runs, not what)
_SPEC_FIELDS = [name for name in accepted(SearchOptions) if name not in ("progress", "cache")]


def _spec(model, targets, options: SearchOptions, algorithm_params: dict):
    """The ``RunSpec`` of a ``search`` call (not validated yet)."""
    from noisesearch.spec import RunSpec

    return RunSpec(
        model=model,
        targets=[targets] if isinstance(targets, (str, int)) else list(targets),
        algorithm_params=algorithm_params,
        **{name: getattr(options, name) for name in _SPEC_FIELDS},
    )


def _model(model, pipeline_kwargs: dict | None):
    """``model`` as a ``Model``: a pipeline object through ``from_pipeline`` (or refused in one line), with the
    pipeline arguments applied to every candidate."""
    if not callable(getattr(model, "schedule", None)):  # not a Model: a pipeline object, or refused in one line
        model = from_pipeline(model)
    if pipeline_kwargs:
        with_kwargs = getattr(model, "with_pipeline_kwargs", None)
        if with_kwargs is None:
            raise UserError(f"model {model.name!r} takes no pipeline_kwargs (it is not a diffusers pipeline)")
        model = with_kwargs(pipeline_kwargs)
    return model


def _verifier(options: SearchOptions, model):
    """The verifier of a ``search`` call: a registry name or a callable, scoring a video model's frames."""
    from noisesearch.verifiers import as_verifier
    from noisesearch.verifiers.video import for_model, split_options

    verifier_options, video_options = split_options(options.verifier_options)  # frames/combine: a video's frames
    return for_model(as_verifier(options.verifier, **verifier_options), model, **video_options)
