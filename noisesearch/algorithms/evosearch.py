"""EvoSearch: evolution over the starting noises and over intermediate states at scheduled steps.

He et al. 2025, "Scaling Image and Video Generation via Test-Time Evolutionary Search"
(arXiv 2505.17618), with the defaults of its released code (github.com/tinnerhrhe/EvoSearch-codes,
Stable Diffusion 2.1 example: 50 steps, evolution at steps 0, 20, 30, 40, population sizes
42, 26, 26, 26, 30, mutation rate 0.2, 5 elites, tournaments over 90% of the population, DDIM
with eta = 1 i.e. ``euler-ancestral`` here).

With ``n`` steps, the evolution steps ``e_0 < .. < e_{m-1}`` are ``round(f * n)`` for the fractions
``schedule`` (default 0, 0.4, 0.6, 0.8; repeats dropped) and generation ``k`` has ``p_k`` members:

1. generation 0: ``p_0`` fresh noises run the stochastic sampler to sigma = 0;
2. every member of every generation leaves its state at each evolution step ``e_j`` it passes in
   the archive of ``e_j``, with the final score of its own run as that state's fitness;
3. after generation ``k`` has finished, generation ``k + 1`` is born at ``e_k`` from the archive
   of ``e_k`` (the states there of all generations so far): the ``elites`` fittest states are kept
   as they are, and each other member is the winner of a tournament (the fittest of a random 90%
   of the archive), mutated:

       at the start (sigma_0, a noise):  x' = sqrt(1 - beta^2) x + beta eps     (keeps N(0, I))
       at an intermediate sigma = sigma_e, by ``intermediate_mutation``:
         "add-noise"  (the reference's formula):  x' = x + c eps
         "keep-level" (ours, keeps sigma):         x' = s + sqrt(1 - b^2) (x - s) + c eps,
                                                   s = (1 - sigma) d,  b = c / sigma

   with ``beta`` the mutation rate, ``eps`` ~ N(0, I) a fresh draw, ``c`` the standard deviation
   of the noise that the stochastic sampler injected in the step sigma_{e-1} -> sigma_e that reached
   the state (the reference's scale: the std its scheduler step returns), and ``d`` the x0-prediction
   of that step; then generation ``k + 1`` runs from ``e_k`` to sigma = 0 with fresh per-step noises
   (elites included: each run is a new stochastic trajectory);
4. the answer is the best finished sample of all generations.

The reference (``SD2.1/evo_pipe.py`` at commit f2b6ba7, ``EvolStableDiffusion.evosearch``: archive at
lines 531-542, mutation at 583-585; ``generate``: re-entry at 865-871; ``FLUX/flux_evol_pipe.py`` is the
same loop) and where this differs:

- One step offset. The reference's archive for evolution step ``e`` holds the *output* of its
  scheduler step at timestep index ``e``, i.e. states at ``t_{e+1}``, with the std that this step
  injected (``scheduling_ddim.py`` returns ``std_dev_t``); the next generation then re-enters the
  denoising loop at index ``e``: it runs states of level ``t_{e+1}`` from ``t_e``, one step noisier
  than they are (its elites too). Its ``x + std * eps`` roughly makes up for that step: ``std`` is
  DDPM's posterior std of ``t_e -> t_{e+1}``, about the noise the forward process adds from
  ``t_{e+1}`` back to ``t_e``, and on SD 2.1's schedule at 50 steps the mutated states' noise-to-signal
  ratio is 0.98-0.99 of that of ``t_e`` (e = 0, 20, 30, 40). Generation 0's mutation acts the same
  way on the states after step 0 (at ``t_1``), run again from ``t_0``.
- Here the archive of ``e`` holds the states *at* sigma_e (those the step from sigma_e starts from)
  and the next generation runs them from sigma_e: no offset, and the same steps paid (generation
  ``k + 1`` runs ``n - e_k`` steps in both). Generation 0's mutation acts on the starting noises,
  where ``sqrt(1 - beta^2) x + beta eps`` keeps N(0, I) exactly.
- Without the offset the reference's formula ("add-noise") no longer matches the level a state is
  run from: x = (1 - sigma) x0 + sigma n plus c eps has a noise of std sqrt(sigma^2 + c^2), i.e.
  sqrt(1 + c^2 / sigma^2) - 1 = 28-30% more than sigma at 8 steps (e = 3, 5, 6, ``euler-ancestral``)
  and 7.5-10% more at 50 steps (e = 20, 30, 40). The excess fades only over the next steps (on a
  point mass at 8 steps: 1.30 sigma at e = 3, still 1.04-1.05 sigma at step 5) and adds up when such a
  state is mutated again (1.31-1.32 sigma). "keep-level" (the default) removes it: it follows the
  reference's effect (mutated states at the level they are run from) rather than its formula, which
  without the offset would not; "add-noise" is the reference's formula as written.

"keep-level", derived. The stochastic step that reached x built it around the x0-prediction ``d`` of
that step: x = s + sigma n with s = (1 - sigma) d and implied noise n = (x - s) / sigma =
(sqrt(sigma^2 - c^2) h + c z) / sigma, where h is the step's direction (unit variance at a state of
the right level) and z its injected noise; n has unit variance, (sigma^2 - c^2 + c^2) / sigma^2 = 1.
The child keeps the signal ``s`` and turns the noise by a norm-preserving mix with fresh noise,
n' = sqrt(1 - b^2) n + b eps, of variance (1 - b^2) + b^2 = 1, so x' = s + sigma n' is again at
sigma. Taking b = c / sigma makes its fresh part sigma b eps = c eps, the reference's added noise,
with the old noise part shrunk by sqrt(1 - b^2) to make room; b <= 1 because c <= sigma_e (the
posterior std of a step to sigma_e is at most sigma_e, and eta <= 1). The x0-prediction comes free
with the stretch that reached the state (``Outcomes.denoised``); "keep-level" archives it next to each
state (twice the archive's memory). A child keeps its parent's ``d``.

A run is cut into one batch row per stretch between evolution steps (unfinished stretches are scored on
their free x0-preview, which nothing uses), so generation 0 costs ``p_0`` full trajectories and
generation ``k >= 1`` costs ``p_k`` trajectories from ``e_{k-1}``: exactly what the reference pays.
With ``populations`` unset, the sizes are the reference's shape (first 42, middle 26, last 30)
scaled to the largest that the budget pays for, at least 2 each; evolution steps at the end of the
schedule are dropped until 2 members per generation fit. Draws: member ``j`` of generation ``k``
starts from ``(k, j)`` (generation 0); its per-step noises are the stream ``(k, j, STEP_NOISES)`` of
``steps`` rows, row ``i`` for the step from sigma_i (the rows before its birth step are drawn and
unused, so that a step's noise does not depend on where the member was born), read stretch by stretch
as the generation runs (``Streams``: a large latent's streams are not held for every step at once); its
mutation is ``(k, j, MUTATION)``; the tournaments that make generation ``k + 1`` (from the archive of
``e_k``) draw one ``randperm`` of the archive each, in member order, from one generator seeded with the
path ``(TOURNAMENT, k)``.

Every search of a run evolves in lock step (the plan depends only on the budget and schedule): a
generation's states, step-noise streams and archives carry a leading search dimension, and one batch
holds a stretch of every member of every search.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from noisesearch.algorithms._stepwise import check_stochastic_sampler
from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, Streams, derive_seed, rank_order
from noisesearch.errors import UserError

MUTATION = 2**42  # path marker of the mutation draws
TOURNAMENT = 2**43  # path marker of the tournament generators
SHAPE = (42, 26, 30)  # the reference's population sizes: first generation, middle ones, last
ETA = {"euler-sde": 0.5, "euler-ancestral": 1.0}  # noise level of each stochastic sampler
INTERMEDIATE_MUTATIONS = ("add-noise", "keep-level")  # module docstring, step 3


def mutate_noise(x: torch.Tensor, eps: torch.Tensor, beta: float) -> torch.Tensor:
    """EvoSearch's mutation of a starting noise: ``sqrt(1 - beta^2) x + beta eps`` (N(0, I) -> N(0, I))."""
    return math.sqrt(1.0 - beta**2) * x + beta * eps


