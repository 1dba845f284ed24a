"""Helpers shared by the step-wise algorithms (SMC, epsilon-greedy, step-greedy): one batch of rows per sampling step."""

from __future__ import annotations

from noisesearch.algorithms.base import CostModel
from noisesearch.errors import UserError
from noisesearch.samplers import SAMPLERS, get_sampler


def check_stochastic_sampler(name: str | None) -> str | None:
    """``name`` if it is None or a registered stochastic sampler; a ``UserError`` otherwise."""
    if name is not None and not get_sampler(name).stochastic:
        accepted = ", ".join(n for n, s in SAMPLERS.items() if s.stochastic)
        raise UserError(f"sampler must be a stochastic sampler ({accepted}), got {name!r}")
    return name


def resolve_sampler(name: str | None, costs: CostModel) -> str:
    """The sampler to use: ``name``, else the run's sampler if it is stochastic, else euler-sde."""
    return name or (costs.sampler if costs.stochastic else "euler-sde")


def chain_step_costs(costs: CostModel, sampler: str) -> list[int]:
    """Exact NFEs of one row per step along ``costs.sigmas`` when every step but the last asks
    ``score_end`` and every step but the first reuses the cached x0-prediction."""
    sigmas, n = costs.sigmas, costs.steps
    return [costs.cost(sigmas[i : i + 2], sampler, denoised=i > 0, score_end=i < n - 1) for i in range(n)]
