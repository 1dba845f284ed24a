"""Epsilon-greedy search over the noise a stochastic sampler injects at each step.

Ramesh and Mardani 2025, "Test-time Scaling of Diffusion Models via Noise Trajectory Search"
(arXiv 2506.03164; reference code rvignav/diffusion-tts, ``edm/main.py`` and its Stable Diffusion
pipeline). Denoising is treated as a sequence of contextual bandits, one per step. At each step
``t`` from the kept state ``x_t``:

1. the pivot is a fresh draw ``pivot ~ N(0, I)`` (not scored);
2. ``iterations`` times (K, 20 in the reference): make ``proposals`` candidate step noises (N, 4),
   each, independently, with probability ``epsilon`` (0.4) a fresh draw ``N(0, I)`` (global
   exploration), else a local move ``pivot + r * lam * sqrt(D) * u`` with ``r ~ U(0, 1)``, ``u`` a
   uniformly random unit direction and ``D`` the number of elements of a noise (``lam`` =
   ``step_size``, 0.15); run the step from ``x_t`` with each, score each on the x0-prediction of
   its end state (``score_end``: one more denoiser evaluation) and make the best proposal of the
   iteration the new pivot, whether or not it beats the previous pivot;
3. the last pivot is the step's injected noise: its end state (and its end-state x0-prediction, as
   the next step's known first evaluation) is kept.

The reference runs the kept step again with the last pivot; here the step is deterministic given
the pivot, so the result of the proposal that became the pivot is kept instead (the same values,
one evaluation fewer). The step to sigma = 0 injects no noise (``noisesearch.samplers``), so steps
``0 .. steps - 2`` are searched and the final step is one job per trajectory (its noise row, the
fresh pivot of that step, is read by nothing). Every proposal is charged: a step's proposal costs
one evaluation at its end state, and on the first step also the evaluation at the start noise
(the driver has no evaluate-only job, and no x0-prediction of the noise is known yet).

A budget pays for ``trajectories = budget // cost(one trajectory)`` independent trajectories
(trajectory ``q`` starts from the draw ``(q,)``; the driver keeps the best finished sample); with
``iterations=None`` (noisesearch's option, for scaling curves) one trajectory takes as many
iterations per step as the budget pays for. What is left (less than one trajectory, or one
iteration) goes to extra independent full candidates with the run's sampler (random search:
candidate ``k`` is the draw ``(EXTRA, k)``), as ``paths`` does, so the budget is used to within one
candidate. The reference has a fixed cost per sample and no budget to fill. The reference draws one uniform per proposal for the
whole batch; here each search draws its own, all from seeded paths: the choice and the radius of
proposal ``j`` of iteration ``k`` at step ``t`` of trajectory ``q`` are the uniforms of the draws
``(q, CHOICE, t, k, j)`` and ``(q, RADIUS, t, k, j)``, its fresh noise or direction the draw
``(q, FRESH, t, k, j)`` or ``(q, DIRECTION, t, k, j)``, the pivot the draw ``(q, PIVOT, t)``.

Every search of a run advances in lock step: a round is one iteration of one step, its rows every
proposal of every trajectory of every search (search-major, then trajectory, then proposal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms._stepwise import check_stochastic_sampler, resolve_sampler
from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, first_best, is_count
from noisesearch.errors import UserError

# path markers of the draws (module docstring)
PIVOT, CHOICE, RADIUS, FRESH, DIRECTION, EXTRA = (2**41 + k for k in range(6))


def local_moves(pivot: torch.Tensor, direction: torch.Tensor, radius: torch.Tensor, step_size: float) -> torch.Tensor:
    """``pivot + radius * step_size * sqrt(D) * direction / |direction|`` row by row.

    ``pivot``, ``direction`` (B, *shape); ``radius`` (B,) in [0, 1); D = elements per row.
    """
    d = direction.flatten(1)
    scale = radius.to(d.dtype) * step_size * math.sqrt(d.shape[1]) / d.norm(dim=1)  # (B,)
    return pivot + direction * scale.view(-1, *([1] * (pivot.dim() - 1)))


@dataclass
class EpsilonGreedyState:
    problems: Problems
    sampler: str
    trajectories: int  # T per search
    iterations: int  # K per step
    extra: int  # extra independent full candidates per search, paid by the leftover budget
    x: torch.Tensor  # (S, T, *noise_shape) kept state of each trajectory at step ``step``
    pivot: torch.Tensor  # (S, T, *noise_shape) the current pivot noise of the step being searched
    start_seeds: list[int]  # (S * T) seeds of the starting noises, search-major
    step: int = 0  # the step being searched (``steps - 1``: the final step; ``steps``: the extras; then done)
    iteration: int = 0  # the next iteration of that step
    denoised: torch.Tensor | None = None  # (S, T, *noise_shape) x0-prediction of the kept state (known)
    best_x: torch.Tensor | None = None  # (S, T, *noise_shape) end state of the current pivot's step
    best_denoised: torch.Tensor | None = None  # (S, T, *noise_shape) its end-state x0-prediction

    @property
    def searches(self) -> int:
        return self.x.shape[0]


class EpsilonGreedySearch:
    """Per-step epsilon-greedy local search over injected noises (Ramesh and Mardani 2025)."""

    name = "epsilon-greedy"
    renders_from_noise = False  # final_steps: a trajectory depends on the step noises it searched

    def __init__(
        self,
        *,
        epsilon: float = 0.4,
        iterations: int | None = 20,
        proposals: int = 4,
        step_size: float = 0.15,
        sampler: str | None = None,
    ):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon <= 1:
            raise UserError(f"epsilon must be a number in [0, 1], got {epsilon!r}")
        if iterations is not None and not (is_count(iterations) and iterations >= 1):
            raise UserError(
                f"iterations must be a positive integer or null (as many as the budget pays), got {iterations!r}"
            )
        if not (is_count(proposals) and proposals >= 1):
            raise UserError(f"proposals must be a positive integer, got {proposals!r}")
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0 <= step_size < math.inf:
            raise UserError(f"step_size must be a finite number >= 0, got {step_size!r}")
        self.epsilon, self.iterations, self.proposals = float(epsilon), iterations, proposals
        self.step_size, self.sampler = float(step_size), check_stochastic_sampler(sampler)

    def params(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "iterations": self.iterations,
            "proposals": self.proposals,
            "step_size": self.step_size,
            "sampler": self.sampler,
        }

    def step_costs(self, costs: CostModel | Problems, sampler: str) -> list[int]:
        """Exact NFEs of one proposal at each searched step, then of the final step (one row each)."""
        s, n = costs.sigmas, costs.steps
        searched = [costs.cost(s[t : t + 2], sampler, denoised=t > 0, score_end=True) for t in range(n - 1)]
        return [*searched, costs.cost(s[n - 1 :], sampler, denoised=n > 1)]

    def _one_trajectory(self, costs: CostModel, sampler: str) -> tuple[int, str]:
        """(NFEs, what for) of one trajectory: the least a plan needs (with ``iterations`` None, one per step)."""
        steps = self.step_costs(costs, sampler)
        per_iteration, final = self.proposals * sum(steps[:-1]), steps[-1]
        if costs.steps == 1:  # nothing to search: one trajectory per budget's worth of final steps
            return final, "one trajectory"
        if self.iterations is None:
            return per_iteration + final, "one trajectory with one iteration per step"
        what = f"one trajectory ({self.iterations} iterations of {self.proposals} proposals per step)"
        return self.iterations * per_iteration + final, what

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        return self._one_trajectory(costs, resolve_sampler(self.sampler, costs))

    def plan(self, problems: Problems, sampler: str) -> tuple[int, int, int]:
        """(trajectories per search, iterations per step, extra candidates) from the exact cost (module docstring)."""
        costs = self.step_costs(problems, sampler)
        per_iteration, final = self.proposals * sum(costs[:-1]), costs[-1]
        one, what = self._one_trajectory(problems.costs, sampler)
        problems.require_budget(one, what)
        if problems.steps == 1:
            trajectories, iterations = problems.budget // final, 1
        elif self.iterations is None:
            trajectories, iterations = 1, (problems.budget - final) // per_iteration
        else:
            trajectories, iterations = problems.budget // one, self.iterations
        spent = trajectories * (iterations * per_iteration * (problems.steps > 1) + final)
        return trajectories, iterations, (problems.budget - spent) // problems.cost()

    def init(self, problems: Problems) -> EpsilonGreedyState:
        sampler = resolve_sampler(self.sampler, problems.costs)
        T, K, extra = self.plan(problems, sampler)
        S = len(problems)
        owners = [i for i in range(S) for _ in range(T)]
        seeds, x = problems.noise(owners, [(q,) for _ in range(S) for q in range(T)])
        _, pivot = problems.noise(owners, [(q, PIVOT, 0) for _ in range(S) for q in range(T)])
        shape = x.shape[1:]
        return EpsilonGreedyState(
            problems, sampler, T, K, extra, x.view(S, T, *shape), pivot.view(S, T, *shape), list(seeds)
        )

    def _proposals(self, state: EpsilonGreedyState) -> tuple[torch.Tensor, torch.Tensor]:
        """(proposals (S * T * N, *noise_shape), fresh (S * T * N,) bool) of the current iteration."""
        p, S, T, N = state.problems, state.searches, state.trajectories, self.proposals
        t, k = state.step, state.iteration
        owners = [i for i in range(S) for _ in range(T * N)]
        where = [(q, t, k, j) for _ in range(S) for q in range(T) for j in range(N)]
        u = p.uniforms(
            owners * 2, [(q, CHOICE, t, k, j) for q, t, k, j in where] + [(q, RADIUS, t, k, j) for q, t, k, j in where]
        )
        choice, radius = u[: len(where)], u[len(where) :]
        fresh = (choice < self.epsilon).cpu()
        marks = [FRESH if f else DIRECTION for f in fresh.tolist()]
        _, g = p.noise(owners, [(q, m, t, k, j) for (q, t, k, j), m in zip(where, marks)])
        pivots = state.pivot.flatten(0, 1).repeat_interleave(N, dim=0)  # (S * T * N, *shape)
        moved = local_moves(pivots, g, radius, self.step_size)
        f = fresh.to(g.device).view(-1, *([1] * (g.dim() - 1)))
        return torch.where(f, g, moved), fresh

    def ask(self, state: EpsilonGreedyState) -> list[Jobs]:
        p, t, n = state.problems, state.step, state.problems.steps
        if t == n:  # the leftover budget's extra candidates, then done
            return (
                [p.fresh(state.extra, EXTRA, info={"role": ["extra"] * (len(p) * state.extra)})] if state.extra else []
            )
        if t > n:
            return []
        S, T, N = state.searches, state.trajectories, self.proposals
        if t == n - 1:  # the final step: one job per trajectory, nothing injected
            x, den = state.x.flatten(0, 1), None if state.denoised is None else state.denoised.flatten(0, 1)
            return [
                Jobs(
                    torch.arange(S).repeat_interleave(T),
                    x,
                    p.sigmas[t:],
                    noise_seed=state.start_seeds if t == 0 else None,
                    info={
                        "trajectory": torch.arange(T).repeat(S),
                        "step": torch.full((S * T,), t, dtype=torch.int64),
                    },
                    sampler=state.sampler,
                    noises=state.pivot.flatten(0, 1)[:, None],
                    denoised=den,
                )
            ]
        proposals, fresh = self._proposals(state)
        x = state.x.flatten(0, 1).repeat_interleave(N, dim=0)
        den = None if state.denoised is None else state.denoised.flatten(0, 1).repeat_interleave(N, dim=0)
        seeds = [s for s in state.start_seeds for _ in range(N)] if t == 0 else None
        rows = S * T * N
        return [
            Jobs(
                torch.arange(S).repeat_interleave(T * N),
                x,
                p.sigmas[t : t + 2],
                noise_seed=seeds,
                info={
                    "trajectory": torch.arange(T).repeat_interleave(N).repeat(S),
                    "step": torch.full((rows,), t, dtype=torch.int64),
                    "iteration": torch.full((rows,), state.iteration, dtype=torch.int64),
                    "proposal": torch.arange(N).repeat(S * T),
                    "fresh": fresh.to(torch.int64),
                },
                sampler=state.sampler,
                noises=proposals[:, None],
                denoised=den,
                score_end=True,
            )
        ]

    def tell(self, state: EpsilonGreedyState, outcomes: list[Outcomes]) -> None:
        (out,) = outcomes
        p, t, n = state.problems, state.step, state.problems.steps
        if t >= n - 1:
            state.step = t + 1
            return  # finished samples: the driver keeps the best
        S, T, N = state.searches, state.trajectories, self.proposals
        device = state.x.device
        best = first_best(out.score.to(device).view(S, T, N), dim=-1)  # (S, T) NaN never wins
        rows = (torch.arange(S * T, device=device) * N + best.flatten()).to(out.x.device)
        shape = state.x.shape[2:]
        state.pivot = out.jobs.noises.index_select(0, rows.to(out.jobs.noises.device))[:, 0].view(S, T, *shape)
        state.best_x = out.x.index_select(0, rows).view(S, T, *shape)
        state.best_denoised = out.denoised.index_select(0, rows).view(S, T, *shape)
        state.iteration += 1
        if state.iteration < state.iterations:
            return
        state.x, state.denoised = state.best_x, state.best_denoised  # the last pivot is the step's noise
        state.step, state.iteration = t + 1, 0
        owners = [i for i in range(S) for _ in range(T)]
        _, pivot = p.noise(owners, [(q, PIVOT, t + 1) for _ in range(S) for q in range(T)])
        state.pivot = pivot.view(S, T, *shape)
