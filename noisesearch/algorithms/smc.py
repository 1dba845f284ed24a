"""Sequential Monte Carlo over stochastic trajectories: Feynman-Kac steering, and an incremental variant.

Singhal et al. 2025, "A General Framework for Inference-time Scaling and Steering of Diffusion
Models" (FK steering; arXiv 2501.06848). ``k`` particles run a stochastic sampler in lock step,
one step per round. Particle ``j``'s initial noise is the draw ``(j,)`` and its step noises the
stream ``(j,)`` (``Problems.streams`` with one row per schedule step; step ``i`` is row ``i``),
so without resampling particle ``j`` follows exactly the trajectory of candidate ``j`` of random
search with the same stochastic sampler. The streams are held as ``Streams`` and read one row per
round (a large latent's streams are then drawn step by step, not held for every step at once). The step noises belong to the slot ``j``, not to the
lineage: a copied particle takes its parent's state and history, then its own slot's noises.
Resampling is systematic with one seeded uniform per search and resampling point (the draw
``(RESAMPLE, t)``; Kitagawa 1996; the reference draws multinomially, which has the same
expectation and more variance).

Every search of a run advances in lock step: states carry a leading search dimension (``x`` (S, k,
...), rewards (S, k, T)), and each search decides at each point on its own whether it resamples (a
mask per search), so searches never couple.

``smc`` (``SMCSearch``) computes what the reference implementation computes (the ``FKD`` class
of github.com/zacharyhorvitz/Fk-Diffusion-Steering, text_to_image/fkd_diffusers/fkd_class.py, as
its pipelines fkd_pipeline_sdxl.py and fkd_pipeline_sd.py call it):

- step indexing: the pipelines loop ``for i, t in enumerate(timesteps)`` over ``time_steps``
  scheduler steps; step ``i`` evaluates the model at the current latents, takes the scheduler step,
  then calls ``FKD.resample(sampling_idx=i)`` with the new latents and that evaluation's
  x0-prediction. noisesearch's step ``t`` (``sigmas[t]`` to ``sigmas[t + 1]``) is the same step:
  ``t = i`` and ``time_steps = steps``;
- so the reward ``r_t`` of step ``t`` scores the x0-prediction made *before* the step (the one the
  step itself evaluates, so scoring is free: a particle costs exactly one plain trajectory);
- resampling points are the reference's grid ``arange(t_start, t_end + 1, resample_every)`` plus
  the final step ``steps - 1`` (points past the last step never occur; ``t_end`` None: up to the
  last step). ``t_start`` None is ``resample_every``, as every reference run sets it (``t_start =
  resample_frequency``, e.g. every 20 of 100 steps from 20 to 80 in launch.sh and
  generate_samples_for_paper.py); ``t_start = resample_every - 1`` gives noisesearch's earlier grid
  (the steps with ``(t + 1) % resample_every == 0``, one step earlier). Rewards elsewhere are
  recorded but change nothing;
- at a resampling point the weight of a particle is the potential itself, with its carried value
  ``c`` (the last point's, inherited on resampling; ``reward_min`` at the start, see below):

      difference:  w = exp(lmbda (r_t - c)),   c <- r_t
      max:         w = exp(lmbda m),           m = max(r_t, c),  c <- m
      sum:         w = exp(lmbda a),           a = r_t + c,      c <- a

  weights are not accumulated across points (the reference resets them each time);
- at the final step, for ``max`` and ``sum``, the weight is divided by the product ``P`` of the
  potentials at which the particle's lineage was resampled (``P <- P[parent] * w[parent]`` on each
  resampling), so the resampled final population targets the tilted distribution
  ``p(x0) exp(lmbda r(x0))``; ``difference`` telescopes and needs no correction;
- ``max_weight`` is the reference's clamp of the unnormalised weights (``min(w, 1e10)``, after the
  final correction, before the ESS and the update of ``P``): log-weights above ``log(max_weight)``
  are set to it, so results change exactly where the reference's clamp changes them (for 1e10,
  where ``lmbda`` times the potential exceeds 23.03: all such particles then weigh the same). The
  default is the reference's 1e10; None clamps nothing;
- ``adaptive`` (default True): resample only when the effective sample size is below
  ``ess_threshold * k`` (the reference's 0.5); otherwise the point is passed (carried values are
  updated, ``P`` is not). Not adaptive: resample at every point, and at the final step by the ESS
  rule (as the reference does);
- the final step is a resampling point too: ``state.population[i]`` lists the slots of search
  ``i``'s finished particles that survive it. The search's answer is, as for every algorithm, its best finished
  candidate; the final resampling only decides the returned population.

Weights are computed in log space (softmax) in float64; where the reference's float32 ``exp``
underflows (all weights 0: it then never resamples, or fails in ``torch.multinomial`` when not
adaptive) or its ``P`` overflows, noisesearch keeps the exact values. A NaN reward gives weight
zero, as in the reference; all-zero weights are uniform. ``reward_min`` is the reference's
``reward_min_value`` (its default 0.0): the carried value at the start. noisesearch's default
None starts ``max`` at -inf and ``sum`` / ``difference`` at 0, because verifier scores here are
often negative (log-probabilities), where a floor of 0 makes ``max`` flat (it never resamples);
give ``reward_min=0.0`` for the reference's exact numbers.

The stochastic sampler is ``sampler``, else the run's own sampler if it is stochastic, else
``default_sampler`` (default "euler-ancestral", DDIM with eta 1, as the reference's runs: diffusers'
DDIMScheduler with eta 1.0, launch_eval_runs.py's ``--eta`` default and generate_samples_for_paper.py;
"euler-sde" is eta 0.5). The reference's other run settings (``num_particles`` 4, 100
steps, ``lmbda`` 10 in launch.sh or 2 in generate_samples_for_paper.py, ``adaptive_resampling`` on
in the paper's samples, off in launch_eval_runs.py) are per-run choices of its scripts; the
``FKD`` class itself defaults only ``reward_min_value``. noisesearch sizes ``particles`` by the
budget.

``smc-incremental`` (``IncrementalSMCSearch``) is noisesearch's earlier variant, kept under its
own name. Each step ends with ``score_end``: the verifier scores the x0-prediction of the
particle's new state, and that prediction is passed as ``denoised`` to the next step (the first
step pays two evaluations, the free last step to sigma = 0 none). With rewards ``r_0 .. r_t``
(``r_s`` scores the state after step ``s``) the potentials are

    difference:  G_t = exp(lmbda (r_t - r_{t-1})),   r_{-1} = 0
    max:         G_t = exp(lmbda max_{s <= t} r_s)
    sum:         G_t = exp(lmbda sum_{s <= t} r_s)

and at a resampling point ``t`` the weight of a particle last resampled at ``tau`` (-1 at the
start) accumulates over skipped points: ``prod_{tau < s <= t} G_s = exp(lmbda (r_t - r_tau))``
for difference, the ratio ``G_t / G_tau`` (``G_{-1} = 1``) for max and sum. A NaN reward in that
window makes the weight zero. If the effective sample size is below ``ess_threshold * k``
(always, for 1.0) the particles are resampled. The final step is never followed by resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from noisesearch.algorithms._smc_particles import Particles, gather, initial_fields
from noisesearch.algorithms._smc_weights import (
    POTENTIALS,
    effective_sample_size,
    fk_log_weights,
    log_potentials,
    normalise,
    resampling_weights,
    systematic_resample,
)
from noisesearch.algorithms._stepwise import chain_step_costs, check_stochastic_sampler, resolve_sampler
from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems
from noisesearch.errors import UserError

__all__ = [
    "POTENTIALS",
    "FKState",
    "IncrementalSMCSearch",
    "SMCSearch",
    "SMCState",
    "effective_sample_size",
    "fk_log_weights",
    "log_potentials",
    "normalise",
    "resampling_weights",
    "systematic_resample",
]


def _particles(particles: int | None, cost: int, budget: int) -> int:
    """Particles per search: ``particles``, or as many chains of ``cost`` NFEs as ``budget`` pays for (at least 2)."""
    return particles if particles is not None else max(budget // cost, 2)


def _check(particles, potential, lmbda, resample_every, ess_threshold) -> None:
    if particles is not None and (not isinstance(particles, int) or isinstance(particles, bool) or particles < 2):
        raise UserError(f"particles must be an integer >= 2, got {particles!r}")
    if potential not in POTENTIALS:
        raise UserError(f"unknown potential {potential!r}; accepted: {', '.join(POTENTIALS)}")
    if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not 0 <= lmbda < math.inf:
        raise UserError(f"lmbda must be a finite number >= 0, got {lmbda!r}")
    if not isinstance(resample_every, int) or isinstance(resample_every, bool) or resample_every < 1:
        raise UserError(f"resample_every must be a positive integer, got {resample_every!r}")
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, (int, float)) or not 0 < ess_threshold <= 1:
        raise UserError(f"ess_threshold must be a number in (0, 1], got {ess_threshold!r}")


@dataclass
class SMCState(Particles):
    denoised: torch.Tensor | None = None  # (S, k, *noise_shape) x0-predictions of the states (cached)
    since: torch.Tensor | None = None  # (S,) int64 step of each search's last resampling (-1: none yet)


class IncrementalSMCSearch:
    """noisesearch's incremental SMC: rewards on the new state, weights accumulated between resamplings."""

    name = "smc-incremental"
    renders_from_noise = False  # final_steps: particles depend on injected noises and resampling, step by step

    def __init__(
        self,
        *,
        particles: int | None = None,
        sampler: str | None = None,
        potential: str = "max",
        lmbda: float = 10.0,
        resample_every: int = 1,
        ess_threshold: float = 0.5,
    ):
        _check(particles, potential, lmbda, resample_every, ess_threshold)
        self.particles, self.sampler = particles, check_stochastic_sampler(sampler)
        self.potential, self.lmbda = potential, float(lmbda)
        self.resample_every, self.ess_threshold = resample_every, float(ess_threshold)

    def params(self) -> dict:
        return {
            "particles": self.particles,
            "sampler": self.sampler,
            "potential": self.potential,
            "lmbda": self.lmbda,
            "resample_every": self.resample_every,
            "ess_threshold": self.ess_threshold,
        }

    def _points(self, steps: int) -> list[int]:
        """Steps after which a search may resample: every ``resample_every``-th, never the final one."""
        return [t for t in range(steps - 1) if (t + 1) % self.resample_every == 0]

    def _plan(self, costs: CostModel, budget: int) -> tuple[str, int, int]:
        """(sampler, particles, NFEs of one particle's chain) at ``budget``."""
        sampler = resolve_sampler(self.sampler, costs)
        cost = sum(chain_step_costs(costs, sampler))
        return sampler, _particles(self.particles, cost, budget), cost

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        _, k, cost = self._plan(costs, budget)
        return k * cost, f"{k} SMC particles"

    def init(self, problems: Problems) -> SMCState:
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        sampler, k, _ = self._plan(problems.costs, problems.budget)
        since = torch.full((len(problems),), -1, dtype=torch.int64, device=problems.device)
        return SMCState(**initial_fields(problems, sampler, k, self._points(problems.steps), since=since))

    def ask(self, state: SMCState) -> list[Jobs]:
        n = state.problems.steps
        if state.step == n:
            return []
        denoised = None if state.step == 0 else state.denoised.flatten(0, 1)  # type: ignore[union-attr]
        return [state.jobs(denoised, score_end=state.step < n - 1)]

    def tell(self, state: SMCState, outcomes: list[Outcomes]) -> None:
        (out,) = outcomes
        t, k, S = state.step, state.particles, state.searches
        device = state.problems.device
        state.step += 1
        state.x = out.x.view(S, k, *out.x.shape[1:])
        state.denoised = out.denoised.view(S, k, *out.denoised.shape[1:])
        r = out.score.to(device).double().view(S, k, 1)  # (S, k, 1) NaN stays NaN
        state.rewards = r if state.rewards is None else torch.cat([state.rewards, r], dim=-1)  # (S, k, t + 1)
        state.parents = torch.arange(k, device=device).expand(S, k)
        if t not in self._points(state.problems.steps):
            return  # not a resampling point, or the final step (its particles are finished samples)
        assert state.since is not None
        w = resampling_weights(state.rewards, state.since, self.potential, self.lmbda)  # (S, k)
        ess = effective_sample_size(w)  # (S,)
        if self.ess_threshold < 1.0:
            resampled = ess < self.ess_threshold * k  # (S,)
        else:
            resampled = torch.ones(S, dtype=torch.bool, device=device)
        idx = state.resample(t, w, ess, resampled)  # (S, k)
        state.x, state.denoised = gather(state.x, idx), gather(state.denoised, idx)
        state.rewards = gather(state.rewards, idx)
        state.since = torch.where(resampled, t, state.since)  # type: ignore[arg-type]


