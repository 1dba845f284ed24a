"""Studies on the digits world: a list of configurations -> sample sets, metrics, flat JSONL rows.

A configuration is one way to spend NFEs on every target of a class-balanced target set: either
more denoising steps with no search (``algorithm = "none"``) or a search algorithm with a verifier
at a budget. Each finished configuration appends one row to ``results.jsonl`` and writes its
samples as an ADM-style ``.npz``; rerunning in the same folder skips configurations whose row
and samples are already there. Plots and tables are computed from the rows alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from noisesearch._io import append_jsonl, ensure_out_dir, read_jsonl_tolerant, save_npz
from noisesearch.algorithms import RandomSearch, derive_seed
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.generate import build, versions


@dataclass(frozen=True)
class Config:
    """One configuration of a study (``algorithm="none"``: no search, ``steps`` steps, 1 sample)."""

    algorithm: str
    steps: int
    budget: int
    verifier: str | None = None
    params: dict = field(default_factory=dict)
    model: str = "digits"
    per_class: int = 100
    seed: int = 0
    sampler: str = "euler"

    @property
    def key(self) -> str:
        """Stable identity of the configuration (used to resume)."""
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def slug(self) -> str:
        parts = [
            self.model,
            self.algorithm,
            self.verifier or "unscored",
            f"s{self.steps}",
            f"b{self.budget}",
            *(f"{k}{v}" for k, v in sorted(self.params.items())),
            f"seed{self.seed}",
        ]
        return "_".join(str(p) for p in parts)


class _Unscored:
    """Stand-in verifier for the no-search baseline: every image scores 0 (nothing is ranked)."""

    name = "none"
    preview_sigma = None

    def __call__(self, images, targets, *, previews=None):
        return torch.zeros(len(images))


def run_config(config: Config, evaluator, *, max_batch: int = 4096) -> tuple[torch.Tensor, list[int], dict]:
    """Samples (N, C, H, W), their labels and a metrics row for one configuration."""
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
        max_batch=max_batch,
    )
    wall = time.perf_counter() - started
    images = torch.stack([r.best_image for r in results])  # (N, C, H, W)
    nfe = [r.nfe_used for r in results]
    row = {
        **{k: v for k, v in asdict(config).items()},
        "nfe_per_sample": sum(nfe) / len(nfe),
        "nfe_max": max(nfe),
        "verifier_calls_per_sample": sum(r.verifier_calls for r in results) / len(results),
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
) -> list[dict]:
    """Run every configuration not yet in ``out/results.jsonl``; return the rows of ``configs``.

    With a ``skipped`` list, a configuration whose budget its algorithm cannot use (``UserError``
    from the algorithm) is appended there as (config, reason) instead of stopping the study.
    """
    from noisesearch.metrics import DigitsEvaluator

    out = ensure_out_dir(out)
    (out / "samples").mkdir(exist_ok=True)
    results_path = out / "results.jsonl"
    done = {r.get("config_key"): r for r in read_jsonl_tolerant(results_path)} if results_path.exists() else {}
    evaluator = DigitsEvaluator()
    rows = []
    for config in configs:
        row = done.get(config.key)
        if row is None or not (out / row["samples"]).is_file():
            try:
                images, labels, row = run_config(config, evaluator, max_batch=max_batch)
            except UserError as e:
                if skipped is None:
                    raise
                skipped.append((config, str(e)))
                if progress:
                    progress(config)
                continue
            row["samples"] = f"samples/{config.slug}.npz"
            row["config_key"] = config.key
            row["versions"] = versions()
            save_npz(out / row["samples"], images, labels)
            append_jsonl(results_path, row)
        rows.append(row)
        if progress:
            progress(config)
    return rows
