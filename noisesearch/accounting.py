"""The one accounting point: every denoiser and verifier call of a search goes through here.

NFE = one denoiser evaluation for one sample. A ``denoise`` call on a batch of B rows costs
``model.nfe_per_call(guidance)`` NFEs for each row (2 with classifier-free guidance, 1 without or
for guidance-distilled models), charged to the search that owns the row. Verifier calls are
counted separately, as images scored. Budgets are hard limits: the driver refuses a round whose
planned cost would overspend, and the accountant raises ``BudgetExceeded`` the moment an actual
call takes any search past its budget (so a wrong cost formula cannot hide).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models.base import Model


class Accountant:
    """Counts NFEs and verifier calls per search and enforces each search's NFE budget.

    Args:
        budgets: NFE budget per search (index = search id).
    """

    def __init__(self, budgets: list[int]):
        self.budgets = torch.tensor(budgets, dtype=torch.int64)
        self.nfe = torch.zeros(len(budgets), dtype=torch.int64)
        self.verifier_calls = torch.zeros(len(budgets), dtype=torch.int64)
        self.denoise_calls = 0  # batched forward calls, for benchmarks
        self.denoise_seconds = 0.0  # wall time inside the model's denoise (forward, and autograd's tape)
        self.verify_seconds = 0.0  # wall time inside the verifier
        self.backward_seconds = 0.0  # wall time in backward passes (first-order search)

    def left(self, search: int) -> int:
        """NFEs that search ``search`` may still spend."""
        return int(self.budgets[search] - self.nfe[search])

    def _charge(self, counter: torch.Tensor, owners: torch.Tensor, cost: int) -> None:
        counter += torch.bincount(owners, minlength=len(counter)) * cost

    def _check(self) -> None:
        over = (self.nfe > self.budgets).nonzero()
        if len(over):
            i = int(over[0, 0])
            raise BudgetExceeded(f"search {i} spent {int(self.nfe[i])} NFEs, over its budget of {int(self.budgets[i])}")

    def charge_backward(self, owners: torch.Tensor, cost: int) -> None:
        """Charge a backward pass through the sampler, ``cost`` NFE-equivalents per row of ``owners``."""
        self._charge(self.nfe, owners, cost)
        self._check()

    def denoiser(self, model: Model, cond, owners: torch.Tensor, *, guidance: float, grad: bool = False):
        """A ``denoise(x, sigma)`` for the samplers that charges each row of ``owners`` per call."""
        cost = model.nfe_per_call(guidance)
        fn: Callable[..., torch.Tensor] = model.denoise
        if grad:
            grad_fn = getattr(model, "denoise_grad", None)
            if grad_fn is None:
                raise UserError(f"model {model.name!r} cannot be differentiated (no denoise_grad)")
            fn = grad_fn

        def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
            self._charge(self.nfe, owners, cost)
            self.denoise_calls += 1
            self._check()
            start = time.perf_counter()
            try:
                return fn(x, sigma, cond, guidance=guidance)
            finally:
                self.denoise_seconds += time.perf_counter() - start

        return denoise

    def trajectories(self, model, owners: torch.Tensor, cost: int, *, steps: int, guidance: float):
        """A ``run(x, targets) -> images`` for whole-trajectory models (``models.generic``): each row of
        ``owners`` is one full candidate costing ``cost`` NFEs, charged before the call; the model's
        hook refuses any forward past that plan, and a call that ran other rows than charged raises."""
        planned = cost * len(owners)

        def run(x: torch.Tensor, targets: list) -> torch.Tensor:
            self._charge(self.nfe, owners, cost)
            self.denoise_calls += 1
            self._check()
            start = time.perf_counter()
            try:
                images, rows = model.trajectories(x, targets, steps=steps, guidance=guidance, rows=planned)
            finally:
                self.denoise_seconds += time.perf_counter() - start
            if rows != planned:
                raise BudgetExceeded(f"{model.name} ran {rows} denoiser rows where {planned} were planned and charged")
            return images

        return run

    def verify(
        self, verifier, images: torch.Tensor, targets: list, owners: torch.Tensor, *, previews=None, grad: bool = False
    ) -> torch.Tensor:
        """Scores (B,) from ``verifier``, counting one verifier call per image for its owner.

        With ``grad`` the scores keep their autograd graph (the verifier's differentiable ``score``).
        """
        self._charge(self.verifier_calls, owners, 1)
        start = time.perf_counter()
        try:
            scores = self._verify(verifier, images, targets, previews, grad)
        finally:
            self.verify_seconds += time.perf_counter() - start
        if scores.shape != (len(images),):
            raise RuntimeError(
                f"verifier {verifier.name!r} returned shape {tuple(scores.shape)}, expected ({len(images)},)"
            )
        return scores.float() if grad else scores.detach().float().cpu()

    @staticmethod
    def _verify(verifier, images, targets, previews, grad):
        if grad:
            score = getattr(verifier, "score", None)
            if score is None:
                raise UserError(
                    f"verifier {verifier.name!r} is not differentiable; first-order search needs "
                    "one with a score() method (the digits, toy and CLIP-based verifiers have one)"
                )
            return score(images, targets, previews=previews)
        return verifier(images, targets, previews=previews)
