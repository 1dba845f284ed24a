"""The LAION aesthetic predictor: a small head on unit CLIP ViT-L/14 image embeddings.

Schuhmann et al., LAION-5B (arXiv 2210.08402), "improved aesthetic predictor"
(github.com/christophschuhmann/improved-aesthetic-predictor): linear layers 768 -> 1024 -> 128 -> 64
-> 16 -> 1 (dropout between them, no activations in the ``linearMSE`` heads), state-dict keys
``layers.{0,2,4,6,7}.{weight,bias}``; the older single-layer head has keys ``weight`` and ``bias``.
The score is the predicted mean rating on a 1-10 scale (about 5-6 for typical photos). It ignores
the target and is differentiable in the image.
"""

from __future__ import annotations

import math
import re

import torch

from noisesearch.errors import UserError
from noisesearch.verifiers._hf import Scorer, load, load_tensors
from noisesearch.verifiers.clip import CLIP_EXAMPLE, image_embeddings

_LAYER = re.compile(r"^(?:layers\.)?(\d+)\.(weight|bias)$")


def head_layers(
    tensors: dict[str, torch.Tensor], *, what: str = "aesthetic"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The head's linear layers [(weight (out, in), bias (out,)), ...] in order, checked to chain to 1 output."""
    if set(tensors) == {"weight", "bias"}:
        layers = [(tensors["weight"], tensors["bias"])]
    else:
        found: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            m = _LAYER.match(key)
            if not m:
                raise UserError(
                    f"{what}: unexpected key {key!r} in the head (expected layers.N.weight / layers.N.bias)"
                )
            found.setdefault(int(m.group(1)), {})[m.group(2)] = value
        if any(set(v) != {"weight", "bias"} for v in found.values()):
            raise UserError(f"{what}: every head layer needs a weight and a bias, got keys {sorted(tensors)}")
        layers = [(found[i]["weight"], found[i]["bias"]) for i in sorted(found)]
    for i, (w, b) in enumerate(layers):
        if w.dim() != 2 or b.shape != (w.shape[0],) or (i and w.shape[1] != layers[i - 1][0].shape[0]):
            raise UserError(
                f"{what}: head layer {i} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, which do not chain"
            )
    if layers[-1][0].shape[0] != 1:
        raise UserError(f"{what}: the head must end in 1 output, got {layers[-1][0].shape[0]}")
    return layers


class AestheticVerifier(Scorer):
    """LAION aesthetic score (1-10) of unit CLIP image embeddings through a linear/MLP head.

    Range: any real number. The head was trained on 1-10 ratings, but nothing bounds a linear
    layer's output, so it is not clamped (a clamp would hide differences between candidates).

    Args:
        path: the CLIP model folder (ViT-L/14 for the published heads) or hub id;
        head: the head file (``.safetensors`` or ``.pth``, read with ``weights_only=True``);
        activation: "none" (the ``linearMSE`` heads) or "relu" (between layers, the ``reluMSE`` heads).
    """

    value_range = (-math.inf, math.inf)

    def __init__(self, *, path=None, device="cpu", dtype="float32", head=None, activation="none"):
        self.name = "aesthetic"
        if activation not in ("none", "relu"):
            raise UserError(f"aesthetic: unknown activation {activation!r}; accepted: none, relu")
        if head is None:
            raise UserError("aesthetic needs head=<file>, e.g. sac+logos+ava1-l14-linearMSE.pth")
        layers = head_layers(load_tensors(head, what=self.name))
        self.loaded = load(path, what=self.name, example=CLIP_EXAMPLE, device=device, dtype=dtype)
        dim = int(self.loaded.model.config.projection_dim)
        if layers[0][0].shape[1] != dim:
            raise UserError(
                f"aesthetic: the head takes {layers[0][0].shape[1]}-d embeddings, the CLIP model gives {dim}"
            )
        self.layers = [(w.to(self.loaded.device), b.to(self.loaded.device)) for w, b in layers]
        self.activation = activation

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Aesthetic scores (B,) with autograd (for first-order search)."""
        x = image_embeddings(self.loaded, images)  # (B, D)
        x = x / x.norm(dim=-1, keepdim=True)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b  # (B, out_i)
            if self.activation == "relu" and i < len(self.layers) - 1:
                x = x.relu()
        return x[:, 0]  # (B,)
