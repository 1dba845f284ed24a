"""Zero-order search: hill climbing over the noise with neighbours around a pivot.

Ma et al. 2025, Sec. 3.2 "Zero-Order Search": start from a random pivot noise, score ``N``
neighbours around it, move the pivot to the best one, repeat. A neighbour of pivot ``n`` is

    y = (n + step_size * eps) / sqrt(1 + step_size**2),     eps ~ N(0, I)

a step of relative size ``step_size`` that is projected back so that ``y`` is again standard
normal when ``n`` is (``step_size`` -> 0 stays at the pivot, large values approach random search).
The pivot moves only when a neighbour beats it, and it is never re-run: its score is kept.
The last round takes as many neighbours as the budget still pays for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import Job, Outcome, Problem, rank_key
from noisesearch.errors import UserError


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

    def __init__(self, *, neighbours: int = 4, step_size: float = 1.0, iterations: int | None = None):
        if not isinstance(neighbours, int) or neighbours < 1:
            raise UserError(f"neighbours must be a positive integer, got {neighbours!r}")
        if not step_size > 0 or math.isinf(step_size):
            raise UserError(f"step size must be a positive number, got {step_size!r}")
        if iterations is not None and (not isinstance(iterations, int) or iterations < 1):
            raise UserError(f"iterations must be a positive integer, got {iterations!r}")
        self.neighbours, self.step_size, self.iterations = neighbours, float(step_size), iterations

    def params(self) -> dict:
        return {"neighbours": self.neighbours, "step_size": self.step_size, "iterations": self.iterations}

    def init(self, problem: Problem) -> ZeroOrderState:
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
        scale = 1.0 / math.sqrt(1.0 + self.step_size**2)
        jobs = []
        for j in range(n):
            seed, eps = p.noise(state.iteration, j)
            x = (state.pivot + self.step_size * eps) * scale
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
