"""Run a sweep: benchmark targets x (algorithms + more-steps baseline) x budgets x seeds -> JSONL rows.

One *cell* is a (configuration, seed) pair; its targets are split into fixed chunks of ``chunk``
targets (target ``i`` is always in chunk ``i // chunk``), each chunk searched in one batched
``run_search``, and its rows appended and flushed as soon as it finishes: one flat row per
(target, configuration, seed) with everything needed to redo it.

Nothing is lost, ever. One process writes a folder (``sweep.lock``, see ``lock.py``). Every file
but the two JSONL files is written atomically (a temporary file renamed over it), and always
*before* the rows that point to it, so a row implies its files. Rerunning the same command
resumes after any crash (``kill -9``, a full disk) at any moment and ends with the rows,
``sets.jsonl`` entries and ``samples/*.npz`` of an uninterrupted run, byte for byte apart from
wall times:

- a half-written last line of ``results.jsonl`` / ``sets.jsonl`` is cut (only ``sweep`` repairs);
- a chunk missing any row is searched again *whole* (the same batch as before gives the same
  bits), and only its missing rows are appended: no row is ever written twice;
- class-conditional cells write one part per chunk (``sets/<cell>/chunk-<first target>.npz``)
  before its rows; once every row of a cell is in ``results.jsonl``, the parts are merged in
  target order into ``samples/<cell>.npz`` (atomic, same bytes every time), then one
  ``sets.jsonl`` entry is appended (checked before: never twice) and the parts are removed.

A run removes only what it made. The temporary files of atomic writes a crash left are found by
their exact name (``_io.is_own_temp``) in the folders the sweep writes, never elsewhere; a merged
cell's part folder loses only its ``chunk-*.npz`` parts. A run refused before its first search
result (a cache option, a model that does not load, a full disk) removes what it created so far:
its ``sweep.json`` and ``sweep.lock`` if they were not there before, and the folders it made (the
output folder, the cache's) if they are empty; the tree is then as before the command.

A search whose candidates all got a failed score (NaN: a grader that timed out) has no best
image. Its row says so (``best_score: null``, ``nan_scores``, ``image: null``, every ``eval_*``
null) and the sweep goes on. Its target is left out of the cell's sample set: the set holds the
best image of every search that produced one, and its ``sets.jsonl`` entry counts the rest
(``failed_searches``, ``missing_targets``); set metrics are over the samples present (none
below ``MIN_SET`` samples).

The more-steps baseline (``algorithm: none``) spends each budget on one sample with as many steps
as the budget buys exactly: ``budget`` Euler steps, ``budget / 2`` under classifier-free guidance
(under ``nfe_convention: rows``; the config refuses budgets it cannot spend exactly); its rows give
the ``steps`` used. With ``final_steps`` every search's best noise is denoised again (``run_search``):
its rows carry ``nfe_search`` (= ``nfe_used``), ``nfe_final``, ``final_steps`` and ``final_score``, and
the kept image is the render; the baseline is its own render (``nfe_final`` 0). It spends
``baseline_budgets`` when the config gives them (else ``budgets``). With ``baseline_scored: false``
its one candidate is not scored by the search verifier (``Unscored``): its rows have
``best_score: null``, ``verifier: null`` and ``scored: false``, and it is no failed search.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from noisesearch import _io
from noisesearch.accounting import nfe_per_call
from noisesearch.algorithms import derive_seed
from noisesearch.checks import check_out_dir
from noisesearch.errors import UserError
from noisesearch.records import ROW_TYPES, SET_TYPES, read_rows, read_sets, sweep_row
from noisesearch.spec import RunSpec, run
from noisesearch.sweep.config import SweepConfig, baseline_steps
from noisesearch.sweep.lock import LOCK_NAME, FolderLock

__all__ = ["ROW_TYPES", "SET_TYPES", "cells_of", "load_world", "read_rows", "read_sets", "run_chunk", "run_sweep"]

FILES = ("results.jsonl", "sets.jsonl", "sweep.json", LOCK_NAME)  # what a sweep writes directly in its folder
_PART = re.compile(r"chunk-\d{6,}\.npz")  # a cell's sample part (``_part_path``)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class Cell:
    """One configuration at one seed (``algorithm == "none"``: the budget spent on more steps)."""

    algorithm: str
    steps: int
    budget: int
    seed: int
    params: dict = field(default_factory=dict)

    @cached_property
    def key(self) -> str:
        """The cell as canonical JSON: its identity in rows, ``sets.jsonl`` and the resume check."""
        return _io.dumps(asdict(self))  # computed once: the resume check asks it for every target

    @property
    def slug(self) -> str:
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:8]
        return f"{self.algorithm}_b{self.budget}_s{self.steps}_seed{self.seed}_{digest}"


def cells_of(config: SweepConfig) -> list[Cell]:
    """Every (configuration, seed) of the sweep, baseline first."""
    cells = []
    for seed in config.seeds:
        cells += [Cell("none", budget, budget, seed) for budget in config.step_budgets]
        for spec in config.algorithms:
            budgets = config.budgets if spec.budgets is None else spec.budgets
            cells += [Cell(spec.name, config.steps, budget, seed, dict(spec.params)) for budget in budgets]
    return cells


def snapshot_check(out: Path, config: SweepConfig, *, has_rows: bool, note: Callable[[str], None]) -> None:
    """Store the config beside the results, or refuse a folder that holds another config's results.

    A folder without any row (a first run that stopped before its first row) takes the new config,
    with a message.
    """
    path = out / "sweep.json"
    new = config.canonical()
    if path.exists():
        try:
            old = _io.read_json(path)
        except UserError:
            old = None
        if old != new:
            if not has_rows:
                note(f"{path} held another config but no rows were written with it; replacing it")
                _io.write_json(path, new)
                return
            diff = (
                [
                    f"{k}: {_io.dumps(old.get(k))} -> {_io.dumps(new.get(k))}"
                    for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)
                ]
                if isinstance(old, dict)
                else ["sweep.json is not a config"]
            )
            raise UserError(
                f"{out} holds results of a different config ({'; '.join(diff)}); "
                "use another --out folder, or the original config to resume"
            )
    else:
        _io.write_json(path, new)


class Unscored:
    """The verifier of an unscored baseline: every image scores 0, so nothing is ranked (one candidate)."""

    name = "none"
    preview_sigma = None

    def __call__(self, images, targets, *, previews=None):
        return torch.zeros(len(images))

    def flops_per_row(self, key: tuple) -> float:
        return 0.0  # no network: what the FLOP counter would count, without running it (ledger.counted)


@dataclass
class World:
    """What a sweep loads once: model, search verifier, held-out verifiers, evaluator (digits only)."""

    model: object
    verifier: object
    eval_verifiers: dict
    evaluator: object | None


def load_world(config: SweepConfig) -> World:
    from noisesearch.generate import build
    from noisesearch.registry import pick
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
    return World(model, verifier, evals, _evaluator(config.model))


def _evaluator(model: str):
    """The set evaluator of ``model``'s images: ``DigitsEvaluator`` for the digits world, else None."""
    from noisesearch.models import domain_of

    if domain_of(model) != "digits":
        return None
    from noisesearch.metrics import DigitsEvaluator

    return DigitsEvaluator()


