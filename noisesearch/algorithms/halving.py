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

Draws, per search: candidate k is the draw ``(k,)`` (random search's candidate k) and, with a
stochastic sampler, takes the steps of each round from its one full-schedule stream of per-step
noises, as random search's candidate k does (held as ``Streams``, read round by round; after each
checkpoint only the survivors' streams are kept); extra candidate k is the draw ``(2**20, k)``. The
survivors of a checkpoint are the best of its candidates (ties in asked order, NaN last). Every search
of a run follows the same plan, so all searches run in lock step: survivors are held as (S, n, ...)
and one batch per round carries every search's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, Streams, is_count, rank_order
from noisesearch.errors import UserError

_EXTRA = 2**20  # path marker of the extra independent candidates


@dataclass
class HalvingState:
    problems: Problems
    segments: list[tuple[float, ...]]  # schedule pieces between checkpoints, the last ends at 0
    sizes: list[int]  # candidates per search and round
    extra: int  # extra independent candidates per search
    round: int = 0
    # stochastic samplers: the S * n full-schedule step-noise streams of this round's candidates, search-major
    streams: Streams | None = None
    x: torch.Tensor | None = None  # (S, n, *noise_shape) survivors' states at the last checkpoint, best first
    denoised: torch.Tensor | None = None  # (S, n, *noise_shape) their x0-predictions there (already paid)
    candidate: torch.Tensor | None = None  # (S, n) int64 their candidate numbers k (draw (k,))


class HalvingSearch:
    """Successive halving over candidates scored on x0-previews (see the module docstring)."""

    name = "halving"
    renders_from_noise = False  # final_steps: a survivor finishes from an intermediate state, not its noise

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

    def _cost(self, costs: CostModel | Problems, segments: list[tuple[float, ...]], sizes: list[int]) -> int:
        """NFEs of one search: round r runs ``sizes[r]`` rows along ``segments[r]``, each but the first
        reusing the checkpoint evaluation, each but the last scoring its end state (+1 evaluation)."""
        last = len(segments) - 1
        return sum(
            n * costs.cost(segment, denoised=r > 0, score_end=r < last)
            for r, (segment, n) in enumerate(zip(segments, sizes))
        )

    def _initial(self, costs: CostModel, segments: list[tuple[float, ...]], budget: int) -> int:
        """n0: ``initial``, or the most candidates whose halving ``budget`` pays for (at least ``final``)."""
        if self.initial is not None:
            return self.initial
        n0 = self.final
        while self._cost(costs, segments, self._sizes(n0 + 1)) <= budget:
            n0 += 1
        return n0

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        segments = self._segments(costs.sigmas)
        n0 = self._initial(costs, segments, budget)
        what = f"successive halving from {n0} candidate(s) to {self.final}"
        return self._cost(costs, segments, self._sizes(n0)), what

    def init(self, problems: Problems) -> HalvingState:
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        segments = self._segments(problems.sigmas)
        n0 = self._initial(problems.costs, segments, problems.budget)
        sizes = self._sizes(n0)
        extra = (problems.budget - self._cost(problems.costs, segments, sizes)) // problems.cost()
        state = HalvingState(problems, segments, sizes, extra)
        if problems.stochastic:  # every candidate's full stream, read round by round; survivors read on
            owners, ks = problems.grid(n0)
            state.streams = problems.streams(owners, [(k,) for k in ks], problems.steps)
        return state

    def ask(self, state: HalvingState) -> list[Jobs]:
        p, r = state.problems, state.round
        n_searches, last = len(p), len(state.segments) - 1
        segment = state.segments[min(r, last)]
        done = sum(len(s) - 1 for s in state.segments[: min(r, last)])  # steps before this round
        stop = done + len(segment) - 1
        if r == 0:
            n0 = state.sizes[0]
            owners, ks = p.grid(n0)
            seeds, x = p.noise(owners, [(k,) for k in ks])
            info = {"round": torch.zeros(len(ks), dtype=torch.int64), "candidate": torch.tensor(ks)}
            noises = state.streams.rows(done, stop) if state.streams is not None else None  # (S * n0, ...)
            owner = torch.tensor(owners, dtype=torch.int64)
            seeded: list[int | None] = list(seeds)
            return [Jobs(owner, x, segment, noise_seed=seeded, info=info, noises=noises, score_end=last > 0)]
        if r <= last:
            assert state.x is not None and state.denoised is not None and state.candidate is not None
            n = state.candidate.shape[1]
            # the survivors' own later step noises (their streams are kept in survivor order)
            noises = state.streams.rows(done, stop) if state.streams is not None else None  # (S * n, ...)
            info = {
                "round": torch.full((n_searches * n,), r, dtype=torch.int64),
                "candidate": state.candidate.flatten(),
            }
            return [
                Jobs(
                    torch.arange(n_searches).repeat_interleave(n),
                    state.x.flatten(0, 1),
                    segment,
                    info=info,
                    noises=noises,
                    denoised=state.denoised.flatten(0, 1),
                    score_end=r < last,
                )
            ]
        if r == last + 1 and state.extra:
            return [p.fresh(state.extra, _EXTRA, info={"role": ["extra"] * (n_searches * state.extra)})]
        return []

    def tell(self, state: HalvingState, outcomes: list[Outcomes]) -> None:
        r, last = state.round, len(state.segments) - 1
        state.round += 1
        if r >= last:
            return  # finished samples (or extras): the driver keeps each search's best
        (out,) = outcomes
        n_searches = len(state.problems)
        score = out.score.reshape(n_searches, -1)  # (S, n) this round's candidates of each search
        keep = rank_order(score, dim=1)[:, : state.sizes[r + 1]].to(out.x.device)  # (S, n') best first
        rows = torch.arange(n_searches, device=out.x.device)[:, None]

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n_searches, score.shape[1], *t.shape[1:])[rows, keep]

        if state.candidate is None:  # round 0: candidate k of every search
            candidate = torch.arange(score.shape[1], device=out.x.device).repeat(n_searches)
        else:
            candidate = state.candidate.to(out.x.device).flatten()
        state.x, state.denoised, state.candidate = pick(out.x), pick(out.denoised), pick(candidate)
        if state.streams is not None:  # only the survivors' streams are needed from here on
            state.streams = state.streams.select((rows * score.shape[1] + keep).flatten())  # (S * n',) flat rows
