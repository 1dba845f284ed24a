"""``generate``: one target, one verifier, one algorithm, one budget -> the best sample and its record.

A thin translation of its keywords into a ``RunSpec`` (``noisesearch.spec``), then ``execute``: validated once,
built once, run once, recorded once (``noisesearch.records``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisesearch import records
from noisesearch._io import ensure_out_dir, save_png, write_json
from noisesearch.checks import check_out_dir
from noisesearch.driver import SearchResult
from noisesearch.keywords import accepted, bind, declare
from noisesearch.spec import RunSpec, run
from noisesearch.spec import build as build_spec

__all__ = ["build", "execute", "generate"]

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
    ``dtype``, ...); ``path`` is passed only when given. (``spec.build`` of a one-target ``RunSpec``.)
    """
    return build_spec(
        _named(model, verifier, algorithm, model_path, verifier_path, algorithm_params, model_options, verifier_options)
    )


def _named(model, verifier, algorithm, model_path, verifier_path, algorithm_params, model_options, verifier_options):
    """A one-target ``RunSpec`` of registry names, for ``build`` (budget and target do not matter)."""
    return RunSpec(
        model=model,
        verifier=verifier,
        algorithm=algorithm,
        model_path=model_path,
        verifier_path=verifier_path,
        algorithm_params=algorithm_params,
        model_options=model_options,
        verifier_options=verifier_options,
        budget=1,
        targets=(None,),
    )


def generate(**keywords) -> tuple[SearchResult, dict]:
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
    options = bind(GenerateOptions, keywords, where="generate")
    spec = RunSpec(targets=(options.target,), **{name: getattr(options, name) for name in _SPEC_FIELDS})
    return execute(
        spec,
        out=options.out,
        progress=options.progress,
        cache=options.cache,
        cache_max_mb=options.cache_max_mb,
        cache_images=options.cache_images,
    )


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    """``generate``'s keywords (documented there), in its signature's order: the run's (``RunSpec``'s fields,
    ``target`` its one target) and how it runs (``out``, ``progress``, the replay cache's ``cache*``: ``_HOW``)."""

    model: str = "digits"
    target: Any
    verifier: str = "classifier"
    algorithm: str = "random"
    algorithm_params: dict | None = None
    budget: int
    steps: int | None = None
    sampler: str = "euler"
    guidance: float | None = None
    seed: int = 0
    model_path: str | None = None
    verifier_path: str | None = None
    model_options: dict | None = None
    verifier_options: dict | None = None
    out: Path | str | None = None
    max_batch: int = 4096
    progress: Any = None
    cache: Path | str | None = None
    cache_max_mb: float | None = None
    cache_images: str = "exact"
    final_steps: int | None = None
    nfe_convention: str = "rows"


declare(generate, GenerateOptions)

# the run's fields of ``generate``'s keywords (``target`` becomes the one-target ``targets``; the others say how it runs)
_HOW = ("target", "out", "progress", "cache", "cache_max_mb", "cache_images")
_SPEC_FIELDS = [name for name in accepted(GenerateOptions) if name not in _HOW]


OUT_FILES = ("best.png", "record.json", "best.webp", "keyframes.png")  # what generate writes in its folder


def execute(
    spec: RunSpec,
    *,
    out: Path | str | None = None,
    progress=None,
    cache: Path | str | None = None,
    cache_max_mb: float | None = None,
    cache_images: str = "exact",
    names: dict | None = None,
) -> tuple[SearchResult, dict]:
    """Validate (once), build, run and record a one-target registry ``RunSpec``; write it if ``out`` is given.

    ``generate``'s work after the translation of its keywords (the CLI's too; ``names``: the entrance's names
    of fields in messages, ``RunSpec.validate``). Everything is checked before anything is created.
    """
    spec = spec.validate(names)
    out_dir = None if out is None else check_out_dir(out, files=OUT_FILES)
    from noisesearch.cache import check_settings, open_cache

    check_settings(cache_max_mb, cache_images)
    if isinstance(cache, (str, os.PathLike)) and str(cache).strip():
        check_out_dir(cache, what="--cache")  # could it be created? (without creating it: that waits for the model)
    m, v, algo = build_spec(spec)
    spec = spec.resolved(m)
    candidate_cache = open_cache(cache, max_mb=cache_max_mb, images=cache_images)  # created once all is accepted
    started = time.perf_counter()
    (result,) = run(spec, m, v, algo, progress=progress, cache=candidate_cache)
    record = records.record(spec, result, m, v, algo, wall=time.perf_counter() - started)
    if out_dir is not None:
        _write(out_dir, spec, result, v, m, record)
    return result, record


def _write(out_dir: Path, spec: RunSpec, result: SearchResult, v, m, record: dict) -> None:
    """``best.png`` (a video: ``best.webp`` and ``keyframes.png``) and ``record.json`` in ``out_dir``."""
    ensure_out_dir(out_dir)  # created only now: a refused run leaves nothing behind
    if result.best_image is not None and result.best_image.dim() == 4:  # a video (C, F, H, W)
        from noisesearch._video_io import write_video_outputs

        record["video"] = write_video_outputs(out_dir, result, v, fps=getattr(m, "fps", 16))
    elif result.best_image is not None:
        scale = PNG_SCALE.get(spec.model, 1)  # real models' images are written at their own size
        save_png(out_dir / "best.png", result.best_image, scale=scale)
        record["image"] = {"path": "best.png", "scale": scale}
    write_json(out_dir / "record.json", record)
