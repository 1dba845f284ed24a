"""The tiny sweep configuration the tests share, and a writer for it.

``tiny_sweep()`` is the smallest useful sweep: the digits model shipped in the package, one image per digit,
the classifier verifier, random search at budgets 4 and 8, one seed, 4 steps, chunks of 3, images kept.
Every call returns a fresh deep copy, so a test may change it freely.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

DROP = object()  # an override value that removes the key

_TINY = {
    "model": "digits",
    "benchmark": {"name": "digits", "per_class": 1},
    "verifier": {"name": "classifier"},
    "algorithms": [{"name": "random"}],
    "budgets": [4, 8],
    "seeds": [0],
    "steps": 4,
    "chunk": 3,
    "keep_images": True,
}


def tiny_sweep(**overrides) -> dict:
    """A fresh copy of the tiny digits sweep config with ``overrides`` applied (top-level keys replaced).

    A value of ``None`` is kept (written as YAML ``null``); pass ``DROP`` to remove a key, e.g.
    ``tiny_sweep(chunk=DROP)`` for a config without ``chunk``.
    """
    config = copy.deepcopy(_TINY)
    for key, value in overrides.items():
        if value is DROP:
            config.pop(key, None)
        else:
            config[key] = copy.deepcopy(value)
    return config


def write_config(folder: Path, config: dict, name: str = "sweep.yaml") -> Path:
    """Write ``config`` as YAML to ``folder / name`` and return that path."""
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(config))
    return path


# One well-formed results.jsonl row of a tiny random-search sweep, for the tests that feed `report` rows by hand.
GOOD_ROW = {
    "cell": "c",
    "target_index": 0,
    "target": 0,
    "category": "0",
    "algorithm": "random",
    "params": {},
    "verifier": "classifier",
    "budget": 4,
    "seed": 0,
    "nfe_used": 4,
    "best_score": -0.5,
    "nan_scores": 0,
}
