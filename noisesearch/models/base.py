"""The model contracts: what a search needs from a generator, whatever its family.

There are two declared protocols; a run picks its executor once, from the model's ``ModelInfo``
(``model_info(model).whole_trajectory``), never per batch:

``StepModel`` (also named ``Model``): the search drives it step by step. A step-level adapter turns a
family's own network (a digits MLP, a diffusers transformer or UNet) into five things, all in the
package's sigma convention (``noisesearch.samplers``):

- ``noise_shape``: the shape of one candidate's noise, without the batch dimension;
- ``encode(targets) -> cond``: conditions for a list of targets (class ids or prompts), computed
  once per target and reused for every candidate; ``cond`` is a tensor or a dict of tensors whose
  first dimension is the batch (``index_cond`` selects rows);
- ``denoise(x, sigma, cond, *, guidance) -> denoised``: the raw x0-prediction of a batch at one
  sigma. It is only ever called through ``noisesearch.accounting.Accountant``, which counts it;
- ``nfe_per_call(guidance)``: NFEs that one ``denoise`` call costs per sample (2 with
  classifier-free guidance, 1 without or for guidance-distilled models);
- ``decode(x0) -> images``: images (B, C, H, W) float in [0, 1].

``WholeTrajectoryModel``: a pipeline run whole (``models/generic.py``), declared by ``whole_trajectory =
True``: ``trajectories(x, targets, *, steps, guidance, rows) -> (images, rows run)`` makes full candidates
from their noises; it has no step-level ``denoise``/``decode``.

Everything else the engine reads of a model is declared on ``ModelInfo`` with its default, and read only
through ``model_info(model)`` (both defined in ``noisesearch.contracts``, re-exported here): a model (a user's
own object too) that leaves a declaration out gets the default. ``ModelExtras`` gives the types of the optional methods. ``start_scale(sigma)``: a job that starts
at the first sigma of the model's schedule starts from a *noise*; the driver turns it into the model's
state there as ``start_scale(sigma) * noise`` (default 1: flow models start at sigma = 1, where the state
is the noise). VP models (SD, PixArt) start their DDIM schedule below sigma = 1 and use it to start
exactly where their pipelines do. ``denoise_grad``: ``denoise`` with autograd on (first-order search).

Example::

    model = MODELS["digits"]()
    cond = model.encode([7, 7])
    x = torch.randn(2, *model.noise_shape, generator=torch.Generator().manual_seed(0))
    denoised = model.denoise(x, 1.0, cond, guidance=1.0)     # (2, 1, 8, 8)
    model_info(model).domain                                 # "digits"
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from noisesearch.contracts import ModelInfo, model_info

__all__ = [
    "Cond",
    "Model",
    "ModelExtras",
    "ModelInfo",
    "StepModel",
    "WholeTrajectoryModel",
    "index_cond",
    "model_info",
]

Cond = Any  # a tensor or a dict of tensors, batch first


@runtime_checkable
class StepModel(Protocol):
    """A generator the search drives step by step (see the module docstring for the contract)."""

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


Model = StepModel  # the name most of the package uses


@runtime_checkable
class WholeTrajectoryModel(Protocol):
    """A generator run whole, one full candidate per noise (``models/generic.py``; see the module docstring)."""

    name: str
    noise_shape: tuple[int, ...]
    default_steps: int
    default_guidance: float
    whole_trajectory: bool  # True: what tells it from a StepModel (``model_info``)

    def check_target(self, target: Any) -> Any:
        """Return ``target`` in canonical form or raise ``UserError`` naming what is accepted."""

    def encode(self, targets: list) -> Cond:
        """Per-target conditions (the pipeline may encode prompts itself: row numbers then)."""

    def nfe_per_call(self, guidance: float) -> int:
        """Denoiser rows per candidate and step at this guidance scale."""

    def schedule(self, steps: int) -> tuple[float, ...]:
        """A nominal schedule of ``steps`` steps (the pipeline's own scheduler picks its real sigmas)."""

    def trajectories(
        self, x: torch.Tensor, targets: list, *, steps: int, guidance: float, rows: int
    ) -> tuple[torch.Tensor, int]:
        """(images of the full candidates from noises ``x``, denoiser rows run); no more than ``rows`` rows."""


class ModelExtras(Protocol):
    """The types of a model's optional methods (declared on ``ModelInfo``, read through ``model_info``).

    Not runtime-checkable on purpose: a model without them is still a ``Model``.
    """

    def start_scale(self, sigma: float) -> float:
        """Factor that turns a noise into the model's state at ``sigma``, the first sigma of its schedule.

        The driver starts a job at the schedule's start from ``start_scale(sigma) * noise``; without it
        the state is the noise itself (flow models start at sigma = 1).
        """

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond: Cond, *, guidance: float) -> torch.Tensor:
        """``denoise`` with autograd on (first-order search); without it a model cannot be differentiated."""

    def flops_per_nfe(self) -> float:
        """Analytic FLOPs of one model row of ``denoise`` (used as it is; without it the ledger measures them)."""

    def flops_per_row(self, key: tuple) -> float | None:
        """Analytic FLOPs per row of the accountant's call ``key`` (``ledger.counted``), None where it has none."""


def index_cond(cond: Cond, idx: torch.Tensor) -> Cond:
    """Rows ``idx`` of a condition (a tensor, or a dict/tuple of tensors)."""
    if isinstance(cond, torch.Tensor):
        return cond[idx]
    if isinstance(cond, dict):
        return {k: index_cond(v, idx) for k, v in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(index_cond(v, idx) for v in cond)
    raise TypeError(f"cannot index a condition of type {type(cond).__name__}")
