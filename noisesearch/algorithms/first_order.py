"""First-order search: gradient ascent on the starting noise, through the sampler and the verifier.

Ma et al. 2025, Sec. 3.2 discuss first-order search; ReNO (Eyring et al. 2024) and DOODL (Wallace
et al. 2023) optimise the initial noise with the verifier's gradient. Each of ``starts`` independent
starting noises (start s begins at the draw ``(s,)``, the random-search candidate s) is run as a
``grad`` job over the full schedule; the driver returns ``g = d score / d x`` and charges
``ceil(backward_cost * forward)`` extra NFEs for the backward pass. The update is normalised
gradient ascent, with ``D`` = number of noise coordinates:

    g_t = g - (g . x_hat) x_hat            (tangential part, shell only; x_hat = x / |x|)
    d   = g_t / |g_t|                      (unit ascent direction)
    x'  = x + learning_rate * sqrt(D) * d
    x'  = x' * sqrt(D) / |x'|              (shell only: back to the Gaussian shell)

so on the shell one update turns the noise by the angle ``atan(learning_rate)`` towards the ascent
direction, whatever the gradient's scale. The default 0.1 (5.7 degrees a step) is the largest rate
that did not trade sample quality for verifier score on digits (classifier verifier, 8 steps, 128
NFEs, 1000 samples: FID 12.5 against 15.4 for random search; rate 0.2 gives FID 25 and 0.5 gives
45 at higher classifier scores: the samples overfit the verifier). A start whose gradient vanishes
or is not finite (a plateau, a NaN score; on the shell, always for a one-coordinate noise, whose
shell has no tangent) cannot move and restarts from a fresh draw ``(s, r)``.

Budget: gradient rounds (every start once) run while a round still leaves room for one plain run
of every start; the rest of the budget then goes to plain (gradient-free) full runs along each
start's last ascent direction with step lengths ``learning_rate * 2**-j`` (j = 0 is the pending
update; smaller steps make a backtracking line search), best starts first. The budget is so used to
within one plain candidate. The driver keeps the best finished candidate. With a stochastic sampler
a start runs with the per-step noises of its draw (one stream per draw), fixed while the noise moves.

Every search of a run advances in lock step: the budget and schedule are shared, so every search
runs the same rounds with the same number of rows. A state holds the iterates of all searches and
starts as tensors (S, starts, *noise_shape); a gradient round is one ``grad`` batch of every search's
starts, the last round one batch of plain runs (two or more only when a start without a direction
makes restart rows, whose notes have no ``step``, among the line points). Which starts restart is
read once per round on the CPU: a restart is a seeded draw whose path depends on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, plain_cost, rank_order, rank_values
from noisesearch.errors import UserError


@dataclass
class FirstOrderState:
    """The chains of iterates of every search and start (S searches, m starts).

    On the run's device: ``x`` (S, m, *noise_shape), the next iterates to evaluate; ``noises`` (S, m,
    n_steps, *noise_shape), a stochastic sampler's per-step noises of each start's draw; ``last_x`` and
    ``last_dir`` (S, m, *noise_shape), the last evaluated iterates and their unit ascent directions
    (zero where there is none); ``best_score`` (S, m) float64, each start's best score (NaN as -inf).
    On the CPU: ``seed`` (S, m) int64, the seed of an iterate that is a draw (-1 once it has moved);
    ``draws`` (S, m), draws made per start (its next restart is the draw ``(start, draws)``);
    ``has_dir`` (S, m) bool, whether ``last_dir`` is a direction.
    """

    problems: Problems
    x: torch.Tensor
    seed: torch.Tensor
    noises: torch.Tensor | None
    draws: torch.Tensor
    best_score: torch.Tensor
    grad_cost: int  # NFEs of one start's gradient job (forward + backward)
    plain_cost: int  # NFEs of one plain full run
    last_x: torch.Tensor | None = None
    last_dir: torch.Tensor | None = None
    has_dir: torch.Tensor | None = None
    spent: int = 0  # NFEs spent by each search (the same for all: every search runs the same rows)
    iteration: int = 0  # gradient rounds told
    done: bool = False

    @property
    def starts(self) -> int:
        return self.x.shape[1]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rows(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``v`` (S, m) shaped to broadcast over the rows of ``x`` (S, m, *noise_shape)."""
    return v.view(*v.shape, *([1] * (x.dim() - v.dim())))


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm (S, m) of each noise of ``x`` (S, m, *noise_shape)."""
    return x.flatten(2).norm(dim=2)


class FirstOrderSearch:
    """Normalised gradient ascent on the starting noise (first-order search, Ma et al. 2025, Sec. 3.2)."""

    name = "first-order"
    renders_from_noise = True  # final_steps: gradient and plain runs both integrate the full schedule from the noise
    needs_gradients = True  # it asks for grad jobs: the model must declare denoise_grad, the verifier score

    def __init__(self, *, learning_rate: float = 0.1, starts: int = 1, backward_cost: float = 3.0, shell: bool = True):
        if not _is_number(learning_rate) or learning_rate <= 0:
            raise UserError(f"learning rate must be a positive number, got {learning_rate!r}")
        if not isinstance(starts, int) or isinstance(starts, bool) or starts < 1:
            raise UserError(f"starts must be a positive integer, got {starts!r}")
        if not _is_number(backward_cost) or backward_cost < 0:
            raise UserError(
                f"backward cost must be a non-negative number of NFEs per forward NFE, got {backward_cost!r}"
            )
        if not isinstance(shell, bool):
            raise UserError(f"shell must be true or false, got {shell!r}")
        self.learning_rate, self.starts = float(learning_rate), starts
        self.backward_cost, self.shell = float(backward_cost), shell

    def params(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "starts": self.starts,
            "backward_cost": self.backward_cost,
            "shell": self.shell,
        }

    def _step_cost(self, costs: CostModel) -> tuple[int, int]:
        """(forward NFEs, backward-pass NFE-equivalents) of one gradient step of one start."""
        return plain_cost(costs.sigmas, costs.sampler, costs.nfe_per_call, grad=True, backward_cost=self.backward_cost)

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        forward, backward = self._step_cost(costs)
        what = f"one gradient step of {self.starts} start(s), {forward} forward + {backward} backward NFEs each"
        return self.starts * (forward + backward), what

    def init(self, problems: Problems) -> FirstOrderState:
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        forward, backward = self._step_cost(problems.costs)
        n, m = len(problems), self.starts
        first = problems.fresh(m)  # start s of search i is its draw (s,), row i * m + s
        assert first.noise_seed is not None
        return FirstOrderState(
            problems,
            first.x.view(n, m, *problems.noise_shape),
            torch.tensor(first.noise_seed, dtype=torch.int64).view(n, m),
            None if first.noises is None else first.noises.view(n, m, *first.noises.shape[1:]),
            torch.ones((n, m), dtype=torch.int64),
            torch.full((n, m), -math.inf, dtype=torch.float64, device=problems.device),
            forward + backward,
            problems.cost(),
        )

    # ---- ask -----------------------------------------------------------------------------------
    def ask(self, state: FirstOrderState) -> list[Jobs]:
        if state.done:
            return []
        p, m = state.problems, state.starts
        left = p.budget - state.spent
        if state.iteration == 0 or left >= m * (state.grad_cost + state.plain_cost):
            return [self._gradient_jobs(state)]
        return self._line_jobs(state, left // state.plain_cost)

    def _gradient_jobs(self, state: FirstOrderState) -> Jobs:
        """One gradient job per search and start, search-major."""
        p, m = state.problems, state.starts
        rows = len(p) * m
        return Jobs(
            torch.arange(len(p)).repeat_interleave(m),
            state.x.flatten(0, 1),
            p.sigmas,
            noise_seed=[None if s < 0 else s for s in state.seed.flatten().tolist()],
            noises=None if state.noises is None else state.noises.flatten(0, 1),
            grad=True,
            backward_cost=self.backward_cost,
            info={
                "role": ["gradient"] * rows,
                "start": list(range(m)) * len(p),
                "iteration": [state.iteration + 1] * rows,
            },
        )

    def _line_plan(self, state: FirstOrderState, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last round's ``count`` plain runs per search, as (S, count) CPU tensors: the start of each
        run, its halvings j (run k is start ``order[k % m]`` at j = k // m, best starts first), and its
        batch (runs with and without a step length alternate between batches, so that a batch's notes
        have one set of keys and each search's runs keep their order)."""
        m = state.starts
        k = torch.arange(count)
        order = rank_order(state.best_score, dim=1).cpu()  # (S, m) one copy, once per search
        start = order[:, k % m]  # (S, count)
        halvings = (k // m).expand_as(start)
        assert state.has_dir is not None
        line = state.has_dir.gather(1, start) & (halvings >= 1)  # (S, count) a step along the last direction
        batch = torch.zeros_like(start)
        batch[:, 1:] = (line[:, 1:] != line[:, :-1]).cumsum(1)  # even: no step (run 0 never has one)
        return start, halvings, batch

    def _line_jobs(self, state: FirstOrderState, count: int) -> list[Jobs]:
        """The last round: plain full runs of each start's pending iterate (halvings j = 0), then shorter
        steps along its last direction, ``learning_rate * 2**-j``, or fresh draws if it has none."""
        if count < 1:
            return []
        p, dev = state.problems, state.problems.device
        assert state.last_x is not None and state.last_dir is not None
        start, halvings, batch = self._line_plan(state, count)
        batches = []
        for b in range(int(batch.max()) + 1):
            owner, k = (batch == b).nonzero(as_tuple=True)  # (n,) each: rows in search-major, run order
            s, j = start[owner, k], halvings[owner, k]
            at = (owner.to(dev), s.to(dev))
            noises = None if state.noises is None else state.noises[at]
            if b % 2:  # steps along the last direction, grouped by length
                x = torch.empty((len(owner), *p.noise_shape), dtype=state.x.dtype, device=dev)
                rates = [self.learning_rate * 0.5**h for h in j.tolist()]
                for h in j.unique().tolist():
                    rows = (j == h).nonzero().flatten()
                    pick = (owner[rows].to(dev), s[rows].to(dev))
                    x[rows.to(dev)] = self._step(
                        state.last_x[pick], state.last_dir[pick], self.learning_rate * 0.5**h, len(p.noise_shape)
                    )
                info = {"role": ["line"] * len(owner), "start": s.tolist(), "step": rates}
                batches.append(Jobs(owner, x, p.sigmas, info=info, noises=noises))
                continue
            x = state.x[at]
            seeds = [None if v < 0 else v for v in state.seed[owner, s].tolist()]
            roles = ["update" if v is None else "restart" for v in seeds]
            fresh = (j >= 1).nonzero().flatten()  # restarts of starts without a direction
            if len(fresh):
                draws = (state.draws[owner, s] + j - 1)[fresh]
                paths = [(a, d) for a, d in zip(s[fresh].tolist(), draws.tolist())]
                owners = owner[fresh].tolist()
                new_seeds, drawn = p.noise(owners, paths)
                x = x.index_put((fresh.to(dev),), drawn)
                if noises is not None:
                    noises = noises.index_put((fresh.to(dev),), p.step_noises(owners, paths, p.steps)[1])
                for r, seed in zip(fresh.tolist(), new_seeds):
                    seeds[r], roles[r] = seed, "restart"
            info = {"role": roles, "start": s.tolist()}
            batches.append(Jobs(owner, x, p.sigmas, noise_seed=seeds, info=info, noises=noises))
        return batches

    # ---- tell ----------------------------------------------------------------------------------
    def tell(self, state: FirstOrderState, outcomes: list[Outcomes]) -> None:
        p, n = state.problems, len(state.problems)
        state.spent += sum(o.nfe * len(o) for o in outcomes) // n
        if not outcomes[0].jobs.grad:  # the last round
            start, halvings, _ = self._line_plan(state, sum(len(o) for o in outcomes) // n)
            assert state.has_dir is not None
            restarts = ~state.has_dir.gather(1, start) & (halvings >= 1)  # (S, count)
            state.draws += torch.zeros_like(state.draws).scatter_add(1, start, restarts.long())
            state.done = True
            return
        (out,) = outcomes  # one gradient job per search and start, search-major
        m, dev = state.starts, p.device
        score = out.score.to(dev).view(n, m)
        state.best_score = torch.maximum(state.best_score, rank_values(score))
        x = state.x
        direction, valid = self._directions(out.grad, x, score)
        state.last_x, state.last_dir = x, direction
        has_dir = valid.cpu()  # (S, m) one copy per round: a restart is a seeded draw, made on the CPU
        state.has_dir = has_dir
        state.x = torch.where(_rows(valid, x), self._step(x, direction, self.learning_rate, len(p.noise_shape)), x)
        state.seed = torch.where(has_dir, -1, state.seed)
        state.iteration += 1
        owner, s = (~has_dir).nonzero(as_tuple=True)
        if len(owner):  # restarts from fresh draws (new tensors: the asked jobs keep theirs)
            paths = [(a, d) for a, d in zip(s.tolist(), state.draws[owner, s].tolist())]
            seeds, drawn = p.noise(owner.tolist(), paths)
            at = (owner.to(dev), s.to(dev))
            state.x = state.x.index_put(at, drawn)
            if state.noises is not None:
                state.noises = state.noises.index_put(at, p.step_noises(owner.tolist(), paths, p.steps)[1])
            state.seed = state.seed.index_put((owner, s), torch.tensor(seeds, dtype=torch.int64))
            state.draws = state.draws.index_put((owner, s), state.draws[owner, s] + 1)

    def _directions(
        self, grad: torch.Tensor | None, x: torch.Tensor, score: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit ascent directions (S, m, *noise_shape) from ``grad`` (tangential to the shell at ``x`` if
        ``shell``) and whether each is one (S, m): not for a NaN score, a gradient that is not finite or
        that vanishes (zeros there)."""
        if grad is None:
            return torch.zeros_like(x), torch.zeros(score.shape, dtype=torch.bool, device=x.device)
        g = grad.to(x.dtype).view(x.shape)
        finite = torch.isfinite(g).flatten(2).all(dim=2)  # (S, m)
        g = torch.where(_rows(finite, g), g, 0.0)
        if self.shell:
            x_hat = x / _rows(_norm(x), x)
            g = g - _rows((g * x_hat).flatten(2).sum(dim=2), x) * x_hat  # (S, m, *noise_shape)
        peak = g.abs().flatten(2).amax(dim=2)  # (S, m)
        valid = finite & (peak > 0) & ~torch.isnan(score)
        g = g / _rows(torch.where(valid, peak, 1.0), g)  # avoid under/overflow in the norm
        return torch.where(_rows(valid, g), g / _rows(torch.where(valid, _norm(g), 1.0), g), 0.0), valid

    def _step(self, x: torch.Tensor, direction: torch.Tensor, rate: float, dims: int) -> torch.Tensor:
        """Rows ``x`` (..., *noise_shape), ``dims`` = len(noise_shape), moved by ``rate * sqrt(D)`` along
        ``direction`` and, if ``shell``, put back on the shell of radius ``sqrt(D)``."""
        lead = x.dim() - dims
        radius = math.sqrt(math.prod(x.shape[lead:]))
        y = x + rate * radius * direction
        if not self.shell:
            return y
        norm = y.flatten(lead).norm(dim=lead)  # (...)
        return y * (radius / norm).view(*norm.shape, *([1] * dims))
