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
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from noisesearch import _io
from noisesearch.checks import check_out_dir
from noisesearch.errors import UserError
from noisesearch.records import ROW_TYPES, SET_TYPES, read_rows, read_sets
from noisesearch.sweep.chunk import Unscored, World, cell_spec, load_world, run_chunk
from noisesearch.sweep.config import SweepConfig
from noisesearch.sweep.filing import MIN_SET, file_chunk, finish_sets, remove_stale_temps
from noisesearch.sweep.lock import LOCK_NAME, FolderLock
from noisesearch.sweep.plan import Cell, cells_of, chunks_of, load_items, plan_tasks, snapshot_check
from noisesearch.sweep.scaffold import Scaffold, cache_dir_of

__all__ = [
    "FILES",
    "MIN_SET",
    "ROW_TYPES",
    "SET_TYPES",
    "Cell",
    "LocalExecutor",
    "Unscored",
    "World",
    "cell_spec",
    "cells_of",
    "load_world",
    "read_rows",
    "read_sets",
    "run_chunk",
    "run_sweep",
    "snapshot_check",
]

FILES = ("results.jsonl", "sets.jsonl", "sweep.json", LOCK_NAME)  # what a sweep writes directly in its folder
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class LocalExecutor:
    """The local backend: every chunk searched here, one after another, with the world loaded once in this process.

    ``world`` holds that world once the first task has run (``run_sweep`` reuses its set evaluator).
    """

    def __init__(self) -> None:
        self.world: World | None = None

    def map(self, config: SweepConfig, items, tasks, cache=None):
        """Yield (cell, rows, images) for every (cell, chunk) task, in order (``cache``: the replay cache)."""
        self.world = load_world(config)  # looked up here at call time: tests give a loaded world
        for cell, chunk in tasks:
            yield run_chunk(config, self.world, items, cell, chunk, cache=cache)


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

    ``executor``: None runs every chunk here (``LocalExecutor``); otherwise an object with ``map(config,
    items, tasks, cache=None) -> iterator of (cell, rows, images)`` in any order (a backend of
    ``noisesearch.sweep.backends``, e.g. Ray's), whose results are written here as they arrive.

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
    cache_dir = out / "cache" if cache is True else cache_dir_of(cache)
    scaffold = Scaffold(out, cache_dir)
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
        _raise_if_full(e, out)
        raise


def _raise_if_full(e: Exception, out: Path) -> None:
    """A full disk or quota behind ``e`` as the one ``UserError`` line naming the file; anything else passes."""
    error = _io.os_error_of(e)
    if error is not None and error.errno in _FULL:
        raise UserError(
            f"cannot write {error.filename or str(out)}: {error.strerror}; free some space, then rerun the same "
            "command to resume (nothing written so far is lost)"
        ) from None


@dataclass
class _Tally:
    """What this run has written so far, for the progress note."""

    written: int = 0
    nfe: int = 0
    best: float = float("-inf")

    def add(self, new: list[dict]) -> None:
        self.written += len(new)
        self.nfe += sum(r["nfe_used"] for r in new)
        scores = (r["best_score"] for r in new if r["algorithm"] != "none" and r["best_score"] is not None)
        self.best = max([self.best, *scores])

    def note(self, cell: Cell) -> str:
        return f"{self.nfe:,} NFEs, best {self.best:.4g}, {cell.slug}"


def _open_folder(config: SweepConfig, out: Path, cells: list[Cell], note) -> tuple[list[dict], set]:
    """Clean what a crash left, store (or check) the config; returns the rows written and the cells with a set."""
    results_path, sets_path = out / "results.jsonl", out / "sets.jsonl"
    remove_stale_temps(out, cells)
    for path in (results_path, sets_path):
        if _io.repair_jsonl(path):
            note(f"cut the unfinished last line of {path} (a crash mid-write); its row is written again")
    rows = read_rows(results_path) if results_path.exists() else []
    snapshot_check(out, config, has_rows=bool(rows), note=note)
    sets_done = {r["cell"] for r in read_sets(sets_path)} if sets_path.exists() else set()
    return rows, sets_done


def _run_locked(config: SweepConfig, out: Path, progress, executor, note, cache=None, scaffold=None) -> dict:
    """``run_sweep`` once the folder's lock is held: plan the tasks still to do, run them, file their results."""
    cells = cells_of(config)
    rows, sets_done = _open_folder(config, out, cells, note)
    items = load_items(config)
    done = {(r["cell"], r["target_index"]) for r in rows}
    class_conditional = any(isinstance(item.target, int) for item in items)
    chunks = chunks_of(len(items), config.chunk)
    tasks = plan_tasks(out, cells, chunks, done, sets_done, class_conditional)
    if cache is not None:  # largest budget first: the smaller budgets' candidates are then replays, not
        tasks.sort(key=lambda task: -task[0].budget)  # small batches computed one budget at a time (stable)
    skipped, total, tally = len(done), len(cells) * len(items), _Tally()
    executor = LocalExecutor() if executor is None else executor
    results = executor.map(config, items, tasks, cache=cache) if tasks else iter(())
    for cell, chunk_rows, images in results:
        if scaffold is not None:
            scaffold.started = True  # a search ran: from here on a failure leaves what a rerun resumes from
        tally.add(file_chunk(config, out, cell, chunk_rows, images, class_conditional, done, out / "results.jsonl"))
        if progress:
            progress(len(done), total, tally.note(cell))
    if scaffold is not None:
        scaffold.started = True
    sets = 0
    if class_conditional:
        sets = finish_sets(config, out, cells, chunks, done, sets_done, getattr(executor, "world", None))
    return {"written": tally.written, "skipped": skipped, "cells": len(cells), "targets": len(items), "sets": sets}
