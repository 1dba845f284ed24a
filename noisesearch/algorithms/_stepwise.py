"""Helpers shared by the step-wise algorithms (SMC, epsilon-greedy): one job per sampling step."""

from __future__ import annotations

import math

import torch

from noisesearch.algorithms.base import Job, Problem
from noisesearch.errors import UserError
from noisesearch.samplers import SAMPLERS, get_sampler


def seeded_uniform(problem: Problem, *path: int) -> float:
    """A uniform number in [0, 1) from the draw ``path``: the normal CDF of its first element."""
    z = float(problem.noise(*path)[1].flatten()[0])
    return min(0.5 * (1.0 + math.erf(z / math.sqrt(2.0))), 1.0 - 2.0**-53)


def check_stochastic_sampler(name: str | None) -> str | None:
    """``name`` if it is None or a registered stochastic sampler; a ``UserError`` otherwise."""
    if name is not None and not get_sampler(name).stochastic:
        accepted = ", ".join(n for n, s in SAMPLERS.items() if s.stochastic)
        raise UserError(f"sampler must be a stochastic sampler ({accepted}), got {name!r}")
    return name


def resolve_sampler(name: str | None, problem: Problem) -> str:
    """The sampler to use: ``name``, else the run's sampler if it is stochastic, else euler-sde."""
    return name or (problem.sampler if problem.stochastic else "euler-sde")


def chain_step_costs(problem: Problem, sampler: str) -> list[int]:
    """Exact NFEs of one job per step along ``problem.sigmas`` when every step but the last asks
    ``score_end`` and every step but the first reuses the cached x0-prediction."""
    sigmas, known = problem.sigmas, torch.empty(0)
    n = len(sigmas) - 1
    return [
        problem.job_cost(
            Job(known, sigmas[i : i + 2], sampler=sampler, denoised=known if i > 0 else None, score_end=i < n - 1)
        )
        for i in range(n)
    ]