def add_noise(x: torch.Tensor, eps: torch.Tensor, c: float) -> torch.Tensor:
    """The reference's mutation of an intermediate state: ``x + c eps`` (raises its noise std to sqrt(sigma^2 + c^2))."""
    return x + c * eps


def keep_level(x: torch.Tensor, denoised: torch.Tensor, eps: torch.Tensor, sigma: float, c: float) -> torch.Tensor:
    """Mutation of a state ``x`` at ``sigma`` that keeps its noise level (module docstring, "keep-level").

    With ``s = (1 - sigma) denoised`` the state's signal: ``s + sqrt(1 - b^2) (x - s) + c eps``, ``b = c / sigma``
    (the implied noise ``(x - s) / sigma`` turned towards ``eps`` by a norm-preserving mix)."""
    if not 0 <= c <= sigma * (1 + 1e-9):  # c = sigma up to rounding when the step came from sigma = 1
        raise ValueError(f"keep_level needs 0 <= c <= sigma, got c = {c}, sigma = {sigma}")
    signal = (1 - sigma) * denoised
    return signal + math.sqrt(max(1 - (c / sigma) ** 2, 0.0)) * (x - signal) + c * eps


def injected_std(sigma: float, sigma_next: float, eta: float) -> float:
    """Std of the noise that ``sample_euler_sde`` with ``eta`` injects in its step sigma -> sigma_next."""
    a = (1 - sigma) / (1 - sigma_next)
    return eta * sigma_next * max(sigma**2 - (a * sigma_next) ** 2, 0.0) ** 0.5 / sigma


