"""The model contract: what a search needs from a generator, whatever its family.

A model adapter turns a family's own network (a digits MLP, a diffusers transformer or UNet) into
five things, all in the package's sigma convention (``noisesearch.samplers``):

- ``noise_shape``: the shape of one candidate's noise, without the batch dimension;
- ``encode(targets) -> cond``: conditions for a list of targets (class ids or prompts), computed
  once per target and reused for every candidate; ``cond`` is a tensor or a dict of tensors whose
  first dimension is the batch (``index_cond`` selects rows);
- ``denoise(x, sigma, cond, *, guidance) -> denoised``: the raw x0-prediction of a batch at one
  sigma. It is only ever called through ``noisesearch.accounting.Accountant``, which counts it;
- ``nfe_per_call(guidance)``: NFEs that one ``denoise`` call costs per sample (2 with
  classifier-free guidance, 1 without or for guidance-distilled models);
- ``decode(x0) -> images``: images (B, C, H, W) float in [0, 1].

Optional parts, looked up with ``getattr`` by the code that uses them and declared with their
types on ``ModelExtras``: ``domain`` (the family of images it makes: "digits", "toy", "rgb"; a
verifier with a ``domain`` accepts only models of the same one), ``start_scale(sigma) -> float``. A job that starts at the first sigma of the model's
schedule starts from a *noise*; the driver turns it into the model's state there as
``start_scale(sigma) * noise`` (default 1: flow models start at sigma = 1, where the state is the
noise). VP models (SD, PixArt) start their DDIM schedule below sigma = 1 and use it to start
exactly where their pipelines do. ``denoise_grad``: ``denoise`` with autograd on (first-order
search).

Example::

    model = MODELS["digits"]()
    cond = model.encode([7, 7])
    x = torch.randn(2, *model.noise_shape, generator=torch.Generator().manual_seed(0))
    denoised = model.denoise(x, 1.0, cond, guidance=1.0)     # (2, 1, 8, 8)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

Cond = Any  # a tensor or a dict of tensors, batch first


@runtime_checkable
class Model(Protocol):
    """A generator the search can drive (see the module docstring for the contract)."""

    name: str
    noise_shape: tuple[int, ...]
    default_steps: int
    default_guidance: float

    def check_target(self, target: Any) -> Any:
        """Return ``target`` in canonical form or raise ``UserError`` naming what is accepted."""

    def encode(self, targets: list) -> Cond:
        """Conditions for ``targets`` (one row each)."""

    def denoise(self, x: torch.Tensor, sigma: float, cond: Cond, *, guidance: float) -> torch.Tensor:
        """x0-prediction of ``x`` (B, *noise_shape) at ``sigma`` under ``cond`` (B rows)."""

    def nfe_per_call(self, guidance: float) -> int:
        """NFEs per sample of one ``denoise`` call at this guidance scale."""

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] from final states or x0-predictions."""

    def schedule(self, steps: int) -> tuple[float, ...]:
        """The model's sigma schedule for ``steps`` steps (``steps + 1`` sigmas, 1 -> 0)."""


class ModelExtras(Protocol):
    """The optional parts of a model (any subset may be present; callers use ``getattr(model, name, None)``).

    Not runtime-checkable on purpose: a model without them is still a ``Model``.
    """

    domain: str | None  # the family of images it makes; generate.build() matches it to the verifier's

    def start_scale(self, sigma: float) -> float:
        """Factor that turns a noise into the model's state at ``sigma``, the first sigma of its schedule.

        The driver starts a job at the schedule's start from ``start_scale(sigma) * noise``; without it
        the state is the noise itself (flow models start at sigma = 1).
        """

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond: Cond, *, guidance: float) -> torch.Tensor:
        """``denoise`` with autograd on (first-order search); without it a model cannot be differentiated."""


def index_cond(cond: Cond, idx: torch.Tensor) -> Cond:
    """Rows ``idx`` of a condition (a tensor, or a dict/tuple of tensors)."""
    if isinstance(cond, torch.Tensor):
        return cond[idx]
    if isinstance(cond, dict):
        return {k: index_cond(v, idx) for k, v in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(index_cond(v, idx) for v in cond)
    raise TypeError(f"cannot index a condition of type {type(cond).__name__}")
