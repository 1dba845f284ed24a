"""The verifier contract: a batch of images and their targets in, one score per image out.

- ``images``: float tensor (B, C, H, W) in [0, 1] (decoded samples);
- ``targets``: a list of B targets (class ids or prompts), one per image;
- ``previews``: only for verifiers whose ``preview_sigma`` is set: images (B, C, H, W) of each
  candidate's x0-prediction at the first sampling step with ``sigma <= preview_sigma``;
- returns ``Tensor[B]`` float, **higher is better**. A NaN is a failed score: the driver records it
  and never ranks it.

Verifiers are called only through ``noisesearch.accounting.Accountant``, which counts the images
scored. Image i's score must not depend on the other images in the batch.

Example::

    verifier = VERIFIERS["classifier"]()
    scores = verifier(images, [7] * len(images))   # (B,) log p(7 | image)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from noisesearch.errors import UserError


@runtime_checkable
class Verifier(Protocol):
    """Scores images against their targets (see the module docstring)."""

    name: str
    preview_sigma: float | None

    def __call__(self, images: torch.Tensor, targets: list, *, previews: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B,), higher is better."""


def check_images(images: torch.Tensor, *, channels: int | None = None) -> None:
    """Raise ``UserError`` unless ``images`` is a float batch (B, C, H, W) with values in [0, 1]."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"images must be a float tensor (B, C, H, W) in [0, 1], got {shape}")
    if channels is not None and images.shape[1] != channels:
        raise UserError(f"images must have {channels} channel(s), got shape {tuple(images.shape)}")
    lo, hi = float(images.detach().min()), float(images.detach().max())
    if lo < 0 or hi > 1:
        raise UserError(f"images must have values in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
