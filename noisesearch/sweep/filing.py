"""Filing a sweep's results in its folder, by the one writer (the driver process): a finished chunk's sample part
and PNG files first, then its rows not yet written; once a class-conditional cell has all its rows, its parts
merged into ``samples/<cell>.npz`` and one ``sets.jsonl`` entry. Also the clean-up of what a crash left: the
temporary files of atomic writes, and the parts of a merged cell (see ``run.py``'s docstring)."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from noisesearch import _io
from noisesearch.sweep.chunk import evaluator_of
from noisesearch.sweep.config import SweepConfig
from noisesearch.sweep.plan import Cell, part_path

PART = re.compile(r"chunk-\d{6,}\.npz")  # a cell's sample part (``plan.part_path``)
MIN_SET = 4  # the fewest samples set metrics are computed on (precision/recall use 3 nearest neighbours)


def remove_stale_temps(out: Path, cells: list[Cell]) -> None:
    """Remove the temporary files of atomic writes a crash interrupted, in the folders the sweep writes only."""
    folders = [out, out / "samples"]
    for cell in cells:
        folders += [out / "sets" / cell.slug, out / "images" / cell.slug]
        images = out / "images" / cell.slug
        if images.is_dir():  # keep_images: all writes each search's candidates in a folder of its target
            folders += [p for p in images.iterdir() if p.is_dir() and re.fullmatch(r"\d{6,}", p.name)]
    for folder in folders:
        _io.remove_own_temps(folder)


def remove_parts(parts: Path) -> None:
    """Remove a merged cell's part folder: its ``chunk-*.npz`` parts (and temporary files), then it if empty."""
    if not parts.is_dir():
        return
    for path in parts.iterdir():
        if (PART.fullmatch(path.name) or _io.is_own_temp(path.name)) and path.is_file():
            path.unlink(missing_ok=True)
    try:
        parts.rmdir()
    except OSError:  # a file of the user's is in it: left with it
        pass


def file_chunk(config, out: Path, cell: Cell, rows: list[dict], images: list, class_conditional: bool, done, path):
    """Write a finished chunk: its sample part and images first, then its rows not yet written.

    Returns the rows appended (a chunk searched again after a crash appends only its missing rows).
    """
    if class_conditional:
        _write_part(out, cell, rows, images)
    if config.keep_images:
        _write_images(out / "images" / cell.slug, cell, rows, images)
    new = []
    for row in rows:
        row.pop("_candidates", None)
        if (row["cell"], row["target_index"]) not in done:
            new.append(row)
    if new:
        _io.append_jsonl(path, new)  # one write and one fsync for the chunk
        done.update((row["cell"], row["target_index"]) for row in new)
    return new


def _write_part(out: Path, cell: Cell, rows: list[dict], images: list) -> None:
    """A class-conditional chunk's sample part: the best images present, their labels and target indices."""
    have = [n for n, image in enumerate(images) if image is not None]
    part = part_path(out, cell, [r["target_index"] for r in rows])
    part.parent.mkdir(parents=True, exist_ok=True)
    arr = _io.images_to_uint8(torch.stack([images[n] for n in have])) if have else np.zeros((0, 0, 0, 0), np.uint8)
    indices = np.asarray([rows[n]["target_index"] for n in have], dtype=np.int64)
    _io.save_npz(part, arr, [rows[n]["target"] for n in have], indices)


def _write_images(folder: Path, cell: Cell, rows: list[dict], images: list) -> None:
    """``keep_images``: each search's best image as PNG (named in its row), and its candidates' under "all"."""
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


def _png_scale(image: torch.Tensor) -> int:
    return 8 if image.shape[-1] <= 16 else 1  # 8x8 digits are enlarged to be visible


def finish_sets(
    config: SweepConfig, out: Path, cells: list[Cell], chunks: list[list[int]], done: set, sets_done: set, world
) -> int:
    """Merge each class-conditional cell whose rows are all written into one .npz; digits: set metrics.

    ``world``: the world loaded in this process (its evaluator), or None (every search ran elsewhere, or
    earlier). Returns the number of ``sets.jsonl`` entries written.
    """
    evaluator = world.evaluator if world is not None else None
    targets = [i for chunk in chunks for i in chunk]
    written = 0
    for cell in cells:
        parts = out / "sets" / cell.slug
        if cell.key in sets_done:
            remove_parts(parts)  # left by a crash after the entry was written
            continue
        if any((cell.key, i) not in done for i in targets):
            continue  # not finished (an interrupted run resumes it)
        images, label, present = _merge_parts(out, cell, chunks)
        (out / "samples").mkdir(exist_ok=True)
        sample_path = f"samples/{cell.slug}.npz"
        _io.save_npz(out / sample_path, images, label)
        missing = [i for i in targets if i not in present]
        row = {
            "cell": cell.key,
            **asdict(cell),
            "samples": sample_path,
            "n_samples": len(label),
            "failed_searches": len(missing),
            "missing_targets": missing,
        }
        if world is None and evaluator is None:  # every search ran elsewhere (Ray) or earlier (a resume)
            evaluator = evaluator_of(config.model)
        if evaluator is not None and len(label) >= MIN_SET:
            tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (N, C, H, W)
            row.update(evaluator(tensor, label.tolist()))
        _io.append_jsonl(out / "sets.jsonl", row)
        sets_done.add(cell.key)
        written += 1
        remove_parts(parts)
    return written


def _merge_parts(out: Path, cell: Cell, chunks: list[list[int]]) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """A finished cell's parts in target order: images (N, H, W, C) uint8, labels, and the targets present."""
    arrays, labels, indices = [], [], []
    for chunk in chunks:
        with np.load(part_path(out, cell, chunk)) as part:  # written before its rows: present
            if len(part["arr_1"]):
                arrays.append(part["arr_0"])
            labels.append(part["arr_1"])
            indices.append(part["arr_2"])
    images = np.concatenate(arrays) if arrays else np.zeros((0, 0, 0, 0), np.uint8)
    return images, np.concatenate(labels), set(np.concatenate(indices).tolist())
