"""File helpers: atomic writes, append-only JSONL, safetensors weights, ADM-style .npz, PNG.

Nothing here overwrites a finished file in place: every write goes to a temporary file in the same
folder and is renamed over the target, so a crash leaves either the old file or the new one. The
temporary files are named in this program's own pattern (``.<name>.noisesearch-XXXXXXXX.tmp``,
``is_own_temp``), so that a clean-up after a crash removes those and never a user's ``.x.tmp``.

A write refused by the system (a full disk, a read-only folder) raises ``OSError`` naming the file
written (never the temporary file): the command line prints it as one line.

JSON read back here is at most ``MAX_DEPTH`` levels deep: a deeper document (``[[[[...]]]]`` 100,000
deep) is a ``UserError``, never a ``RecursionError``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from noisesearch.errors import UserError
from noisesearch.keyframes import keyframe_strip

_UMASK = os.umask(0)
os.umask(_UMASK)


TEMP_MARK = ".noisesearch-"  # temporary files of atomic writes: .<name>.noisesearch-<8 random characters>.tmp
_OWN_TEMP = re.compile(r"\..+\.noisesearch-[a-z0-9_]{8}\.tmp")  # mkstemp's random part: 8 of [a-z0-9_]


def is_own_temp(name: str) -> bool:
    """Whether a file name is that of an atomic write's temporary file (``atomic_write_bytes``), exactly."""
    return _OWN_TEMP.fullmatch(name) is not None


def remove_own_temps(folder: Path) -> int:
    """Remove the temporary files of interrupted atomic writes directly in ``folder`` (not below); their count.

    Only names of this program's exact pattern (``is_own_temp``) go: nothing else is touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if is_own_temp(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` as an ``OSError`` that names ``path`` (the file the user knows, not a temporary one)."""
    if e.errno is None:
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; an ``OSError`` names ``path``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, inf) replaced by None, so it is valid JSON.

    JSON has no NaN or Infinity; Python's ``json`` would write them anyway and other readers then
    fail. A failed score is written as ``null``.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """``json.dumps`` of ``json_safe(obj)`` with sorted keys; refuses anything that is not valid JSON."""
    try:  # most rows hold no NaN or inf: json_safe would return them unchanged, so skip its walk
        return json.dumps(obj, sort_keys=True, allow_nan=False, **kwargs)
    except ValueError:  # a non-finite float somewhere (json's only ValueError here)
        return json.dumps(json_safe(obj), sort_keys=True, allow_nan=False, **kwargs)


def write_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON with sorted keys (byte-stable; NaN/inf as null)."""
    atomic_write_bytes(path, (dumps(obj, indent=2) + "\n").encode())


MAX_DEPTH = 64  # nesting levels of JSON (and YAML configs) read back; a row or a config has a handful


def too_deep(obj, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and dicts in ``obj`` nest more than ``limit`` levels (walked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads_bounded(data: bytes | str, where: str):
    """``json.loads`` of ``data``, refusing nesting deeper than ``MAX_DEPTH`` with a ``UserError`` on ``where``.

    ``json.JSONDecodeError`` and ``UnicodeDecodeError`` pass through (the callers name them).
    """
    deep = UserError(f"{where} is nested deeper than {MAX_DEPTH} levels; it is not data this program wrote")
    try:
        obj = json.loads(data)
    except RecursionError:
        raise deep from None
    brackets = (b"[", b"{") if isinstance(data, bytes) else ("[", "{")
    if data.count(brackets[0]) + data.count(brackets[1]) > MAX_DEPTH and too_deep(obj):  # fewer cannot nest deeper
        raise deep
    return obj


def os_error_of(e: BaseException | None) -> OSError | None:
    """The ``OSError`` (with an errno) behind ``e``: ``e`` itself, or the one a wrapper carries.

    Ray re-raises an actor's exception as ``RayTaskError(OSError)``, an ``OSError`` without its errno
    whose ``cause`` holds the original; an exception raised ``from`` an ``OSError`` carries it too.
    """
    for _ in range(8):
        if e is None:
            return None
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e = getattr(e, "cause", None) or e.__cause__
    return None


READ_JSON_MAX_BYTES = 64 * 2**20  # a sweep.json holds a config of at most 1 MiB of YAML


def read_json(path: Path):
    """A JSON file's content; ``UserError`` naming the file if it is not a regular file of valid JSON."""
    from noisesearch.checks import read_input_bytes

    data = read_input_bytes(path, what="JSON file", max_bytes=READ_JSON_MAX_BYTES, hint="give a JSON file")
    try:
        return loads_bounded(data, repr(str(path)))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{str(path)!r} is not valid JSON") from None


