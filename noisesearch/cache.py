"""The replay cache: a content-addressed store of finished candidates, so no candidate is paid twice.

A *cacheable* job is a pure function of its key: it starts at the schedule's first sigma from a
noise, runs with a deterministic sampler to sigma = 0, takes no per-step injected noises, no
gradient and no known x0-prediction (``cacheable``). Its key (``job_key``) is the SHA-256 of

- the model's identity (``model_identity``): its class, name, simple options (size, guidance form,
  pipeline arguments ...) and a hash of every weight tensor's bytes, computed once per model object
  and recomputed when a weight changes in place (torch's version counters);
- the sampler's name, the exact sigma schedule (its float64 bytes), the guidance scale and the target;
- the starting noise: its seed when it is a seeded draw (``Job.noise_seed``, with the noise's
  shape), else the SHA-256 of its exact bytes, dtype and shape.

An entry holds the end state (the latent, exact), the decoded image (exact, or uint8 with
``images="uint8"``), the decoded x0-previews a verifier used (by step), and the FLOPs the ledger
needs to charge a replay as if computed. Scores sit beside it, one small file per verifier identity
(``verifier_identity``: class, name, simple options and weights hash, or a declared ``cache_key``);
a verifier without a stable identity (a callable without ``cache_key``) or whose scores depend on
the batch (``batch_dependent``: the rank ensemble) never gets a cached score.

Files: ``DIR/entries/<2 hex>/<key>.safetensors`` and ``<key>.<verifier id>.json``, each written
whole through a temporary file, fsync and rename (``_io.atomic_write_bytes``), so two processes
(Ray actors) or a ``kill -9`` can leave at most an orphaned ``.tmp`` file, never a partial entry;
a reader treats an unreadable or missing file as a miss. With ``max_mb`` the least recently used
entries (by modification time, touched on every hit) are removed once the folder exceeds the cap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from noisesearch import _io
from noisesearch.errors import UserError

IMAGE_MODES = ("exact", "uint8")
FORMAT = "1"  # bump when the entry layout changes: old entries then miss
_SECRET_WORDS = ("key", "token", "secret", "password", "usage")  # never part of an identity (nor logged)


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


def _modules_and_tensors(obj: Any) -> list[tuple[str, Any]]:
    """(name, module or tensor) one level inside ``obj``, plus a diffusers pipeline's components."""
    found: list[tuple[str, Any]] = []
    if isinstance(obj, torch.nn.Module):
        found.append(("self", obj))
    for name, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
        if isinstance(value, (torch.nn.Module, torch.Tensor)) and value is not obj:
            found.append((name, value))
        elif isinstance(value, (list, tuple)):
            found += [(f"{name}.{i}", v) for i, v in enumerate(value) if isinstance(v, (torch.nn.Module, torch.Tensor))]
    components = getattr(getattr(obj, "pipe", None), "components", None)
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


_IDENTITIES: weakref.WeakKeyDictionary[Any, tuple[tuple, str | None]] = weakref.WeakKeyDictionary()


def _identity(obj: Any, kind: str) -> str | None:
    """Class, name, simple public options and weights hash of ``obj``; None without any weight."""
    found = _modules_and_tensors(obj)
    weights = _weights(found)
    versions = tuple((id(t), t._version) for _, t in weights)
    try:
        known = _IDENTITIES.get(obj)
    except TypeError:
        known = None
    if known is not None and known[0] == versions:
        return known[1]
    h = hashlib.sha256()
    options = {
        k: _simple(v)
        for k, v in sorted(vars(obj).items())
        if not k.startswith("_") and not any(w in k.lower() for w in _SECRET_WORDS)
    }
    h.update(_io.dumps({"kind": kind, "class": f"{type(obj).__module__}.{type(obj).__qualname__}", **options}).encode())
    try:
        for name, t in weights:
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(_tensor_bytes(t))
    except (ValueError, RuntimeError):
        return None  # weights that cannot be read (offloaded to meta): no stable identity
    identity = h.hexdigest() if weights else None
    try:
        _IDENTITIES[obj] = (versions, identity)
    except TypeError:
        pass
    return identity


def model_identity(model) -> str | None:
    """A hash of the model's weights and output-changing options; None when it has no readable weights.

    A model may declare ``cache_key`` (a string) instead, e.g. one whose weights live elsewhere.
    """
    declared = getattr(model, "cache_key", None)
    if isinstance(declared, str):
        return hashlib.sha256(f"model:{declared}".encode()).hexdigest()
    return _identity(model, "model")


