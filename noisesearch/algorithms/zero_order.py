"""Zero-order search: hill climbing over the noise with neighbours around a pivot.

Ma et al. 2025, Sec. 3.2 "Zero-Order Search": start from a random pivot noise, score ``N``
neighbours around it, move the pivot to the best one, repeat. Three neighbourhoods of pivot ``n``
(``eps ~ N(0, I)`` a fresh draw per neighbour, ``u = eps / |eps|`` a uniform random direction):

- ``"mix"`` (the default, noisesearch's own): ``y = (n + step_size * eps) / sqrt(1 + step_size**2)``.
  ``y`` is again standard normal when ``n`` is (the Gaussian marginal is kept), but it is not at a
  fixed distance or angle from ``n``: its expected cosine to ``n`` is ``1 / sqrt(1 + step_size**2)``
  (0.71 at the default 1.0); ``step_size`` -> 0 stays at the pivot, large values approach random search.
- ``"distance"`` (the paper's ``{y : d(y, n) = lambda}``): ``y = n + step_size * u``, exactly at
  Euclidean distance ``lambda = step_size`` from the pivot (an absolute distance in noise units:
  a standard normal noise of ``D`` elements has norm about ``sqrt(D)``).
- ``"cosine"`` (as tt-scale-flux does it): ``y`` on the sphere of the pivot's norm at cosine
  ``cosine`` (default 0.95) to it: ``y = |n| (cosine * n / |n| + sqrt(1 - cosine**2) * v)`` with
  ``v`` the unit component of ``eps`` orthogonal to ``n`` (needs noises of at least 2 elements).

The pivot moves only when a neighbour beats it, and it is never re-run: its score is kept.
The last round takes as many neighbours as the budget still pays for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import Job, Outcome, Problem, is_count, rank_key
from noisesearch.errors import UserError

NEIGHBOURHOODS = ("mix", "distance", "cosine")


def neighbour(pivot: torch.Tensor, eps: torch.Tensor, kind: str, step_size: float, cosine: float) -> torch.Tensor:
    """The neighbour of ``pivot`` made from the standard normal draw ``eps`` (same shape), per the module docstring."""
    if kind == "mix":
        return (pivot + step_size * eps) / math.sqrt(1.0 + step_size**2)
    if kind == "distance":
        return pivot + step_size * eps / eps.norm()
    if kind == "cosine":
        n = pivot.double()
        unit = n / n.norm()
        v = eps.double() - (eps.double() * unit).sum() * unit  # the part of eps orthogonal to the pivot
        y = n.norm() * (cosine * unit + math.sqrt(1.0 - cosine**2) * v / v.norm())
        return y.to(pivot.dtype)
    raise ValueError(f"unknown neighbourhood {kind!r}")


@dataclass
class ZeroOrderState:
    problem: Problem
    spent: int = 0
    iteration: int = 0  # rounds of neighbours asked so far
    pivot: torch.Tensor | None = None
    pivot_score: float = -math.inf
    pivot_index: int = -1
    pivot_noises: torch.Tensor | None = None  # a stochastic sampler's per-step noises, kept fixed
    told: int = 0  # candidates told so far (their indices in this search)


class ZeroOrderSearch:
    """Greedy local search around a pivot noise (see the module docstring)."""

    name = "zero-order"

    def __init__(
        self,
        *,
        neighbours: int = 4,
        step_size: float = 1.0,
        iterations: int | None = None,
        neighbourhood: str = "mix",
        cosine: float = 0.95,
    ):
        if not is_count(neighbours) or neighbours < 1:
            raise UserError(f"neighbours must be a positive integer, got {neighbours!r}")
        if not step_size > 0 or math.isinf(step_size):
            raise UserError(f"step size must be a positive number, got {step_size!r}")
        if iterations is not None and (not is_count(iterations) or iterations < 1):
            raise UserError(f"iterations must be a positive integer, got {iterations!r}")
        if neighbourhood not in NEIGHBOURHOODS:
            raise UserError(f"unknown neighbourhood {neighbourhood!r}; accepted: {', '.join(NEIGHBOURHOODS)}")
        if isinstance(cosine, bool) or not isinstance(cosine, (int, float)) or not -1 < cosine < 1:
            raise UserError(f"cosine must be a number in (-1, 1), got {cosine!r}")
        self.neighbours, self.step_size, self.iterations = neighbours, float(step_size), iterations
        self.neighbourhood, self.cosine = neighbourhood, float(cosine)

    def params(self) -> dict:
        return {
            "neighbours": self.neighbours,
            "step_size": self.step_size,
            "iterations": self.iterations,
            "neighbourhood": self.neighbourhood,
            "cosine": self.cosine,
        }

    def init(self, problem: Problem) -> ZeroOrderState:
        if self.neighbourhood == "cosine" and math.prod(problem.noise_shape) < 2:
            raise UserError(f"the cosine neighbourhood needs noises of at least 2 elements, got {problem.noise_shape}")
        problem.require_budget(2 * problem.cost(), "a pivot and one neighbour")
        return ZeroOrderState(problem)

    def ask(self, state: ZeroOrderState) -> list[Job]:
        p = state.problem
        cost = p.cost()
        if state.told == 0:  # first round: the pivot itself
            return [p.fresh_job(0, info={"role": "pivot", "iteration": 0})]
        n = min(self.neighbours, (p.budget - state.spent) // cost)
        if n < 1 or (self.iterations is not None and state.iteration >= self.iterations):
            return []
        state.iteration += 1
        jobs = []
        for j in range(n):
            seed, eps = p.noise(state.iteration, j)
            x = neighbour(state.pivot, eps, self.neighbourhood, self.step_size, self.cosine)
            info = {"role": "neighbour", "iteration": state.iteration, "pivot": state.pivot_index, "eps_seed": seed}
            jobs.append(Job(x, p.sigmas, info=info, noises=state.pivot_noises))  # same per-step noises
        return jobs

    def tell(self, state: ZeroOrderState, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            state.spent += o.nfe
            state.told += 1
            if state.pivot is None or rank_key(o.score) > rank_key(state.pivot_score):
                state.pivot, state.pivot_score, state.pivot_index = o.job.x, o.score, o.index
                state.pivot_noises = o.job.noises