def append_jsonl(path: Path, row: dict | list[dict]) -> None:
    """Append one row (or a list of rows, in one write) to a JSONL file and flush it to disk (NaN/inf as null).

    A list costs one ``fsync`` in all: a sweep appends a chunk's rows together, since syncing each
    row took most of a small sweep's time. A crash in the middle leaves at most one half line.
    """
    rows = row if isinstance(row, list) else [row]
    text = "".join(dumps(r) + "\n" for r in rows)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _naming(e, path) from None


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file (each at most ``MAX_DEPTH`` levels deep)."""
    with open(path, encoding="utf-8") as f:
        return [loads_bounded(line, f"{str(path)!r} line {n}") for n, line in enumerate(f, start=1) if line.strip()]


def read_jsonl_numbered(path: Path) -> tuple[list[tuple[int, dict]], bytes]:
    """(line number, row) of every row of an append-only JSONL file, and the unfinished last line.

    Only reads. A last line without its newline that is not valid JSON was never a finished row: it
    is returned apart (``b""`` if none; ``repair_jsonl`` cuts it). A broken line anywhere else, a
    line that is JSON but not an object, or one nested deeper than ``MAX_DEPTH``, is an error naming
    the line.
    """
    from noisesearch.checks import check_input_file

    path = check_input_file(path, what="rows file", max_bytes=2**62, hint="give a sweep's JSONL file")
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows, half = [], b""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = loads_bounded(line, f"{str(path)!r} line {n}")
        except UserError as e:
            raise UserError(f"{e}; fix or remove that line") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            if n == len(lines):  # no newline after it: an interrupted append
                half = line
                break
            raise UserError(f"{str(path)!r} line {n} is not valid JSON; fix or remove that line") from None
        if not isinstance(row, dict):
            raise UserError(f"{str(path)!r} line {n} is a JSON {type(row).__name__}, not an object (one row per line)")
        rows.append((n, row))
    return rows, half


def read_jsonl_rows(path: Path) -> tuple[list[dict], bytes]:
    """Rows of an append-only JSONL file and its unfinished last line (``read_jsonl_numbered`` without numbers)."""
    numbered, half = read_jsonl_numbered(path)
    return [row for _, row in numbered], half


def repair_jsonl(path: Path) -> bool:
    """Make an append-only JSONL file end with a newline: cut an unfinished last line (True if it did).

    A last line that is a whole row but lacks its newline gets the newline (the next append would
    otherwise join it); one that is not valid JSON is cut off. Only writers (``sweep``) call this.
    """
    path = Path(path)
    if not path.exists():
        return False
    _, half = read_jsonl_rows(path)
    size = path.stat().st_size
    try:
        if half:
            with open(path, "r+b") as f:
                f.truncate(size - len(half))
                f.flush()
                os.fsync(f.fileno())
            return True
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                last = f.read(1)
            if last != b"\n":
                with open(path, "ab") as f:
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())
    except OSError as e:
        raise _naming(e, path) from None
    return False


def read_jsonl_tolerant(path: Path) -> list[dict]:
    """Rows of an append-only JSONL file after ``repair_jsonl`` (a writer's read before it appends)."""
    repair_jsonl(path)
    return read_jsonl_rows(path)[0]


def ensure_out_dir(path: Path) -> Path:
    """Create the output folder ``path`` (and parents); a clear error if it cannot be a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {str(path)!r} is a file; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the output folder {str(path)!r}: {e.strerror}; give a folder you can write to"
        ) from None
    return path


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (B, C, H, W) in [0, 1] -> uint8 array (B, H, W, C), as ADM-style .npz files hold."""
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8)  # (B, C, H, W)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def save_npz(path: Path, images: torch.Tensor | np.ndarray, labels, *extra: np.ndarray) -> None:
    """Write an ADM-style sample file: ``arr_0`` uint8 (N, H, W, C), ``arr_1`` int64 labels (N,).

    ``images`` are (N, C, H, W) in [0, 1], or already uint8 (N, H, W, C); ``extra`` arrays become
    ``arr_2``, ... . The bytes depend only on the arrays (zip entries carry a fixed date).
    """
    import io

    arr = images if isinstance(images, np.ndarray) else images_to_uint8(images)
    buf = io.BytesIO()
    np.savez(buf, arr, np.asarray(labels, dtype=np.int64), *extra)
    atomic_write_bytes(path, buf.getvalue())


def save_png(path: Path, image: torch.Tensor, *, scale: int = 1) -> None:
    """Write one image (C, H, W) in [0, 1] as PNG, enlarged ``scale`` times (nearest neighbour); a video
    (C, F, H, W) is written as its strip of 4 evenly spaced keyframes (sweeps' sample folders)."""
    import io

    from PIL import Image

    if image.dim() == 4:
        image = keyframe_strip(image)
    arr = images_to_uint8(image[None])[0]  # (H, W, C)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    mode_arr = arr[:, :, 0] if arr.shape[2] == 1 else arr
    buf = io.BytesIO()
    Image.fromarray(mode_arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_weights(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save tensors as safetensors with string metadata."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; a clear error for a missing file or any other format.

    Weights never load through pickle here: a ``.pt``/``.ckpt`` file is refused.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"weights file {str(path)!r} is not a safetensors file ({e}); only safetensors weights are accepted"
        ) from None
    return tensors, metadata
