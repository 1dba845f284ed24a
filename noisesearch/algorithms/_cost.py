"""What a run's candidates cost, as pure functions of the run's schedule, sampler and NFEs per call.

``Problems`` (``algorithms.base``) delegates its cost methods here, and a sweep's planning (``sweep.costs``) asks
the same functions without a run: one rule for the exact NFEs of a row, written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from noisesearch.algorithms._jobs import Jobs, plain_cost
from noisesearch.errors import UserError
from noisesearch.samplers import get_sampler


def steps(sigmas: Sequence[float]) -> int:
    """Steps of a full candidate along the schedule ``sigmas``."""
    return len(sigmas) - 1


def stochastic(sampler: str) -> bool:
    """Whether ``sampler`` injects noise at every step."""
    return get_sampler(sampler).stochastic


def starts_at_noise(sigmas: Sequence[float], jobs: Jobs) -> bool:
    """Whether the rows of ``jobs`` start from a *noise*: at the first sigma of the run's schedule ``sigmas``.

    The one place this rule is written: such a row is turned into the model's state by ``start_scale`` (VP
    models), identified in its record by its seed or a hash of it, and may be replayed from the cache; a row
    starting anywhere else starts from an intermediate state.
    """
    return jobs.sigmas[0] == sigmas[0]


def cost(sigmas: Sequence[float], sampler: str, nfe_per_call: int, **options: Any) -> int:
    """Exact NFEs of one row along ``sigmas`` with ``sampler`` and the ``Jobs`` options given (``denoised``,
    ``score_end``, ``grad``, ``backward_cost``)."""
    forward, backward = plain_cost(tuple(sigmas), sampler, nfe_per_call, **options)
    return forward + backward


def job_costs(jobs: Jobs, sampler: str, nfe_per_call: int) -> tuple[int, int]:
    """(forward NFEs, backward-pass NFE-equivalents) of one row of ``jobs`` (``sampler``: the run's, used when
    the batch names none)."""
    return plain_cost(
        jobs.sigmas,
        jobs.sampler or sampler,
        nfe_per_call,
        denoised=jobs.denoised is not None,
        score_end=jobs.score_end,
        grad=jobs.grad,
        backward_cost=jobs.backward_cost,
    )


def job_cost(jobs: Jobs, sampler: str, nfe_per_call: int) -> int:
    """Exact NFEs that each row of ``jobs`` will be charged."""
    return sum(job_costs(jobs, sampler, nfe_per_call))


def shortfall(budget: int, needed: int, what: str, n_steps: int, nfe_per_call: int) -> str | None:
    """Why ``budget`` cannot pay for ``needed`` NFEs of ``what``, or None when it can.

    Every algorithm refuses a too-small budget with this message, so it always ends with
    ``give --budget >= N ...`` (the smallest budget that works).
    """
    if budget >= needed:
        return None
    return (
        f"budget {budget} is smaller than {what} ({needed} NFEs with {n_steps} "
        f"steps at {nfe_per_call} NFE(s) per evaluation); "
        f"give --budget >= {needed} or fewer --steps"
    )


def require_budget(budget: int, needed: int, what: str, n_steps: int, nfe_per_call: int) -> None:
    """Raise a clear ``UserError`` (``shortfall``'s message) when ``budget`` cannot pay for ``needed`` NFEs."""
    reason = shortfall(budget, needed, what, n_steps, nfe_per_call)
    if reason is not None:
        raise UserError(reason)


@dataclass(frozen=True)
class CostModel:
    """What a run's rows cost, known before anything loads: its schedule ``sigmas`` (of one full candidate),
    ``sampler`` and NFEs per denoiser call. An algorithm's budget rule (``budget_needed``) reads only this and
    the budget, so a run (``Problems.costs``) and a sweep's planning (``sweep.costs``) ask the same rule."""

    sigmas: tuple[float, ...]
    sampler: str
    nfe_per_call: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigmas", tuple(self.sigmas))

    @property
    def steps(self) -> int:
        """Steps of a full candidate."""
        return steps(self.sigmas)

    @property
    def stochastic(self) -> bool:
        """Whether the sampler injects noise at every step."""
        return stochastic(self.sampler)

    def cost(self, sigmas: Sequence[float] | None = None, sampler: str | None = None, **options: Any) -> int:
        """Exact NFEs of one row along ``sigmas`` (default: a full candidate) with ``sampler`` (default the
        run's) and the ``Jobs`` options given."""
        return cost(self.sigmas if sigmas is None else sigmas, sampler or self.sampler, self.nfe_per_call, **options)

    def shortfall(self, budget: int, needed: int, what: str) -> str | None:
        """Why ``budget`` cannot pay for ``needed`` NFEs of ``what`` on this schedule, or None (``shortfall``)."""
        return shortfall(budget, needed, what, self.steps, self.nfe_per_call)


def one_candidate(costs: CostModel, budget: int) -> tuple[int, str]:
    """The default budget rule of a search algorithm: no minimum beyond one full candidate."""
    return costs.cost(), "one candidate"


def grid(searches: int, per_search: int) -> tuple[list[int], list[int]]:
    """(owners, k): ``per_search`` rows for each of ``searches`` searches, search-major: row ``i * per_search + k``."""
    return [i for i in range(searches) for _ in range(per_search)], [
        k for _ in range(searches) for k in range(per_search)
    ]