def run_sweep(
    config: SweepConfig,
    out: Path,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    executor=None,
    note: Callable[[str], None] = _stderr,
    cache: bool | str | Path | None = True,
    cache_max_mb: float | None = None,
    cache_images: str = "exact",
) -> dict:
    """Run (or resume) the sweep into ``out``; returns counts of rows written and skipped, and sets written.

    ``progress(rows done, rows in all, note)`` is called after every chunk; the note holds the NFEs
    spent so far in this run, the best search score so far and the configuration. ``note`` gets
    one-line messages (a stale lock taken over, a half line cut, a config replaced).

    ``executor``: None runs every chunk here; otherwise an object with ``map(config, items, tasks)
    -> iterator of (cell, rows, images)`` in any order (``noisesearch.sweep.ray_backend``), whose
    results are written here as they arrive.

    Everything is checked before anything is created: ``out`` (``checks.check_out_dir``: not empty,
    not a file, writable), the cache options and folder. A failure before the first search result
    leaves the tree as it was (see the module docstring).

    A full disk (or quota) while writing is a ``UserError`` naming the file, saying to free space and
    rerun: the rerun resumes as after any crash.

    ``cache``: the replay cache (``noisesearch.cache``): True (default) keeps it in ``out/cache``, a
    folder puts it there (share one between sweeps, e.g. to add a verifier), False or None turns it
    off; ``cache_max_mb`` caps its size (LRU), ``cache_images`` is "exact" or "uint8". Rows are the
    same with or without it apart from ``nfe_computed``, ``replayed``, ``decode_computed`` and
    ``verify_computed`` (``ledger.drop_computed``) and wall times.
    """
    from noisesearch.cache import check_settings, open_cache

    out = check_out_dir(out, files=FILES)
    check_settings(cache_max_mb, cache_images)
    cache_dir = out / "cache" if cache is True else _cache_dir(cache)
    scaffold = _Scaffold(out, cache_dir)
    try:
        _io.ensure_out_dir(out)
        with FolderLock(out, note=note):  # the cache folder is made only by the folder's one writer
            try:
                candidate_cache = open_cache(cache_dir or cache, max_mb=cache_max_mb, images=cache_images)
                return _run_locked(config, out, progress, executor, note, candidate_cache, scaffold)
            except Exception:
                scaffold.remove_files()  # while the lock is held
                raise
    except Exception as e:
        scaffold.remove_folders()
        error = _io.os_error_of(e)
        if error is not None and error.errno in _FULL:
            raise UserError(
                f"cannot write {error.filename or str(out)}: {error.strerror}; free some space, then rerun the same "
                "command to resume (nothing written so far is lost)"
            ) from None
        raise


