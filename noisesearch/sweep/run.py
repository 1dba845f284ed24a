"""Run a sweep: benchmark targets x (algorithms + more-steps baseline) x budgets x seeds -> JSONL rows.

One *cell* is a (configuration, seed) pair; its targets are searched in chunks of ``chunk`` (all
targets of a chunk in one batched ``run_search``), and each chunk's rows are appended and flushed
as soon as it finishes: one flat row per (target, configuration, seed) with everything needed to
redo it. Rerunning the same command resumes: rows already in ``results.jsonl`` are never
recomputed or duplicated, a half-written last line from a crash is cut, and a different config in
the same folder is refused with the difference shown. Class-conditional cells also export their
best samples as an ADM-style ``.npz`` (chunk parts are written before their rows, then merged); on
the digits models the set metrics (FID, IS, precision/recall, accuracy, diversity) of each finished
cell go to ``sets.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from noisesearch._io import append_jsonl, ensure_out_dir, read_jsonl_tolerant, save_npz, save_png, write_json
from noisesearch.algorithms import ALGORITHMS, RandomSearch, derive_seed
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.sweep.config import SweepConfig


@dataclass(frozen=True)
class Cell:
    """One configuration at one seed (``algorithm == "none"``: the budget spent on more steps)."""

    algorithm: str
    steps: int
    budget: int
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def slug(self) -> str:
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:8]
        return f"{self.algorithm}_b{self.budget}_s{self.steps}_seed{self.seed}_{digest}"


def cells_of(config: SweepConfig) -> list[Cell]:
    """Every (configuration, seed) of the sweep, baseline first."""
    cells = []
    for seed in config.seeds:
        if config.baseline:
            cells += [Cell("none", budget, budget, seed) for budget in config.budgets]
        for spec in config.algorithms:
            cells += [Cell(spec.name, config.steps, budget, seed, dict(spec.params)) for budget in config.budgets]
    return cells


def snapshot_check(out: Path, config: SweepConfig) -> None:
    """Store the config beside the results, or refuse a folder that holds another config's results."""
    path = out / "sweep.json"
    new = config.canonical()
    if path.exists():
        old = json.loads(path.read_text())
        if old != new:
            diff = [
                f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
            raise UserError(
                f"{out} holds results of a different config ({'; '.join(diff)}); "
                "use another --out folder, or the original config to resume"
            )
    else:
        write_json(path, new)


@dataclass
class World:
    """What a sweep loads once: model, search verifier, held-out verifiers, evaluator (digits only)."""

    model: object
    verifier: object
    eval_verifiers: dict
    evaluator: object | None


def load_world(config: SweepConfig) -> World:
    from noisesearch.generate import build, pick
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
    evaluator = None
    if getattr(model, "domain", None) == "digits":
        from noisesearch.metrics import DigitsEvaluator

        evaluator = DigitsEvaluator()
    return World(model, verifier, evals, evaluator)


def run_sweep(
    config: SweepConfig, out: Path, *, progress: Callable[[int, int, str], None] | None = None, executor=None
) -> dict:
    """Run (or resume) the sweep into ``out``; returns counts of rows written and skipped.

    ``progress(rows done, rows in all, note)`` is called after every chunk; the note holds the NFEs
    spent so far in this run, the best search score so far and the configuration.

    ``executor``: None runs every chunk here; otherwise an object with ``map(tasks) -> iterator of
    (task, rows, images)`` in any order (``noisesearch.sweep.ray_backend``), whose results are
    written here as they arrive.
    """
    from noisesearch.benchmarks import BENCHMARKS

    out = ensure_out_dir(out)
    snapshot_check(out, config)
    b = config.benchmark
    options = {"splits": b.splits} if b.splits else {}
    items = BENCHMARKS[b.name](subset=b.subset, per_class=b.per_class, path=b.path, **options)
    results_path, sets_path = out / "results.jsonl", out / "sets.jsonl"
    rows = read_jsonl_tolerant(results_path) if results_path.exists() else []
    done = {(r["cell"], r["target_index"]) for r in rows}
    sets_done = {r["cell"] for r in read_jsonl_tolerant(sets_path)} if sets_path.exists() else set()
    cells = cells_of(config)
    tasks = []
    for cell in cells:
        pending = [i for i in range(len(items)) if (cell.key, i) not in done]
        tasks += [(cell, pending[k : k + config.chunk]) for k in range(0, len(pending), config.chunk)]
    total, written, nfe, best = len(cells) * len(items), 0, 0, float("-inf")
    world = None
    if executor is None:
        world = load_world(config)
        results = (run_chunk(config, world, items, cell, chunk) for cell, chunk in tasks)
    else:
        results = executor.map(config, items, tasks)
    for cell, chunk_rows, images in results:
        _file_chunk(config, out, cell, chunk_rows, images, items, results_path)
        written += len(chunk_rows)
        nfe += sum(r["nfe_used"] for r in chunk_rows)
        best = max([best, *(r["best_score"] for r in chunk_rows if r["algorithm"] != "none")])
        if progress:
            progress(len(done) + written, total, f"{nfe:,} NFEs, best {best:.4g}, {cell.slug}")
    counts = {"written": written, "skipped": len(done), "cells": len(cells), "targets": len(items)}
    if any(isinstance(item.target, int) for item in items):
        _finish_sets(config, out, cells, items, sets_done, world)
    return counts


def run_chunk(config: SweepConfig, world: World, items, cell: Cell, chunk: list[int]):
    """Search every target of ``chunk`` for ``cell``; returns (cell, rows, best images)."""
    from noisesearch.generate import versions

    algorithm = RandomSearch(candidates=1) if cell.algorithm == "none" else ALGORITHMS[cell.algorithm](**cell.params)
    seeds = [derive_seed(cell.seed, i) for i in chunk]
    started = time.perf_counter()
    results = run_search(
        world.model,
        world.verifier,
        algorithm,
        [items[i].target for i in chunk],
        seeds=seeds,
        budget=cell.budget,
        steps=cell.steps,
        sampler=config.sampler,
        guidance=config.guidance,
        max_batch=config.max_batch,
        keep_images=config.keep_images == "all",
    )
    wall = (time.perf_counter() - started) / len(chunk)
    images = torch.stack([r.best_image for r in results])  # (n, C, H, W)
    evals = {name: v(images, [r.target for r in results]).tolist() for name, v in world.eval_verifiers.items()}
    rows = []
    for n, (i, r) in enumerate(zip(chunk, results)):
        rows.append(
            {
                "cell": cell.key,
                "target_index": i,
                "target": r.target,
                "category": items[i].category,
                "model": config.model,
                "benchmark": config.benchmark.name,
                "algorithm": cell.algorithm,
                "params": cell.params,
                "verifier": config.verifier.name,
                "budget": cell.budget,
                "steps": cell.steps,
                "sampler": config.sampler,
                "guidance": config.guidance,
                "seed": cell.seed,
                "search_seed": seeds[n],
                "nfe_used": r.nfe_used,
                "verifier_calls": r.verifier_calls,
                "candidates": len(r.candidates),
                "best_score": r.best_score,
                "nan_scores": r.nan_scores,
                **{f"eval_{name}": values[n] for name, values in evals.items()},
                "wall_time_s": round(wall, 4),
                "versions": versions(),
            }
        )
        if r.images:  # every finished candidate, with its score (keep_images: all)
            scores = {c["index"]: c["score"] for c in r.candidates}
            rows[-1]["_candidates"] = [(k, scores[k], image) for k, image in sorted(r.images.items())]
    return cell, rows, images


def _file_chunk(config, out: Path, cell: Cell, rows: list[dict], images: torch.Tensor, items, results_path):
    """Write a finished chunk: sample parts and images first, then the rows (so rows imply files)."""
    if any(isinstance(items[r["target_index"]].target, int) for r in rows):
        parts = out / "sets" / cell.slug
        parts.mkdir(parents=True, exist_ok=True)
        first = rows[0]["target_index"]
        save_npz(parts / f"part-{first:06d}.npz", images, [r["target"] for r in rows])
        (parts / f"part-{first:06d}.idx").write_text(" ".join(str(r["target_index"]) for r in rows))
    if config.keep_images:
        folder = out / "images" / cell.slug
        folder.mkdir(parents=True, exist_ok=True)
        for row, image in zip(rows, images):
            name = f"{row['target_index']:06d}"
            save_png(folder / f"{name}.png", image, scale=_png_scale(image))
            row["image"] = f"images/{cell.slug}/{name}.png"
            kept = []
            for index, score, candidate in row.pop("_candidates", []):
                (folder / name).mkdir(exist_ok=True)
                save_png(folder / name / f"{index:04d}.png", candidate, scale=_png_scale(candidate))
                kept.append({"index": index, "score": score, "image": f"images/{cell.slug}/{name}/{index:04d}.png"})
            if kept:
                row["candidate_images"] = kept
    for row in rows:
        append_jsonl(results_path, row)


def _png_scale(image: torch.Tensor) -> int:
    return 8 if image.shape[-1] <= 16 else 1  # 8x8 digits are enlarged to be visible


def _finish_sets(config, out: Path, cells, items, sets_done: set, world: World | None) -> None:
    """Merge each finished class-conditional cell's parts into one .npz; digits: set metrics."""
    evaluator = world.evaluator if world is not None else None
    for cell in cells:
        if cell.key in sets_done:
            continue
        parts = out / "sets" / cell.slug
        files = sorted(parts.glob("part-*.npz")) if parts.exists() else []
        index = [int(i) for f in files for i in f.with_suffix(".idx").read_text().split()]
        if sorted(index) != list(range(len(items))):
            continue  # not finished (an interrupted run resumes it)
        arrays = [np.load(f) for f in files]
        images = np.concatenate([a["arr_0"] for a in arrays])  # (N, H, W, C) uint8
        labels = np.concatenate([a["arr_1"] for a in arrays])
        order = np.argsort(index)
        images, labels = images[order], labels[order]
        (out / "samples").mkdir(exist_ok=True)
        sample_path = f"samples/{cell.slug}.npz"
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (N, C, H, W)
        save_npz(out / sample_path, tensor, labels)
        row = {"cell": cell.key, **asdict(cell), "samples": sample_path, "n_samples": len(labels)}
        if evaluator is None and config.model in ("digits", "digits-large"):
            from noisesearch.metrics import DigitsEvaluator

            evaluator = DigitsEvaluator()
        if evaluator is not None:
            row.update(evaluator(tensor, labels.tolist()))
        append_jsonl(out / "sets.jsonl", row)
