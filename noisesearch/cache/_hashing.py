"""What an identity hashes (``noisesearch.cache.model_identity``, ``verifier_identity``): an object's class, public
options and weights.

Options are described as stable JSON data (``_describe``: tensors, arrays and images by their bytes' hash); the
weights are every tensor one level inside the object (modules, tensors, a diffusers pipeline's components),
hashed once per object and again when they may have changed (``_identity``).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from typing import Any

import torch

from noisesearch import _io

_SECRET_WORDS = ("key", "token", "secret", "password", "usage")  # never part of an identity (nor logged)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().reshape(-1)
    if t.device.type == "meta":
        raise ValueError("a weight on the meta device has no bytes")
    return t.cpu().view(torch.uint8).numpy().tobytes()


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


def public_options(obj) -> dict:
    """``obj``'s own fields as they enter its identity: described, sorted, none private or secret (``_SECRET_WORDS``)."""
    return {
        k: _describe(v)
        for k, v in sorted(_fields(obj).items())
        if not k.startswith("_") and not any(w in k.lower() for w in _SECRET_WORDS)
    }


def _identity(obj: Any, kind: str, rehash_bytes: int) -> str | None:
    """Class, name, public options and weights hash of ``obj``; None without any weight.

    The hash is kept per object. Weights of at most ``rehash_bytes`` in all (``noisesearch.cache.REHASH_BYTES``)
    are also kept as bytes and compared with the current ones on every call (0.3 ms for digits-large's 2.2 MB,
    a sixth of hashing them), so any edit is seen, also one through ``p.data``, which moves no version counter.
    Larger weights' hash is recomputed when an option changes, a weight's version counter moves (an in-place
    edit, ``load_state_dict``) or its data pointer does (``p.data = t``); an in-place edit through
    ``p.data`` of such a model moves neither, so give it a new ``cache_key`` then."""
    weights = _weights(_modules_and_tensors(obj))
    small = sum(t.numel() * t.element_size() for _, t in weights) <= rehash_bytes
    if small:  # compared by their bytes below
        marks = tuple((name, id(t), t.dtype, tuple(t.shape)) for name, t in weights)
    else:  # an in-place edit bumps the version, a new tensor (``p.data = t``) moves the data pointer
        marks = tuple((id(t), t._version, 0 if t.device.type == "meta" else t.data_ptr()) for _, t in weights)
    options = public_options(obj)
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
