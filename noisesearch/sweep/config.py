"""The sweep configuration file (YAML), validated with pydantic; every mistake names its place.

Example (``examples/digits-sweep.yaml``)::

    model: digits
    benchmark: {name: digits, per_class: 20}
    verifier: {name: classifier}
    eval_verifiers: [{name: oracle-is}]
    algorithms:
      - {name: random}
      - {name: zero-order, params: {neighbours: 4, step_size: 1.0}}
    budgets: [16, 64, 256]
    seeds: [0, 1, 2]
    steps: 8
    baseline: true         # also spend each budget on more denoising steps
    # an algorithm may list its own budgets: {name: paths, budgets: [64, 256]} (default: `budgets`)
    baseline_budgets: null # the baseline's budgets if not `budgets` (e.g. [1, 2, 4, 8]: a step curve from 1 step)
    baseline_scored: true  # false: the baseline's samples are not scored by the verifier (best_score null)
    keep_images: false     # true / "best": each search's best image as PNG; "all": every finished candidate's
                           # (class-conditional sets always go to .npz)
    final_steps: null      # search cheap, render once: each best noise denoised again with this many steps
                           # (outside the budget; random, zero-order, first-order, evolution; a deterministic sampler)
    nfe_convention: rows   # what one NFE is: rows (a guided step costs 2) or steps (1 per step, as the paper plots)

The parts, each importable from here: ``schema`` (the pydantic models), ``reader`` (the guarded YAML reader),
``validation`` (counts, numbers, names, duplicates, each problem one line with its place) and ``costs`` (cells,
kept images, whether every budget can be spent exactly).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from noisesearch.errors import UserError
from noisesearch.sweep.costs import (
    baseline_steps,
    cannot_spend,
    cell_count,
    guided_nfe_per_call,
    kept_images,
)
from noisesearch.sweep.reader import (
    CONFIG_HINT,
    CONFIG_MAX_BYTES,
    MAX_YAML_NODES,
    PROMPT_FILE_MAX_BYTES,
    _read_yaml,
)
from noisesearch.sweep.schema import AlgorithmSpec, BenchmarkSpec, SweepConfig, VerifierSpec
from noisesearch.sweep.validation import (
    MAX_BATCH,
    MAX_KEPT_IMAGES,
    MAX_LISTED,
    MAX_PER_CLASS,
    MAX_SEARCHES,
    MAX_TARGETS,
    check_counts,
    check_duplicates,
    check_names,
    check_numbers,
    normalise,
)

__all__ = [
    "CONFIG_HINT",
    "CONFIG_MAX_BYTES",
    "MAX_BATCH",
    "MAX_KEPT_IMAGES",
    "MAX_LISTED",
    "MAX_PER_CLASS",
    "MAX_SEARCHES",
    "MAX_TARGETS",
    "MAX_YAML_NODES",
    "PROMPT_FILE_MAX_BYTES",
    "AlgorithmSpec",
    "BenchmarkSpec",
    "SweepConfig",
    "VerifierSpec",
    "baseline_steps",
    "cannot_spend",
    "cell_count",
    "check_counts",
    "check_duplicates",
    "check_names",
    "check_numbers",
    "guided_nfe_per_call",
    "kept_images",
    "load_config",
    "normalise",
    "validate_config",
]


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_config(path: Path | str) -> SweepConfig:
    """Read and validate a YAML sweep config; ``UserError`` with one line per mistake, each with its place.

    The config that comes back is canonical: algorithm parameters are normalised to their declared
    types (``1`` for a float parameter is ``1.0``), so one configuration always has one key.
    """
    data = _read_yaml(path)  # the path as given: an empty one is refused, not read as "."
    return validate_config(data, Path(path))


def validate_config(data, path) -> SweepConfig:
    """``load_config`` on data already read (``path`` names the source in messages): checked and canonical."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of settings, got {type(data).__name__}")
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: {_where(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise UserError("\n".join(lines)) from None
    check_counts(config, path)
    check_numbers(config, path)
    config = normalise(config)
    check_names(config, path)
    check_duplicates(config, path)
    return config