def verifier_identity(verifier) -> str | None:
    """A short identity of the verifier's scores, or None when its scores must never be replayed.

    None for a batch-dependent verifier (``batch_dependent``: the rank ensemble) and for a callable
    wrapped by ``verifiers.custom`` without a declared ``cache_key``; a declared ``cache_key`` wins.
    """
    if getattr(verifier, "batch_dependent", False):
        return None
    declared = getattr(verifier, "cache_key", None)
    if isinstance(declared, str) and declared:
        return hashlib.sha256(f"verifier:{declared}".encode()).hexdigest()[:24]
    from noisesearch.verifiers.custom import CallableVerifier

    if isinstance(verifier, CallableVerifier):
        return None
    members = getattr(verifier, "members", None)
    if isinstance(members, (list, tuple)):  # an ensemble: its members' identities too
        ids = [verifier_identity(m) for m in members]
        if any(i is None for i in ids):
            return None
    else:
        ids = []
    own = _identity(verifier, "verifier")
    if own is None:  # no weights: class, name and options only
        options = {k: _simple(v) for k, v in sorted(vars(verifier).items()) if not k.startswith("_")}
        options = {k: v for k, v in options.items() if not any(w in k.lower() for w in _SECRET_WORDS)}
        own = hashlib.sha256(_io.dumps({"class": type(verifier).__qualname__, **options}).encode()).hexdigest()
    return hashlib.sha256(_io.dumps([own, ids]).encode()).hexdigest()[:24]


def cacheable(job, problem) -> bool:
    """Whether ``job``'s result is a pure function of its key (see the module docstring)."""
    from noisesearch.samplers import get_sampler

    return (
        tuple(job.sigmas) == tuple(problem.sigmas)
        and job.sigmas[-1] == 0
        and job.noises is None
        and job.denoised is None
        and not job.grad
        and not job.score_end
        and not get_sampler(job.sampler or problem.sampler).stochastic
    )


def job_key(model_id: str, job, problem, guidance: float) -> str:
    """The content address of a cacheable job's result (see the module docstring)."""
    if job.noise_seed is not None:
        start = {"seed": int(job.noise_seed), "shape": list(job.x.shape)}
    else:
        x = job.x.detach()
        start = {"sha256": hashlib.sha256(_tensor_bytes(x)).hexdigest(), "dtype": str(x.dtype), "shape": list(x.shape)}
    sigmas = torch.tensor(job.sigmas, dtype=torch.float64).numpy().tobytes()
    key = {
        "format": FORMAT,
        "model": model_id,
        "sampler": job.sampler or problem.sampler,
        "sigmas": hashlib.sha256(sigmas).hexdigest(),
        "guidance": repr(float(guidance)),
        "target": _simple(problem.target) if _simple(problem.target) is not None else repr(problem.target),
        "start": start,
    }
    return hashlib.sha256(_io.dumps(key).encode()).hexdigest()


def check_settings(max_mb, images) -> None:
    """Refuse a size cap that is not a positive number of MiB, or an unknown images mode, in one line."""
    if max_mb is not None and (
        isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not math.isfinite(max_mb) or max_mb <= 0
    ):
        raise UserError(f"cache size cap must be a positive number of MiB, got {max_mb!r}")
    if images not in IMAGE_MODES:
        raise UserError(f"cache images mode {images!r} is unknown; accepted: {', '.join(IMAGE_MODES)}")


