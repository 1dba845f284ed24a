"""Sigma schedules and ODE samplers: the package's one time convention, written down once.

Convention (rectified flow, as FLUX and SiT use it): a state at noise level ``sigma`` is

    x_sigma = (1 - sigma) * x0 + sigma * noise,     sigma in [0, 1]

so ``sigma = 1`` is pure noise and ``sigma = 0`` is data. Sampling runs ``sigma`` downwards. A
*denoiser* is any callable ``denoise(x, sigma) -> denoised`` that returns the x0-prediction for a
batch ``x`` (B, ...) at one float ``sigma``. The ODE direction ``(x - denoised) / sigma`` is then
the velocity ``noise - x0`` (and equals the probability-flow ODE of any other model family once its
states are rescaled to this convention, which model adapters do).

A sampler is a free function ``sampler(denoise, x, sigmas, *, callback=None, noises=None) -> x``
that takes the starting state as an argument and integrates from ``sigmas[0]`` to
``sigmas[-1]``. Noise is never drawn here: a stochastic sampler takes the noise it injects at each
step as ``noises`` (n_steps, B, ...), so a stochastic trajectory is as reproducible and as
searchable as a starting noise. ``callback(i, sigma, x, denoised)`` sees every denoiser result,
so an x0-preview at any step costs nothing extra. Each sampler declares its exact NFE cost per
sample for a schedule through ``nfe(sigmas)``, and whether it needs ``noises``.

The model's forward process in this convention is ``renoise``: it takes a state at ``sigma_from``
to a noisier ``sigma_to`` with fresh noise (used by search over paths).
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


def _deterministic(noises) -> None:
    if noises is not None:
        raise ValueError("this sampler is deterministic and takes no noises; use a stochastic sampler")


def sample_euler(
    denoise: Denoiser, x: torch.Tensor, sigmas, *, callback: Callback | None = None, noises=None
) -> torch.Tensor:
    """Euler method on the probability-flow ODE (Karras et al. 2022, Alg. 1 with one stage)."""
    _deterministic(noises)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        # x + (sigma_next - sigma) * (x - denoised) / sigma, in one new tensor (bitwise the same values;
        # autograd-safe: no value that a backward pass needs is overwritten)
        x = (x - denoised).mul_(sigma_next - sigma).div_(sigma).add_(x)  # (B, ...)
    return x


def sample_heun(
    denoise: Denoiser, x: torch.Tensor, sigmas, *, callback: Callback | None = None, noises=None
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 1); the step to sigma = 0 is Euler."""
    _deterministic(noises)
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


def sample_euler_sde(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas,
    *,
    callback: Callback | None = None,
    noises: torch.Tensor,
    eta: float = 0.5,
) -> torch.Tensor:
    """Stochastic sampler: DDIM with noise level ``eta`` (Song et al. 2021, Eq. 12) in this convention.

    Each step from sigma to sigma' < sigma draws from a Gaussian around the x0-prediction:

        x' = (1 - sigma') * denoised + sqrt(sigma'^2 - c^2) * eps_hat + c * noises[i],
        eps_hat = (x - (1 - sigma) * denoised) / sigma,    c = eta * std of q(x_sigma' | x_sigma, x0)

    where q is the forward process's posterior (``c^2 = sigma'^2 * (sigma^2 - a^2 sigma'^2) / sigma^2``,
    ``a = (1 - sigma) / (1 - sigma')``). ``eta = 0`` is deterministic DDIM (= Euler here), ``eta = 1``
    is DDPM's ancestral sampler; every eta keeps the data marginals under an exact denoiser.
    ``noises`` is (n_steps, B, ...); the step to sigma = 0 injects nothing.
    """
    if noises is None or len(noises) != len(sigmas) - 1:
        raise ValueError(f"stochastic sampler needs noises for {len(sigmas) - 1} steps")
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        a = (1 - sigma) / (1 - sigma_next)
        c = eta * sigma_next * max(sigma**2 - (a * sigma_next) ** 2, 0.0) ** 0.5 / sigma
        # the formula above with two new tensors instead of seven (bitwise the same values, autograd-safe)
        eps_hat = torch.sub(x, denoised * (1 - sigma)).div_(sigma)
        x = (denoised * (1 - sigma_next)).add_(eps_hat.mul_((sigma_next**2 - c**2) ** 0.5)).add_(noises[i] * c)
    return x


def sample_euler_ancestral(
    denoise: Denoiser, x: torch.Tensor, sigmas, *, callback: Callback | None = None, noises: torch.Tensor
) -> torch.Tensor:
    """``sample_euler_sde`` with ``eta = 1``: DDPM's ancestral sampler (Ho et al. 2020)."""
    return sample_euler_sde(denoise, x, sigmas, callback=callback, noises=noises, eta=1.0)


def renoise(x: torch.Tensor, sigma_from: float, sigma_to: float, noise: torch.Tensor) -> torch.Tensor:
    """The forward process from ``sigma_from`` to a noisier ``sigma_to``, with ``noise`` ~ N(0, I).

    ``x_to = a * x_from + sqrt(sigma_to^2 - (a * sigma_from)^2) * noise`` with
    ``a = (1 - sigma_to) / (1 - sigma_from)``: exactly the conditional law of x_sigma_to given
    x_sigma_from under x_sigma = (1 - sigma) x0 + sigma noise.
    """
    if not 0 <= sigma_from <= sigma_to <= 1 or sigma_from == 1:
        raise ValueError(
            f"renoise needs 0 <= sigma_from <= sigma_to <= 1, sigma_from < 1; got {sigma_from}, {sigma_to}"
        )
    a = (1 - sigma_to) / (1 - sigma_from)
    return a * x + max(sigma_to**2 - (a * sigma_from) ** 2, 0.0) ** 0.5 * noise


@dataclass(frozen=True)
class Sampler:
    """A sampler function, its exact cost (``nfe(sigmas)`` denoiser evaluations per sample), and
    whether it injects noise per step (then it takes ``noises``)."""

    fn: Callable[..., torch.Tensor]
    nfe: Callable[[tuple[float, ...]], int]
    summary: str
    stochastic: bool = False


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler(sample_euler, lambda s: len(s) - 1, "first-order Euler; 1 NFE per step"),
    "heun": Sampler(
        sample_heun,
        lambda s: 2 * (len(s) - 1) - (1 if s[-1] == 0 else 0),
        "second-order Heun; 2 NFEs per step, 1 for the final step to sigma = 0",
    ),
    "euler-sde": Sampler(
        sample_euler_sde,
        lambda s: len(s) - 1,
        "stochastic DDIM, eta 0.5 (half of DDPM's noise per step); 1 NFE per step",
        stochastic=True,
    ),
    "euler-ancestral": Sampler(
        sample_euler_ancestral,
        lambda s: len(s) - 1,
        "stochastic, DDPM ancestral (DDIM eta 1); 1 NFE per step",
        stochastic=True,
    ),
}


def get_sampler(name: str) -> Sampler:
    """The registered sampler ``name``; a clear error naming the accepted ones otherwise."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
