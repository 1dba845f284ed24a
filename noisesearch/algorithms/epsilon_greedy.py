"""Epsilon-greedy search over the noise a stochastic sampler injects at each step.

Ramesh and Mardani 2025, "Test-time Scaling of Diffusion Models via Noise Trajectory Search".
Each of ``paths`` independent trajectories starts from the draw ``(p,)``. At every step it runs
``candidates`` jobs from its current state, each with its own step noise (the draw
``(p, STEP_NOISES, step, c)``), scored on the x0-prediction of the end state (``score_end``); it
keeps the best one, or with probability ``epsilon`` a uniformly random one, and the kept
candidate's x0-prediction is passed as ``denoised`` to the next step, so it is never paid twice.

One seeded uniform ``u`` per choice (the draw ``(p, EXPLORE, step)``) decides both: ``u < epsilon``
explores, and then ``u / epsilon`` is again uniform and picks candidate ``floor(K u / epsilon)``.
The step to sigma = 0 injects no noise (``noisesearch.samplers``), so the last real choice is the
step before it, whose candidates' x0-predictions are already the final samples: that choice is
always greedy (exploring there could only lose), and the final step is one free job per path that
turns the kept state into a finished sample. Without ``paths``, trajectories with ``candidates``
per step are started while the budget pays for them, and what is left goes to one narrower
trajectory with as many candidates per step as it pays for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from noisesearch.algorithms._stepwise import chain_step_costs, check_stochastic_sampler, resolve_sampler, seeded_uniform
from noisesearch.algorithms.base import STEP_NOISES, Job, Outcome, Problem, rank_key
from noisesearch.errors import UserError

_EXPLORE = 2**41  # path marker of the exploration uniforms


@dataclass
class EpsilonGreedyState:
    problem: Problem
    sampler: str
    widths: list[int]  # candidates per step of each path
    step: int = 0  # the next step to run
    x: list[torch.Tensor] = field(default_factory=list)  # kept state of each path (*noise_shape)
    denoised: list[torch.Tensor | None] = field(default_factory=list)  # its x0-prediction (cached)
    choices: list[list[int]] = field(default_factory=list)  # per path, the candidate kept at each step
    explored: list[list[bool]] = field(default_factory=list)  # per path, whether that choice explored


class EpsilonGreedySearch:
    """Per-step epsilon-greedy choice among injected noises (Ramesh and Mardani 2025)."""

    name = "epsilon-greedy"

    def __init__(
        self, *, candidates: int = 4, epsilon: float = 0.1, sampler: str | None = None, paths: int | None = None
    ):
        if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
            raise UserError(f"candidates must be a positive integer, got {candidates!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon <= 1:
            raise UserError(f"epsilon must be a number in [0, 1], got {epsilon!r}")
        if paths is not None and (not isinstance(paths, int) or isinstance(paths, bool) or paths < 1):
            raise UserError(f"paths must be a positive integer, got {paths!r}")
        self.candidates, self.epsilon = candidates, float(epsilon)
        self.sampler, self.paths = check_stochastic_sampler(sampler), paths

    def params(self) -> dict:
        return {"candidates": self.candidates, "epsilon": self.epsilon, "sampler": self.sampler, "paths": self.paths}

    def init(self, problem: Problem) -> EpsilonGreedyState:
        sampler = resolve_sampler(self.sampler, problem)
        costs = chain_step_costs(problem, sampler)
        per_candidate, finish = sum(costs[:-1]), costs[-1]  # K candidates on every step but the last

        def cost(width: int) -> int:
            return width * per_candidate + finish

        if self.paths is not None:
            widths = [self.candidates] * self.paths
        else:
            widths = [self.candidates] * (problem.budget // cost(self.candidates))
            left = problem.budget - len(widths) * cost(self.candidates)
            if per_candidate and left >= cost(1):
                widths.append((left - finish) // per_candidate)  # < candidates, since left < cost(candidates)
        if widths:
            problem.require_budget(sum(cost(w) for w in widths), f"{len(widths)} trajectory(ies)")
        else:
            problem.require_budget(cost(1), "one trajectory with one candidate per step")
        n = len(widths)
        return EpsilonGreedyState(
            problem, sampler, widths, choices=[[] for _ in range(n)], explored=[[] for _ in range(n)]
        )

    def ask(self, state: EpsilonGreedyState) -> list[Job]:
        p, t = state.problem, state.step
        n = len(p.sigmas) - 1
        if t == n:
            return []
        jobs = []
        for path, width in enumerate(state.widths):
            seed, x = p.noise(path) if t == 0 else (None, state.x[path])
            denoised = None if t == 0 else state.denoised[path]
            for c in range(width if t < n - 1 else 1):  # the final step injects no noise: one job
                step_seed, eps = p.noise(path, STEP_NOISES, t, c)
                info = {"path": path, "step": t, "candidate": c, "step_noise_seed": step_seed}
                jobs.append(
                    Job(
                        x,
                        p.sigmas[t : t + 2],
                        noise_seed=seed,
                        info=info,
                        sampler=state.sampler,
                        noises=eps[None],  # (1, *noise_shape)
                        denoised=denoised,
                        score_end=t < n - 1,
                    )
                )
        return jobs

    def tell(self, state: EpsilonGreedyState, outcomes: list[Outcome]) -> None:
        p, t = state.problem, state.step
        n = len(p.sigmas) - 1
        state.step += 1
        if t == n - 1:
            return  # finished samples: the driver keeps the best
        start, last_choice = 0, t == n - 2
        state.x, state.denoised = [], []
        for path, width in enumerate(state.widths):
            group = outcomes[start : start + width]  # this path's candidates, in job order
            start += width
            u = seeded_uniform(p, path, _EXPLORE, t)
            explore = not last_choice and u < self.epsilon
            if explore:
                c = min(int(width * u / self.epsilon), width - 1)
            else:
                c = max(range(width), key=lambda i: rank_key(group[i].score))  # first best; NaN never wins
            state.x.append(group[c].x)
            state.denoised.append(group[c].denoised)
            state.choices[path].append(c)
            state.explored[path].append(explore)
