"""Sigma schedules and ODE samplers: the package's one time convention, written down once.

Convention (rectified flow, as FLUX and SiT use it): a state at noise level ``sigma`` is

    x_sigma = (1 - sigma) * x0 + sigma * noise,     sigma in [0, 1]

so ``sigma = 1`` is pure noise and ``sigma = 0`` is data. Sampling runs ``sigma`` downwards. A
*denoiser* is any callable ``denoise(x, sigma) -> denoised`` that returns the x0-prediction for a
batch ``x`` (B, ...) at one float ``sigma``. The ODE direction ``(x - denoised) / sigma`` is then
the velocity ``noise - x0`` (and equals the probability-flow ODE of any other model family once its
states are rescaled to this convention, which model adapters do).

A sampler is a free function ``sampler(denoise, x, sigmas, *, callback=None) -> x`` that takes
the starting state as an argument (noise is never drawn here) and integrates from ``sigmas[0]``
to ``sigmas[-1]``. ``callback(i, sigma, x, denoised)`` sees every denoiser result, so an
x0-preview at any step costs nothing extra. Each sampler declares its exact NFE cost per sample
for a schedule through ``nfe(sigmas)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from noisesearch.errors import UserError

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def schedule(steps: int, *, shift: float = 1.0) -> tuple[float, ...]:
    """``steps + 1`` decreasing sigmas from 1 to 0, uniform in t and warped by ``shift``.

    ``shift`` > 1 spends more steps at high noise (SD3/FLUX's ``shift * t / (1 + (shift - 1) t)``).
    Returned as a tuple of Python floats so that schedules can be compared and grouped exactly.
    """
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be a positive integer, got {steps!r}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigmas = shift * t / (1 + (shift - 1) * t)
    return tuple(float(s) for s in sigmas)


def sample_euler(denoise: Denoiser, x: torch.Tensor, sigmas, *, callback: Callback | None = None) -> torch.Tensor:
    """Euler method on the probability-flow ODE (Karras et al. 2022, Alg. 1 with one stage)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        x = x + (sigma_next - sigma) * (x - denoised) / sigma  # (B, ...)
    return x


def sample_heun(denoise: Denoiser, x: torch.Tensor, sigmas, *, callback: Callback | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 1); the step to sigma = 0 is Euler."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        d = (x - denoised) / sigma
        x_euler = x + (sigma_next - sigma) * d
        if sigma_next == 0:
            x = x_euler
        else:
            d_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next
            x = x + (sigma_next - sigma) * (d + d_next) / 2
    return x


@dataclass(frozen=True)
class Sampler:
    """A sampler function and its exact cost: ``nfe(sigmas)`` denoiser evaluations per sample."""

    fn: Callable[..., torch.Tensor]
    nfe: Callable[[tuple[float, ...]], int]
    summary: str


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler(sample_euler, lambda s: len(s) - 1, "first-order Euler; 1 NFE per step"),
    "heun": Sampler(
        sample_heun,
        lambda s: 2 * (len(s) - 1) - (1 if s[-1] == 0 else 0),
        "second-order Heun; 2 NFEs per step, 1 for the final step to sigma = 0",
    ),
}


def get_sampler(name: str) -> Sampler:
    """The registered sampler ``name``; a clear error naming the accepted ones otherwise."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