def _cache_dir(cache) -> Path | None:
    """The cache folder a ``cache`` argument names (checked like an output folder), or None."""
    if isinstance(cache, (str, os.PathLike)):
        return check_out_dir(cache, what="cache folder")
    return None  # off (None, False) or a CandidateCache object (its folder exists)


def _missing(path: Path) -> list[Path]:
    """``path`` and each of its parents that does not exist yet (what ``mkdir(parents=True)`` would make)."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


class _Scaffold:
    """What a run creates before its first search result, to remove again if it fails before then.

    Only paths that did not exist when the run began: its ``sweep.json`` and lock file, and the
    folders it made (the output folder and its missing parents, the cache folder and its two
    subfolders), each removed only if empty (``rmdir`` never deletes a file).
    """

    def __init__(self, out: Path, cache_dir: Path | None):
        folders = _missing(out)
        if cache_dir is not None:
            folders += _missing(cache_dir / "packs") + _missing(cache_dir / "scores")
        self.folders = sorted(set(folders), key=lambda p: len(p.parts), reverse=True)  # deepest first
        self.files = [p for p in (out / "sweep.json", out / LOCK_NAME) if not os.path.lexists(p)]
        self.started = False  # set when the first search result arrives: from then on, a rerun resumes

    def remove_files(self) -> None:
        if not self.started:
            for path in self.files:
                path.unlink(missing_ok=True)

    def remove_folders(self) -> None:
        if not self.started:
            for folder in self.folders:
                try:
                    folder.rmdir()
                except OSError:  # not empty (or gone): left as it is
                    pass


def _remove_stale_temps(out: Path, cells: list[Cell]) -> None:
    """Remove the temporary files of atomic writes a crash interrupted, in the folders the sweep writes only."""
    folders = [out, out / "samples"]
    for cell in cells:
        folders += [out / "sets" / cell.slug, out / "images" / cell.slug]
        images = out / "images" / cell.slug
        if images.is_dir():  # keep_images: all writes each search's candidates in a folder of its target
            folders += [p for p in images.iterdir() if p.is_dir() and re.fullmatch(r"\d{6,}", p.name)]
    for folder in folders:
        _io.remove_own_temps(folder)


def _remove_parts(parts: Path) -> None:
    """Remove a merged cell's part folder: its ``chunk-*.npz`` parts (and temporary files), then it if empty."""
    if not parts.is_dir():
        return
    for path in parts.iterdir():
        if (_PART.fullmatch(path.name) or _io.is_own_temp(path.name)) and path.is_file():
            path.unlink(missing_ok=True)
    try:
        parts.rmdir()
    except OSError:  # a file of the user's is in it: left with it
        pass


