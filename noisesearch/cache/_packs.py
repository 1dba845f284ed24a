"""The layout of the cache's files: packs (safetensors files of a batch's entries) and score files.

A pack holds tensors ``x``, ``image`` and ``preview@<step>``, row n for key n, and in its metadata the
``FORMAT``, the keys, the decoded images' dtype and the FLOPs; it is written from the tensors' own memory
(``_safetensors_parts``) and read without a copy (``_parse``). A score file holds ``keys``, ``scores`` in their
order (NaN as null) and one ``verify_flops``. A file's name is the digest of its bytes, checked on every read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noisesearch.cache._files import _open_regular, file_digest, read_whole

FORMAT = "3"  # bump when the entry layout changes: old entries then miss (3: no score of a quantised image)
MEMO_BYTES = 256 * 2**20  # packs kept in memory per process after their first read


_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_CODES = {code: dtype for dtype, code in _DTYPES.items()}


def _safetensors_parts(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list:
    """A safetensors file of ``tensors`` as a list of buffers: the header, then each tensor's own memory
    (no copy of a contiguous CPU tensor). ``safetensors.safe_open`` and ``load`` read it."""
    header: dict[str, Any] = {"__metadata__": metadata}
    buffers = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError(f"dtype {t.dtype} is not stored")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
        if size:
            buffers.append(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return [len(text).to_bytes(8, "little") + text, *buffers]


def _parse(data: bytearray) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (views of ``data``, no copy) and metadata of a safetensors file's bytes; ValueError
    when they are not a well-formed one."""
    n = int.from_bytes(data[:8], "little")
    if not 0 < n <= len(data) - 8:
        raise ValueError("not a safetensors header")
    header = json.loads(bytes(data[8 : 8 + n]))
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        dtype, shape, (start, end) = _CODES[info["dtype"]], info["shape"], info["data_offsets"]
        count = math.prod(shape)
        if not 0 <= start <= end <= len(data) - 8 - n or end - start != count * dtype.itemsize:
            raise ValueError("tensor out of the file")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(data, dtype=dtype, count=count, offset=8 + n + start).reshape(shape)
    return tensors, meta


def _header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor names and metadata) without reading its data;
    ValueError unless ``path`` is a regular file (``_open_regular``) holding one."""
    f = _open_regular(path)
    if f is None:
        raise ValueError("not a regular file")
    with f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n < 2**26:
            raise ValueError("not a safetensors header")
        return json.loads(f.read(n))


def _quantised(stored_uint8: bool, image_dtype: str) -> bool:
    """Whether a pack's image was quantised (``images="uint8"``): stored as uint8 but decoded as another dtype."""
    return stored_uint8 and image_dtype != "uint8"


@dataclass
class Hits:
    """The cached rows of a batch of keys, as columns: ``rows`` (positions in the keys, ascending) and their
    end states ``x``, images and previews (rows in that order), and the FLOPs stored with the first pack."""

    rows: list[int]
    x: torch.Tensor
    image: torch.Tensor
    preview: torch.Tensor | None
    flops_per_nfe: float | None
    decode_flops: float | None


def _keys_of(text: str) -> list[str]:
    """A pack header's ``keys``: a JSON list of strings; ValueError for anything else (a foreign or damaged file)."""
    keys = json.loads(text)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("pack keys are not a list of strings")
    return keys


