"""The replay cache's API: ``CandidateCache`` (entries and scores read and stored by key) and ``open_cache``."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from noisesearch.cache._files import (
    PACK_NAME,
    SCORE_NAME,
    _check_folder,
    _is_folder,
    _own_files,
    _scan,
    _write,
    make_folder,
    read_whole,
    touch,
)
from noisesearch.cache._packs import (
    FORMAT,
    Hits,
    PackMemo,
    _safetensors_parts,
    decode_pack,
    gather,
    join_hits,
    pack_index,
    read_scores,
    score_file,
    store_image,
)
from noisesearch.cache._removal import evict
from noisesearch.errors import UserError

IMAGE_MODES = ("exact", "uint8")


def check_settings(max_mb, images) -> None:
    """Refuse a size cap that is not a positive number of MiB, or an unknown images mode, in one line."""
    if max_mb is not None and (
        isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not math.isfinite(max_mb) or max_mb <= 0
    ):
        raise UserError(f"cache size cap must be a positive number of MiB, got {max_mb!r}")
    if images not in IMAGE_MODES:
        raise UserError(f"cache images mode {images!r} is unknown; accepted: {', '.join(IMAGE_MODES)}")


class CandidateCache:
    """The replay cache in folder ``path`` (created); see ``noisesearch.cache``.

    Storage: one *pack* per batch of computed candidates, ``packs/<digest>.safetensors`` (tensors ``x``,
    ``image`` and ``preview@<step>``, row n for key n; the keys and FLOPs in its metadata), and one score file
    per batch and verifier, ``scores/<verifier id>/<digest>.json`` (``keys``, ``scores`` in their order,
    ``verify_flops``). A file's name is the digest of its bytes (``file_digest``), checked on every read, so a
    torn or foreign file is a miss. A pack is written from the tensors' own memory and read without a copy
    (``cache._packs``). Files are written whole and renamed into place; the cache is derived data, so they are
    not fsynced (a ``kill -9`` loses nothing the kernel holds; a power cut can lose recent packs, which are then
    recomputed, and the digest rejects any torn one). Packing a batch into one file keeps the cost per
    candidate in microseconds, which matters for cheap models.

    Args:
        path: the cache folder (shared by any number of processes).
        max_mb: size cap in MiB (None: unbounded); least recently used files go first.
        images: "exact" (the decoded image in its own dtype: a replay is bit-exact) or "uint8"
            (4x smaller for float32; a verifier scoring a replayed image then sees the quantised one).
            An entry stored in "uint8" is a miss in "exact"; an exact one is replayed exactly in both.
    """

    def __init__(self, path, *, max_mb: float | None = None, images: str = "exact"):
        check_settings(max_mb, images)
        self.path = Path(path)
        _check_folder(self.path)  # before anything is made
        try:
            for sub in ("packs", "scores"):
                make_folder(self.path, sub)
        except OSError as e:  # a race with another process: as if the check had failed
            raise UserError(
                f"cannot write the cache folder {str(e.filename or self.path)!r}: {e.strerror}; give a writable folder"
            ) from None
        self.max_mb, self.images = max_mb, images
        self._reset()

    def _reset(self) -> None:
        self._packs: dict[str, dict[str, set[str]]] = {}  # pack name -> {key -> its tensor names}
        self._where: dict[str, list[str]] = {}  # key -> pack names holding it
        self._scores: dict[str, dict[str, tuple]] = {}  # verifier id -> {key -> (score, flops)}
        self._score_files: dict[str, set[str]] = {}
        self._size: int | None = None  # bytes, estimated since the last scan (other writers add too)
        self._memo = PackMemo()
        self._quantised: set[str] = set()  # keys last replayed here with a quantised image ("uint8" only)
        self._stopped = False  # storing failed once: see ``_storing``

    def __getstate__(self) -> dict:  # sent to Ray actors: settings only
        return {"path": self.path, "max_mb": self.max_mb, "images": self.images}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- reading ---------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Index the packs written since the last look (by this or any other process)."""
        names = set(_scan(self.path / "packs", PACK_NAME))
        for gone in set(self._packs) - names:  # evicted
            self._forget(gone)
        for name in names - set(self._packs):
            keys = pack_index(self.path / "packs" / name, self.images)
            if keys is None:
                continue
            self._packs[name] = keys
            for key in keys:
                self._where.setdefault(key, []).append(name)

    def _forget(self, name: str) -> None:
        for key in self._packs.pop(name, {}):
            where = self._where.get(key, [])
            if name in where:
                where.remove(name)

    def get(self, keys: list[str], preview_step: int | None) -> list[dict | None]:
        """The entries of ``keys`` (``x``, ``image``, ``preview`` when ``preview_step`` is given, FLOPs), None
        for a miss. An entry without that preview is a miss; a hit marks its pack as recently used.

        Each entry's tensors are views of one gathered copy (the memo's tensors are never handed out)."""
        hits = self.get_rows(keys, preview_step)
        out: list[dict | None] = [None] * len(keys)
        if hits is None:
            return out
        xs, images = hits.x.unbind(0), hits.image.unbind(0)
        previews = hits.preview.unbind(0) if hits.preview is not None else None
        for j, n in enumerate(hits.rows):
            entry = {"x": xs[j], "image": images[j], "flops_per_nfe": hits.flops_per_nfe}
            entry["decode_flops"] = hits.decode_flops
            if previews is not None:
                entry["preview"] = previews[j]
            out[n] = entry
        return out

    def get_rows(self, keys: list[str], preview_step: int | None) -> Hits | None:
        """The hits among ``keys`` as columns (``Hits``: their positions, ascending, and their tensors gathered
        in one copy per pack and tensor), or None when nothing hit. Misses as in ``get``."""
        need = None if preview_step is None else f"preview@{preview_step}"

        def find(key: str) -> str | None:
            for name in self._where.get(key, ()):
                if need is None or need in self._packs[name][key]:
                    return name
            return None

        found = [find(k) for k in keys]
        if None in found:
            self._refresh()
            found = [name if name is not None else find(k) for name, k in zip(found, keys)]
        by_pack: dict[str, list[int]] = {}
        for n, name in enumerate(found):
            if name is not None:
                by_pack.setdefault(name, []).append(n)
        parts = [self._rows_of(name, rows, keys, need) for name, rows in by_pack.items()]
        return join_hits([part for part in parts if part is not None])

    def _rows_of(self, name: str, rows: list[int], keys: list[str], need: str | None) -> tuple | None:
        """``(rows, x, image, preview, meta)`` of the rows (positions in ``keys``) found in pack ``name``; None
        when it cannot be read or holds none of them in a mode this run accepts."""
        loaded = self._load(name)
        if loaded is None:
            return None
        tensors, meta = loaded
        row_of = meta["row_of"]
        rows = [n for n in rows if keys[n] in row_of]
        if not rows or (meta["quantised"] and self.images == "exact"):
            return None
        if meta["quantised"]:
            self._quantised.update(keys[n] for n in rows)
        else:
            self._quantised.difference_update(keys[n] for n in rows)
        x, image, preview = gather(tensors, meta, [row_of[keys[n]] for n in rows], need)
        return rows, x, image, preview, meta

    def _load(self, name: str) -> tuple | None:
        """The tensors and metadata of pack ``name`` (read once per process, ``PackMemo``); None when it is
        missing (evicted), torn or foreign, and then forgotten."""
        path = self.path / "packs" / name
        memo = self._memo.get(name)
        if memo is not None:
            touch(path)
            return memo
        try:
            data = read_whole(path)
            tensors, meta = decode_pack(data, name)
            touch(path)  # last used: the LRU order
        except Exception:  # missing (evicted), torn or foreign: its keys miss, never an error
            self._forget(name)
            return None
        self._memo.keep(name, (tensors, meta), len(data))
        return tensors, meta

    def scores(self, keys: list[str], verifier_id: str) -> list[dict | None]:
        """The cached ``{"score", "verify_flops"}`` of each key under ``verifier_id`` (None: not scored)."""
        table = self._scores.setdefault(verifier_id, {})
        if any(k not in table for k in keys):
            self._refresh_scores(verifier_id)
        out: list[dict | None] = []
        for key in keys:
            got = table.get(key)
            out.append(
                None
                if got is None
                else {"score": math.nan if got[0] is None else float(got[0]), "verify_flops": got[1]}
            )
        return out

    def _refresh_scores(self, verifier_id: str) -> None:
        folder = self.path / "scores" / verifier_id
        seen = self._score_files.setdefault(verifier_id, set())
        table = self._scores.setdefault(verifier_id, {})
        if not _is_folder(self.path / "scores"):
            return
        names = [name for name in _scan(folder, SCORE_NAME) if name not in seen]
        for name in names:
            try:
                keys, scores, flops = read_scores(folder / name)
                for key, score in zip(keys, scores):
                    table.setdefault(key, (score, flops))
            except (OSError, ValueError, KeyError, TypeError):  # unreadable or another layout: not scored
                continue
            seen.add(name)
            touch(folder / name)

    # -- writing ---------------------------------------------------------------------------------

    def put(
        self,
        keys: list[str],
        xs: torch.Tensor,
        images: torch.Tensor,
        previews: dict[str, torch.Tensor],
        *,
        flops_per_nfe: float | None,
        decode_flops: float | None,
    ) -> None:
        """Write one pack: row n of the end states ``xs``, ``images`` and ``previews`` (by ``preview@step``,
        each (B, ...)) is the entry of ``keys[n]``. Nothing is written once storing failed (``_storing``)."""
        self._quantised.difference_update(keys)  # computed here: their images are exact
        if not keys or self._stopped:
            return
        tensors = {
            "x": xs,
            "image": store_image(images, self.images),
            **{k: store_image(v, self.images) for k, v in previews.items()},
        }
        metadata = {
            "format": FORMAT,
            "keys": json.dumps(keys),
            "image_dtype": str(images.dtype).removeprefix("torch."),
            "flops_per_nfe": json.dumps(flops_per_nfe),
            "decode_flops": json.dumps(decode_flops),
        }
        try:
            parts = _safetensors_parts(tensors, metadata)  # the tensors' own memory: written, never kept
        except ValueError:  # a dtype safetensors has no code for here: these candidates are not cached
            return

        def store() -> None:
            name = _write(make_folder(self.path, "packs"), ".safetensors", parts)
            stored = {"x", "image", *previews}
            self._packs[name] = {key: stored for key in keys}
            for key in keys:
                self._where.setdefault(key, []).append(name)
            self._grow(sum(len(p) for p in parts))

        self._storing(store)

    def put_scores(self, keys: list[str], verifier_id: str, scores: list[float], verify_flops: float | None) -> None:
        """Write one score file: ``scores`` of ``keys`` under ``verifier_id`` (NaN kept as null).

        The scores of keys last replayed with a quantised image (``images="uint8"``) are left out: a stored
        score is always that of the exact image. Nothing is written once storing failed (``_storing``)."""
        if self._quantised:
            rows = [n for n, key in enumerate(keys) if key not in self._quantised]
            keys, scores = [keys[n] for n in rows], [scores[n] for n in rows]
        if not keys or self._stopped:
            return
        flops = verify_flops if verify_flops is None or math.isfinite(verify_flops) else None
        kept = [s if math.isfinite(s) else None for s in scores]  # NaN: null
        data = score_file(keys, kept, flops)

        def store() -> None:
            name = _write(make_folder(self.path, "scores", verifier_id), ".json", [data])
            self._score_files.setdefault(verifier_id, set()).add(name)
            mine = self._scores.setdefault(verifier_id, {})
            for key, score in zip(keys, kept):
                mine.setdefault(key, (score, flops))
            self._grow(len(data))

        self._storing(store)

    def _storing(self, store: Callable[[], None]) -> None:
        """Run ``store`` (a write into the folder, with its eviction): the one place where a failure to store
        is handled. The cache is an optimisation, so on any ``OSError`` (a full disk or quota, a read-only
        folder, something in the way) it prints one ``warning:`` line naming the path, the first time only,
        and stores nothing more from this object; the run's results are those of a run without storing."""
        if self._stopped:
            return
        try:
            store()
        except OSError as e:
            self._stopped = True
            where = str(e.filename or self.path)
            print(
                f"warning: cannot store in the replay cache at {where!r}: {e.strerror or e}; going on without "
                "storing (results are unaffected)",
                file=sys.stderr,
            )

    # -- size ------------------------------------------------------------------------------------

    def _grow(self, n: int) -> None:
        if self.max_mb is None:
            return
        if self._size is None:
            self._size = self.size_bytes()
        self._size += n
        if self._size > self.max_mb * 2**20:
            self.trim()

    def size_bytes(self) -> int:
        """Bytes held by finished files (temporary files of writers not counted)."""
        return sum(st.st_size for p, st in _own_files(self.path) if not p.name.endswith(".tmp"))

    def trim(self) -> None:
        """Remove the least recently used files (packs and score files) until the folder fits ``max_mb``
        (``cache._removal.evict``: only the cache's own files); an ``OSError`` other than a file already gone
        is raised (to ``_storing``)."""
        if self.max_mb is None:
            return
        self._size = evict(self.path, self.max_mb * 2**20, self._removed)

    def _removed(self, path: Path) -> None:
        """Forget what the index held of the file ``path``, just evicted."""
        if path.parent.name == "packs":
            self._forget(path.name)
        else:
            self._score_files.get(path.parent.name, set()).discard(path.name)
            self._scores.pop(path.parent.name, None)  # rebuilt from the files left
            self._score_files.pop(path.parent.name, None)


def open_cache(cache, *, max_mb: float | None = None, images: str = "exact") -> CandidateCache | None:
    """A ``CandidateCache`` from a folder (str / Path), an existing cache (returned as is), or None.

    The settings are checked even without a folder (a cap given with the cache off is a mistake too)."""
    check_settings(max_mb, images)
    if cache is None or cache is False:
        return None
    if isinstance(cache, CandidateCache):
        return cache
    if isinstance(cache, (str, os.PathLike)) and str(cache).strip():
        return CandidateCache(cache, max_mb=max_mb, images=images)
    raise UserError(f"cache must be a folder path or None, got {cache!r}")