def _run_locked(config: SweepConfig, out: Path, progress, executor, note, cache=None, scaffold=None) -> dict:
    from noisesearch.benchmarks import BENCHMARKS

    results_path, sets_path = out / "results.jsonl", out / "sets.jsonl"
    cells = cells_of(config)
    _remove_stale_temps(out, cells)
    for path in (results_path, sets_path):
        if _io.repair_jsonl(path):
            note(f"cut the unfinished last line of {path} (a crash mid-write); its row is written again")
    rows = read_rows(results_path) if results_path.exists() else []
    snapshot_check(out, config, has_rows=bool(rows), note=note)
    b = config.benchmark
    options = {"splits": b.splits} if b.splits else {}
    items = BENCHMARKS[b.name](subset=b.subset, per_class=b.per_class, path=b.path, **options)
    done = {(r["cell"], r["target_index"]) for r in rows}
    sets_done = {r["cell"] for r in read_sets(sets_path)} if sets_path.exists() else set()
    class_conditional = any(isinstance(item.target, int) for item in items)
    chunks = [list(range(k, min(k + config.chunk, len(items)))) for k in range(0, len(items), config.chunk)]
    tasks = []
    for cell in cells:
        for chunk in chunks:
            missing = any((cell.key, i) not in done for i in chunk)
            no_part = class_conditional and cell.key not in sets_done and not _part_path(out, cell, chunk).is_file()
            if missing or no_part:  # a chunk is always searched whole: the same batch gives the same bits
                tasks.append((cell, chunk))
    if cache is not None:  # largest budget first: the smaller budgets' candidates are then replays, not
        tasks.sort(key=lambda task: -task[0].budget)  # small batches computed one budget at a time (stable)
    skipped = len(done)
    total, written, nfe, best = len(cells) * len(items), 0, 0, float("-inf")
    world = None
    if executor is None and tasks:
        world = load_world(config)
        results = (run_chunk(config, world, items, cell, chunk, cache=cache) for cell, chunk in tasks)
    elif tasks:
        results = executor.map(config, items, tasks, cache=cache)
    else:
        results = iter(())
    for cell, chunk_rows, images in results:
        if scaffold is not None:
            scaffold.started = True  # a search ran: from here on a failure leaves what a rerun resumes from
        new = _file_chunk(config, out, cell, chunk_rows, images, class_conditional, done, results_path)
        written += len(new)
        nfe += sum(r["nfe_used"] for r in new)
        best = max([best, *(r["best_score"] for r in new if r["algorithm"] != "none" and r["best_score"] is not None)])
        if progress:
            progress(len(done), total, f"{nfe:,} NFEs, best {best:.4g}, {cell.slug}")
    sets = 0
    if scaffold is not None:
        scaffold.started = True
    if class_conditional:
        sets = _finish_sets(config, out, cells, items, chunks, done, sets_done, world)
    return {"written": written, "skipped": skipped, "cells": len(cells), "targets": len(items), "sets": sets}


