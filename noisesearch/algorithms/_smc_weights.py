"""The weights of SMC (FK steering and the incremental variant): potentials, normalised weights, the effective
sample size and systematic resampling, in float64 (their meaning: ``noisesearch.algorithms.smc``'s docstring)."""

from __future__ import annotations

import math

import torch

POTENTIALS = ("difference", "max", "sum")


def log_potentials(rewards: torch.Tensor, kind: str, lmbda: float) -> torch.Tensor:
    """log G_t (..., k, T) for reward histories (..., k, T), per the module docstring (FK steering, Sec. 3)."""
    rewards = rewards.double()
    if kind == "difference":
        previous = torch.cat([torch.zeros_like(rewards[..., :1]), rewards[..., :-1]], dim=-1)  # r_{-1} = 0
        return lmbda * (rewards - previous)
    if kind == "max":
        return lmbda * torch.cummax(rewards, dim=-1).values  # NaN propagates
    if kind == "sum":
        return lmbda * torch.cumsum(rewards, dim=-1)
    raise ValueError(f"unknown potential {kind!r}")


def normalise(log_w: torch.Tensor) -> torch.Tensor:
    """softmax of log-weights (..., k) along the last dim; a row of all -inf gives uniform weights."""
    dead = torch.isneginf(log_w).all(dim=-1, keepdim=True)  # (..., 1)
    return torch.where(dead, 1.0 / log_w.shape[-1], torch.softmax(log_w, dim=-1))


def resampling_weights(rewards: torch.Tensor, since: int | torch.Tensor, kind: str, lmbda: float) -> torch.Tensor:
    """Normalised weights (..., k) at the last column of ``rewards`` (..., k, T), last resampled at
    ``since`` (an int, or a tensor (...) of steps per search; -1: never).

    FK steering (Singhal et al. 2025, Alg. 1); NaN weights are zero, and all-zero weights uniform.
    """
    log_g = log_potentials(rewards, kind, lmbda)  # (..., k, T)
    tau = torch.as_tensor(since, dtype=torch.int64, device=log_g.device)[..., None, None]  # (..., 1, 1)
    if kind == "difference":
        window = torch.arange(log_g.shape[-1], device=log_g.device) > tau  # (..., 1, T) steps after tau
        log_w = torch.where(window, log_g, 0.0).sum(dim=-1)  # (..., k) product of the incremental potentials
    else:
        at_tau = log_g.gather(-1, tau.clamp(min=0).expand(*log_g.shape[:-1], 1)).squeeze(-1)  # (..., k) G_tau
        log_w = log_g[..., -1] - torch.where(tau[..., 0] >= 0, at_tau, 0.0)  # (..., k) G_t / G_tau
    return normalise(torch.nan_to_num(log_w, nan=-math.inf, posinf=math.inf))


def effective_sample_size(weights: torch.Tensor) -> torch.Tensor:
    """(sum w)^2 / sum w^2 along the last dim, float64 (...): k for equal weights, 1 when one particle
    holds all (Kong et al. 1994)."""
    w = weights.double()
    return w.sum(dim=-1) ** 2 / (w**2).sum(dim=-1)


def systematic_resample(weights: torch.Tensor, u: float | torch.Tensor) -> torch.Tensor:
    """Indices (..., k) of systematic resampling of weights (..., k) with uniforms ``u`` (a float, or (...)):
    particle ``i`` is picked for every position ``(u + m) / k`` that falls in its slice of the cumulative
    weights (Kitagawa 1996)."""
    k = weights.shape[-1]
    cdf = torch.cumsum(weights.double(), dim=-1)  # (..., k)
    cdf = cdf / cdf[..., -1:]
    u = torch.as_tensor(u, dtype=torch.float64, device=cdf.device)[..., None]  # (..., 1)
    positions = (u + torch.arange(k, dtype=torch.float64, device=cdf.device)) / k  # (..., k) in [0, 1)
    return torch.searchsorted(cdf, positions.expand_as(cdf).contiguous(), right=True).clamp(max=k - 1)


def fk_log_weights(
    rewards: torch.Tensor,
    carried: torch.Tensor,
    log_product: torch.Tensor,
    kind: str,
    lmbda: float,
    final: bool,
    log_max: float = math.inf,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FK steering's unnormalised log-weights at one resampling point, and the new carried values (both
    shaped like ``rewards``, e.g. (S, k)).

    ``rewards`` of this point, ``carried`` from the last one, ``log_product`` the log of the potentials
    applied along each lineage; per the module docstring (``smc``). Log-weights above ``log_max`` are
    clamped to it (the reference's clamp of the weights at 1e10, after the final correction); NaN -> -inf.
    """
    r, c = rewards.double(), carried.double()
    if kind == "difference":
        value, log_w = r, lmbda * (r - c)
    elif kind == "max":
        value = torch.maximum(r, c)  # NaN propagates
        log_w = lmbda * value
    elif kind == "sum":
        value = r + c
        log_w = lmbda * value
    else:
        raise ValueError(f"unknown potential {kind!r}")
    if final and kind != "difference":
        log_w = log_w - log_product
    log_w = torch.clamp(log_w, max=log_max)  # NaN stays NaN
    return torch.nan_to_num(log_w, nan=-math.inf, posinf=math.inf), value
