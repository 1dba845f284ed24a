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

The pivot moves only when a neighbour beats it (the first best neighbour of the round; on a tie
the pivot stays), and it is never re-run: its score is kept. The pivot is the draw ``(0,)``; the
neighbours of round ``t`` (t = 1, 2, ...) are made from the draws ``(t, j)``, j = 0..N-1. With a
stochastic sampler every candidate runs with the pivot's per-step noises (the stream of the draw
``(0,)``), so only the starting noise moves. The last round takes as many neighbours as the budget
still pays for.

Every search of a run advances in lock step (the budget and schedule are shared, so every search
takes the same number of neighbours each round): pivots are a tensor (S, *noise_shape) and one
batch holds the neighbours of all searches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import Jobs, Outcomes, Problems, first_best, is_count, rank_values
from noisesearch.errors import UserError

NEIGHBOURHOODS = ("mix", "distance", "cosine")


def make_neighbours(pivot: torch.Tensor, eps: torch.Tensor, kind: str, step_size: float, cosine: float) -> torch.Tensor:
    """Neighbours (B, *shape) of the pivots ``pivot`` (B, *shape), row r made from the standard normal draw
    ``eps[r]``, per the module docstring (norms and dot products are taken per row)."""

    def per_row(v: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, 1, ..., 1), to broadcast against rows
        return v.view(-1, *([1] * (pivot.dim() - 1)))

    if kind == "mix":
        return (pivot + step_size * eps) / math.sqrt(1.0 + step_size**2)
    if kind == "distance":
        return pivot + step_size * eps / per_row(eps.flatten(1).norm(dim=1))
    if kind == "cosine":
        n = pivot.double()
        unit = n / per_row(n.flatten(1).norm(dim=1))
        e = eps.double()
        v = e - per_row((e * unit).flatten(1).sum(dim=1)) * unit  # the part of eps orthogonal to the pivot
        along = cosine * unit + math.sqrt(1.0 - cosine**2) * v / per_row(v.flatten(1).norm(dim=1))
        return (per_row(n.flatten(1).norm(dim=1)) * along).to(pivot.dtype)
    raise ValueError(f"unknown neighbourhood {kind!r}")


def neighbour(pivot: torch.Tensor, eps: torch.Tensor, kind: str, step_size: float, cosine: float) -> torch.Tensor:
    """The neighbour of one ``pivot`` made from the standard normal draw ``eps`` (same shape)."""
    return make_neighbours(pivot[None], eps[None], kind, step_size, cosine)[0]


@dataclass
class ZeroOrderState:
    """Every search's pivot, in lock step. ``pivot`` (S, *noise_shape), ``pivot_score`` (S,) float64 (NaN
    as -inf) and ``pivot_index`` (S,) int64 live on the run's device; ``pivot_noises`` (S, n_steps,
    *noise_shape) are a stochastic sampler's per-step noises, fixed for the whole search."""

    problems: Problems
    spent: int = 0  # NFEs spent by each search (the same for all: every search runs the same rows)
    iteration: int = 0  # rounds of neighbours told so far
    pivot: torch.Tensor | None = None
    pivot_score: torch.Tensor | None = None
    pivot_index: torch.Tensor | None = None
    pivot_noises: torch.Tensor | None = None


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

    def init(self, problems: Problems) -> ZeroOrderState:
        if self.neighbourhood == "cosine" and math.prod(problems.noise_shape) < 2:
            raise UserError(f"the cosine neighbourhood needs noises of at least 2 elements, got {problems.noise_shape}")
        problems.require_budget(2 * problems.cost(), "a pivot and one neighbour")
        return ZeroOrderState(problems)

    def _round_size(self, state: ZeroOrderState) -> int:
        """Neighbours per search in the next round (0: the search is over)."""
        p = state.problems
        if self.iterations is not None and state.iteration >= self.iterations:
            return 0
        return min(self.neighbours, (p.budget - state.spent) // p.cost())

    def ask(self, state: ZeroOrderState) -> list[Jobs]:
        p, n_searches = state.problems, len(state.problems)
        if state.pivot is None:  # first round: every search's pivot, the draw (0,)
            return [p.fresh(1, info={"role": ["pivot"] * n_searches, "iteration": [0] * n_searches})]
        n = self._round_size(state)
        if n < 1:
            return []
        assert state.pivot_index is not None
        it = state.iteration + 1
        owners, ks = p.grid(n)  # search-major: row i * n + j is neighbour j of search i
        seeds, eps = p.noise(owners, [(it, j) for j in ks])  # (S * n, *noise_shape)
        x = make_neighbours(state.pivot.repeat_interleave(n, 0), eps, self.neighbourhood, self.step_size, self.cosine)
        noises = None if state.pivot_noises is None else state.pivot_noises.repeat_interleave(n, 0)
        info = {
            "role": ["neighbour"] * len(owners),
            "iteration": [it] * len(owners),
            "pivot": state.pivot_index.repeat_interleave(n),  # (S * n,) data-dependent: a tensor column
            "eps_seed": seeds,
        }
        return [Jobs(torch.tensor(owners, dtype=torch.int64), x, p.sigmas, info=info, noises=noises)]

    def tell(self, state: ZeroOrderState, outcomes: list[Outcomes]) -> None:
        (out,) = outcomes
        p = state.problems
        device, n_searches = state.problems.device, len(state.problems)
        n = len(out) // n_searches  # rows per search, search-major
        state.spent += out.nfe * n
        score = rank_values(out.score).to(device).view(n_searches, n)  # (S, n)
        index = out.index.to(device).view(n_searches, n)  # (S, n)
        x = out.jobs.x.view(n_searches, n, *p.noise_shape)  # (S, n, *noise_shape) start states
        if state.pivot is None:  # the pivots themselves (n = 1)
            state.pivot, state.pivot_score, state.pivot_index = x[:, 0], score[:, 0], index[:, 0]
            state.pivot_noises = out.jobs.noises
            return
        assert state.pivot_score is not None and state.pivot_index is not None
        state.iteration += 1
        rows = torch.arange(n_searches, device=device)
        best = first_best(score, dim=1)  # (S,) the first best neighbour of each search
        best_score = score[rows, best]  # (S,)
        move = best_score > state.pivot_score  # (S,) strictly better: on a tie the pivot stays
        shape = (-1, *([1] * len(p.noise_shape)))
        state.pivot = torch.where(move.view(shape), x[rows, best], state.pivot)
        state.pivot_score = torch.where(move, best_score, state.pivot_score)
        state.pivot_index = torch.where(move, index[rows, best], state.pivot_index)
