"""Zero-order search: hill climbing over the noise with neighbours around a pivot.

Ma et al. 2025, Sec. 3.2 "Zero-Order Search": start from a random pivot noise, score ``N``
neighbours in its neighbourhood ``{y : d(y, n) = lambda}`` ("some distance metric" ``d``), move the
pivot to the best one, repeat. The paper leaves ``d`` open; the paper's first author wrote the
neighbour generator of tt-scale-flux (sayakpaul/tt-scale-flux, ``utils.py`` ``generate_neighbors``,
"Courtesy: Willis Ma"), and its zero-order loop (``main.py`` ``main`` and ``sample``) is the
reference transcribed by ``tests/test_zero_order_source.py``.

Three neighbourhoods of pivot ``n`` (``eps ~ N(0, I)`` a fresh draw per neighbour):

- ``"cosine"`` (the author's, tt-scale-flux's only one, and the default): ``y`` on the sphere of the pivot's norm at
  exactly cosine ``cosine`` (tt-scale-flux's ``threshold``, 0.95 in its README's configuration) to
  it: ``y = |n| (cosine * n / |n| + sqrt(1 - cosine**2) * v)`` with ``v`` the unit component of
  ``eps`` orthogonal to ``n``, computed in float64 as the reference does (needs noises of at least
  2 elements). A neighbour keeps the pivot's norm, so no chain of moves leaves the shell it started
  on. ``step_size`` is not used.
- ``"euclidean"`` (recorded so; ``"distance"``, its older name, is still accepted and means the
  same): one reading of the paper's set, with ``d`` the Euclidean distance,
  not the author's code. ``y = n + step_size * eps / |eps|``, exactly at Euclidean distance
  ``lambda = step_size`` from the pivot (an absolute distance in noise units: a standard normal noise
  of ``D`` elements has norm about ``sqrt(D)``). Each accepted move adds about ``lambda**2`` to the
  squared norm, so long chains drift off the Gaussian shell.
- ``"mix"`` (noisesearch's own, the default before this package followed the author's code): ``y = (n + step_size * eps) / sqrt(1 + step_size**2)``.
  ``y`` is again standard normal when ``n`` is (the Gaussian marginal is kept), but it is at no fixed
  distance or angle: its expected cosine to ``n`` is ``1 / sqrt(1 + step_size**2)`` (0.71 at 1.0).

A round scores neighbours of every search's pivot. The pivot moves only when a neighbour beats it
strictly (the first best neighbour of the round; tt-scale-flux's test is ``any(score > pivot's)``,
and its stable sort then takes the first best); a failed (NaN) score ranks below every real one.
What happens on a round without improvement, and to the pivot's score, are options:

- ``restart`` (tt-scale-flux ``main.py``: "Regenerating base noise because the previous round was
  rejected"): when no neighbour of round ``t`` beats the pivot, the old chain is dropped and the next
  pivot is a fresh draw, ``(t,)``, scored as a candidate in round ``t + 1`` together with its first
  neighbours (as the reference scores every base noise with its neighbours). tt-scale-flux seeds the
  fresh noise from an unseeded global generator; ours is a seeded draw. On by default, as the
  author's code; off, the pivot stays and the next round draws new neighbours around it.
- ``rescore_pivot`` (tt-scale-flux scores its base noise again with the neighbours in every round,
  ``torch.cat([base_noise, neighbors])``): the pivot is re-run in every round, charged like any
  candidate and recorded as a ``"pivot"`` row, and its new score is the one that the round's
  neighbours must beat (``first_score`` in the reference's ``sample``); a round so costs ``N + 1``
  runs as in the reference, and the first pivot is scored with the first round's neighbours (no
  round 0). Off (the default): a pivot is run once, in round 0 (the first pivot) or with its first
  neighbours (after a restart), and its score is kept. This default departs from the source on
  purpose: with a deterministic sampler and verifier a re-run returns the same score, so re-scoring
  only spends NFEs; it matters only for a verifier whose scores vary from call to call.

tt-scale-flux runs a fixed number of rounds and writes out each improving round's best; here the
budget ends the search (``iterations`` caps the rounds of neighbours), and the answer is what the
driver keeps: the best finished candidate ever scored, pivots, fresh pivots and neighbours alike
(ties: the earliest), so a restart drops a chain but never its best. The last round takes as many
neighbours as the budget still pays for. When it pays for one run only, a fresh pivot takes it (a
candidate, like random search's); a kept pivot is then not re-scored (a re-run alone would learn
nothing) and the run goes to a neighbour, compared with the pivot's last score.

Draws: the first pivot is the draw ``(0,)``, the pivot drawn after round ``t`` fails is ``(t,)``, and
the neighbours of round ``t`` (t = 1, 2, ...) are made from the draws ``(t, j)``, j = 0..n-1. With a
stochastic sampler every candidate runs with its pivot's per-step noises (the stream of the pivot's
draw), so only the starting noise moves. Records: a pivot row has ``role`` "pivot"; a neighbour's
``pivot`` is the index of the candidate whose noise its pivot is, or None when that pivot is first
scored in the same round (its "pivot" row there). Every search of a run takes the same rounds; a
round asks for a batch of the pivots it scores (if any) and a batch of every search's neighbours,
search-major. Searches differ only in how many rows a round pays for (a restart costs one more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, is_count, rank_values
from noisesearch.errors import UserError

NEIGHBOURHOODS = ("mix", "euclidean", "cosine")  # the names recorded
RENAMED = {"distance": "euclidean"}  # also accepted (older names): name -> the recorded one it means


def make_neighbours(pivot: torch.Tensor, eps: torch.Tensor, kind: str, step_size: float, cosine: float) -> torch.Tensor:
    """Neighbours (B, *shape) of the pivots ``pivot`` (B, *shape), row r made from the standard normal draw
    ``eps[r]``, per the module docstring (norms and dot products are taken per row)."""

    def per_row(v: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, 1, ..., 1), to broadcast against rows
        return v.view(-1, *([1] * (pivot.dim() - 1)))

    kind = RENAMED.get(kind, kind)
    if kind == "mix":
        return (pivot + step_size * eps) / math.sqrt(1.0 + step_size**2)
    if kind == "euclidean":
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
    """Every search's pivot. On the run's device: ``pivot`` (S, *noise_shape), ``pivot_score`` (S,) float64
    (NaN as -inf), ``pivot_index`` (S,) int64 (the candidate whose noise the pivot is), ``pivot_seed`` (S,)
    int64 (the pivot's seed when it is a seeded draw, else -1), ``pivot_noises`` (S, n_steps, *noise_shape)
    (a stochastic sampler's per-step noises of the pivot's draw). On the CPU: ``spent`` (S,) NFEs of each
    search, ``fresh`` (S,) whether the pivot is still to be drawn and scored (the draw ``(draw[i],)``)."""

    problems: Problems
    spent: torch.Tensor
    fresh: torch.Tensor
    draw: torch.Tensor
    iteration: int = 0  # rounds of neighbours told so far
    pivot: torch.Tensor | None = None
    pivot_score: torch.Tensor | None = None
    pivot_index: torch.Tensor | None = None
    pivot_seed: torch.Tensor | None = None
    pivot_noises: torch.Tensor | None = None


class ZeroOrderSearch:
    """Greedy local search around a pivot noise (see the module docstring)."""

    name = "zero-order"
    renders_from_noise = True  # final_steps: pivots and neighbours each run the full schedule from their noise
    full_candidates_only = True  # it only picks starting noises of full candidates: whole-trajectory models run it

    def __init__(
        self,
        *,
        neighbours: int = 4,
        step_size: float = 1.0,
        iterations: int | None = None,
        neighbourhood: str = "cosine",
        cosine: float = 0.95,
        restart: bool = True,
        rescore_pivot: bool = False,
    ):
        if not is_count(neighbours) or neighbours < 1:
            raise UserError(f"neighbours must be a positive integer, got {neighbours!r}")
        if not step_size > 0 or math.isinf(step_size):
            raise UserError(f"step size must be a positive number, got {step_size!r}")
        if iterations is not None and (not is_count(iterations) or iterations < 1):
            raise UserError(f"iterations must be a positive integer, got {iterations!r}")
        if neighbourhood not in NEIGHBOURHOODS and neighbourhood not in RENAMED:
            accepted = ", ".join([*NEIGHBOURHOODS, *(f"{new} (= {old})" for new, old in RENAMED.items())])
            raise UserError(f"unknown neighbourhood {neighbourhood!r}; accepted: {accepted}")
        if isinstance(cosine, bool) or not isinstance(cosine, (int, float)) or not -1 < cosine < 1:
            raise UserError(f"cosine must be a number in (-1, 1), got {cosine!r}")
        for name, value in (("restart", restart), ("rescore_pivot", rescore_pivot)):
            if not isinstance(value, bool):
                raise UserError(f"{name} must be true or false, got {value!r}")
        self.neighbours, self.step_size, self.iterations = neighbours, float(step_size), iterations
        self.neighbourhood, self.cosine = RENAMED.get(neighbourhood, neighbourhood), float(cosine)
        self.restart, self.rescore_pivot = restart, rescore_pivot

    def params(self) -> dict:
        params = {
            "neighbours": self.neighbours,
            "step_size": self.step_size,
            "iterations": self.iterations,
            "neighbourhood": self.neighbourhood,
            "cosine": self.cosine,
            "restart": self.restart,
            "rescore_pivot": self.rescore_pivot,
        }
        return params

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        return 2 * costs.cost(), "a pivot and one neighbour"

    def init(self, problems: Problems) -> ZeroOrderState:
        if self.neighbourhood == "cosine" and math.prod(problems.noise_shape) < 2:
            raise UserError(
                f"the cosine neighbourhood needs noises of at least 2 elements, got {problems.noise_shape}; "
                "use the neighbourhood 'mix' or 'euclidean'"
            )
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        n = len(problems)
        return ZeroOrderState(
            problems,
            spent=torch.zeros(n, dtype=torch.int64),
            fresh=torch.ones(n, dtype=torch.bool),
            draw=torch.zeros(n, dtype=torch.int64),
        )

    # ---- ask -------------------------------------------------------------------------------------
    def _plan(self, state: ZeroOrderState) -> tuple[torch.Tensor, torch.Tensor]:
        """(with_pivot (S,) bool, neighbours (S,) int64) of the next round, on the CPU: whether each search
        scores its pivot in it and how many neighbours it takes (none anywhere: the search is over)."""
        p, n_searches = state.problems, len(state.problems)
        if self.iterations is not None and state.iteration >= self.iterations:
            return torch.zeros(n_searches, dtype=torch.bool), torch.zeros(n_searches, dtype=torch.int64)
        rows = (p.budget - state.spent) // p.cost()  # (S,) runs each search still pays for
        wants_pivot = state.fresh | self.rescore_pivot
        n = (rows - wants_pivot.long()).clamp(min=0, max=self.neighbours)
        # the last run of a search: a fresh pivot takes it (a candidate); a re-score alone would learn nothing,
        # so a kept pivot gives it to a neighbour, compared with the pivot's last score
        last = (n == 0) & (rows == 1)
        with_pivot = torch.where(last, state.fresh, wants_pivot & (n > 0))
        return with_pivot, torch.where(last & ~state.fresh, 1, n)

    def ask(self, state: ZeroOrderState) -> list[Jobs]:
        p, n_searches = state.problems, len(state.problems)
        if state.pivot is None and not self.rescore_pivot:  # round 0: every search's first pivot, the draw (0,)
            return [p.fresh(1, info={"role": ["pivot"] * n_searches, "iteration": [0] * n_searches})]
        with_pivot, counts = self._plan(state)
        it = state.iteration + 1
        pivot, noises, seeds = self._pivots(state)
        batches = []
        scored = with_pivot.nonzero().flatten()  # (k,) searches that score their pivot in this round
        if len(scored):
            at = scored.to(p.device)
            batches.append(
                Jobs(
                    scored,
                    pivot[at],
                    p.sigmas,
                    noise_seed=[s if s >= 0 else None for s in seeds[at].tolist()],
                    info={"role": ["pivot"] * len(scored), "iteration": [it] * len(scored)},
                    noises=None if noises is None else noises[at],
                )
            )
        if int(counts.sum()):
            batches.append(self._neighbour_jobs(state, pivot, noises, counts, it))
        return batches

    def _pivots(self, state: ZeroOrderState) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(pivots (S, *shape), their step noises or None, seeds (S,) int64, -1: none) on the device: the kept
        pivots, with each fresh search's new draw ``(draw[i],)`` in its row."""
        p = state.problems
        fresh = state.fresh.nonzero().flatten()
        if state.pivot is not None and not len(fresh):
            assert state.pivot_seed is not None
            return state.pivot, state.pivot_noises, state.pivot_seed
        n_searches, shape = len(p), p.noise_shape
        pivot = torch.zeros((n_searches, *shape), device=p.device) if state.pivot is None else state.pivot.clone()
        seeds = torch.full((n_searches,), -1, dtype=torch.int64, device=p.device)
        seeds = seeds if state.pivot_seed is None else state.pivot_seed.clone()
        noises = state.pivot_noises
        owners, paths = fresh.tolist(), [(d,) for d in state.draw[fresh].tolist()]
        drawn_seeds, drawn = p.noise(owners, paths)
        at = fresh.to(p.device)
        pivot[at] = drawn.to(pivot.dtype)
        seeds[at] = torch.tensor(drawn_seeds, dtype=torch.int64, device=p.device)
        if p.stochastic:
            streams = p.step_noises(owners, paths, p.steps)[1]
            noises = (
                torch.zeros((n_searches, *streams.shape[1:]), device=p.device) if noises is None else noises.clone()
            )
            noises[at] = streams.to(noises.dtype)
        return pivot, noises, seeds

    def _neighbour_jobs(
        self, state: ZeroOrderState, pivot: torch.Tensor, noises: torch.Tensor | None, counts: torch.Tensor, it: int
    ) -> Jobs:
        """The neighbours of round ``it``: ``counts[i]`` of search i's pivot, search-major."""
        p = state.problems
        owner = torch.repeat_interleave(torch.arange(len(p)), counts)  # (m,) CPU
        starts = torch.cumsum(counts, 0) - counts
        ks = (torch.arange(len(owner)) - starts[owner]).tolist()  # neighbour j of its search
        owners = owner.tolist()
        seeds, eps = p.noise(owners, [(it, j) for j in ks])
        at = owner.to(p.device)
        x = make_neighbours(pivot[at], eps, self.neighbourhood, self.step_size, self.cosine)
        fresh = state.fresh[owner]
        made_from: torch.Tensor | list[int | None]
        if not bool(fresh.any()):  # data-dependent: a tensor column
            assert state.pivot_index is not None
            made_from = state.pivot_index[at]
        else:  # a pivot scored in this same round has no index yet
            known = [None] * len(owners) if state.pivot_index is None else state.pivot_index[at].tolist()
            made_from = [None if f else k for f, k in zip(fresh.tolist(), known)]
        info = {"role": ["neighbour"] * len(owners), "iteration": [it] * len(owners), "pivot": made_from}
        info["eps_seed"] = seeds
        return Jobs(owner, x, p.sigmas, info=info, noises=None if noises is None else noises[at])

    # ---- tell ------------------------------------------------------------------------------------
    def tell(self, state: ZeroOrderState, outcomes: list[Outcomes]) -> None:
        for out in outcomes:
            state.spent += torch.bincount(out.jobs.owner, minlength=len(state.problems)) * out.nfe
        for out in outcomes:  # the pivots first: a round's neighbours must beat its pivot's score
            if out.jobs.info["role"][0] == "pivot":
                self._take_pivots(state, out)
        for out in outcomes:
            if out.jobs.info["role"][0] == "neighbour":
                self._take_neighbours(state, out)

    def _take_pivots(self, state: ZeroOrderState, out: Outcomes) -> None:
        """Keep the pivots scored in ``out`` (fresh ones, or re-scored ones: their new score counts)."""
        p, device = state.problems, state.problems.device
        owner = out.jobs.owner
        at = owner.to(device)
        if state.pivot is None:
            n = len(p)
            state.pivot = torch.zeros((n, *p.noise_shape), dtype=out.jobs.x.dtype, device=device)
            state.pivot_score = torch.full((n,), -math.inf, dtype=torch.float64, device=device)
            state.pivot_index = torch.full((n,), -1, dtype=torch.int64, device=device)
            state.pivot_seed = torch.full((n,), -1, dtype=torch.int64, device=device)
            if out.jobs.noises is not None:
                state.pivot_noises = torch.zeros((n, *out.jobs.noises.shape[1:]), device=device)
        assert state.pivot_score is not None and state.pivot_index is not None and state.pivot_seed is not None
        fresh = state.fresh[owner].to(device)
        seeds = [-1 if s is None else s for s in (out.jobs.noise_seed or [None] * len(owner))]
        state.pivot[at] = out.jobs.x.to(device)
        state.pivot_score[at] = rank_values(out.score).to(device)
        state.pivot_index[at] = torch.where(fresh, out.index.to(device), state.pivot_index[at])
        state.pivot_seed[at] = torch.tensor(seeds, dtype=torch.int64, device=device)
        if state.pivot_noises is not None and out.jobs.noises is not None:
            state.pivot_noises[at] = out.jobs.noises.to(state.pivot_noises.dtype)
        state.fresh[owner] = False

    def _take_neighbours(self, state: ZeroOrderState, out: Outcomes) -> None:
        """Move each search's pivot to its first best neighbour if that beats the pivot; else restart or stay."""
        assert state.pivot is not None and state.pivot_score is not None
        assert state.pivot_index is not None and state.pivot_seed is not None
        state.iteration += 1
        device, n_searches = state.problems.device, len(state.problems)
        owner = out.jobs.owner.to(device)
        score = rank_values(out.score).to(device)  # (m,)
        m = len(score)
        top = torch.full((n_searches,), -math.inf, dtype=torch.float64, device=device)
        top = top.scatter_reduce(0, owner, score, "amax")  # (S,) each search's best neighbour score
        rows = torch.arange(m, device=device)
        first = torch.full((n_searches,), m, dtype=torch.int64, device=device)
        first = first.scatter_reduce(0, owner, torch.where(score == top[owner], rows, m), "amin")
        best = first.clamp(max=m - 1)  # (S,) the first best neighbour's row (any row for a search without one)
        took_part = torch.bincount(owner, minlength=n_searches) > 0
        move = took_part & (top > state.pivot_score)  # strictly better: on a tie the pivot stays
        shape = (-1, *([1] * (state.pivot.dim() - 1)))
        state.pivot = torch.where(move.view(shape), out.jobs.x[best].to(state.pivot.dtype), state.pivot)
        state.pivot_score = torch.where(move, top, state.pivot_score)
        state.pivot_index = torch.where(move, out.index.to(device)[best], state.pivot_index)
        state.pivot_seed = torch.where(move, -1, state.pivot_seed)  # a neighbour is not a seeded draw
        if self.restart:  # a round without improvement: the next pivot is the fresh draw (t,)
            failed = (took_part & ~move).cpu()
            state.fresh |= failed
            state.draw[failed] = state.iteration