def run_chunk(config: SweepConfig, world: World, items, cell: Cell, chunk: list[int], *, cache=None):
    """Search every target of ``chunk`` for ``cell``; returns (cell, rows, best images or None).

    ``cache``: a ``noisesearch.cache.CandidateCache`` to replay candidates from, or None.
    """
    model = world.model
    steps = cell.steps
    if cell.algorithm == "none":
        guidance = model.default_guidance if config.guidance is None else config.guidance
        per_call = nfe_per_call(model, guidance, config.nfe_convention)
        steps = baseline_steps(cell.budget, config.sampler, per_call)
        if steps is None:
            raise UserError(
                f"the step baseline cannot spend budget {cell.budget} exactly: {config.model} costs {per_call} NFEs "
                f"per call at guidance {guidance}; use budgets it can, or baseline: false"
            )
    scored = cell.algorithm != "none" or config.baseline_scored
    seeds = [derive_seed(cell.seed, i) for i in chunk]
    spec = cell_spec(config, cell, [items[i].target for i in chunk], seeds, steps).resolved(model)
    algorithm = spec.parts.algorithm
    verifier = world.verifier if scored else Unscored()
    started = time.perf_counter()
    results = run(spec, model, verifier, algorithm, cache=cache)
    wall = (time.perf_counter() - started) / len(chunk)
    images = [r.best_image for r in results]  # (C, H, W) each, None for a search without a real score
    present = [n for n, image in enumerate(images) if image is not None]
    evals: dict[str, list] = {}
    for name, v in world.eval_verifiers.items():
        evals[name] = [None] * len(chunk)
        if present:  # only searches that produced an image are scored
            values = v(torch.stack([images[n] for n in present]), [results[n].target for n in present]).tolist()
            for n, value in zip(present, values):
                evals[name][n] = value
    rows = []
    for n, (i, r) in enumerate(zip(chunk, results)):
        columns = {
            "cell": cell.key,
            "target_index": i,
            "category": items[i].category,
            "benchmark": config.benchmark.name,
            "algorithm": cell.algorithm,
            "params": cell.params,
            **{f"eval_{name}": values[n] for name, values in evals.items()},
        }
        rows.append(sweep_row(spec, r, model, verifier, algorithm, wall=wall, scored=scored, columns=columns))
        if r.images:  # every finished candidate, with its score (keep_images: all)
            scores = {c["index"]: c["score"] for c in r.candidates}
            rows[-1]["_candidates"] = [(k, scores[k], image) for k, image in sorted(r.images.items())]
    return cell, rows, images


def cell_spec(config: SweepConfig, cell: Cell, targets: list, seeds: list[int], steps: int) -> RunSpec:
    """The ``RunSpec`` of a chunk of ``cell``'s targets (the baseline: one candidate of ``steps`` steps, no
    final render); checked (``RunSpec.validate``) as every entrance's run is."""
    baseline = cell.algorithm == "none"
    return RunSpec(
        model=config.model,
        model_path=config.model_path,
        model_options=config.model_options,
        verifier=config.verifier.name,
        verifier_path=config.verifier.path,
        verifier_options=config.verifier.options,
        algorithm="random" if baseline else cell.algorithm,
        algorithm_params={"candidates": 1} if baseline else cell.params,
        budget=cell.budget,
        targets=targets,
        seed=cell.seed,
        seeds=seeds,
        steps=steps,
        sampler=config.sampler,
        guidance=config.guidance,
        max_batch=config.max_batch,
        keep_images=config.keep_images == "all",
        final_steps=None if baseline else config.final_steps,  # the baseline is its own render
        nfe_convention=config.nfe_convention,
    ).validate()


def _part_path(out: Path, cell: Cell, chunk: list[int]) -> Path:
    return out / "sets" / cell.slug / f"chunk-{chunk[0]:06d}.npz"