def pack_index(path: Path, images: str) -> dict[str, set[str]] | None:
    """The keys of the pack at ``path``, each with the names of its tensors, from its header alone; no key when
    its images were quantised and ``images`` is "exact" (each then misses); None when it has no readable header."""
    try:
        header = _header(path)
        order = _keys_of(header["__metadata__"]["keys"])
        quantised = _quantised(header["image"]["dtype"] == "U8", header["__metadata__"]["image_dtype"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
    parts = {t for t in header if t != "__metadata__"}
    return {} if quantised and images == "exact" else {key: parts for key in order}  # a miss


def decode_pack(data: bytearray, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (views of ``data``) and metadata (``row_of`` each key, ``image_dtype``, FLOPs, ``quantised``)
    of the pack named ``name`` with bytes ``data``; ValueError when it is torn, foreign or of another format."""
    if file_digest(data) != name.removesuffix(".safetensors"):
        raise ValueError("torn or foreign pack")
    tensors, raw = _parse(data)
    if raw.get("format") != FORMAT:
        raise ValueError("another format")
    keys = _keys_of(raw["keys"])
    meta = {
        "row_of": {key: r for r, key in enumerate(keys)},
        "image_dtype": raw["image_dtype"],
        "flops_per_nfe": json.loads(raw["flops_per_nfe"]),
        "decode_flops": json.loads(raw["decode_flops"]),
    }
    if not {"x", "image"} <= tensors.keys() or any(len(t) != len(keys) for t in tensors.values()):
        raise ValueError("rows do not match the keys")
    meta["quantised"] = _quantised(tensors["image"].dtype == torch.uint8, raw["image_dtype"])
    return tensors, meta


class PackMemo:
    """Packs kept in memory per process after their first read (a pack never changes: its name is its digest),
    least recently used first, dropped beyond ``MEMO_BYTES`` (the last one read always kept)."""

    def __init__(self) -> None:
        self._packs: dict[str, tuple] = {}  # pack name -> (tensors, metadata), least recently used first
        self._sizes: dict[str, int] = {}
        self._bytes = 0

    def get(self, name: str) -> tuple | None:
        """The pack ``name`` if kept (now the most recently used), else None."""
        if name not in self._packs:
            return None
        self._packs[name] = self._packs.pop(name)  # most recently used last
        return self._packs[name]

    def keep(self, name: str, pack: tuple, size: int) -> None:
        """Keep ``pack`` (read from ``size`` bytes) as ``name``, dropping the least recently used beyond the cap."""
        self._packs[name] = pack
        self._bytes += size
        self._sizes[name] = size
        while self._bytes > MEMO_BYTES and len(self._packs) > 1:
            old = next(iter(self._packs))
            del self._packs[old]
            self._bytes -= self._sizes.pop(old)


def store_image(image: torch.Tensor, images: str) -> torch.Tensor:
    """``image`` as a pack stores it in mode ``images``: as it is ("exact"), or quantised to uint8 ("uint8")."""
    if images == "uint8":
        return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return image


def restore_image(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A stored image in its decoded ``dtype`` again (a quantised one scaled back to [0, 1])."""
    if image.dtype == torch.uint8 and dtype != torch.uint8:
        return (image.float() / 255).to(dtype)
    return image


def gather(tensors: dict[str, torch.Tensor], meta: dict[str, Any], index: list[int], need: str | None) -> tuple:
    """Rows ``index`` of a pack's end states, images and previews ``need`` (None: none) in one copy each:
    (x, image, preview), images in their decoded dtype."""
    pick = torch.tensor(index, dtype=torch.int64)
    dtype = getattr(torch, meta["image_dtype"])
    x = tensors["x"].index_select(0, pick)
    image = restore_image(tensors["image"].index_select(0, pick), dtype)
    preview = restore_image(tensors[need].index_select(0, pick), dtype) if need else None
    return x, image, preview


def join_hits(parts: list[tuple]) -> Hits | None:
    """The ``Hits`` of the parts ``(rows, x, image, preview, meta)`` gathered from each pack (None: no part),
    rows in ascending positions, with the FLOPs stored with the first pack."""
    if not parts:
        return None
    first = parts[0][4]
    if len(parts) == 1:
        rows, x, image, preview, _ = parts[0]
        return Hits(rows, x, image, preview, first["flops_per_nfe"], first["decode_flops"])
    rows = [n for p in parts for n in p[0]]
    order = torch.tensor(sorted(range(len(rows)), key=rows.__getitem__), dtype=torch.int64)  # ascending positions
    return Hits(
        [rows[i] for i in order.tolist()],
        torch.cat([p[1] for p in parts])[order],
        torch.cat([p[2] for p in parts])[order],
        None if parts[0][3] is None else torch.cat([p[3] for p in parts])[order],
        first["flops_per_nfe"],
        first["decode_flops"],
    )


def read_scores(path: Path) -> tuple[list, list, Any]:
    """(keys, scores, verify_flops) of the score file at ``path``; ValueError, KeyError or TypeError when it is
    not a readable, whole score file of this ``FORMAT``."""
    data = read_whole(path)
    if file_digest(data) != path.name.removesuffix(".json"):
        raise ValueError("torn or foreign score file")
    doc = json.loads(data)
    keys, scores, flops = doc["keys"], doc["scores"], doc["verify_flops"]
    if doc["format"] != FORMAT or not isinstance(keys, list) or len(keys) != len(scores):
        raise ValueError("another layout")
    return keys, scores, flops


def score_file(keys: list[str], scores: list[float | None], verify_flops: float | None) -> bytes:
    """The bytes of a score file of ``scores`` (None for a NaN) of ``keys`` and their ``verify_flops``."""
    doc = {"format": FORMAT, "verify_flops": verify_flops, "keys": keys, "scores": scores}
    return (json.dumps(doc, allow_nan=False) + "\n").encode()
