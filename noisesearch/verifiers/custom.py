"""Your own verifier: any callable ``f(images, prompts) -> scores`` wrapped into the verifier contract.

``images`` (B, C, H, W) float in [0, 1] (with a video model: its chosen frames, ``verifiers/video.py``),
``prompts`` the B targets, ``scores`` anything ``torch.as_tensor`` takes, of shape (B,), **higher is
better**; a score that is not a finite number (NaN, +inf, -inf) is a failed one: the driver records it as
``null``, counts it in ``nan_scores`` and never ranks it (``algorithms.base.failed_as_nan``). The wrapper
names it, scores in batches of at most ``batch`` images, moves the images to ``device`` (a verifier on its
own GPU), and refuses a wrong shape in one line.

Example::

    verifier = CallableVerifier(lambda images, prompts: images.mean(dim=(1, 2, 3)), name="brightness")
    scores = verifier(images, ["a red cube"] * len(images))   # (B,)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from noisesearch.devices import parse_device
from noisesearch.errors import UserError


class CallableVerifier:
    """A plain callable as a ``Verifier`` (see the module docstring).

    Args:
        fn: ``fn(images, targets) -> scores`` (B,).
        name: recorded name (default: the callable's ``__name__``).
        batch: most images per call (default: all at once).
        device: where ``fn`` gets the images (default: where they are); scores come back on the CPU.
        cache_key: a name that changes whenever ``fn``'s scores would (e.g. "my-reward-v2"); only
            with it are this verifier's scores replayed from a candidate cache (``noisesearch.cache``).
    """

    preview_sigma = None
    needs_cache_key = True  # its scores are its code's: replayed from a cache only under a declared ``cache_key``

    def __init__(
        self,
        fn: Callable,
        *,
        name: str | None = None,
        batch: int | None = None,
        device=None,
        cache_key: str | None = None,
    ):
        if not callable(fn):
            raise UserError(f"a verifier must be a registry name or a callable f(images, prompts), got {fn!r}")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise UserError(f"verifier batch must be a positive integer, got {batch!r}")
        if cache_key is not None and (not isinstance(cache_key, str) or not cache_key.strip()):
            raise UserError(f"verifier cache_key must be a non-empty string, got {cache_key!r}")
        self.fn, self.batch, self.cache_key = fn, batch, cache_key
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        self.device = None if device is None else parse_device(device)

    def __call__(self, images: torch.Tensor, targets: list, *, previews: torch.Tensor | None = None) -> torch.Tensor:
        n = len(images)
        size = self.batch or max(n, 1)
        parts = [self._score(images[i : i + size], list(targets[i : i + size])) for i in range(0, n, size)]
        return torch.cat(parts) if parts else torch.zeros(0)

    def _score(self, images: torch.Tensor, targets: list) -> torch.Tensor:
        if self.device is not None:
            images = images.to(self.device)
        out = self.fn(images, targets)
        try:
            scores = torch.as_tensor(out).detach()
        except (TypeError, ValueError, RuntimeError):
            raise UserError(f"verifier {self.name!r} returned a {type(out).__name__}, not scores (B,)") from None
        if scores.shape != (len(images),):
            raise UserError(
                f"verifier {self.name!r} returned shape {tuple(scores.shape)} for {len(images)} images; "
                f"it must return one score per image, shape ({len(images)},)"
            )
        return scores.float().cpu()  # (b,); NaN, +inf, -inf: a failed score