@dataclass
class EvoState:
    """Every search's current generation and archives; members are rows ``i * population + j``.

    ``x`` (S * p, *noise_shape) holds the members' states at step ``at`` and ``streams`` their S * p
    step-noise streams of ``steps`` rows each, read from row ``at`` on (the rows before the generation's
    birth step are never read).
    ``archive[j]`` is (states (S, A, *noise_shape), fitness (S, A) float64, NaN: failed): the states at
    ``steps[j]`` of every finished member that passed it, in (generation, member) order; ``signals[j]``
    (S, A, *noise_shape), kept for "keep-level" only, their x0-predictions (those of the steps that reached
    them; zeros at a starting noise), row for row.
    """

    problems: Problems
    sampler: str
    steps: list[int]  # evolution step indices e_0 < .. < e_{m-1}
    populations: list[int]  # p_0 .. p_m
    x: torch.Tensor  # (S * p, *noise_shape) the members' states at ``at``
    streams: Streams  # S * p streams of ``steps`` rows
    seeds: list[int | None] | None  # generation 0's noise seeds (recorded for its first stretch)
    archive: list[tuple[torch.Tensor, torch.Tensor]]
    signals: list[torch.Tensor] | None  # "keep-level": the archived states' x0-predictions
    generation: int = 0
    at: int = 0  # step index of ``x``: the start of the next stretch
    denoised: torch.Tensor | None = None  # (S * p, ...) x0-prediction of the step that reached ``x``; None: a noise
    passed: dict[int, torch.Tensor] = field(default_factory=dict)  # evolution step j -> states there (S * p, ...)
    passed_denoised: dict[int, torch.Tensor | None] = field(default_factory=dict)  # j -> their x0-predictions
    done: bool = False


