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
through ``model_info(model)``: a model (a user's own object too) that leaves a declaration out gets the
default. ``ModelExtras`` gives the types of the optional methods. ``start_scale(sigma)``: a job that starts
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

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from noisesearch.cache import declared, declared_identity

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


@dataclass(frozen=True)
class ModelInfo:
    """A model's declared capabilities: each is the model's attribute of that name, or the default here.

    Built by ``model_info`` (the one place they are read). ``latent_shape`` is read on first use only: a
    whole-trajectory adapter probes its pipeline (denoiser calls) to know it, which the compatibility check
    must not cause.
    """

    whole_trajectory: bool = False  # True: a WholeTrajectoryModel, else a StepModel
    domain: str | None = None  # the family of images it makes ("digits", "toy", "rgb", "video")
    adapter: str = "step"  # "step" or "generic" (recorded)
    device: str | torch.device | None = None  # where its states live (None: the CPU)
    frames: int | None = None  # frames of each video (video models; None: read from each batch)
    fps: int = 16  # frames per second of the videos written
    latents_note: str | None = None  # how its pipeline takes a drawn noise as ``latents=`` (recorded)
    cache_key: str | None = None  # a declared identity for the replay cache (else its weights' hash)
    start_scale: Callable[[float], float] | None = None  # ModelExtras.start_scale (None: 1)
    denoise_grad: Callable[..., torch.Tensor] | None = None  # ModelExtras.denoise_grad (None: not differentiable)
    flops_per_nfe: Callable[[], float] | None = None  # ModelExtras.flops_per_nfe (None: measured)
    flops_per_row: Callable[[tuple], float | None] | None = None  # ModelExtras.flops_per_row (None: measured)
    source: Any = field(default=None, repr=False, compare=False)  # the model, for ``latent_shape``

    @property
    def protocol(self) -> str:
        """ "whole" for a ``WholeTrajectoryModel``, "step" for a ``StepModel``."""
        return "whole" if self.whole_trajectory else "step"

    @functools.cached_property
    def latent_shape(self) -> tuple[int, ...] | None:
        """The shape of one seeded draw as its pipeline takes it (``latents=``), recorded per candidate; None
        where the model declares none (read on first use: see the class docstring)."""
        shape = declared(self.source, "latent_shape", None)
        return None if shape is None else tuple(int(n) for n in shape)


_CALLABLES = ("start_scale", "denoise_grad", "flops_per_nfe", "flops_per_row")


def model_info(model: Any) -> ModelInfo:
    """``model``'s declared capabilities (``ModelInfo``), each left out falling back to its default.

    The only place the engine looks up a model attribute outside the ``StepModel`` / ``WholeTrajectoryModel``
    protocols; cheap (no probe, no denoiser call), so a run reads it once before any work.
    """
    defaults = ModelInfo()
    values = {
        name: declared(model, name, getattr(defaults, name))
        for name in ("domain", "adapter", "device", "frames", "fps", "latents_note")
    }
    callables = {name: declared(model, name, None) for name in _CALLABLES}
    return ModelInfo(
        whole_trajectory=bool(declared(model, "whole_trajectory", False)),
        cache_key=declared_identity(model).cache_key,
        source=model,
        **values,
        **callables,
    )


def index_cond(cond: Cond, idx: torch.Tensor) -> Cond:
    """Rows ``idx`` of a condition (a tensor, or a dict/tuple of tensors)."""
    if isinstance(cond, torch.Tensor):
        return cond[idx]
    if isinstance(cond, dict):
        return {k: index_cond(v, idx) for k, v in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(index_cond(v, idx) for v in cond)
    raise TypeError(f"cannot index a condition of type {type(cond).__name__}")
