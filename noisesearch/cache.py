"""The replay cache: a content-addressed store of finished candidates, so no candidate is paid twice.

A *cacheable* job is a pure function of its key: it starts at the schedule's first sigma from a
noise, runs with a deterministic sampler to sigma = 0, takes no per-step injected noises, no
gradient and no known x0-prediction (``cacheable``). Its key (``job_key``) is a head, a SHA-256 of

- the model's identity (``model_identity``): its class, name, public options (size, guidance form,
  pipeline arguments, tensors and images in them by their bytes' hash) and a hash of every weight
  tensor's bytes, computed once per model object and again when an option or a weight changes
  (torch's version counters see an in-place edit);
- the sampler's name, the exact sigma schedule (its float64 bytes), the guidance scale, the target
  and the noise's shape and dtype;

followed by the starting noise: its seed when it is a seeded draw (``Jobs.noise_seed``), else the
SHA-256 of its exact bytes.

An entry holds the end state (the latent, exact), the decoded image (exact, or uint8 with
``images="uint8"``), the decoded x0-previews a verifier used (by step), and the FLOPs the ledger
needs to charge a replay as if computed. Scores are kept apart, per verifier identity
(``verifier_identity``: class, name, simple options and weights hash, or a declared ``cache_key``);
a verifier without a stable identity (a callable without ``cache_key``) or whose scores depend on
the batch (``batch_dependent``: the rank ensemble) never gets a cached score.

Files: one pack per batch of computed candidates (``DIR/packs/<digest>.safetensors``) and one score
file per batch and verifier (``DIR/scores/<verifier id>/<digest>.json``), each written whole and renamed
into place, named by the digest of its bytes (checked on read). Two processes (Ray actors) or a
``kill -9`` can leave at most an orphaned ``.tmp`` file, never a partial pack in use; a reader treats an
unreadable, torn or missing file as a miss. With ``max_mb`` the least recently used files (by
modification time, touched on every hit) are removed once the folder exceeds the cap.

What the cache touches, and what it never does:

- *Its own files* are the regular files (never a symbolic link, FIFO, socket, device or folder) named
  ``packs/<32 hex>.safetensors``, ``scores/<24 hex>/<32 hex>.json`` and its writers' temporary files
  ``.new-*.tmp`` in those folders. Nothing else in the folder is read, followed, changed or removed:
  a reader checks a name and ``lstat`` before opening, opens with ``O_NOFOLLOW | O_NONBLOCK`` and checks
  again (``fstat``) that it got a regular file, so a FIFO never blocks it; anything else there is a miss.
- *A hit* is a key found in one of its own packs whose bytes match the digest in its name, of this
  ``FORMAT``, holding the preview the run needs, and stored in a mode the run accepts: an entry stored
  with ``images="uint8"`` (its image quantised) is a miss for a run in ``"exact"`` mode; an exact entry
  is replayed as it is in either mode (it is the run's own image, as a fresh run would score it). Scores
  are only ever stored for images a run computed or replayed exactly: scores a ``"uint8"`` run takes of
  quantised replays are used in that run only, so a stored score is always the score of the exact image.
- *Opening* checks before it writes anything (one temporary file is made and removed at once to probe
  each folder that exists): the folder is a folder (or can be made), ``packs`` and ``scores`` are real
  folders if present, and each can be written; otherwise one ``UserError`` naming the path, and nothing
  is made. Only then are the missing folders made.
- *Storing* is an optimisation, so it never fails a run: any ``OSError`` while storing or evicting
  (a full disk or quota, a read-only folder, something that is not the cache's in the way of a file it
  writes, which is never replaced) prints one ``warning:`` line naming the path, once per cache object,
  and the run goes on without storing (``CandidateCache._storing``, the one place this is decided).
- *Eviction* (``max_mb``) and ``remove_created`` remove only the cache's own files, and folders only when
  empty (``os.rmdir``), never through a symbolic link.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import os
import re
import stat
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noisesearch import _io
from noisesearch.checks import file_kind
from noisesearch.errors import UserError

IMAGE_MODES = ("exact", "uint8")
REHASH_BYTES = 64 * 2**20  # weights up to this size are kept as bytes and compared on every identity call
MEMO_BYTES = 256 * 2**20  # packs kept in memory per process after their first read
FORMAT = "3"  # bump when the entry layout changes: old entries then miss (3: no score of a quantised image)
_SECRET_WORDS = ("key", "token", "secret", "password", "usage")  # never part of an identity (nor logged)
_TEMP = r"\.new-[a-z0-9_]+\.tmp"  # what ``tempfile.mkstemp(prefix=".new-", suffix=".tmp")`` names
PACK_NAME = re.compile(r"[0-9a-f]{32}\.safetensors")
SCORE_NAME = re.compile(r"[0-9a-f]{32}\.json")
VERIFIER_NAME = re.compile(r"[0-9a-f]{24}")
_OWN_PACKS = re.compile(rf"{PACK_NAME.pattern}|{_TEMP}")
_OWN_SCORES = re.compile(rf"{SCORE_NAME.pattern}|{_TEMP}")
_NONBLOCKING_READ = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().reshape(-1)
    if t.device.type == "meta":
        raise ValueError("a weight on the meta device has no bytes")
    return t.cpu().view(torch.uint8).numpy().tobytes()


def _simple(value: Any) -> Any:
    """``value`` as stable JSON data, or None when it is not plain data (objects, tensors, paths)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        items = [_simple(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    if isinstance(value, dict):
        items = {str(k): _simple(v) for k, v in value.items()}
        return None if any(items[str(k)] is None and v is not None for k, v in value.items()) else items
    return None


def _describe(value: Any, depth: int = 0) -> Any:
    """``value`` as stable JSON data for an identity: plain data as it is, tensors, arrays and PIL images
    by the SHA-256 of their bytes (a control image in ``pipeline_kwargs`` changes the key), dtypes,
    devices and paths by name; modules are left to the weights hash, other objects by type name."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if depth > 8:
        return "<deep>"
    if isinstance(value, (list, tuple)):
        return [_describe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, torch.nn.Module):
        return "<module>"
    if isinstance(value, torch.Tensor):
        return {
            "tensor": hashlib.sha256(_tensor_bytes(value)).hexdigest(),
            "dtype": str(value.dtype),
            "shape": list(value.shape),
        }
    tobytes = getattr(value, "tobytes", None)  # numpy arrays, PIL images
    if callable(tobytes):
        try:
            data = tobytes()
        except Exception:
            data = None
        if isinstance(data, bytes):
            extra = [str(getattr(value, a, "")) for a in ("shape", "dtype", "size", "mode")]
            return {type(value).__name__: hashlib.sha256(data).hexdigest(), "meta": extra}
    if isinstance(value, os.PathLike):
        return "<path>"  # where weights were read from is not what they are: the weights hash says that
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _fields(obj: Any) -> dict[str, Any]:
    """``obj``'s own instance fields (``vars``; none for an object without a ``__dict__``): what an identity hashes."""
    return vars(obj) if hasattr(obj, "__dict__") else {}


def _modules_and_tensors(obj: Any) -> list[tuple[str, Any]]:
    """(name, module or tensor) one level inside ``obj``, plus a diffusers pipeline's components."""
    found: list[tuple[str, Any]] = []
    if isinstance(obj, torch.nn.Module):
        found.append(("self", obj))
    fields = _fields(obj)
    for name, value in sorted(fields.items()):
        if isinstance(value, (torch.nn.Module, torch.Tensor)) and value is not obj:
            found.append((name, value))
        elif isinstance(value, (list, tuple)):
            found += [(f"{name}.{i}", v) for i, v in enumerate(value) if isinstance(v, (torch.nn.Module, torch.Tensor))]
    components = getattr(fields.get("pipe"), "components", None)  # a diffusers pipeline's, when it holds one
    if isinstance(components, dict):
        found += [(f"pipe.{k}", v) for k, v in sorted(components.items()) if isinstance(v, torch.nn.Module)]
    return found


def _weights(found: list[tuple[str, Any]]) -> list[tuple[str, torch.Tensor]]:
    out: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for name, item in found:
        tensors = item.state_dict(keep_vars=True).items() if isinstance(item, torch.nn.Module) else [("", item)]
        for key, t in tensors:
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                out.append((f"{name}.{key}", t))
    return out


_IDENTITIES: weakref.WeakKeyDictionary[Any, tuple[tuple, str, str | None, list[bytes]]] = weakref.WeakKeyDictionary()


def _identity(obj: Any, kind: str) -> str | None:
    """Class, name, public options and weights hash of ``obj``; None without any weight.

    The hash is kept per object. Weights of at most ``REHASH_BYTES`` in all are also kept as bytes and
    compared with the current ones on every call (0.3 ms for digits-large's 2.2 MB, a sixth of hashing
    them), so any edit is seen, also one through ``p.data``, which moves no version counter. Larger
    weights' hash is recomputed when an option changes, a weight's version counter moves (an in-place
    edit, ``load_state_dict``) or its data pointer does (``p.data = t``); an in-place edit through
    ``p.data`` of such a model moves neither, so give it a new ``cache_key`` then."""
    weights = _weights(_modules_and_tensors(obj))
    small = sum(t.numel() * t.element_size() for _, t in weights) <= REHASH_BYTES
    if small:  # compared by their bytes below
        marks = tuple((name, id(t), t.dtype, tuple(t.shape)) for name, t in weights)
    else:  # an in-place edit bumps the version, a new tensor (``p.data = t``) moves the data pointer
        marks = tuple((id(t), t._version, 0 if t.device.type == "meta" else t.data_ptr()) for _, t in weights)
    options = {
        k: _describe(v)
        for k, v in sorted(_fields(obj).items())
        if not k.startswith("_") and not any(w in k.lower() for w in _SECRET_WORDS)
    }
    head = _io.dumps({"kind": kind, "class": f"{type(obj).__module__}.{type(obj).__qualname__}", **options})
    try:
        known = _IDENTITIES.get(obj)
    except TypeError:
        known = None
    try:
        if known is not None and known[0] == marks and known[1] == head:
            if not small or all(_tensor_bytes(t) == data for (_, t), data in zip(weights, known[3])):
                return known[2]
        h = hashlib.sha256(head.encode())
        kept = []
        for name, t in weights:
            data = _tensor_bytes(t)
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(data)
            if small:
                kept.append(data)
    except (ValueError, RuntimeError):
        return None  # weights that cannot be read (offloaded to meta): no stable identity
    identity = h.hexdigest() if weights else None
    try:
        _IDENTITIES[obj] = (marks, head, identity, kept)
    except TypeError:
        pass
    return identity


# -- declared contracts: what the engine reads of a model, verifier or algorithm beyond its protocol's methods.
# Each is declared with its default on an info record (``models.base.ModelInfo``, ``VerifierInfo`` below, kept
# here because the accountant and the verifiers both read it, ``algorithms.base.AlgorithmInfo``, ``Identity``)
# and read only through ``declared``, so an object that leaves a declaration out (a user's own) gets the default.


def declared(obj: Any, name: str, default: Any) -> Any:
    """``obj``'s declared attribute ``name``, or ``default`` where it declares none (absent, or None).

    The one place a declared capability is looked up; callers are the info builders (``model_info``,
    ``verifier_info``, ``algorithm_info``, ``declared_identity``), never the engine directly.
    """
    value = getattr(obj, name, None)
    return default if value is None else value


@dataclass(frozen=True)
class Identity:
    """What a model or verifier declares about its identity in the cache, each name's default here.

    ``cache_key``: a name standing for its weights and options (e.g. one whose weights live elsewhere);
    ``batch_dependent``: its scores depend on the other images of the batch (the rank ensemble): never replayed;
    ``needs_cache_key``: only a declared ``cache_key`` can name what it computes (a wrapped callable);
    ``members``: an ensemble's verifiers, whose identities are part of its own.
    """

    cache_key: str | None = None
    batch_dependent: bool = False
    needs_cache_key: bool = False
    members: tuple = ()


def declared_identity(obj: Any) -> Identity:
    """``obj``'s ``Identity`` declarations, each left out falling back to its default (``model_info`` and
    ``verifier_info`` take theirs from here)."""
    key, members = declared(obj, "cache_key", None), declared(obj, "members", ())
    return Identity(
        cache_key=key if isinstance(key, str) else None,
        batch_dependent=bool(declared(obj, "batch_dependent", False)),
        needs_cache_key=bool(declared(obj, "needs_cache_key", False)),
        members=tuple(members) if isinstance(members, (list, tuple)) else (),
    )


@dataclass(frozen=True)
class VerifierInfo:
    """A verifier's declared capabilities: each is the verifier's attribute of that name, or the default here.

    Built by ``verifier_info`` (the one place they are read). ``usage`` is the verifier's live counters (the
    accountant reads a fresh info after a call to see what it cost).
    """

    preview_sigma: float | None = None  # the sigma of the x0-previews it wants (None: none)
    value_range: tuple[float, float] | None = None  # (lo, hi) bounding every finite score (None: not stated)
    domain: str | None = None  # the model family whose images it understands (None: any)
    video: bool = False  # it scores whole videos (B, C, F, H, W) itself
    takes_frames: bool = True  # False: a video's frames cannot be scored one by one
    usage: dict | None = None  # an API grader's counters (None: not metered, FLOPs measured)
    score: Callable[..., torch.Tensor] | None = None  # VerifierExtras.score (None: not differentiable)
    flops_per_row: Callable[[tuple], float | None] | None = None  # VerifierExtras.flops_per_row (None: measured)
    identity: Identity = Identity()  # what the replay cache keys its scores by

    @property
    def metered(self) -> bool:
        """An API grader: it counts tokens and cost in ``usage``, and its FLOPs are unknown."""
        return self.usage is not None


def verifier_info(verifier: Any) -> VerifierInfo:
    """``verifier``'s declared capabilities (``VerifierInfo``), each left out falling back to its default.

    The only place the engine looks up a verifier attribute outside the ``Verifier`` protocol (``name``,
    ``__call__``); the types are ``verifiers.base.VerifierExtras``'s.
    """
    return VerifierInfo(
        preview_sigma=declared(verifier, "preview_sigma", None),
        value_range=declared(verifier, "value_range", None),
        domain=declared(verifier, "domain", None),
        video=bool(declared(verifier, "video", False)),
        takes_frames=declared(verifier, "takes_frames", True) is not False,
        usage=declared(verifier, "usage", None),
        score=declared(verifier, "score", None),
        flops_per_row=declared(verifier, "flops_per_row", None),
        identity=declared_identity(verifier),
    )


def model_identity(model) -> str | None:
    """A hash of the model's weights and output-changing options; None when it has no readable weights.

    A model may declare ``cache_key`` (a string) instead, e.g. one whose weights live elsewhere.
    """
    declared = declared_identity(model).cache_key
    if declared is not None:
        return hashlib.sha256(f"model:{declared}".encode()).hexdigest()
    return _identity(model, "model")


def verifier_identity(verifier) -> str | None:
    """A short identity of the verifier's scores, or None when its scores must never be replayed.

    None for a batch-dependent verifier (``batch_dependent``: the rank ensemble) and for one that declares
    ``needs_cache_key`` (a callable wrapped by ``verifiers.custom``: nothing but a key can name what its code
    computes) without a declared ``cache_key``; a declared ``cache_key`` wins.
    """
    declared = declared_identity(verifier)
    if declared.batch_dependent:
        return None
    if declared.cache_key:
        return hashlib.sha256(f"verifier:{declared.cache_key}".encode()).hexdigest()[:24]
    if declared.needs_cache_key:
        return None
    ids = [verifier_identity(m) for m in declared.members]  # an ensemble: its members' identities too
    if any(i is None for i in ids):
        return None
    own = _identity(verifier, "verifier")
    if own is None:  # no weights: class, name and options only
        options = {k: _describe(v) for k, v in sorted(_fields(verifier).items()) if not k.startswith("_")}
        options = {k: v for k, v in options.items() if not any(w in k.lower() for w in _SECRET_WORDS)}
        own = hashlib.sha256(_io.dumps({"class": type(verifier).__qualname__, **options}).encode()).hexdigest()
    return hashlib.sha256(_io.dumps([own, ids]).encode()).hexdigest()[:24]


def cacheable(jobs, problems) -> bool:
    """Whether the rows of ``jobs`` (a ``Jobs`` batch of the run ``problems``) are each a pure function of
    their key (see the module docstring)."""
    from noisesearch.samplers import get_sampler

    return (
        problems.starts_at_noise(jobs)
        and tuple(jobs.sigmas) == tuple(problems.sigmas)
        and jobs.sigmas[-1] == 0
        and jobs.noises is None
        and jobs.denoised is None
        and not jobs.grad
        and not jobs.score_end
        and not get_sampler(jobs.sampler or problems.sampler).stochastic
    )


@functools.lru_cache(maxsize=256)
def _sigmas_digest(sigmas: tuple[float, ...]) -> str:
    return hashlib.sha256(torch.tensor(sigmas, dtype=torch.float64).numpy().tobytes()).hexdigest()


def job_keys(model_id: str, jobs, problems, guidance: float) -> list[str]:
    """The content address of each row of a cacheable ``Jobs`` batch of the run ``problems``.

    A key is ``<head>s<seed>`` for a seeded noise and ``<head>h<hash>`` for any other (the first 32 hex
    digits of the SHA-256 of its bytes), where ``head`` is the first 32 hex digits of the SHA-256 of
    everything else (format, model, sampler, schedule, guidance, noise shape and dtype, then the target).
    The head is computed once per search in the batch, from a text serialised once per batch, so a
    seeded key costs no hash of its own."""
    x = jobs.x
    shape, dtype = (problems.noise_shape, torch.float32) if x is None else (tuple(x.shape[1:]), x.dtype)
    sampler = jobs.sampler or problems.sampler
    run = "\x1f".join(
        (
            FORMAT,
            model_id,
            sampler,
            _sigmas_digest(tuple(float(s) for s in jobs.sigmas)),
            repr(float(guidance)),
            f"{tuple(shape)}:{dtype}",
        )
    ).encode()
    heads: dict[int, str] = {}
    owners = jobs.owner.tolist()
    for i in set(owners):
        target = problems.targets[i]
        if type(target) is int:  # a class label: what _io.dumps writes, without its cost
            text = str(target)
        else:
            plain = _simple(target)
            text = _io.dumps(plain) if plain is not None or target is None else repr(target)
        heads[i] = hashlib.sha256(run + b"\x1f" + text.encode()).hexdigest()[:32]
    seeds = jobs.noise_seed or [None] * len(owners)
    if None not in seeds:
        return [f"{heads[i]}s{seed:d}" for i, seed in zip(owners, seeds)]
    raw = _row_bytes(problems.start_states(jobs))  # (n, bytes per row): one copy of the batch to the host
    return [
        f"{heads[i]}s{seed:d}" if seed is not None else f"{heads[i]}h{hashlib.sha256(raw[r]).hexdigest()[:32]}"
        for r, (i, seed) in enumerate(zip(owners, seeds))
    ]


def _row_bytes(x: torch.Tensor):
    """The raw bytes of each row of ``x`` (B, ...) as a (B, bytes) uint8 array: row r's are ``_tensor_bytes(x[r])``."""
    return x.detach().contiguous().reshape(len(x), -1).cpu().view(torch.uint8).numpy()


def job_key(model_id: str, jobs, problems, guidance: float) -> str:
    """The key of the first row of ``jobs`` (see ``job_keys``)."""
    return job_keys(model_id, jobs.rows(slice(0, 1)), problems, guidance)[0]


def check_settings(max_mb, images) -> None:
    """Refuse a size cap that is not a positive number of MiB, or an unknown images mode, in one line."""
    if max_mb is not None and (
        isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not math.isfinite(max_mb) or max_mb <= 0
    ):
        raise UserError(f"cache size cap must be a positive number of MiB, got {max_mb!r}")
    if images not in IMAGE_MODES:
        raise UserError(f"cache images mode {images!r} is unknown; accepted: {', '.join(IMAGE_MODES)}")


def file_digest(data: bytes) -> str:
    """The name a cache file with these bytes has (without its suffix): 32 hex digits of their SHA-256."""
    return hashlib.sha256(data).hexdigest()[:32]


def _write(folder: Path, suffix: str, parts: list) -> str:
    """Write the concatenated ``parts`` (bytes-like) whole as ``folder/<digest><suffix>``; its name.

    The bytes go to a temporary file, hashed as they are written (no joined copy), which is then renamed
    into place (no fsync, see ``CandidateCache``). A name taken by anything but a regular file (a folder,
    a link, a FIFO: not the cache's) is never replaced: ``FileExistsError``. An ``OSError`` without a path
    (a full disk while writing) gets ``folder`` as its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-", suffix=".tmp")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                h.update(part)
                f.write(part)
        name = f"{h.hexdigest()[:32]}{suffix}"
        target = folder / name
        kind = _kind(target)
        if kind not in (None, "a file"):
            raise FileExistsError(errno.EEXIST, f"{kind} the cache did not write is in the way", str(target))
        os.replace(tmp, target)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(folder)
        raise
    return name


def _kind(path: Path) -> str | None:
    """What is at ``path`` without following a link ("a file", "a folder", "a symbolic link", ...); None: nothing."""
    try:
        return file_kind(os.lstat(path).st_mode)
    except OSError:  # missing, under a file, or not searchable: nothing this code could use
        return None


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder itself (not a symbolic link to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _open_regular(path: Path):
    """``path`` opened for reading (a binary file object), or None unless it is a regular file: a link is
    not followed and a FIFO or device never opened for long (checked before and after a non-blocking open)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, _NONBLOCKING_READ)
    except OSError:
        return None
    f = os.fdopen(fd, "rb")
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return f
    except OSError:
        pass
    f.close()
    return None


def _scan(folder: Path, names: re.Pattern) -> list[str]:
    """The regular files in ``folder`` (itself a folder, not a link to one) whose whole name matches ``names``;
    [] when it cannot be listed."""
    if not _is_folder(folder):
        return []
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if names.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def _own_folders(root: Path) -> list[tuple[Path, re.Pattern | None]]:
    """The cache's own folders under ``root`` that exist (``packs``, ``scores`` and ``scores/<verifier id>``,
    none through a link) with the names of the files it writes there (None: none)."""
    found: list[tuple[Path, re.Pattern | None]] = []
    if _is_folder(root / "packs"):
        found.append((root / "packs", _OWN_PACKS))
    if _is_folder(root / "scores"):
        found.append((root / "scores", None))
        try:
            with os.scandir(root / "scores") as entries:
                ids = [e.name for e in entries if VERIFIER_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
        except OSError:
            ids = []
        found += [(root / "scores" / i, _OWN_SCORES) for i in sorted(ids)]
    return found


def _own_files(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The cache's own regular files under ``root`` (see the module docstring) with their ``lstat``."""
    for folder, names in _own_folders(root):
        for name in _scan(folder, names) if names is not None else ():
            try:
                st = os.lstat(folder / name)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield folder / name, st


def holds_entries(root) -> bool:
    """Whether the cache folder ``root`` holds any file of the cache's own (a pack, a score file)."""
    return any(not p.name.endswith(".tmp") for p, _ in _own_files(Path(root)))


def cache_entries(root) -> set[Path]:
    """The cache's own files and folders in the cache folder ``root`` now (``root`` itself included when it
    is a folder): what ``remove_created`` keeps."""
    root = Path(root)
    found = {p for p, _ in _own_files(root)} | {folder for folder, _ in _own_folders(root)}
    return found | ({root} if os.path.isdir(root) else set())


def remove_created(root, before: set[Path]) -> None:
    """Remove from the cache folder ``root`` the cache's own files that are not in ``before``
    (``cache_entries`` taken earlier), then its own folders not in ``before`` that are left empty.

    Anything that is not the cache's own (a user's file put there, even while the run wrote) stays,
    and so do the folders holding it; a file that cannot be removed stays too."""
    root = Path(root)
    for path, _ in list(_own_files(root)):
        if path not in before:
            try:
                path.unlink()
            except OSError:
                pass
    folders = [folder for folder, _ in _own_folders(root)] + [root]
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        if folder not in before:
            try:
                os.rmdir(folder)  # only an empty folder, never a link
            except OSError:
                pass


def _probe(folder: Path) -> None:
    """Make and remove one temporary file in ``folder``: OSError when it cannot be written."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)


def _check_folder(path: Path) -> None:
    """Refuse, in one ``UserError`` line and writing nothing, a cache folder that cannot work: ``path`` not a
    folder, ``packs`` or ``scores`` in it not real folders, or any of them (or, for a missing ``path``, its
    nearest existing parent, where it would be made) not writable."""
    text = str(path)
    if os.path.exists(path) and not os.path.isdir(path):  # the folder named may be a link to one
        raise UserError(f"cache {text!r} is {_kind(path) or 'not a folder'}; give a folder (it is created if missing)")
    probes = [path]
    for sub in ("packs", "scores"):
        kind = _kind(path / sub)
        if kind not in (None, "a folder"):
            raise UserError(
                f"cache {str(path / sub)!r} is {kind}, not a folder: the cache keeps its {sub} there; "
                "move it away or give another cache folder"
            )
        if kind is not None:
            probes.append(path / sub)
    while not os.path.lexists(probes[0]) and probes[0] != probes[0].parent:
        probes[0] = probes[0].parent
    for folder in probes:
        try:
            if not os.path.isdir(folder):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            _probe(folder)
        except OSError as e:
            shown = text if folder == probes[0] else str(folder)
            raise UserError(f"cannot write the cache folder {shown!r}: {e.strerror}; give a writable folder") from None


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


class CandidateCache:
    """The replay cache in folder ``path`` (created); see the module docstring.

    Storage: one *pack* per batch of computed candidates, ``packs/<digest>.safetensors`` (tensors ``x``,
    ``image`` and ``preview@<step>``, row n for key n; the keys and FLOPs in its metadata), and one score file per
    batch and verifier, ``scores/<verifier id>/<digest>.json`` (``keys``, ``scores`` in their order, ``verify_flops``). A file's
    name is the digest of its bytes (``file_digest``), checked on every read, so a torn or foreign file is a
    miss. A pack is written from the tensors' own memory and read without a copy (``_parse``).
    Files are written whole and renamed into place; the cache is derived data, so they are not fsynced
    (a ``kill -9`` loses nothing the kernel holds; a power cut can lose recent packs, which are then
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
                self._folder(sub)
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
        self._memo: dict[str, tuple] = {}  # pack name -> (tensors, metadata), least recently used first
        self._sizes: dict[str, int] = {}
        self._memo_bytes = 0
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
            try:
                header = _header(self.path / "packs" / name)
                order = json.loads(header["__metadata__"]["keys"])
                quantised = _quantised(header["image"]["dtype"] == "U8", header["__metadata__"]["image_dtype"])
            except (OSError, KeyError, TypeError, ValueError):
                continue
            parts = {t for t in header if t != "__metadata__"}
            keys = {} if quantised and self.images == "exact" else {key: parts for key in order}  # a miss
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
        parts = []
        for name, rows in by_pack.items():
            loaded = self._load(name)
            if loaded is None:
                continue
            tensors, meta = loaded
            row_of = meta["row_of"]
            rows = [n for n in rows if keys[n] in row_of]
            if not rows or (meta["quantised"] and self.images == "exact"):
                continue
            if meta["quantised"]:
                self._quantised.update(keys[n] for n in rows)
            else:
                self._quantised.difference_update(keys[n] for n in rows)
            index = torch.tensor([row_of[keys[n]] for n in rows], dtype=torch.int64)
            dtype = getattr(torch, meta["image_dtype"])
            x = tensors["x"].index_select(0, index)
            image = self._restore(tensors["image"].index_select(0, index), dtype)
            preview = self._restore(tensors[need].index_select(0, index), dtype) if need else None
            parts.append((rows, x, image, preview, meta))
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
            None if need is None else torch.cat([p[3] for p in parts])[order],
            first["flops_per_nfe"],
            first["decode_flops"],
        )

    def _load(self, name: str):
        path = self.path / "packs" / name
        if name in self._memo:  # a pack never changes (its name is its digest): read it once per process
            self._memo[name] = self._memo.pop(name)  # most recently used last
            self._touch(path)
            return self._memo[name]
        try:
            f = _open_regular(path)
            if f is None:
                raise ValueError("not the cache's file")
            with f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                if f.readinto(data) != len(data):
                    raise ValueError("short read")
            if file_digest(data) != name.removesuffix(".safetensors"):
                raise ValueError("torn or foreign pack")
            tensors, raw = _parse(data)
            if raw.get("format") != FORMAT:
                raise ValueError("another format")
            keys = json.loads(raw["keys"])
            meta = {
                "row_of": {key: r for r, key in enumerate(keys)},
                "image_dtype": raw["image_dtype"],
                "flops_per_nfe": json.loads(raw["flops_per_nfe"]),
                "decode_flops": json.loads(raw["decode_flops"]),
            }
            if not {"x", "image"} <= tensors.keys() or any(len(t) != len(keys) for t in tensors.values()):
                raise ValueError("rows do not match the keys")
            meta["quantised"] = _quantised(tensors["image"].dtype == torch.uint8, raw["image_dtype"])
            self._touch(path)  # last used: the LRU order
        except Exception:  # missing (evicted), torn or foreign: its keys miss, never an error
            self._forget(name)
            return None
        self._memo[name] = (tensors, meta)
        self._memo_bytes += len(data)
        self._sizes[name] = len(data)
        while self._memo_bytes > MEMO_BYTES and len(self._memo) > 1:
            old = next(iter(self._memo))
            del self._memo[old]
            self._memo_bytes -= self._sizes.pop(old)
        return tensors, meta

    @staticmethod
    def _touch(path: Path) -> None:
        try:
            os.utime(path, follow_symlinks=False)
        except (OSError, NotImplementedError):  # evicted by another process meanwhile, or read-only: no matter
            pass

    @staticmethod
    def _restore(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if image.dtype == torch.uint8 and dtype != torch.uint8:
            return (image.float() / 255).to(dtype)
        return image

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
            f = _open_regular(folder / name)
            if f is None:
                continue
            try:
                with f:
                    data = f.read()
                if file_digest(data) != name.removesuffix(".json"):
                    continue
                doc = json.loads(data)
                keys, scores, flops = doc["keys"], doc["scores"], doc["verify_flops"]
                if doc["format"] != FORMAT or not isinstance(keys, list) or len(keys) != len(scores):
                    continue
                for key, score in zip(keys, scores):
                    table.setdefault(key, (score, flops))
                seen.add(name)
                self._touch(folder / name)
            except (OSError, ValueError, KeyError, TypeError):  # unreadable or another layout: not scored
                continue

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
        tensors = {"x": xs, "image": self._store(images), **{k: self._store(v) for k, v in previews.items()}}
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
            name = _write(self._folder("packs"), ".safetensors", parts)
            stored = {"x", "image", *previews}
            self._packs[name] = {key: stored for key in keys}
            for key in keys:
                self._where.setdefault(key, []).append(name)
            self._grow(sum(len(p) for p in parts))

        self._storing(store)

    def _store(self, image: torch.Tensor) -> torch.Tensor:
        if self.images == "uint8":
            return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        return image

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
        doc = {"format": FORMAT, "verify_flops": flops, "keys": keys, "scores": kept}
        data = (json.dumps(doc, allow_nan=False) + "\n").encode()

        def store() -> None:
            name = _write(self._folder("scores", verifier_id), ".json", [data])
            self._score_files.setdefault(verifier_id, set()).add(name)
            mine = self._scores.setdefault(verifier_id, {})
            for key, score in zip(keys, kept):
                mine.setdefault(key, (score, flops))
            self._grow(len(data))

        self._storing(store)

    def _folder(self, *names: str) -> Path:
        """The cache's folder ``path/names...``, made if missing; NotADirectoryError when something else (a
        file, a link) has its name."""
        self.path.mkdir(parents=True, exist_ok=True)
        folder = self.path
        for name in names:
            folder = folder / name
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass
            if not _is_folder(folder):
                kind = _kind(folder) or "nothing"
                raise NotADirectoryError(errno.ENOTDIR, f"{kind} is where the cache keeps a folder", str(folder))
        return folder

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

    def _files(self) -> list[tuple[Path, os.stat_result]]:
        """The cache's own files (packs, score files, temporary files) with their ``lstat``."""
        return list(_own_files(self.path))

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
        return sum(st.st_size for p, st in self._files() if not p.name.endswith(".tmp"))

    def trim(self) -> None:
        """Remove the least recently used files (packs and score files) until the folder fits ``max_mb``.

        Also removes its own temporary files older than an hour (left by a killed writer). Only the cache's
        own files are ever removed (see the module docstring); an ``OSError`` other than a file already gone
        is raised (to ``_storing``).
        """
        if self.max_mb is None:
            return
        files = []
        for p, st in self._files():
            if p.name.endswith(".tmp"):
                if time.time() - st.st_mtime > 3600:
                    p.unlink(missing_ok=True)
            else:
                files.append((st.st_mtime_ns, p.name, p, st.st_size))
        total = sum(f[3] for f in files)
        for _, _, p, size in sorted(files):
            if total <= self.max_mb * 2**20:
                break
            p.unlink(missing_ok=True)
            total -= size
            if p.parent.name == "packs":
                self._forget(p.name)
            else:
                self._score_files.get(p.parent.name, set()).discard(p.name)
                self._scores.pop(p.parent.name, None)  # rebuilt from the files left
                self._score_files.pop(p.parent.name, None)
        self._size = total


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