class EvoSearch:
    """Evolutionary search over noises and intermediate states (He et al. 2025; module docstring)."""

    name = "evosearch"
    renders_from_noise = False  # final_steps: later generations start from intermediate states, with injected noises

    def __init__(
        self,
        *,
        schedule: tuple[float, ...] | list[float] = (0.0, 0.4, 0.6, 0.8),
        populations: tuple[int, ...] | list[int] | None = None,
        mutation_rate: float = 0.2,
        elites: int = 5,
        tournament: float = 0.9,
        sampler: str | None = None,
        intermediate_mutation: str = "keep-level",
    ):
        fractions = list(schedule) if isinstance(schedule, (list, tuple)) else None
        if (
            not fractions
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1 for f in fractions)
            or fractions != sorted(fractions)
        ):
            raise UserError(f"schedule must be increasing fractions of the steps in [0, 1), got {schedule!r}")
        if populations is not None and (
            not isinstance(populations, (list, tuple))
            or len(populations) != len(fractions) + 1
            or any(isinstance(p, bool) or not isinstance(p, int) or p < 2 for p in populations)
        ):
            raise UserError(
                f"populations must be {len(fractions) + 1} integers >= 2 (one per generation), got {populations!r}"
            )
        if isinstance(mutation_rate, bool) or not isinstance(mutation_rate, (int, float)) or not 0 < mutation_rate < 1:
            raise UserError(f"mutation_rate must be a number in (0, 1), got {mutation_rate!r}")
        if isinstance(elites, bool) or not isinstance(elites, int) or elites < 0:
            raise UserError(f"elites must be an integer >= 0, got {elites!r}")
        if isinstance(tournament, bool) or not isinstance(tournament, (int, float)) or not 0 < tournament <= 1:
            raise UserError(f"tournament must be a fraction in (0, 1], got {tournament!r}")
        if intermediate_mutation not in INTERMEDIATE_MUTATIONS:
            raise UserError(
                f"unknown intermediate_mutation {intermediate_mutation!r}; accepted: {', '.join(INTERMEDIATE_MUTATIONS)}"
            )
        self.schedule = [float(f) for f in fractions]
        self.populations = None if populations is None else list(populations)
        self.mutation_rate, self.elites, self.tournament = float(mutation_rate), elites, float(tournament)
        self.sampler = check_stochastic_sampler(sampler)
        self.intermediate_mutation = intermediate_mutation

    def params(self) -> dict:
        return {
            "schedule": self.schedule,
            "populations": self.populations,
            "mutation_rate": self.mutation_rate,
            "elites": self.elites,
            "tournament": self.tournament,
            "sampler": self.sampler,
            "intermediate_mutation": self.intermediate_mutation,
        }

    # --- planning ---------------------------------------------------------------------------------

    def plan_cost(self, costs: CostModel | Problems, sampler: str, steps: list[int], populations: list[int]) -> int:
        """Exact NFEs (per search) of generations of ``populations`` evolving at ``steps``."""
        starts = [0] + steps  # generation k >= 1 is born at e_{k-1}
        return sum(p * costs.cost(costs.sigmas[s:], sampler) for p, s in zip(populations, starts))

    def _sampler(self, costs: CostModel) -> str:
        """``sampler``, else the run's own if it is stochastic, else euler-ancestral."""
        return self.sampler or (costs.sampler if costs.stochastic else "euler-ancestral")

    def _evolution_steps(self, costs: CostModel, sampler: str, budget: int) -> list[int]:
        """The steps the generations evolve at: the ``schedule``'s, less those ``budget`` cannot pay for with
        populations of 2 (with ``populations`` given: all, each a different step)."""
        n = costs.steps
        steps = sorted({min(round(f * n), n - 1) for f in self.schedule})
        if self.populations is not None:
            if len(steps) != len(self.schedule):
                raise UserError(f"schedule {self.schedule} repeats a step at {n} steps; give fewer fractions")
            return steps
        while len(steps) > 1 and self.plan_cost(costs, sampler, steps, [2] * (len(steps) + 1)) > budget:
            steps = steps[:-1]
        return steps

    def _needed(self, costs: CostModel, sampler: str, steps: list[int]) -> tuple[int, str]:
        """(NFEs, what for) of the least plan evolving at ``steps``."""
        if self.populations is not None:
            what = f"EvoSearch with populations {self.populations}"
            return self.plan_cost(costs, sampler, steps, self.populations), what
        return self.plan_cost(costs, sampler, steps, [2, 2]), "two EvoSearch generations of 2"

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        sampler = self._sampler(costs)
        return self._needed(costs, sampler, self._evolution_steps(costs, sampler, budget))

    def plan(self, problems: Problems, sampler: str) -> tuple[list[int], list[int]]:
        """(evolution steps, population sizes) for the run's budget and schedule (module docstring)."""
        steps = self._evolution_steps(problems.costs, sampler, problems.budget)
        problems.require_budget(*self._needed(problems.costs, sampler, steps))
        if self.populations is not None:
            return steps, self.populations

        def sizes(c: float) -> list[int]:
            shape = [SHAPE[0]] + [SHAPE[1]] * (len(steps) - 1) + [SHAPE[2]]
            return [max(2, math.floor(c * w)) for w in shape]

        lo, hi = 0.0, float(problems.budget)
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.plan_cost(problems, sampler, steps, sizes(mid)) <= problems.budget else (lo, mid)
        return steps, sizes(lo)

    # --- ask / tell -------------------------------------------------------------------------------

    def init(self, problems: Problems) -> EvoState:
        sampler = self._sampler(problems.costs)
        steps, populations = self.plan(problems, sampler)
        owners, js = problems.grid(populations[0])
        paths = [(0, j) for j in js]
        drawn, x = problems.noise(owners, paths)  # (S * p_0, *noise_shape)
        seeds: list[int | None] = list(drawn)
        streams = problems.streams(owners, paths, problems.steps)  # S * p_0 streams of ``steps`` rows
        empty = (
            torch.empty((len(problems), 0, *problems.noise_shape), device=problems.device),
            torch.empty((len(problems), 0), dtype=torch.float64, device=problems.device),
        )
        signals = [empty[0]] * len(steps) if self.intermediate_mutation == "keep-level" else None
        return EvoState(problems, sampler, steps, populations, x, streams, seeds, [empty] * len(steps), signals)

    def _next_stop(self, state: EvoState, at: int) -> int:
        return next((e for e in state.steps if e > at), state.problems.steps)

    def ask(self, state: EvoState) -> list[Jobs]:
        if state.done:
            return []
        p, at = state.problems, state.at
        stop = self._next_stop(state, at)
        size = state.populations[state.generation]
        owners, js = p.grid(size)
        rows = len(owners)
        info = {
            "generation": [state.generation] * rows,
            "member": js,
            "from_step": [at] * rows,
            "to_step": [stop] * rows,
        }
        return [
            Jobs(
                torch.tensor(owners, dtype=torch.int64),
                state.x,
                p.sigmas[at : stop + 1],
                noise_seed=state.seeds if state.generation == 0 and at == 0 else None,
                info=info,
                sampler=state.sampler,
                noises=state.streams.rows(at, stop),  # (S * p, stop - at, *noise_shape)
            )
        ]

    def tell(self, state: EvoState, outcomes: list[Outcomes]) -> None:
        (out,) = outcomes
        p = state.problems
        if state.at in state.steps:
            state.passed[state.steps.index(state.at)] = out.jobs.x
            state.passed_denoised[state.steps.index(state.at)] = state.denoised
        state.x, state.at = out.x, self._next_stop(state, state.at)
        state.denoised = out.denoised if state.signals is not None else None  # held for "keep-level" only
        if state.at < p.steps:
            return
        # finished: each member's score is the fitness of every state it left on the way
        n_searches = len(p)
        fitness = out.score.to(state.x.device).double().view(n_searches, -1)  # (S, p)
        for j, states in sorted(state.passed.items()):
            kept, scores = state.archive[j]
            state.archive[j] = (
                torch.cat([kept, states.view(n_searches, -1, *p.noise_shape)], 1),
                torch.cat([scores, fitness], 1),
            )
            if state.signals is not None:
                d = state.passed_denoised[j]
                d = torch.zeros_like(states) if d is None else d  # a starting noise: no signal yet
                state.signals[j] = torch.cat([state.signals[j], d.view(n_searches, -1, *p.noise_shape)], 1)
        state.passed, state.passed_denoised = {}, {}
        k = state.generation
        if k == len(state.steps):
            state.done = True
            return
        self._offspring(state, k)

    def _offspring(self, state: EvoState, k: int) -> None:
        """Make generation ``k + 1``, born at ``e_k`` from its archive (module docstring, step 3)."""
        p, at = state.problems, state.steps[k]
        size = state.populations[k + 1]
        pool, fitness = state.archive[k]  # (S, A, *noise_shape), (S, A)
        n_searches, entries = fitness.shape
        order = rank_order(fitness, dim=1)  # (S, A) fittest first, ties in archive order
        kept = min(self.elites, size - 1, entries)
        winners = self._tournaments(p, k, entries, size - kept).to(order.device)  # (S, size - kept) ranks
        rows = torch.arange(n_searches, device=order.device)[:, None]
        picked = torch.cat([order[:, :kept], torch.gather(order, 1, winners)], 1)  # (S, size): elites, parents
        elites, parents = pool[rows, picked].split([kept, size - kept], 1)  # (S, kept | size - kept, *noise_shape)
        owners, js = p.grid(size - kept)
        eps = p.noise(owners, [(k + 1, j + kept, MUTATION) for j in js])[1].view(parents.shape)
        signals = None if state.signals is None or at == 0 else state.signals[k][rows, picked]  # (S, size, ...)
        if at == 0:
            children = mutate_noise(parents, eps, self.mutation_rate)
        else:
            sigma = p.sigmas[at]
            c = injected_std(p.sigmas[at - 1], sigma, ETA.get(state.sampler, 1.0))
            if signals is None:
                children = add_noise(parents, eps, c)
            else:
                children = keep_level(parents, signals[:, kept:], eps, sigma, c)
        owners, js = p.grid(size)
        state.x = torch.cat([elites, children], 1).flatten(0, 1)  # (S * size, *noise_shape)
        state.denoised = None if signals is None else signals.flatten(0, 1)  # a child keeps its parent's
        state.streams = p.streams(owners, [(k + 1, j) for j in js], p.steps)  # read from row ``at`` on
        state.seeds, state.generation, state.at = None, k + 1, at

    def _tournaments(self, problems: Problems, k: int, entries: int, count: int) -> torch.Tensor:
        """The winners (S, count) int64 of generation ``k + 1``'s tournaments, as ranks in the sorted pool of
        ``entries``: each the best of a random ``tournament`` share of it (the first ``entrants`` of a
        ``randperm`` from the search's generator ``(TOURNAMENT, k)``)."""
        entrants = max(1, int(entries * self.tournament))
        if count == 0:
            return torch.empty((len(problems), 0), dtype=torch.int64)
        start = time.perf_counter()
        g, perms = torch.Generator(), []
        for seed in problems.seeds:  # one generator per search, drawn in order: the unavoidable cost
            g.manual_seed(derive_seed(seed, TOURNAMENT, k))
            perms += [torch.randperm(entries, generator=g) for _ in range(count)]
        problems.clock.since(start)  # seeded draws: counted with the noises'
        return torch.stack(perms)[:, :entrants].amin(1).view(len(problems), count)  # (S, count)
