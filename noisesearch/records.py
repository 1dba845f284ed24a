"""The one record of a search: its fields, how every writer makes it, and how every reader reads it.

One row schema (``SCHEMA_VERSION``), written alike by ``generate`` (``record.json``), ``noisesearch.search``
(``SearchResult.record``) and sweeps (one ``results.jsonl`` line per search):

- ``search_row(spec, result, ...)``: the fields of ``SEARCH_FIELDS``, the same in every writer. Among them what
  regenerates the best sample without searching again: ``best_index``, ``best_noise_seed`` (the seeded draw
  ``torch.randn(noise_shape, generator=torch.Generator("cpu").manual_seed(best_noise_seed))``) or else
  ``best_noise_sha256`` (a derived noise, by its hash), ``noise_shape``, ``steps``, ``sampler``, ``guidance``.
  ``seed`` is the seed the entrance was given, ``search_seed`` the one this search ran with (equal for
  ``generate``; a sweep derives each target's from its cell's seed). ``candidates_count`` counts the candidates.
- ``record(...)``: ``record.json`` = the search row + the candidate list (``candidates``).
- ``sweep_row(...)``: the search row + the declared sweep columns ``SWEEP_FIELDS``.

Readers (``sweep.report``, ``paper``, ``studies``) read rows through ``read_rows`` / ``read_sets`` only; rows
written before the schema had a version (schema 1: ``candidates`` a count, no ``best_index``) are read as such,
upgraded to the names of today (``upgrade``).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from noisesearch import _io
from noisesearch._version import __version__
from noisesearch.errors import UserError

SCHEMA_VERSION = 2  # 1: rows without ``schema_version`` (a count under ``candidates``, no regeneration fields)

_NONE = type(None)
_NUMBER = (int, float, _NONE)

# The fields of one search's row, in every writer, and their types (the ledger's cost columns follow them).
SEARCH_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "model": (str,),
    "model_path": (str, _NONE),
    "model_options": (dict,),
    "adapter": (str,),
    "target": (str, int, dict, list, _NONE),
    "verifier": (str, _NONE),  # None: not scored (a sweep's unscored baseline)
    "verifier_path": (str, _NONE),
    "verifier_options": (dict,),
    "algorithm": (str,),
    "algorithm_params": (dict,),
    "seed": (int,),
    "search_seed": (int,),
    "budget": (int,),
    "steps": (int,),
    "sampler": (str,),
    "guidance": (int, float),
    "nfe_convention": (str,),
    "nfe_per_full_candidate": (int,),
    "nfe_used": (int,),
    "nfe_search": (int,),
    "final_steps": (int, _NONE),
    "nfe_final": (int,),
    "final_score": _NUMBER,
    "verifier_calls": (int,),
    "best_score": _NUMBER,
    "best_index": (int, _NONE),
    "best_noise_seed": (int, _NONE),
    "best_noise_sha256": (str, _NONE),
    "noise_shape": (list,),
    "nan_scores": (int,),
    "candidates_count": (int,),
    "wall_time_s": (int, float),
    "versions": (dict,),
}
# The columns a sweep adds to a search row (``eval_<verifier>`` for each held-out verifier, ``scored`` false for
# an unscored baseline, ``image`` / ``candidate_images`` with ``keep_images``).
SWEEP_FIELDS: dict[str, tuple[type, ...]] = {
    "cell": (str,),
    "target_index": (int,),
    "category": (str,),
    "benchmark": (str,),
    "params": (dict,),
    "eval_*": _NUMBER,
    "scored": (bool,),
    "image": (str, _NONE),
    "candidate_images": (list,),
}

# What a reader requires of every row (old ones included), and of every ``sets.jsonl`` entry.
ROW_TYPES: dict[str, tuple[type, ...]] = {
    "cell": (str,),
    "target_index": (int,),
    "algorithm": (str,),
    "budget": (int,),
    "seed": (int,),
    "nfe_used": (int,),
    "best_score": _NUMBER,
    "category": (str,),
    "params": (dict,),
}
SET_TYPES: dict[str, tuple[type, ...]] = {"cell": (str,), "algorithm": (str,), "budget": (int,), "seed": (int,)}
_SCORES = ("fid", "is", "is_single_split", "precision", "recall", "accuracy", "diversity")


def versions() -> dict[str, str]:
    """Versions that a record needs to be redone."""
    import torch

    return {"noisesearch": __version__, "torch": torch.__version__, "python": platform.python_version()}


def describe(options) -> dict:
    """``options`` as JSON-ready values: numbers, strings and containers as they are, others by type (and shape)."""
    import torch

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

    return {k: one(v) for k, v in dict(options or {}).items()}


def best_candidate(result) -> dict:
    """The best candidate's regeneration fields: ``best_index``, ``best_noise_seed``, ``best_noise_sha256``
    (all None when no candidate got a real score)."""
    index = result.best_index if result.best_image is not None and result.best_index >= 0 else None
    best = result.candidates[index] if index is not None else {}
    return {
        "best_index": index,
        "best_noise_seed": best.get("noise_seed"),
        "best_noise_sha256": best.get("noise_sha256"),
    }


def search_row(spec, result, model, verifier, algorithm, *, wall: float, scored: bool = True) -> dict:
    """The row of one search (``SEARCH_FIELDS`` and the ledger's costs), the same in every writer.

    ``spec``: the resolved ``RunSpec`` (steps and guidance filled in); ``model``, ``verifier`` and ``algorithm``:
    the objects that ran; ``wall``: this search's wall time; ``scored`` False: the verifier ranked nothing
    (a sweep's unscored baseline): no verifier, no scores.
    """
    from noisesearch.accounting import nfe_per_call
    from noisesearch.samplers import get_sampler

    named = spec.registry
    per_candidate = get_sampler(spec.sampler).nfe(model.schedule(spec.steps))
    return {
        "schema_version": SCHEMA_VERSION,
        "model": spec.model if named else model.name,
        "model_path": str(spec.model_path) if spec.model_path else None,
        "model_options": describe(spec.model_options),
        "adapter": getattr(model, "adapter", "step"),  # "generic": the pipeline's own __call__ ran whole candidates
        **({"pipeline_kwargs": describe(spec.pipeline_kwargs)} if spec.pipeline_kwargs else {}),
        **({"latents": model.latents_note} if getattr(model, "latents_note", None) else {}),
        "target": result.target,
        "verifier": None if not scored else spec.verifier if named else verifier.name,
        "verifier_path": str(spec.verifier_path) if spec.verifier_path and scored else None,
        "verifier_options": describe(spec.verifier_options) if scored else {},
        "algorithm": spec.algorithm,
        "algorithm_params": algorithm.params(),
        "seed": spec.seed,
        "search_seed": result.seed,
        "budget": result.budget,
        "steps": spec.steps,
        "sampler": spec.sampler,
        "guidance": spec.guidance,
        "nfe_convention": spec.nfe_convention,
        "nfe_per_full_candidate": per_candidate * nfe_per_call(model, spec.guidance, spec.nfe_convention),
        "nfe_used": result.nfe_used,
        "nfe_search": result.nfe_used,
        "final_steps": spec.final_steps,
        "nfe_final": result.nfe_final,
        "final_score": result.final_score if scored else None,
        "verifier_calls": result.verifier_calls,
        "best_score": result.best_score if result.best_image is not None and scored else None,
        **best_candidate(result),
        "noise_shape": list(model.noise_shape),
        **({"latent_shape": list(model.latent_shape)} if getattr(model, "latent_shape", None) else {}),
        "nan_scores": result.nan_scores,
        "candidates_count": len(result.candidates),
        **result.ledger,  # costs: FLOPs, decodes, verifier FLOPs, API tokens and cost, seconds by kind
        **({"verifier_usage": dict(verifier.usage)} if getattr(verifier, "usage", None) else {}),  # an LLM's tokens
        **(
            {"verifier_frames": verifier.describe()}
            if getattr(verifier, "video", False) and hasattr(verifier, "describe")
            else {}
        ),
        "wall_time_s": round(wall, 4),
        "versions": versions(),
        **({} if scored else {"scored": False}),
    }


def record(spec, result, model, verifier, algorithm, *, wall: float) -> dict:
    """``record.json`` (and ``SearchResult.record``): the search row and the list of its candidates.

    ``nfe_used`` (also ``nfe_search``) counts the search's NFEs, ``nfe_final`` those of the final render
    (``final_steps``; 0 without), both in the unit of ``nfe_convention``; ``best_score`` is the search's best
    score and ``final_score`` the verifier's score of the render (``best.png`` then shows the render).
    """
    row = search_row(spec, result, model, verifier, algorithm, wall=wall)
    return {**row, "candidates": list(result.candidates)}


def sweep_row(spec, result, model, verifier, algorithm, *, wall: float, scored: bool, columns: dict) -> dict:
    """One ``results.jsonl`` line: the search row with the sweep's ``columns`` (``SWEEP_FIELDS``) added, and
    ``algorithm`` the cell's ("none" for the more-steps baseline)."""
    unknown = [k for k in columns if k not in SWEEP_FIELDS and k != "algorithm" and not k.startswith("eval_")]
    if unknown:
        raise ValueError(f"undeclared sweep columns {unknown}")  # a programming error, not a user's
    row = search_row(spec, result, model, verifier, algorithm, wall=wall, scored=scored)
    return {**row, **columns}


def upgrade(row: dict) -> dict:
    """A row as today's schema names it: a schema-1 row's count ``candidates`` becomes ``candidates_count``."""
    if "schema_version" in row:
        return row
    row = dict(row)
    row["schema_version"] = 1
    if isinstance(row.get("candidates"), int) and not isinstance(row["candidates"], bool):
        row["candidates_count"] = row.pop("candidates")
    return row


def _check_row(path: Path, n: int, row: dict, types: dict) -> None:
    for key, accepted in types.items():
        if key not in row:
            raise UserError(f"{str(path)!r} line {n} has no {key!r}; it is not a sweep row (fix or remove that line)")
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, accepted):
            names = " or ".join("null" if t is _NONE else t.__name__ for t in accepted)
            raise UserError(
                f"{str(path)!r} line {n}: {key!r} is {_io.dumps(value)[:40]}, expected {names} (fix or remove that line)"
            )
    for key, value in row.items():
        number = key.startswith("eval_") or key in _SCORES
        if (number and (isinstance(value, bool) or not isinstance(value, _NUMBER))) or (
            key == "image" and not isinstance(value, (str, _NONE))
        ):
            expected = "a number or null" if number else "a path or null"
            raise UserError(
                f"{str(path)!r} line {n}: {key!r} is {_io.dumps(value)[:40]}, expected {expected} "
                "(fix or remove that line)"
            )


def _unfinished(path: Path, half, warn: Callable[[str], None] | None) -> None:
    if half and warn is not None:
        warn(f"{path}: the last line is unfinished (a crash mid-write) and is ignored; the next sweep repairs it")


def read_rows(path: Path, *, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """A sweep's rows, each checked for the keys and types the sweep and report use, upgraded to today's
    schema (``upgrade``); only reads.

    A half-written last line is left out (with ``warn``); a row written twice (by an older version)
    counts once.
    """
    numbered, half = _io.read_jsonl_numbered(path)
    _unfinished(path, half, warn)
    rows, seen = [], set()
    for n, row in numbered:
        _check_row(path, n, row, ROW_TYPES)
        if (row["cell"], row["target_index"]) not in seen:
            seen.add((row["cell"], row["target_index"]))
            rows.append(upgrade(row))
    return rows


def read_sets(path: Path, *, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """``sets.jsonl`` entries, checked like rows; one per cell (the first)."""
    numbered, half = _io.read_jsonl_numbered(path)
    _unfinished(path, half, warn)
    sets, seen = [], set()
    for n, row in numbered:
        _check_row(path, n, row, SET_TYPES)
        if row["cell"] not in seen:
            seen.add(row["cell"])
            sets.append(row)
    return sets
