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

Draws, per search: initial path j starts from the draw ``(0, j)``; in round r (from 1) branch m of
kept state j is re-noised with the draw ``(r, j, m)``, where j is the kept state's rank after the
previous round (best first, ties in asked order, NaN last); extra candidate k is the draw
``(2**20, k)``. With a stochastic sampler each of these paths also names one stream of per-step
noises (``Problems.step_noises``): an initial path takes the first steps of its full-schedule
stream, a branch its ``path_length``-step stream. Every search of a run follows the same plan, so all
searches run in lock step: kept states are held as (S, N, ...) and one batch per round carries the
S x N x M branches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import Jobs, Outcomes, Problems, is_count, rank_order
from noisesearch.errors import UserError
from noisesearch.samplers import renoise

_EXTRA = 2**20  # path marker of the extra independent candidates
_ROUND = 1e-9  # sigmas are rounded to this grid so that repeated additions stay exact


def _r(sigma: float) -> float:
    return round(round(sigma / _ROUND) * _ROUND, 9)


@dataclass
class PathsState:
    problems: Problems
    initial: int
    head: tuple[float, ...]  # schedule from 1 to start_sigma
    rounds: list[tuple[float, float]]  # (sigma re-noised to, sigma integrated to) per round
    extra: int  # extra independent candidates per search, paid by the leftover budget
    stage: int = 0  # 0: head not asked; 1 + r: round r asked next; then extras; then done
    states: torch.Tensor | None = None  # (S, N, *noise_shape) kept states at the current sigma, best first


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

    def init(self, problems: Problems) -> PathsState:
        head = tuple(s for s in problems.sigmas if s > self.start_sigma) + (self.start_sigma,)
        rounds = self._rounds()
        per_path = problems.cost(head) + sum(self.width * problems.cost(self._segment(u, d)) for u, d in rounds)
        n = self.initial if self.initial is not None else max(problems.budget // per_path, 1)
        problems.require_budget(n * per_path, f"{n} path(s) of {len(rounds)} rounds of width {self.width}")
        extra = (problems.budget - n * per_path) // problems.cost()
        return PathsState(problems, n, head, rounds, extra)

    def ask(self, state: PathsState) -> list[Jobs]:
        p, n_searches, n = state.problems, len(state.problems), state.initial
        if state.stage == 0:  # the N initial paths of every search, integrated to start_sigma
            rows = n_searches * n
            jobs = p.fresh(
                n,
                0,
                info={"round": torch.zeros(rows, dtype=torch.int64), "path": torch.arange(n).repeat(n_searches)},
            )
            jobs.sigmas = state.head
            if jobs.noises is not None:  # (S*N, steps, ...): the head's steps of each path's stream
                jobs.noises = jobs.noises[:, : len(state.head) - 1]
            return [jobs]
        r = state.stage - 1
        if r < len(state.rounds):
            assert state.states is not None
            up, down = state.rounds[r]
            sigma = state.rounds[r - 1][1] if r > 0 else self.start_sigma
            segment = self._segment(up, down)
            m = self.width
            rows = n_searches * n * m  # row (i * N + j) * M + b: branch b of kept state j of search i
            owners = [i for i in range(n_searches) for _ in range(n * m)]
            paths = [(1 + r, j, b) for _ in range(n_searches) for j in range(n) for b in range(m)]
            _, z = p.noise(owners, paths)  # (S*N*M, *shape)
            x = state.states
            branches = renoise(x[:, :, None], sigma, up, z.view(n_searches, n, m, *x.shape[2:]))  # (S, N, M, ...)
            noises = p.step_noises(owners, paths, len(segment) - 1)[1] if p.stochastic else None
            info = {
                "round": torch.full((rows,), r + 1, dtype=torch.int64),
                "parent": torch.arange(n).repeat_interleave(m).repeat(n_searches),
                "branch": torch.arange(m).repeat(n_searches * n),
                "sigma": torch.full((rows,), up, dtype=torch.float64),
            }
            owner = torch.arange(n_searches).repeat_interleave(n * m)
            return [Jobs(owner, branches.flatten(0, 2), segment, info=info, noises=noises)]
        if r == len(state.rounds) and state.extra:
            return [p.fresh(state.extra, _EXTRA, info={"role": ["extra"] * (n_searches * state.extra)})]
        return []

    def tell(self, state: PathsState, outcomes: list[Outcomes]) -> None:
        extras = state.stage > len(state.rounds)
        state.stage += 1
        if extras:
            return  # the driver keeps each search's best finished candidate
        (out,) = outcomes
        n_searches = len(state.problems)
        score = out.score.reshape(n_searches, -1)  # (S, K): K = N initial paths or N x M branches
        keep = rank_order(score, dim=1)[:, : state.initial].to(out.x.device)  # (S, N) best first
        x = out.x.reshape(n_searches, score.shape[1], *out.x.shape[1:])  # (S, K, ...)
        state.states = x[torch.arange(n_searches, device=x.device)[:, None], keep]  # (S, N, ...)
