"""Loading a released checkpoint file into our own module, refusing anything that does not fit.

Private helper of ``imagereward.py``, ``hpsv2.py`` and ``oracle.py``: ``read_state_dict`` reads a
``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file; ``load_strict``
copies it into a module and raises one ``UserError`` naming the missing, unexpected and wrongly
shaped keys instead of leaving parts of the model at their random initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from noisesearch.errors import UserError


def read_state_dict(path, *, what: str) -> dict[str, torch.Tensor]:
    """A flat dict of tensors from ``path`` (a ``{"state_dict": ...}`` wrapper and ``module.`` prefixes removed)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what}: weights file {p} not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(p))
        else:
            tensors = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign files: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{what}: cannot read weights {p}: {type(e).__name__}: {first}") from None
    if isinstance(tensors, dict) and isinstance(tensors.get("state_dict"), dict):
        tensors = tensors["state_dict"]
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise UserError(f"{what}: {p} is not a state dict of tensors")
    if all(k.startswith("module.") for k in tensors):  # saved from DistributedDataParallel
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _listed(keys: list[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strict(
    module: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    *,
    what: str,
    source,
    names: Callable[[str], str] | None = None,
) -> None:
    """Copy ``tensors`` (keys already mapped to ``module``'s names) into ``module``, or raise a ``UserError``.

    ``names`` maps our key back to the checkpoint's key, so that the error names what the user's
    file calls it. Non-persistent buffers are not expected in the file.
    """
    names = names or (lambda key: key)
    own = module.state_dict()
    missing = sorted(names(k) for k in own if k not in tensors)
    unexpected = sorted(names(k) for k in tensors if k not in own)
    wrong = sorted(
        f"{names(k)} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and v.shape != own[k].shape
    )
    parts = (
        ([f"wrong shape: {_listed(wrong, 3)}"] if wrong else [])
        + ([f"missing: {_listed(missing)}"] if missing else [])
        + ([f"unexpected: {_listed(unexpected)}"] if unexpected else [])
    )
    if parts:
        raise UserError(f"{what}: the weights in {source} do not fit the model: {'; '.join(parts)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True)