def _file_chunk(config, out: Path, cell: Cell, rows: list[dict], images: list, class_conditional: bool, done, path):
    """Write a finished chunk: its sample part and images first, then its rows not yet written.

    Returns the rows appended (a chunk searched again after a crash appends only its missing rows).
    """
    if class_conditional:
        have = [n for n, image in enumerate(images) if image is not None]
        part = _part_path(out, cell, [r["target_index"] for r in rows])
        part.parent.mkdir(parents=True, exist_ok=True)
        arr = _io.images_to_uint8(torch.stack([images[n] for n in have])) if have else np.zeros((0, 0, 0, 0), np.uint8)
        indices = np.asarray([rows[n]["target_index"] for n in have], dtype=np.int64)
        _io.save_npz(part, arr, [rows[n]["target"] for n in have], indices)
    if config.keep_images:
        folder = out / "images" / cell.slug
        folder.mkdir(parents=True, exist_ok=True)
        for row, image in zip(rows, images):
            name = f"{row['target_index']:06d}"
            row["image"] = None
            if image is not None:
                _io.save_png(folder / f"{name}.png", image, scale=_png_scale(image))
                row["image"] = f"images/{cell.slug}/{name}.png"
            kept = []
            for index, score, candidate in row.pop("_candidates", []):
                (folder / name).mkdir(exist_ok=True)
                _io.save_png(folder / name / f"{index:04d}.png", candidate, scale=_png_scale(candidate))
                kept.append({"index": index, "score": score, "image": f"images/{cell.slug}/{name}/{index:04d}.png"})
            if kept:
                row["candidate_images"] = kept
    new = []
    for row in rows:
        row.pop("_candidates", None)
        if (row["cell"], row["target_index"]) not in done:
            new.append(row)
    if new:
        _io.append_jsonl(path, new)  # one write and one fsync for the chunk
        done.update((row["cell"], row["target_index"]) for row in new)
    return new


MIN_SET = 4  # the fewest samples set metrics are computed on (precision/recall use 3 nearest neighbours)


def _png_scale(image: torch.Tensor) -> int:
    return 8 if image.shape[-1] <= 16 else 1  # 8x8 digits are enlarged to be visible


def _finish_sets(config, out: Path, cells, items, chunks, done: set, sets_done: set, world: World | None) -> int:
    """Merge each class-conditional cell whose rows are all written into one .npz; digits: set metrics.

    Returns the number of ``sets.jsonl`` entries written.
    """
    evaluator = world.evaluator if world is not None else None
    written = 0
    for cell in cells:
        parts = out / "sets" / cell.slug
        if cell.key in sets_done:
            _remove_parts(parts)  # left by a crash after the entry was written
            continue
        if any((cell.key, i) not in done for i in range(len(items))):
            continue  # not finished (an interrupted run resumes it)
        arrays, labels, indices = [], [], []
        for chunk in chunks:
            with np.load(_part_path(out, cell, chunk)) as part:  # written before its rows: present
                if len(part["arr_1"]):
                    arrays.append(part["arr_0"])
                labels.append(part["arr_1"])
                indices.append(part["arr_2"])
        images = np.concatenate(arrays) if arrays else np.zeros((0, 0, 0, 0), np.uint8)  # (N, H, W, C) uint8
        label = np.concatenate(labels)
        present = set(np.concatenate(indices).tolist())
        missing = [i for i in range(len(items)) if i not in present]
        (out / "samples").mkdir(exist_ok=True)
        sample_path = f"samples/{cell.slug}.npz"
        _io.save_npz(out / sample_path, images, label)
        row = {
            "cell": cell.key,
            **asdict(cell),
            "samples": sample_path,
            "n_samples": len(label),
            "failed_searches": len(missing),
            "missing_targets": missing,
        }
        if world is None and evaluator is None:  # every search ran elsewhere (Ray) or earlier (a resume)
            evaluator = _evaluator(config.model)
        if evaluator is not None and len(label) >= MIN_SET:
            tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (N, C, H, W)
            row.update(evaluator(tensor, label.tolist()))
        _io.append_jsonl(out / "sets.jsonl", row)
        sets_done.add(cell.key)
        written += 1
        _remove_parts(parts)
    return written
