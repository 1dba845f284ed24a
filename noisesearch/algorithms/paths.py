"""Search over paths: branch intermediate states by re-noising them, keep the best branches.

Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps", Sec. 3.2
"Search over Paths" and Table 6 (N initial paths, width M, search start sigma, backward step Delta b,
forward step Delta f, path length L), in this package's sigma convention (``noisesearch.samplers``):

1. integrate ``initial`` (N) fresh noises from sigma 1 to ``start_sigma`` along the run's schedule;
2. re-noise each kept state ``width`` (M) times with the model's forward process from sigma to
   sigma + ``forward`` (capped at 1), using fresh seeded noise (``noisesearch.samplers.renoise``);
3. integrate every branch ``backward`` down in sigma with ``path_length`` (L) steps and score it;
4. keep the best N of the N x M branches and repeat 2-3 until sigma reaches 0, where the branches
   are finished samples and the best one is the answer.

How a branch is scored in step 3 (``score``):

- ``"end"`` (the paper's, the default): the denoiser is evaluated once more at the branch's end state and the
  verifier scores that x0-prediction; +1 NFE per branch that ends above sigma 0 (a branch ending at
  sigma 0 is a finished sample, scored as it is). The paper's words, Sec. 3.2, as quoted verbatim by
  public reading notes of it: "Since the verifiers are typically not adapted to noisy input, we
  perform one additional denoising step in step 3 and use the clean x-prediction to interact with
  the verifiers."
- ``"last-step"`` (ours): the x0-prediction of the segment's last evaluated step, a free preview one
  step short of the end state. It is cheaper and ranks branches worse: on digits (default plan,
  Euler) its Spearman correlation with the score of the branch's finished sample (the end state
  integrated on to sigma 0) is 0.81 in the first round against 0.89 for ``"end"``, 0.92 against
  0.96 over all rounds that end above sigma 0.

Where we differ from the paper, and why: the paper does not score the N initial paths (all N are
kept); we record their free preview score and use it only to order them, which decides no more than
which draws each gets, so no NFE is spent on it. The end-state x0-prediction is reused where the next
round starts from that very state: only with ``forward`` 0, where re-noising leaves a state as it is
(then the initial paths are scored at their end too, and each later round passes its kept states'
x0-predictions on as ``denoised``, so that evaluation is paid once); with ``forward`` > 0 the branch
starts from a re-noised state and the end-state evaluation cannot be reused. After the last round
the paper runs "the remaining N samples through random search"; here the N x M finished branches are
all scored and the driver keeps the best, which is the same choice.

Each round moves sigma down by ``backward - forward``. What the budget leaves after the N paths
(less than one path, planned from the exact cost of the chosen ``score``) goes to extra independent
full candidates (random search), so the budget is used to within one candidate.

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

from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, is_count, rank_order
from noisesearch.errors import UserError
from noisesearch.samplers import renoise

SCORES = ("end", "last-step")  # how a branch is scored (module docstring); "end" is the paper's
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
    options: list[dict]  # Jobs options of each batch: [0] the initial paths, [r] round r ("score_end", "denoised")
    stage: int = 0  # 0: head not asked; 1 + r: round r asked next; then extras; then done
    states: torch.Tensor | None = None  # (S, N, *noise_shape) kept states at the current sigma, best first
    denoised: torch.Tensor | None = None  # (S, N, *noise_shape) their x0-predictions, when the next round reuses them


class PathsSearch:
    """Search over paths (see the module docstring for the algorithm and its parameters)."""

    name = "paths"
    renders_from_noise = False  # final_steps: branches finish from re-noised intermediate states

    def __init__(
        self,
        *,
        initial: int | None = None,
        width: int = 2,
        start_sigma: float = 0.75,
        backward: float = 0.25,
        forward: float = 0.125,
        path_length: int = 2,
        score: str = "end",
    ):
        for name, value in (("width", width), ("path length", path_length)):
            if not is_count(value) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if initial is not None and (not is_count(initial) or initial < 1):
            raise UserError(f"initial paths must be a positive integer, got {initial!r}")
        if not _real(start_sigma) or not 0 < _r(start_sigma) < 1:
            raise UserError(f"start sigma must lie strictly between 0 and 1 (the schedule's ends), got {start_sigma!r}")
        if not _real(backward) or not 0 < backward <= 1:
            raise UserError(f"backward step must lie in (0, 1], got {backward!r}")
        if not _real(forward) or not 0 <= forward < backward:
            raise UserError(f"forward step must be >= 0 and smaller than the backward step {backward}, got {forward!r}")
        if score not in SCORES:
            raise UserError(f"score must be 'end' (the paper's) or 'last-step', got {score!r}")
        self.initial, self.width = initial, width
        # on the grid of the round sigmas, so that a round with forward 0 starts exactly where the last one ended
        self.start_sigma = _r(start_sigma)
        self.backward, self.forward, self.path_length = float(backward), float(forward), path_length
        self.score = score

    def params(self) -> dict:
        return {
            "initial": self.initial,
            "width": self.width,
            "start_sigma": self.start_sigma,
            "backward": self.backward,
            "forward": self.forward,
            "path_length": self.path_length,
            "score": self.score,
        }

    def _rounds(self) -> list[tuple[float, float]]:
        rounds, sigma = [], self.start_sigma
        while sigma > 0:
            up = min(_r(sigma + self.forward), 1.0)
            down = max(_r(up - self.backward), 0.0)
            rounds.append((up, down))
            sigma = down
        return rounds

    def _segment(self, up: float, down: float) -> tuple[float, ...]:
        return tuple(_r(up + (down - up) * i / self.path_length) for i in range(self.path_length + 1))

    def _options(self, rounds: list[tuple[float, float]]) -> list[dict]:
        """The ``Jobs`` options of each batch ([0] the initial paths, [r] round r), the one plan that both
        the asks and the budget follow: with ``score`` "end" a branch ending above sigma 0 asks ``score_end``;
        a batch whose end state the next round starts from unchanged (``forward`` 0) asks it too, and
        that round passes the x0-predictions on as ``denoised`` (paid once)."""
        ends = [self.start_sigma] + [down for _, down in rounds]  # where each batch ends
        same = [False] + [up == ends[r] for r, (up, _) in enumerate(rounds)]  # round r starts at batch r-1's end
        end = self.score == "end"
        score_end = [end and same[1]] + [end and d > 0 for d in ends[1:]]  # (start_sigma > 0: one round at least)
        denoised = [False] + [score_end[r - 1] and same[r] for r in range(1, len(ends))]
        return [{"score_end": s, "denoised": d} for s, d in zip(score_end, denoised)]

    def _head(self, sigmas: tuple[float, ...]) -> tuple[float, ...]:
        """The schedule of the initial paths: the run's sigmas above ``start_sigma``, then ``start_sigma``."""
        return tuple(s for s in sigmas if s > self.start_sigma) + (self.start_sigma,)

    def _plan(self, costs: CostModel, budget: int) -> tuple[int, int]:
        """(paths per search, NFEs of one path with all its rounds) at ``budget``."""
        rounds = self._rounds()
        options = self._options(rounds)
        per_path = costs.cost(self._head(costs.sigmas), **options[0]) + sum(
            self.width * costs.cost(self._segment(u, d), **o) for (u, d), o in zip(rounds, options[1:])
        )
        return (self.initial if self.initial is not None else max(budget // per_path, 1)), per_path

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        n, per_path = self._plan(costs, budget)
        return n * per_path, f"{n} path(s) of {len(self._rounds())} rounds of width {self.width}"

    def init(self, problems: Problems) -> PathsState:
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        n, per_path = self._plan(problems.costs, problems.budget)
        rounds = self._rounds()
        extra = (problems.budget - n * per_path) // problems.cost()
        return PathsState(problems, n, self._head(problems.sigmas), rounds, extra, self._options(rounds))

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
            jobs.score_end = state.options[0]["score_end"]
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
            options = state.options[r + 1]
            denoised = None
            if options["denoised"]:  # re-noising left each state as it was: its x0-prediction is known
                assert state.denoised is not None
                denoised = state.denoised.repeat_interleave(m, dim=1).flatten(0, 1)  # (S*N*M, ...)
            return [
                Jobs(
                    owner,
                    branches.flatten(0, 2),
                    segment,
                    info=info,
                    noises=noises,
                    denoised=denoised,
                    score_end=options["score_end"],
                )
            ]
        if r == len(state.rounds) and state.extra:
            return [p.fresh(state.extra, _EXTRA, info={"role": ["extra"] * (n_searches * state.extra)})]
        return []

    def tell(self, state: PathsState, outcomes: list[Outcomes]) -> None:
        extras = state.stage > len(state.rounds)
        state.stage += 1
        if extras:
            return  # the driver keeps each search's best finished candidate
        (out,) = outcomes
        n_searches, n = len(state.problems), state.initial
        score = out.score.reshape(n_searches, -1)  # (S, K): K = N initial paths or N x M branches
        keep = rank_order(score, dim=1)[:, :n].to(out.x.device)  # (S, N) best first
        rows = (torch.arange(n_searches, device=keep.device)[:, None] * score.shape[1] + keep).flatten()  # (S*N,)
        state.states = out.x.index_select(0, rows).view(n_searches, n, *out.x.shape[1:])
        reused = state.stage < len(state.options) and state.options[state.stage]["denoised"]
        state.denoised = (  # held only for a next round that starts from these very states
            out.denoised.index_select(0, rows.to(out.denoised.device)).view(n_searches, n, *out.x.shape[1:])
            if reused
            else None
        )


def _real(value: object) -> bool:
    """A real number (an int or a float, not a bool): a hyperparameter that a comparison can check."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
