"""Step-greedy search: per step, the best of a few fresh injected noises, or sometimes a random one.

noisesearch's own algorithm (it was registered as ``epsilon-greedy`` until that name went to the
method of Ramesh and Mardani 2025, ``noisesearch.algorithms.epsilon_greedy``, which it is not: that
method makes local moves around a pivot and its epsilon is the rate of fresh global proposals; here
every candidate is a fresh noise, and ``epsilon`` is the rate of keeping a *random* candidate instead
of the best, so raising it can only lose). Each of ``paths`` independent trajectories starts from the draw ``(p,)``. At every step it runs
``candidates`` jobs from its current state, candidate ``c`` with its own step noise (row ``step``
of the stream ``(p, c)``: ``Problems.streams`` with one row per schedule step, held as ``Streams``
and read one row per step, so a large latent's streams are not held for every step), scored on the
x0-prediction of the end state (``score_end``); it keeps the best one, or with probability
``epsilon`` a uniformly random one, and the kept candidate's x0-prediction is passed as
``denoised`` to the next step, so it is never paid twice. The final step's one job per path takes
row ``steps - 1`` of its candidate 0's stream (a stochastic sampler needs one; it injects nothing).

One seeded uniform ``u`` per choice (the draw ``(p, EXPLORE, step)``) decides both: ``u < epsilon``
explores, and then ``u / epsilon`` is again uniform and picks candidate ``floor(K u / epsilon)``.
The step to sigma = 0 injects no noise (``noisesearch.samplers``), so the last real choice is the
step before it, whose candidates' x0-predictions are already the final samples: that choice is
always greedy (exploring there could only lose), and the final step is one free job per path that
turns the kept state into a finished sample. Without ``paths``, trajectories with ``candidates``
per step are started while the budget pays for them, and what is left goes to one narrower
trajectory with as many candidates per step as it pays for.

Every search of a run advances in lock step: kept states carry a leading search dimension (``x``
(S, paths, ...)), and a step's rows are every candidate of every path of every search, search-major
(within a search path-major, as the candidate indices go).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from noisesearch.algorithms._stepwise import chain_step_costs, check_stochastic_sampler, resolve_sampler
from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, Streams, first_best, rank_values
from noisesearch.errors import UserError

_EXPLORE = 2**41  # path marker of the exploration uniforms (unchanged: records stay comparable across the rename)


@dataclass
class StepGreedyState:
    problems: Problems
    sampler: str
    widths: list[int]  # candidates per step of each path (P paths, C candidates per search and step in all)
    x: torch.Tensor  # (S, P, *noise_shape) kept state of each path (the initial noises before step 0)
    noise_seed: list[int | None]  # (S * P) seeds of the initial noises, search-major
    candidate_seeds: list[int | None]  # (S * C) the seed of each candidate's path (its start at step 0)
    streams: Streams  # (S * C) the step-noise stream of each (path, candidate), search-major; row t read at step t
    # (for the final step: only each path's candidate 0's, S * P)
    uniforms: torch.Tensor  # (S, P, steps) float64 exploration uniform of each choice (NaN: never explores)
    plan: dict  # on the device, int64: "path" (C,) of each of a search's rows, "offset" (P,) first row of each path,
    # "slot" (C,) place of each row in a (path, candidate) grid of P x max(widths), "width" (P,) float64; and on
    # the CPU "finals" (S * P,) the streams of the final step (each path's candidate 0's)
    info: dict  # CPU int64 columns (S * C): "owner", "path", "candidate", "step_noise_seed"
    final_info: dict  # the same columns for the final step's rows (S * P): each path's candidate 0
    step: int = 0  # the next step to run
    denoised: torch.Tensor | None = None  # (S, P, *noise_shape) x0-predictions of the kept states (cached)
    choices: torch.Tensor | None = None  # (S, P, choices made) int64 the candidate kept at each step
    explored: torch.Tensor | None = None  # (S, P, choices made) bool whether that choice explored

    @property
    def searches(self) -> int:
        return self.x.shape[0]


class StepGreedySearch:
    """Per-step choice among fresh injected noises: the best, or with probability ``epsilon`` a random one."""

    name = "step-greedy"
    renders_from_noise = False  # final_steps: a trajectory depends on the step noises it chose

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

    def _plan(self, costs: CostModel, budget: int, sampler: str) -> tuple[list[int], tuple[int, str]]:
        """(candidates per step of each path, (NFEs, what for) they need) at ``budget`` (module docstring)."""
        steps = chain_step_costs(costs, sampler)
        per_candidate, finish = sum(steps[:-1]), steps[-1]  # K candidates on every step but the last

        def cost(width: int) -> int:
            return width * per_candidate + finish

        if self.paths is not None:
            widths = [self.candidates] * self.paths
        else:
            widths = [self.candidates] * (budget // cost(self.candidates))
            left = budget - len(widths) * cost(self.candidates)
            if per_candidate and left >= cost(1):
                widths.append((left - finish) // per_candidate)  # < candidates, since left < cost(candidates)
        if widths:
            return widths, (sum(cost(w) for w in widths), f"{len(widths)} trajectory(ies)")
        return widths, (cost(1), "one trajectory with one candidate per step")

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        return self._plan(costs, budget, resolve_sampler(self.sampler, costs))[1]

    def widths(self, problems: Problems, sampler: str) -> list[int]:
        """Candidates per step of each path, planned from the exact cost (module docstring)."""
        widths, needed = self._plan(problems.costs, problems.budget, sampler)
        problems.require_budget(*needed)
        return widths

    def init(self, problems: Problems) -> StepGreedyState:
        sampler = resolve_sampler(self.sampler, problems.costs)
        widths = self.widths(problems, sampler)
        S, P, n, device = len(problems), len(widths), problems.steps, problems.device
        path_of = [p for p, w in enumerate(widths) for _ in range(w)]  # (C,) a search's rows
        cand_of = [c for w in widths for c in range(w)]
        owners = [i for i in range(S) for _ in path_of]  # (S * C,)
        streams = problems.streams(owners, [(p, c) for _ in range(S) for p, c in zip(path_of, cand_of)], n)
        seeds, x = problems.noise([i for i in range(S) for _ in range(P)], [(p,) for _ in range(S) for p in range(P)])
        start_seeds: list[int | None] = list(seeds)
        uniforms = torch.full((S, P, n), float("nan"), dtype=torch.float64, device=device)
        explorable = list(range(n - 2)) if self.epsilon > 0 else []  # the last choice (step n - 2) is greedy
        if explorable and P:
            u = problems.uniforms(
                [i for i in range(S) for _ in range(P) for _ in explorable],
                [(p, _EXPLORE, t) for _ in range(S) for p in range(P) for t in explorable],
            )
            uniforms[:, :, explorable] = u.view(S, P, len(explorable))
        offset = torch.tensor([0, *widths[:-1]], dtype=torch.int64).cumsum(0)  # (P,)
        finals = (torch.arange(S)[:, None] * len(path_of) + offset).flatten()  # (S * P,) each path's candidate 0
        info = {
            "owner": torch.tensor(owners, dtype=torch.int64),
            "path": torch.tensor(path_of, dtype=torch.int64).repeat(S),
            "candidate": torch.tensor(cand_of, dtype=torch.int64).repeat(S),
            "step_noise_seed": torch.tensor(streams.seeds, dtype=torch.int64),
        }
        return StepGreedyState(
            problems,
            sampler,
            widths,
            x.view(S, P, *x.shape[1:]),
            start_seeds,
            [start_seeds[i * P + q] for i in range(S) for q in path_of],
            streams if n > 1 else streams.select(finals),  # a single step is the final one
            uniforms,
            plan={
                "path": torch.tensor(path_of, dtype=torch.int64, device=device),
                "offset": offset.to(device),
                "slot": torch.tensor([q * max(widths) + c for q, c in zip(path_of, cand_of)], device=device),
                "finals": finals,  # on the CPU: it picks streams (host generators when drawn step by step)
                "width": torch.tensor(widths, dtype=torch.float64, device=device),
            },
            info=info,
            final_info={key: column[finals] for key, column in info.items()},
        )

    def ask(self, state: StepGreedyState) -> list[Jobs]:
        p, t = state.problems, state.step
        n = p.steps
        if t == n:
            return []
        plan, info = state.plan, state.info
        if t < n - 1:  # every candidate of every path: the plan's columns as they are
            path = plan["path"]
            x = state.x.index_select(1, path).flatten(0, 1)  # (S * C, *noise_shape) each starts at its path's state
            denoised = None if state.denoised is None else state.denoised.index_select(1, path).flatten(0, 1)
            seeds = state.candidate_seeds if t == 0 else None
            columns = {key: info[key] for key in ("owner", "path", "candidate", "step_noise_seed")}
            noises = state.streams.rows(t, t + 1)  # (S * C, 1, *noise_shape) row t of each stream
        else:  # the final step injects no noise: one job per path, with its candidate 0's stream
            x = state.x.flatten(0, 1)
            denoised = None if state.denoised is None else state.denoised.flatten(0, 1)
            seeds = state.noise_seed if t == 0 else None
            columns = dict(state.final_info)
            noises = state.streams.rows(t, t + 1)  # (S * P, 1, *noise_shape) each path's candidate 0's stream
        owner = columns.pop("owner")
        columns = {
            "path": columns["path"],
            "step": torch.full((len(owner),), t, dtype=torch.int64),
            "candidate": columns["candidate"],
            "step_noise_seed": columns["step_noise_seed"],
        }
        return [
            Jobs(
                owner,
                x,
                p.sigmas[t : t + 2],
                noise_seed=seeds,
                info=columns,
                sampler=state.sampler,
                noises=noises,
                denoised=denoised,
                score_end=t < n - 1,
            )
        ]

    def tell(self, state: StepGreedyState, outcomes: list[Outcomes]) -> None:
        (out,) = outcomes
        p, t = state.problems, state.step
        n, S, P = p.steps, state.searches, len(state.widths)
        state.step += 1
        if t == n - 1:
            return  # finished samples: the driver keeps the best
        if t == n - 2:  # the final step uses only each path's candidate 0's stream, from where it is now
            state.streams = state.streams.select(state.plan["finals"])
        device = state.x.device
        plan, C, K = state.plan, len(state.plan["path"]), max(state.widths)
        scores = rank_values(out.score).to(device).view(S, C)  # NaN -> -inf: never wins
        grid = torch.full((S, P * K), float("-inf"), dtype=torch.float64, device=device)
        grid[:, plan["slot"]] = scores
        choice = first_best(grid.view(S, P, K), dim=-1)  # (S, P) first best; missing candidates never win
        explore = torch.zeros((S, P), dtype=torch.bool, device=device)
        if t < n - 2 and self.epsilon > 0:  # the last choice (t = n - 2) is always greedy
            u = state.uniforms[:, :, t]  # (S, P)
            explore = u < self.epsilon
            width = plan["width"]  # (P,)
            picked = torch.minimum(torch.floor(width * u / self.epsilon), width - 1).long()  # floor(K u / epsilon)
            choice = torch.where(explore, picked, choice)
        kept = plan["offset"] + choice  # (S, P) row of the kept candidate within its search
        rows = (torch.arange(S, device=device)[:, None] * C + kept).flatten()  # (S * P,) its row in the batch
        state.x = out.x.index_select(0, rows.to(out.x.device)).view(S, P, *out.x.shape[1:])
        state.denoised = out.denoised.index_select(0, rows.to(out.denoised.device)).view(S, P, *out.x.shape[1:])
        state.choices = (
            choice[..., None] if state.choices is None else torch.cat([state.choices, choice[..., None]], -1)
        )
        state.explored = (
            explore[..., None] if state.explored is None else torch.cat([state.explored, explore[..., None]], -1)
        )
