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
       at an intermediate sigma_e:       x' = x + c_e eps

   with ``beta`` the mutation rate, ``eps`` ~ N(0, I) a fresh draw, and ``c_e`` the standard
   deviation of the noise the stochastic sampler injected in the step that reached ``sigma_e``
   (as the reference code does); then generation ``k + 1`` runs from ``e_k`` to sigma = 0 with
   fresh per-step noises (elites included: each run is a new stochastic trajectory);
4. the answer is the best finished sample of all generations.

A run is cut into one job per stretch between evolution steps (unfinished stretches are scored on
their free x0-preview, which nothing uses), so generation 0 costs ``p_0`` full trajectories and
generation ``k >= 1`` costs ``p_k`` trajectories from ``e_{k-1}``: exactly what the reference pays.
With ``populations`` unset, the sizes are the reference's shape (first 42, middle 26, last 30)
scaled to the largest that the budget pays for, at least 2 each; evolution steps at the end of the
schedule are dropped until 2 members per generation fit. Draws: member ``j`` of generation ``k``
starts from ``(k, j)`` (generation 0) and takes per-step noises ``(k, j, STEP_NOISES, i)``; its
mutation is ``(k, j, MUTATION)``; the tournaments of generation ``k`` use the draw ``(TOURNAMENT, k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from noisesearch.algorithms._stepwise import check_stochastic_sampler
from noisesearch.algorithms.base import STEP_NOISES, Job, Outcome, Problem, derive_seed, rank_key
from noisesearch.errors import UserError

MUTATION = 2**42  # path marker of the mutation draws
TOURNAMENT = 2**43  # path marker of the tournament generators
SHAPE = (42, 26, 30)  # the reference's population sizes: first generation, middle ones, last
ETA = {"euler-sde": 0.5, "euler-ancestral": 1.0}  # noise level of each stochastic sampler


def mutate_noise(x: torch.Tensor, eps: torch.Tensor, beta: float) -> torch.Tensor:
    """EvoSearch's mutation of a starting noise: ``sqrt(1 - beta^2) x + beta eps`` (N(0, I) -> N(0, I))."""
    return math.sqrt(1.0 - beta**2) * x + beta * eps


def injected_std(sigma: float, sigma_next: float, eta: float) -> float:
    """Std of the noise that ``sample_euler_sde`` with ``eta`` injects in its step sigma -> sigma_next."""
    a = (1 - sigma) / (1 - sigma_next)
    return eta * sigma_next * max(sigma**2 - (a * sigma_next) ** 2, 0.0) ** 0.5 / sigma


@dataclass
class Member:
    x: torch.Tensor  # state at the start of its next stretch
    at: int  # step index of x
    generation: int
    index: int
    archived: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (evolution step j, state)


@dataclass
class EvoState:
    problem: Problem
    sampler: str
    steps: list[int]  # evolution step indices e_0 < .. < e_{m-1}
    populations: list[int]  # p_0 .. p_m
    generation: int = 0
    members: list[Member] = field(default_factory=list)
    archive: list[list[tuple[float, torch.Tensor]]] = field(default_factory=list)  # per e_j: (fitness, state)
    done: bool = False


class EvoSearch:
    """Evolutionary search over noises and intermediate states (He et al. 2025; module docstring)."""

    name = "evosearch"

    def __init__(
        self,
        *,
        schedule: tuple[float, ...] | list[float] = (0.0, 0.4, 0.6, 0.8),
        populations: tuple[int, ...] | list[int] | None = None,
        mutation_rate: float = 0.2,
        elites: int = 5,
        tournament: float = 0.9,
        sampler: str | None = None,
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
        self.schedule = [float(f) for f in fractions]
        self.populations = None if populations is None else list(populations)
        self.mutation_rate, self.elites, self.tournament = float(mutation_rate), elites, float(tournament)
        self.sampler = check_stochastic_sampler(sampler)

    def params(self) -> dict:
        return {
            "schedule": self.schedule,
            "populations": self.populations,
            "mutation_rate": self.mutation_rate,
            "elites": self.elites,
            "tournament": self.tournament,
            "sampler": self.sampler,
        }

    # --- planning ---------------------------------------------------------------------------------

    @staticmethod
    def _run_cost(problem: Problem, sampler: str, start: int) -> int:
        return problem.job_cost(Job(torch.empty(0), problem.sigmas[start:], sampler=sampler))

    def plan_cost(self, problem: Problem, sampler: str, steps: list[int], populations: list[int]) -> int:
        """Exact NFEs of generations of ``populations`` evolving at ``steps``."""
        starts = [0] + steps  # generation k >= 1 is born at e_{k-1}
        return sum(p * self._run_cost(problem, sampler, s) for p, s in zip(populations, starts))

    def plan(self, problem: Problem, sampler: str) -> tuple[list[int], list[int]]:
        n = len(problem.sigmas) - 1
        steps = sorted({min(round(f * n), n - 1) for f in self.schedule})
        if self.populations is not None:
            if len(steps) != len(self.schedule):
                raise UserError(f"schedule {self.schedule} repeats a step at {n} steps; give fewer fractions")
            needed = self.plan_cost(problem, sampler, steps, self.populations)
            problem.require_budget(needed, f"EvoSearch with populations {self.populations}")
            return steps, self.populations
        while len(steps) > 1 and self.plan_cost(problem, sampler, steps, [2] * (len(steps) + 1)) > problem.budget:
            steps = steps[:-1]
        problem.require_budget(self.plan_cost(problem, sampler, steps, [2, 2]), "two EvoSearch generations of 2")

        def sizes(c: float) -> list[int]:
            shape = [SHAPE[0]] + [SHAPE[1]] * (len(steps) - 1) + [SHAPE[2]]
            return [max(2, math.floor(c * w)) for w in shape]

        lo, hi = 0.0, float(problem.budget)
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.plan_cost(problem, sampler, steps, sizes(mid)) <= problem.budget else (lo, mid)
        return steps, sizes(lo)

    # --- ask / tell -------------------------------------------------------------------------------

    def init(self, problem: Problem) -> EvoState:
        sampler = self.sampler or (problem.sampler if problem.stochastic else "euler-ancestral")
        steps, populations = self.plan(problem, sampler)
        state = EvoState(problem, sampler, steps, populations, archive=[[] for _ in steps])
        for j in range(populations[0]):
            state.members.append(Member(problem.noise(0, j)[1], 0, 0, j))
        return state

    def _next_stop(self, state: EvoState, at: int) -> int:
        return next((e for e in state.steps if e > at), len(state.problem.sigmas) - 1)

    def ask(self, state: EvoState) -> list[Job]:
        if state.done:
            return []
        p, jobs = state.problem, []
        for m in state.members:
            stop = self._next_stop(state, m.at)
            seed = p.noise(0, m.index)[0] if m.generation == 0 and m.at == 0 else None
            noises = torch.stack([p.noise(m.generation, m.index, STEP_NOISES, i)[1] for i in range(m.at, stop)])
            info = {"generation": m.generation, "member": m.index, "from_step": m.at, "to_step": stop}
            jobs.append(
                Job(m.x, p.sigmas[m.at : stop + 1], noise_seed=seed, info=info, sampler=state.sampler, noises=noises)
            )
        return jobs

    def tell(self, state: EvoState, outcomes: list[Outcome]) -> None:
        n = len(state.problem.sigmas) - 1
        for m, o in zip(state.members, outcomes):
            if m.at in state.steps:
                m.archived.append((state.steps.index(m.at), m.x))
            m.x, m.at = o.x, self._next_stop(state, m.at)
            if m.at == n:  # finished: its score is the fitness of every state it left on the way
                for j, x in m.archived:
                    state.archive[j].append((o.score, x))
        if state.members[0].at < n:
            return
        k = state.generation
        if k == len(state.steps):
            state.done = True
            return
        state.generation += 1
        state.members = self._offspring(state, k)

    def _offspring(self, state: EvoState, k: int) -> list[Member]:
        """Generation ``k + 1``, born at ``e_k`` from its archive (module docstring, step 3)."""
        p, at = state.problem, state.steps[k]
        size = state.populations[k + 1]
        pool = sorted(state.archive[k], key=lambda fx: rank_key(fx[0]), reverse=True)  # fittest first
        kept = min(self.elites, size - 1, len(pool))
        g = torch.Generator().manual_seed(derive_seed(p.seed, TOURNAMENT, k))
        entrants = max(1, int(len(pool) * self.tournament))
        parents = [pool[int(torch.randperm(len(pool), generator=g)[:entrants].min())][1] for _ in range(size - kept)]
        if at > 0:
            c = injected_std(p.sigmas[at - 1], p.sigmas[at], ETA.get(state.sampler, 1.0))
        members = [Member(x, at, k + 1, j) for j, (_, x) in enumerate(pool[:kept])]
        for j, x in enumerate(parents, start=kept):
            eps = p.noise(k + 1, j, MUTATION)[1]
            child = mutate_noise(x, eps, self.mutation_rate) if at == 0 else x + c * eps
            members.append(Member(child, at, k + 1, j))
        return members
