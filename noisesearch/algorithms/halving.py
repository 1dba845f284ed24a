"""Successive halving over noises: a bandit that spends full denoising only on promising candidates.

Start many candidates, advance them to the first checkpoint sigma, score each on the x0-prediction
of its state there, keep the best ``1/eta`` of them, advance the survivors to the next checkpoint,
and so on; only the last ``final`` survivors are denoised to sigma 0. Successive halving is
Karnin et al. 2013 / Jamieson and Talwalkar 2016 (the core of Hyperband); here the "arms" are
noises and the "resource" is denoising steps. Scoring a checkpoint costs one extra evaluation at
the checkpoint state, which the survivors reuse as their next step's first evaluation (it is never
paid twice), so a pruned candidate costs only the steps it ran plus that one evaluation.

Checkpoints snap to the nearest sigma of the run's schedule, so a survivor follows exactly the
trajectory that the same noise follows in random search. Without ``initial`` the number of
starting candidates is the largest the budget pays for; what is left (less than one more starting
candidate) goes to extra independent full candidates when it pays for one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from noisesearch.algorithms.base import Job, Outcome, Problem, is_count, rank_key
from noisesearch.errors import UserError

_EXTRA = 2**20  # path marker of the extra independent candidates


@dataclass
class HalvingState:
    problem: Problem
    segments: list[tuple[float, ...]]  # schedule pieces between checkpoints, the last ends at 0
    sizes: list[int]  # candidates per round
    extra: int
    round: int = 0
    survivors: list[Job] = field(default_factory=list)  # continuation jobs for the next round
    step_noises: dict[int, torch.Tensor] = field(default_factory=dict)  # stochastic samplers: per candidate


class HalvingSearch:
    """Successive halving over candidates scored on x0-previews (see the module docstring)."""

    name = "halving"

    def __init__(
        self,
        *,
        eta: int = 4,
        checkpoints: tuple[float, ...] | list[float] = (0.75, 0.5),
        final: int = 2,
        initial: int | None = None,
    ):
        if not is_count(eta) or eta < 2:
            raise UserError(
                f"eta (1/eta of the candidates survive each checkpoint) must be an integer >= 2, got {eta!r}"
            )
        if not is_count(final) or final < 1:
            raise UserError(f"final must be a positive integer, got {final!r}")
        if initial is not None and (not is_count(initial) or initial < final):
            raise UserError(f"initial must be an integer >= final ({final}), got {initial!r}")
        checkpoints = tuple(float(c) for c in checkpoints)
        if (
            not checkpoints
            or any(not 0 < c < 1 for c in checkpoints)
            or list(checkpoints) != sorted(set(checkpoints), reverse=True)
        ):
            raise UserError(f"checkpoints must be decreasing sigmas strictly between 0 and 1, got {list(checkpoints)}")
        self.eta, self.checkpoints, self.final, self.initial = eta, checkpoints, final, initial

    def params(self) -> dict:
        return {"eta": self.eta, "checkpoints": list(self.checkpoints), "final": self.final, "initial": self.initial}

    def _segments(self, sigmas: tuple[float, ...]) -> list[tuple[float, ...]]:
        inner = sigmas[1:-1]
        if not inner:
            raise UserError("halving needs at least 2 steps, so that a checkpoint lies inside the schedule")
        cuts = [min(range(1, len(sigmas) - 1), key=lambda i: abs(sigmas[i] - c)) for c in self.checkpoints]
        if len(set(cuts)) != len(cuts):
            raise UserError(
                f"checkpoints {list(self.checkpoints)} snap to the same step of a {len(sigmas) - 1}-step "
                "schedule; use fewer checkpoints or more --steps"
            )
        bounds = [0, *cuts, len(sigmas) - 1]
        return [tuple(sigmas[a : b + 1]) for a, b in zip(bounds, bounds[1:])]

    def _sizes(self, n0: int) -> list[int]:
        sizes = [n0]
        for _ in range(len(self.checkpoints)):
            sizes.append(min(sizes[-1], max(self.final, math.ceil(sizes[-1] / self.eta))))
        return sizes

    def _cost(self, problem: Problem, segments, sizes) -> int:
        dummy = torch.zeros(problem.noise_shape)
        total = 0
        for r, (segment, n) in enumerate(zip(segments, sizes)):
            job = Job(dummy, segment, denoised=dummy if r else None, score_end=r < len(segments) - 1)
            total += n * problem.job_cost(job)
        return total

    def init(self, problem: Problem) -> HalvingState:
        segments = self._segments(problem.sigmas)
        if self.initial is not None:
            n0 = self.initial
        else:
            n0 = self.final
            while self._cost(problem, segments, self._sizes(n0 + 1)) <= problem.budget:
                n0 += 1
        sizes = self._sizes(n0)
        needed = self._cost(problem, segments, sizes)
        problem.require_budget(needed, f"successive halving from {n0} candidate(s) to {self.final}")
        extra = (problem.budget - needed) // problem.cost()
        return HalvingState(problem, segments, sizes, extra)

    def ask(self, state: HalvingState) -> list[Job]:
        p, r = state.problem, state.round
        last = len(state.segments) - 1
        if r == 0:
            jobs = []
            for k in range(state.sizes[0]):
                job = p.fresh_job(k, info={"round": 0, "candidate": k})
                job.sigmas, job.score_end = state.segments[0], last > 0
                if job.noises is not None:
                    state.step_noises[k] = job.noises
                    job.noises = job.noises[: len(job.sigmas) - 1]
                jobs.append(job)
            return jobs
        if r <= last:
            return state.survivors
        if r == last + 1 and state.extra:
            return [p.fresh_job(_EXTRA, k, info={"role": "extra"}) for k in range(state.extra)]
        return []

    def tell(self, state: HalvingState, outcomes: list[Outcome]) -> None:
        r, last = state.round, len(state.segments) - 1
        state.round += 1
        if r >= last:
            return  # finished samples (or extras): the driver keeps the best
        ranked = sorted(range(len(outcomes)), key=lambda i: rank_key(outcomes[i].score), reverse=True)
        segment = state.segments[r + 1]
        state.survivors = []
        for i in ranked[: state.sizes[r + 1]]:
            o = outcomes[i]
            k = o.job.info["candidate"]
            noises = None
            if state.problem.stochastic:  # continue with the candidate's own later step noises
                done = sum(len(seg) - 1 for seg in state.segments[: r + 1])
                noises = state.step_noises[k][done : done + len(segment) - 1]
            state.survivors.append(
                Job(
                    o.x,
                    segment,
                    info={"round": r + 1, "candidate": k},
                    noises=noises,
                    denoised=o.denoised,
                    score_end=r + 1 < last,
                )
            )
