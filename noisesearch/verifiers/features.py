"""Feature-based verifiers on CLIP / SigLIP / DINOv2 image backbones (Ma et al. 2025, Sec. 4.1).

- ``feature-similarity-real``: the self-supervised verifier: cosine similarity between the image
  features of the x0-prediction at ``preview_sigma`` (0.4 by default) and of the final sample;
  it ignores the target;
- ``dino-linear``: the supervised verifier: log p(target | image) from DINOv2 features and a
  linear classification head (Oquab et al. 2023, DINOv2, arXiv 2304.07193: linear probe on the
  class token, optionally concatenated with the mean patch token).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from noisesearch.errors import UserError
from noisesearch.verifiers._hf import Scorer, load, load_tensors
from noisesearch.verifiers.base import check_preview_sigma
from noisesearch.verifiers.clip import _labels, cosine

BACKBONES = {
    "clip": ("clip", "clip_vision_model"),
    "siglip": ("siglip", "siglip2", "siglip_vision_model"),
    "dinov2": ("dinov2", "dinov2_with_registers"),
}


def image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """Pooled image features (B, D) float32: the projected embedding for CLIP/SigLIP, the CLS token for DINOv2."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixels)
    else:
        out = model(pixel_values=pixels)
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).float()  # (B, D)


def _check_backbone(loaded, backbone: str, what: str) -> None:
    model_type = str(getattr(loaded.model.config, "model_type", ""))
    if backbone == "auto":
        return
    if backbone not in BACKBONES:
        raise UserError(f"{what}: unknown backbone {backbone!r}; accepted: auto, {', '.join(BACKBONES)}")
    if model_type not in BACKBONES[backbone]:
        raise UserError(f"{what}: backbone={backbone} but the weights are a {model_type!r} model")


class FeatureSimilarityVerifier(Scorer):
    """Cosine of image features: x0-preview at ``preview_sigma`` vs final sample (self-supervised).

    Range: [-1, 1] (``cosine`` clamps what rounding carries past the bound).
    """

    value_range = (-1.0, 1.0)

    def __init__(self, *, path=None, device="cpu", dtype="float32", backbone="auto", preview_sigma=0.4):
        self.name = "feature-similarity-real"
        self.preview_sigma = check_preview_sigma(preview_sigma)
        self.loaded = load(path, what=self.name, example="facebook/dinov2-base", device=device, dtype=dtype)
        _check_backbone(self.loaded, backbone, self.name)

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Cosines (B,) with autograd (for first-order search)."""
        if previews is None:
            raise UserError(f"{self.name} needs the x0-previews of the candidates (previews=...)")
        if previews.shape != images.shape:
            raise UserError(f"{self.name}: previews {tuple(previews.shape)} and images {tuple(images.shape)} differ")
        final = image_features(self.loaded.model, self.loaded.preprocess(images))  # (B, D)
        early = image_features(self.loaded.model, self.loaded.preprocess(previews))  # (B, D)
        return cosine(final, early)


def _linear_head(tensors: dict[str, torch.Tensor], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (K, F), bias (K,)) from a head state dict with one ``*weight`` and one ``*bias`` key."""
    weights = [k for k in tensors if k.endswith("weight")]
    biases = [k for k in tensors if k.endswith("bias")]
    if len(weights) != 1 or len(biases) != 1:
        raise UserError(f"{what}: a linear head has one weight and one bias tensor, got keys {sorted(tensors)}")
    w, b = tensors[weights[0]], tensors[biases[0]]
    if w.dim() != 2 or b.shape != (w.shape[0],):
        raise UserError(
            f"{what}: head {weights[0]} {tuple(w.shape)} and {biases[0]} {tuple(b.shape)} "
            "are not a linear layer (K, F) + (K,)"
        )
    return w, b


class DinoLinearVerifier(Scorer):
    """Log p(target | image) from DINOv2 features and a linear head (supervised; Oquab et al. 2023).

    Range: (-inf, 0] (a log-probability; clamped at 0 against rounding).

    Args:
        path: the DINOv2 model folder (or hub id);
        head: safetensors or .pth file with the head's ``weight`` (K, F) and ``bias`` (K,); default
            ``<path>/linear_head.safetensors``. F = D uses the class token; F = 2D the class token
            concatenated with the mean patch token (DINOv2's linear probes).
    """

    value_range = (-math.inf, 0.0)

    def __init__(self, *, path=None, device="cpu", dtype="float32", head=None):
        self.name = "dino-linear"
        if head is None and path is not None and Path(path).expanduser().is_dir():
            head = Path(path).expanduser() / "linear_head.safetensors"
        if head is None:
            raise UserError(f"{self.name} needs head=<file> (a linear head's weight and bias)")
        w, b = _linear_head(load_tensors(head, what=self.name), self.name)
        self.loaded = load(path, what=self.name, example="facebook/dinov2-base", device=device, dtype=dtype)
        _check_backbone(self.loaded, "dinov2", self.name)
        dim = int(self.loaded.model.config.hidden_size)
        if w.shape[1] not in (dim, 2 * dim):
            raise UserError(
                f"{self.name}: head takes {w.shape[1]} features; the backbone gives {dim} "
                f"(class token) or {2 * dim} (class + mean patch token)"
            )
        self.weight, self.bias = w.to(self.loaded.device), b.to(self.loaded.device)  # (K, F), (K,)
        self.registers = int(getattr(self.loaded.model.config, "num_register_tokens", 0) or 0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Head inputs (B, F) float32; keeps autograd."""
        tokens = self.loaded.model(
            pixel_values=self.loaded.preprocess(images)
        ).last_hidden_state.float()  # (B, 1+R+P, D)
        cls = tokens[:, 0]  # (B, D)
        if self.weight.shape[1] == cls.shape[1]:
            return cls
        return torch.cat([cls, tokens[:, 1 + self.registers :].mean(dim=1)], dim=1)  # (B, 2D)

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Log p(target | image) (B,) with autograd (for first-order search)."""
        labels = _labels(targets, len(images), self.weight.shape[0], what=self.name)
        logits = self.features(images) @ self.weight.T + self.bias  # (B, K)
        return logits.log_softmax(dim=-1).gather(1, labels.to(logits.device)[:, None])[:, 0].clamp(max=0.0)
