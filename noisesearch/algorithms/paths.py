"""Search over paths: branch intermediate states by re-noising them, keep the best branches.

Ma et al. 2025, Sec. 3.2 "Search over Paths" and Table 6, in this package's sigma convention:

1. integrate ``initial`` (N) fresh noises from sigma 1 to ``start_sigma`` along the run's schedule;
2. re-noise each kept state ``width`` (M) times with the model's forward process from sigma to
   sigma + ``forward`` (capped at 1), using fresh seeded noise (``noisesearch.samplers.renoise``);
3. integrate every branch ``backward`` down in sigma with ``path_length`` (L) steps, and score it on
   the x0-prediction of its last step (a free preview);
4. keep the best N of the N x M branches and repeat 2-3 until sigma reaches 0, where the branches
   are finished samples and the best one is the answer.

Each round moves sigma down by ``backward - forward``. What the budget leaves after the N paths
(less than one path) goes to extra independent full candidates (random search), so the budget is
used to within one candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from noisesearch.algorithms.base import Job, Outcome, Problem, is_count, rank_key
from noisesearch.errors import UserError
from noisesearch.samplers import renoise

_EXTRA = 2**20  # path marker of the extra independent candidates
_ROUND = 1e-9  # sigmas are rounded to this grid so that repeated additions stay exact


def _r(sigma: float) -> float:
    return round(round(sigma / _ROUND) * _ROUND, 9)


@dataclass
class PathsState:
    problem: Problem
    initial: int
    head: tuple[float, ...]  # schedule from 1 to start_sigma
    rounds: list[tuple[float, float]]  # (sigma re-noised to, sigma integrated to) per round
    extra: int  # extra independent candidates paid by the leftover budget
    stage: int = 0  # 0: head not asked; 1 + r: round r asked next; then extras; then done
    states: list[torch.Tensor] = field(default_factory=list)  # kept states at the current sigma
    noises: list[torch.Tensor | None] = field(default_factory=list)
    done: bool = False


class PathsSearch:
    """Search over paths (see the module docstring for the algorithm and its parameters)."""

    name = "paths"

    def __init__(
        self,
        *,
        initial: int | None = None,
        width: int = 2,
        start_sigma: float = 0.75,
        backward: float = 0.25,
        forward: float = 0.125,
        path_length: int = 2,
    ):
        for name, value in (("width", width), ("path length", path_length)):
            if not is_count(value) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if initial is not None and (not is_count(initial) or initial < 1):
            raise UserError(f"initial paths must be a positive integer, got {initial!r}")
        if not 0 < start_sigma < 1:
            raise UserError(f"start sigma must lie strictly between 0 and 1 (the schedule's ends), got {start_sigma!r}")
        if not 0 < backward <= 1:
            raise UserError(f"backward step must lie in (0, 1], got {backward!r}")
        if not 0 <= forward < backward:
            raise UserError(f"forward step must be >= 0 and smaller than the backward step {backward}, got {forward!r}")
        self.initial, self.width, self.start_sigma = initial, width, float(start_sigma)
        self.backward, self.forward, self.path_length = float(backward), float(forward), path_length

    def params(self) -> dict:
        return {
            "initial": self.initial,
            "width": self.width,
            "start_sigma": self.start_sigma,
            "backward": self.backward,
            "forward": self.forward,
            "path_length": self.path_length,
        }

    def _rounds(self) -> list[tuple[float, float]]:
        rounds, sigma = [], _r(self.start_sigma)
        while sigma > 0:
            up = min(_r(sigma + self.forward), 1.0)
            down = max(_r(up - self.backward), 0.0)
            rounds.append((up, down))
            sigma = down
        return rounds

    def _segment(self, up: float, down: float) -> tuple[float, ...]:
        return tuple(_r(up + (down - up) * i / self.path_length) for i in range(self.path_length + 1))

    def init(self, problem: Problem) -> PathsState:
        head = tuple(s for s in problem.sigmas if s > self.start_sigma) + (self.start_sigma,)
        rounds = self._rounds()
        per_path = problem.cost(head) + sum(self.width * problem.cost(self._segment(u, d)) for u, d in rounds)
        n = self.initial if self.initial is not None else max(problem.budget // per_path, 1)
        problem.require_budget(n * per_path, f"{n} path(s) of {len(rounds)} rounds of width {self.width}")
        extra = (problem.budget - n * per_path) // problem.cost()
        return PathsState(problem, n, head, rounds, extra)

    def _job(self, state: PathsState, x, sigmas, path, info) -> Job:
        p = state.problem
        noises = p.step_noises(len(sigmas) - 1, *path) if p.stochastic else None
        return Job(x, sigmas, info=info, noises=noises)

    def ask(self, state: PathsState) -> list[Job]:
        p = state.problem
        if state.stage == 0:
            jobs = []
            for j in range(state.initial):
                job = p.fresh_job(0, j, info={"round": 0, "path": j})
                if p.stochastic:
                    job.noises = job.noises[: len(state.head) - 1]
                job.sigmas = state.head
                jobs.append(job)
            return jobs
        r = state.stage - 1
        if r < len(state.rounds):
            up, down = state.rounds[r]
            sigma = state.rounds[r - 1][1] if r > 0 else self.start_sigma
            segment = self._segment(up, down)
            jobs = []
            for j, x in enumerate(state.states):
                for m in range(self.width):
                    _, z = p.noise(1 + r, j, m)
                    branch = renoise(x, sigma, up, z)
                    jobs.append(
                        self._job(
                            state,
                            branch,
                            segment,
                            (1 + r, j, m),
                            {"round": r + 1, "parent": j, "branch": m, "sigma": up},
                        )
                    )
            return jobs
        if r == len(state.rounds) and state.extra:
            return [p.fresh_job(_EXTRA, k, info={"role": "extra"}) for k in range(state.extra)]
        return []

    def tell(self, state: PathsState, outcomes: list[Outcome]) -> None:
        extras = state.stage > len(state.rounds)
        state.stage += 1
        if extras:
            return  # the driver keeps the best finished candidate
        ranked = sorted(range(len(outcomes)), key=lambda i: rank_key(outcomes[i].score), reverse=True)
        keep = ranked[: state.initial]
        state.states = [outcomes[i].x for i in keep]
