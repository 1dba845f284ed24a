"""The verifier contract: a batch of images and their targets in, one score per image out.

- ``images``: float tensor (B, C, H, W) in [0, 1] (decoded samples);
- ``targets``: a list of B targets (class ids or prompts), one per image;
- ``previews``: only for verifiers whose ``preview_sigma`` is set: images (B, C, H, W) of each
  candidate's x0-prediction at the first sampling step with ``sigma <= preview_sigma``;
- returns ``Tensor[B]`` float, **higher is better**, inside the verifier's stated range (its
  docstring's "Range:" line and ``value_range``; a value that the maths bounds, such as a cosine or a
  log-probability, is clamped there against rounding). A score that is not a finite number (NaN,
  +inf, -inf) is a failed score: the driver records it as null and never ranks it.

Everything else the engine reads of a verifier is declared on ``VerifierInfo`` with its default and read
only through ``verifier_info(verifier)``, so any object with ``name`` and ``__call__`` (a user's own) works:

- ``preview_sigma``: the sigma of the x0-previews it wants (None: no previews);
- ``score(images, targets, *, previews)``: ``__call__`` with autograd kept (first-order search);
- ``usage``: a dict of counters (tokens, requests, cost) that ``generate`` copies into the record; a verifier
  with one is metered (an API grader: its FLOPs are unknown);
- ``value_range``: ``(lo, hi)`` bounding every finite score (``-inf``/``inf`` where unbounded);
- ``domain``: the model family whose images it understands (None: any); ``video``: it scores whole videos
  itself; ``takes_frames``: False when it cannot score a video's frames one by one (``verifiers/video.py``);
- ``flops_per_row(key)``: analytic FLOPs of one scored image (``ledger.counted``);
- its cache identity (``noisesearch.contracts.Identity``): ``cache_key``, ``batch_dependent``, ``needs_cache_key``,
  ``members``;
- on the factory (``VerifierFactory``): ``domain`` and ``needs_setup`` (weights or options are not shipped;
  construction without them raises ``UserError``).

Verifiers are called only through ``noisesearch.accounting.Accountant``, which counts the images
scored. Image i's score must not depend on the other images in the batch.

Example::

    verifier = VERIFIERS["classifier"]()
    scores = verifier(images, [7] * len(images))   # (B,) log p(7 | image)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from noisesearch.contracts import VerifierInfo, verifier_info  # defined below the accountant, which reads them too
from noisesearch.errors import UserError

__all__ = [
    "Verifier",
    "VerifierExtras",
    "VerifierFactory",
    "VerifierInfo",
    "check_images",
    "check_preview_sigma",
    "verifier_info",
]


@runtime_checkable
class Verifier(Protocol):
    """Scores images against their targets (see the module docstring)."""

    name: str
    preview_sigma: float | None  # None: no previews; else the sigma of the x0-previews it wants (read through
    # verifier_info, so a verifier may leave it out)

    def __call__(self, images: torch.Tensor, targets: list, *, previews: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B,), higher is better."""


class VerifierExtras(Protocol):
    """The types of a verifier's optional parts (declared on ``VerifierInfo``, read through ``verifier_info``).

    Not runtime-checkable on purpose: a verifier without them is still a ``Verifier``.
    """

    usage: dict[str, float]  # counters a verifier keeps (an LLM grader's tokens, requests, cost), recorded
    value_range: tuple[float, float]  # (lo, hi) bounding every finite score; -inf/inf where unbounded

    def score(self, images: torch.Tensor, targets: list, *, previews: torch.Tensor | None = None) -> torch.Tensor:
        """``__call__`` with the autograd graph kept, for first-order search (``Accountant.verify(grad=True)``)."""

    def flops_per_row(self, key: tuple) -> float | None:
        """Analytic FLOPs per image of the accountant's call ``key`` (``ledger.counted``), None: measure them."""


class VerifierFactory(Protocol):
    """A ``VERIFIERS`` entry: builds a verifier from keyword options, and says what it needs."""

    domain: str | None  # the model family whose images it understands ("digits", "toy"), None for any
    needs_setup: bool  # optional (default False): weights or options are not shipped; without them it raises

    def __call__(self, **options: Any) -> Verifier:
        """A verifier built with ``options`` (``path=...`` and its own keywords)."""


def check_preview_sigma(value: Any) -> float:
    """``value`` as the sigma of an x0-preview, strictly between 0 (data) and 1 (noise); a ``UserError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise UserError(f"preview_sigma must be a number strictly between 0 and 1 (data 0, noise 1), got {value!r}")
    return float(value)


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