class CandidateCache:
    """The replay cache in folder ``path`` (created); see the module docstring.

    Args:
        path: the cache folder (shared by any number of processes).
        max_mb: size cap in MiB (None: unbounded); least recently used entries go first.
        images: "exact" (the decoded image in its own dtype: a replay is bit-exact) or "uint8"
            (4x smaller for float32; a verifier scoring a replayed image then sees the quantised one).
    """

    def __init__(self, path, *, max_mb: float | None = None, images: str = "exact"):
        check_settings(max_mb, images)
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"cache {str(self.path)!r} is a file; give a folder (it is created if missing)")
        try:
            (self.path / "entries").mkdir(parents=True, exist_ok=True)
            probe = self.path / "entries" / f".probe-{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise UserError(
                f"cannot write the cache folder {str(self.path)!r}: {e.strerror}; give a writable folder"
            ) from None
        self.max_mb, self.images = max_mb, images
        self._size: int | None = None  # bytes, estimated since the last scan (other writers add too)

    def __getstate__(self) -> dict:  # sent to Ray actors: settings only
        return {"path": self.path, "max_mb": self.max_mb, "images": self.images, "_size": None}

    def _file(self, key: str, suffix: str) -> Path:
        return self.path / "entries" / key[:2] / f"{key}{suffix}"

    def get(self, key: str, preview_step: int | None) -> dict | None:
        """The entry of ``key`` (``x``, ``image``, ``preview`` when ``preview_step`` is given, FLOPs), or None.

        A missing, unreadable or preview-less entry is a miss. A hit marks the entry as recently used.
        """
        from safetensors import safe_open

        path = self._file(key, ".safetensors")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                names = set(f.keys())
                preview = f"preview@{preview_step}"
                if preview_step is not None and preview not in names:
                    return None
                entry = {"x": f.get_tensor("x"), "image": f.get_tensor("image")}
                if preview_step is not None:
                    entry["preview"] = f.get_tensor(preview)
                entry["previews"] = {n: f.get_tensor(n) for n in names if n.startswith("preview@")}
            if meta.get("format") != FORMAT:
                return None
            dtype = getattr(torch, meta["image_dtype"])
            if entry["image"].dtype == torch.uint8 and dtype != torch.uint8:
                entry["image"] = (entry["image"].float() / 255).to(dtype)
                if "preview" in entry:
                    entry["preview"] = (entry["preview"].float() / 255).to(dtype)
            entry["flops_per_nfe"] = json.loads(meta["flops_per_nfe"])
            entry["decode_flops"] = json.loads(meta["decode_flops"])
            os.utime(path)  # last used: the LRU order
            return entry
        except Exception:  # missing, partial or foreign: a miss, never an error
            return None

    def put(self, key: str, x: torch.Tensor, image: torch.Tensor, previews: dict[str, torch.Tensor], **meta) -> None:
        """Write the entry of ``key`` (end state, image, previews by ``preview@step``, FLOPs) atomically."""
        from safetensors.torch import save

        tensors = {"x": x, "image": self._store(image), **{k: self._store(v) for k, v in previews.items()}}
        metadata = {"format": FORMAT, "image_dtype": str(image.dtype).removeprefix("torch.")}
        metadata.update({k: json.dumps(v) for k, v in meta.items()})
        data = save({k: v.detach().cpu().clone() for k, v in tensors.items()}, metadata=metadata)  # own storage each
        path = self._file(key, ".safetensors")
        path.parent.mkdir(exist_ok=True)
        _io.atomic_write_bytes(path, data)
        self._grow(len(data))

    def _store(self, image: torch.Tensor) -> torch.Tensor:
        if self.images == "uint8":
            return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        return image

    def score(self, key: str, verifier_id: str) -> dict | None:
        """The cached ``{"score", "verify_flops"}`` of ``key`` under ``verifier_id``, or None."""
        try:
            data = json.loads(self._file(key, f".{verifier_id}.json").read_bytes())
            score = data["score"]
            return {"score": math.nan if score is None else float(score), "verify_flops": data["verify_flops"]}
        except Exception:
            return None

    def put_score(self, key: str, verifier_id: str, score: float, verify_flops: float | None) -> None:
        data = (_io.dumps({"score": score, "verify_flops": verify_flops}) + "\n").encode()
        path = self._file(key, f".{verifier_id}.json")
        path.parent.mkdir(exist_ok=True)
        _io.atomic_write_bytes(path, data)
        self._grow(len(data))

    def _grow(self, n: int) -> None:
        if self.max_mb is None:
            return
        if self._size is None:
            self._size = self.size_bytes()
        self._size += n
        if self._size > self.max_mb * 2**20:
            self.trim()

    def size_bytes(self) -> int:
        """Bytes held by finished files (orphaned temporary files not counted)."""
        total = 0
        for p in (self.path / "entries").glob("*/*"):
            try:
                total += p.stat().st_size if not p.name.endswith(".tmp") else 0
            except OSError:
                pass
        return total

    def trim(self) -> None:
        """Remove least recently used entries (with their scores) until the folder fits ``max_mb``.

        Also removes temporary files older than an hour (left by a killed writer).
        """
        if self.max_mb is None:
            return
        cap = self.max_mb * 2**20
        groups: dict[str, list[tuple[Path, int]]] = {}
        used: dict[str, float] = {}
        for p in (self.path / "entries").glob("*/*"):
            try:
                st = p.stat()
            except OSError:
                continue
            if p.name.endswith(".tmp"):
                if time.time() - st.st_mtime > 3600:
                    p.unlink(missing_ok=True)
                continue
            key = p.name.split(".", 1)[0]
            groups.setdefault(key, []).append((p, st.st_size))
            if p.name.endswith(".safetensors"):
                used[key] = st.st_mtime_ns
        total = sum(size for files in groups.values() for _, size in files)
        for key in sorted(groups, key=lambda k: (used.get(k, -1), k)):  # score files without an entry first
            if total <= cap:
                break
            for p, size in sorted(groups[key], key=lambda f: not f[0].name.endswith(".safetensors")):
                p.unlink(missing_ok=True)  # the entry first: its scores are useless without it
                total -= size
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