def _is_finite_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_step(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_window(t_start, t_end) -> None:
    """``t_start`` and ``t_end``: None or step indices (integers >= 0), ``t_end >= t_start``."""
    if t_start is not None and not _is_step(t_start):
        raise UserError(f"t_start must be an integer >= 0 or None, got {t_start!r}")
    if t_end is not None and not (_is_step(t_end) and t_end >= (t_start or 0)):
        bound = "0" if t_start is None else f"t_start ({t_start})"
        raise UserError(f"t_end must be an integer >= {bound} or None, got {t_end!r}")


@dataclass
class FKState(Particles):
    carried: torch.Tensor | None = None  # (S, k) float64 value carried from the last resampling point
    log_product: torch.Tensor | None = None  # (S, k) float64 log of the potentials applied along each lineage
    population: torch.Tensor | None = None  # (S, k) int64 finished slots kept by the final resampling
    weights: torch.Tensor | None = None  # (S, k) normalised weights at the last resampling point (passed or not)


@dataclass(kw_only=True, eq=False)
class SMCSearch:
    """Feynman-Kac steering as the reference computes it (Singhal et al. 2025; module docstring).

    Its hyperparameters are the keyword-only fields below (their meaning: the module docstring), checked and
    normalised on construction; ``params()`` gives them back in this order.
    """

    name = "smc"
    renders_from_noise = False  # final_steps: particles depend on injected noises and resampling, step by step

    particles: int | None = None  # None: as many as the budget pays for (at least 2)
    sampler: str | None = None  # None: the run's sampler if stochastic, else ``default_sampler``
    potential: str = "max"
    lmbda: float = 10.0
    resample_every: int = 1
    adaptive: bool = True
    ess_threshold: float = 0.5
    reward_min: float | None = None
    t_start: int | None = None
    t_end: int | None = None
    max_weight: float | None = 1e10
    default_sampler: str = "euler-ancestral"

    def __post_init__(self) -> None:
        _check(self.particles, self.potential, self.lmbda, self.resample_every, self.ess_threshold)
        if not isinstance(self.adaptive, bool):
            raise UserError(f"adaptive must be true or false, got {self.adaptive!r}")
        if self.reward_min is not None and not _is_finite_number(self.reward_min):
            raise UserError(f"reward_min must be a finite number or None, got {self.reward_min!r}")
        _check_window(self.t_start, self.t_end)
        if self.max_weight is not None and not (_is_finite_number(self.max_weight) and self.max_weight > 0):
            raise UserError(f"max_weight must be a finite number > 0 or None, got {self.max_weight!r}")
        if self.default_sampler is None:
            raise UserError("default_sampler must be a stochastic sampler, got None")
        self.sampler = check_stochastic_sampler(self.sampler)
        self.default_sampler = check_stochastic_sampler(self.default_sampler)
        self.lmbda, self.ess_threshold = float(self.lmbda), float(self.ess_threshold)
        self.reward_min = None if self.reward_min is None else float(self.reward_min)
        self.max_weight = None if self.max_weight is None else float(self.max_weight)

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _points(self, steps: int) -> list[int]:
        """Resampling points (module docstring): ``t_start, t_start + resample_every, ...`` up to ``t_end``
        (None: the last step; ``t_start`` None: ``resample_every``, as every reference run sets it), and the final
        step ``steps - 1``."""
        start = self.resample_every if self.t_start is None else self.t_start
        end = steps - 1 if self.t_end is None else min(self.t_end, steps - 1)
        return sorted({*range(start, end + 1, self.resample_every), steps - 1})

    def _plan(self, costs: CostModel, budget: int) -> tuple[str, int, int]:
        """(sampler, particles, NFEs of one particle's chain) at ``budget``: ``sampler``, else the run's own
        sampler if it is stochastic, else ``default_sampler``."""
        sampler = self.sampler or (costs.sampler if costs.stochastic else self.default_sampler)
        cost = sum(costs.cost(costs.sigmas[i : i + 2], sampler) for i in range(costs.steps))
        return sampler, _particles(self.particles, cost, budget), cost

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        _, k, cost = self._plan(costs, budget)
        return k * cost, f"{k} SMC particles"

    def init(self, problems: Problems) -> FKState:
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        sampler, k, _ = self._plan(problems.costs, problems.budget)
        start = self.reward_min
        if start is None:
            start = -math.inf if self.potential == "max" else 0.0
        S, device = len(problems), problems.device
        carried = torch.full((S, k), start, dtype=torch.float64, device=device)
        zeros = torch.zeros((S, k), dtype=torch.float64, device=device)
        return FKState(
            **initial_fields(problems, sampler, k, self._points(problems.steps), carried=carried, log_product=zeros)
        )

    def ask(self, state: FKState) -> list[Jobs]:
        if state.step == state.problems.steps:
            return []
        # scored on the x0-prediction of the step's own evaluation at x (before the step), as FK steering
        return [state.jobs(None, score_end=False)]

    def tell(self, state: FKState, outcomes: list[Outcomes]) -> None:
        (out,) = outcomes
        t, k, S = state.step, state.particles, state.searches
        device = state.problems.device
        final = t == state.problems.steps - 1
        state.step += 1
        state.x = out.x.view(S, k, *out.x.shape[1:])
        r = out.score.to(device).double().view(S, k)  # (S, k) NaN stays NaN
        state.rewards = r[..., None] if state.rewards is None else torch.cat([state.rewards, r[..., None]], dim=-1)
        state.parents = torch.arange(k, device=device).expand(S, k)
        if final:
            state.population = state.parents
        if t not in self._points(state.problems.steps):
            return  # not a resampling point: the reference does not even score here
        assert state.carried is not None and state.log_product is not None
        log_max = math.inf if self.max_weight is None else math.log(self.max_weight)
        log_w, value = fk_log_weights(r, state.carried, state.log_product, self.potential, self.lmbda, final, log_max)
        w = state.weights = normalise(log_w)  # (S, k)
        ess = effective_sample_size(w)  # (S,)
        if self.adaptive or final:
            resampled = ess < self.ess_threshold * k  # (S,) the others pass
        else:
            resampled = torch.ones(S, dtype=torch.bool, device=device)
        idx = state.resample(t, w, ess, resampled)  # (S, k)
        # passed: carried values move on, the applied product does not
        state.x, state.rewards = gather(state.x, idx), gather(state.rewards, idx)
        state.carried = value.gather(1, idx)  # identity where passed
        applied = state.log_product.gather(1, idx) + torch.nan_to_num(log_w.gather(1, idx), neginf=0.0)
        state.log_product = torch.where(resampled[:, None], applied, state.log_product)
        if final:
            state.population = idx
