"""Sequential Monte Carlo over stochastic trajectories: Feynman-Kac steering, and an incremental variant.

Singhal et al. 2025, "A General Framework for Inference-time Scaling and Steering of Diffusion
Models" (FK steering; arXiv 2501.06848). ``k`` particles run a stochastic sampler in lock step,
one step per round. Particle ``j``'s initial noise is the draw ``(j,)`` and its step ``i`` noise
the draw ``(j, STEP_NOISES, i)``, so without resampling particle ``j`` follows exactly the
trajectory of candidate ``j`` of random search with the same stochastic sampler. Resampling is
systematic with one seeded uniform (Kitagawa 1996; the reference draws multinomially, which has
the same expectation and more variance); a copied particle takes its parent's state and history.

``smc`` (``SMCSearch``) computes what the reference implementation computes (the ``FKD`` class
of github.com/zacharyhorvitz/Fk-Diffusion-Steering, text_to_image/fkd_diffusers/fkd_class.py):

- the reward ``r_t`` of step ``t`` scores the x0-prediction made *before* the step (the one the
  step itself evaluates, so scoring is free: a particle costs exactly one plain trajectory);
- resampling points are the steps ``t`` with ``(t + 1) % resample_every == 0``, and the final
  step; rewards elsewhere are recorded but change nothing;
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
- ``adaptive`` (default True): resample only when the effective sample size is below
  ``ess_threshold * k`` (the reference's 0.5); otherwise the point is passed (carried values are
  updated, ``P`` is not). Not adaptive: resample at every point, and at the final step by the ESS
  rule (as the reference does);
- the final step is a resampling point too: ``state.population`` lists the slots of the finished
  particles that survive it. The search's answer is, as for every algorithm, its best finished
  candidate; the final resampling only decides the returned population.

Weights are computed in log space (softmax), so the reference's clamp of unnormalised weights at
1e10 (an overflow guard, active only when ``lmbda * reward > 23``) is not needed. A NaN reward
gives weight zero; all-zero weights are uniform. ``reward_min`` is the reference's
``reward_min_value`` (its default 0.0): the carried value at the start. noisesearch's default
None starts ``max`` at -inf and ``sum`` / ``difference`` at 0, because verifier scores here are
often negative (log-probabilities), where a floor of 0 would make ``max`` flat; give
``reward_min=0.0`` for the reference's exact numbers.

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
from dataclasses import dataclass, field

import torch

from noisesearch.algorithms._stepwise import chain_step_costs, check_stochastic_sampler, resolve_sampler, seeded_uniform
from noisesearch.algorithms.base import STEP_NOISES, Job, Outcome, Problem
from noisesearch.errors import UserError

POTENTIALS = ("difference", "max", "sum")
_RESAMPLE = 2**41  # path marker of the resampling uniforms


def log_potentials(rewards: torch.Tensor, kind: str, lmbda: float) -> torch.Tensor:
    """log G_t (k, T) for reward histories (k, T), per the module docstring (FK steering, Sec. 3)."""
    rewards = rewards.double()
    if kind == "difference":
        previous = torch.cat([torch.zeros_like(rewards[:, :1]), rewards[:, :-1]], dim=1)  # (k, T), r_{-1} = 0
        return lmbda * (rewards - previous)
    if kind == "max":
        return lmbda * torch.cummax(rewards, dim=1).values  # (k, T); NaN propagates
    if kind == "sum":
        return lmbda * torch.cumsum(rewards, dim=1)  # (k, T)
    raise ValueError(f"unknown potential {kind!r}")


def resampling_weights(rewards: torch.Tensor, since: int, kind: str, lmbda: float) -> torch.Tensor:
    """Normalised weights (k,) at the last column of ``rewards`` (k, T), last resampled at ``since``.

    FK steering (Singhal et al. 2025, Alg. 1); NaN weights are zero, and all-zero weights uniform.
    """
    log_g = log_potentials(rewards, kind, lmbda)  # (k, T)
    if kind == "difference":
        log_w = log_g[:, since + 1 :].sum(dim=1)  # (k,) product of the incremental potentials
    else:
        log_w = log_g[:, -1] - (log_g[:, since] if since >= 0 else 0.0)  # (k,) G_t / G_tau
    log_w = torch.nan_to_num(log_w, nan=-math.inf, posinf=math.inf)
    if torch.isneginf(log_w).all():
        return torch.full_like(log_w, 1.0 / len(log_w))
    return torch.softmax(log_w, dim=0)


def effective_sample_size(weights: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2: k for equal weights, 1 when one particle holds all (Kong et al. 1994)."""
    w = weights.double()
    return float(w.sum() ** 2 / (w**2).sum())


def systematic_resample(weights: torch.Tensor, u: float) -> torch.Tensor:
    """Indices (k,) of systematic resampling: particle ``i`` is picked for every position
    ``(u + m) / k`` that falls in its slice of the cumulative weights (Kitagawa 1996)."""
    k = len(weights)
    cdf = torch.cumsum(weights.double(), dim=0)  # (k,)
    cdf = cdf / cdf[-1]
    positions = (u + torch.arange(k, dtype=torch.float64)) / k  # (k,) in [0, 1)
    return torch.searchsorted(cdf, positions, right=True).clamp(max=k - 1)  # (k,)


@dataclass
class SMCState:
    problem: Problem
    sampler: str
    particles: int
    step: int = 0  # the next step to run
    x: torch.Tensor | None = None  # (k, *noise_shape) current states
    denoised: torch.Tensor | None = None  # (k, *noise_shape) their x0-predictions (cached)
    rewards: torch.Tensor | None = None  # (k, steps told) reward history of each particle
    since: int = -1  # step of the last resampling (-1: none yet)
    ancestors: list[int] = field(default_factory=list)  # initial particle of each slot's lineage
    parents: list[int] = field(default_factory=list)  # slot each particle was copied from at the last step
    resamplings: list[dict] = field(default_factory=list)  # {"step", "ess", "indices"} per resampling


class IncrementalSMCSearch:
    """noisesearch's incremental SMC: rewards on the new state, weights accumulated between resamplings."""

    name = "smc-incremental"

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

    def init(self, problem: Problem) -> SMCState:
        sampler = resolve_sampler(self.sampler, problem)
        cost = sum(chain_step_costs(problem, sampler))
        k = self.particles if self.particles is not None else max(problem.budget // cost, 2)
        problem.require_budget(k * cost, f"{k} SMC particles")
        return SMCState(problem, sampler, k, ancestors=list(range(k)), parents=list(range(k)))

    def ask(self, state: SMCState) -> list[Job]:
        p, t = state.problem, state.step
        n = len(p.sigmas) - 1
        if t == n:
            return []
        jobs = []
        for j in range(state.particles):
            seed, x = p.noise(j) if t == 0 else (None, state.x[j])
            step_seed, eps = p.noise(j, STEP_NOISES, t)
            info = {
                "particle": j,
                "step": t,
                "ancestor": state.ancestors[j],
                "parent": state.parents[j],
                "step_noise_seed": step_seed,
            }
            jobs.append(
                Job(
                    x,
                    p.sigmas[t : t + 2],
                    noise_seed=seed,
                    info=info,
                    sampler=state.sampler,
                    noises=eps[None],  # (1, *noise_shape)
                    denoised=None if t == 0 else state.denoised[j],
                    score_end=t < n - 1,
                )
            )
        return jobs

    def tell(self, state: SMCState, outcomes: list[Outcome]) -> None:
        t, k = state.step, state.particles
        state.step += 1
        state.x = torch.stack([o.x for o in outcomes])  # (k, *noise_shape)
        state.denoised = torch.stack([o.denoised for o in outcomes])  # (k, *noise_shape)
        r = torch.tensor([o.score for o in outcomes], dtype=torch.float64)[:, None]  # (k, 1)
        state.rewards = r if state.rewards is None else torch.cat([state.rewards, r], dim=1)  # (k, t + 1)
        state.parents = list(range(k))
        if t >= len(state.problem.sigmas) - 2 or (t + 1) % self.resample_every:
            return  # not a resampling point, or the final step (its particles are finished samples)
        w = resampling_weights(state.rewards, state.since, self.potential, self.lmbda)  # (k,)
        ess = effective_sample_size(w)
        if self.ess_threshold < 1.0 and ess >= self.ess_threshold * k:
            return
        idx = systematic_resample(w, seeded_uniform(state.problem, _RESAMPLE, t))  # (k,)
        state.x, state.denoised, state.rewards = state.x[idx], state.denoised[idx], state.rewards[idx]
        state.parents = idx.tolist()
        state.ancestors = [state.ancestors[i] for i in state.parents]
        state.since = t
        state.resamplings.append({"step": t, "ess": ess, "indices": state.parents})


def fk_log_weights(
    rewards: torch.Tensor, carried: torch.Tensor, log_product: torch.Tensor, kind: str, lmbda: float, final: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """FK steering's unnormalised log-weights (k,) at one resampling point, and the new carried values (k,).

    ``rewards`` (k,) of this point, ``carried`` (k,) from the last one, ``log_product`` (k,) the log
    of the potentials applied along each lineage; per the module docstring (``smc``). NaN -> -inf.
    """
    r, c = rewards.double(), carried.double()
    if kind == "difference":
        value, log_w = r, lmbda * (r - c)
    elif kind == "max":
        value = torch.maximum(r, c)  # NaN propagates
        log_w = lmbda * value
    elif kind == "sum":
        value = r + c
        log_w = lmbda * value
    else:
        raise ValueError(f"unknown potential {kind!r}")
    if final and kind != "difference":
        log_w = log_w - log_product
    return torch.nan_to_num(log_w, nan=-math.inf, posinf=math.inf), value


def normalise(log_w: torch.Tensor) -> torch.Tensor:
    """softmax of log-weights (k,); all -inf gives uniform weights."""
    if torch.isneginf(log_w).all():
        return torch.full_like(log_w, 1.0 / len(log_w))
    return torch.softmax(log_w, dim=0)


@dataclass
class FKState:
    problem: Problem
    sampler: str
    particles: int
    step: int = 0  # the next step to run
    x: torch.Tensor | None = None  # (k, *noise_shape) current states
    carried: torch.Tensor | None = None  # (k,) float64 value carried from the last resampling point
    log_product: torch.Tensor | None = None  # (k,) float64 log of the potentials applied along each lineage
    rewards: torch.Tensor | None = None  # (k, steps told) rewards per slot, reordered with the particles
    ancestors: list[int] = field(default_factory=list)  # initial particle of each slot's lineage
    parents: list[int] = field(default_factory=list)  # slot each particle was copied from at the last step
    resamplings: list[dict] = field(default_factory=list)  # {"step", "ess", "indices"} per resampling
    population: list[int] = field(default_factory=list)  # finished slots kept by the final resampling
    weights: torch.Tensor | None = None  # (k,) normalised weights at the last resampling point (passed or not)


class SMCSearch:
    """Feynman-Kac steering as the reference computes it (Singhal et al. 2025; module docstring)."""

    name = "smc"

    def __init__(
        self,
        *,
        particles: int | None = None,
        sampler: str | None = None,
        potential: str = "max",
        lmbda: float = 10.0,
        resample_every: int = 1,
        adaptive: bool = True,
        ess_threshold: float = 0.5,
        reward_min: float | None = None,
    ):
        IncrementalSMCSearch(
            particles=particles,
            sampler=sampler,
            potential=potential,
            lmbda=lmbda,
            resample_every=resample_every,
            ess_threshold=ess_threshold,
        )  # the shared checks
        if not isinstance(adaptive, bool):
            raise UserError(f"adaptive must be true or false, got {adaptive!r}")
        if reward_min is not None and (
            isinstance(reward_min, bool) or not isinstance(reward_min, (int, float)) or not math.isfinite(reward_min)
        ):
            raise UserError(f"reward_min must be a finite number or None, got {reward_min!r}")
        self.particles, self.sampler = particles, check_stochastic_sampler(sampler)
        self.potential, self.lmbda = potential, float(lmbda)
        self.resample_every, self.adaptive, self.ess_threshold = resample_every, adaptive, float(ess_threshold)
        self.reward_min = None if reward_min is None else float(reward_min)

    def params(self) -> dict:
        return {
            "particles": self.particles,
            "sampler": self.sampler,
            "potential": self.potential,
            "lmbda": self.lmbda,
            "resample_every": self.resample_every,
            "adaptive": self.adaptive,
            "ess_threshold": self.ess_threshold,
            "reward_min": self.reward_min,
        }

    def _step_costs(self, problem: Problem, sampler: str) -> list[int]:
        sigmas, known = problem.sigmas, torch.empty(0)
        return [problem.job_cost(Job(known, sigmas[i : i + 2], sampler=sampler)) for i in range(len(sigmas) - 1)]

    def init(self, problem: Problem) -> FKState:
        sampler = resolve_sampler(self.sampler, problem)
        cost = sum(self._step_costs(problem, sampler))
        k = self.particles if self.particles is not None else max(problem.budget // cost, 2)
        problem.require_budget(k * cost, f"{k} SMC particles")
        start = self.reward_min
        if start is None:
            start = -math.inf if self.potential == "max" else 0.0
        carried = torch.full((k,), start, dtype=torch.float64)
        zeros = torch.zeros(k, dtype=torch.float64)
        return FKState(
            problem, sampler, k, carried=carried, log_product=zeros, ancestors=list(range(k)), parents=list(range(k))
        )

    def ask(self, state: FKState) -> list[Job]:
        p, t = state.problem, state.step
        if t == len(p.sigmas) - 1:
            return []
        jobs = []
        for j in range(state.particles):
            seed, x = p.noise(j) if t == 0 else (None, state.x[j])
            step_seed, eps = p.noise(j, STEP_NOISES, t)
            info = {
                "particle": j,
                "step": t,
                "ancestor": state.ancestors[j],
                "parent": state.parents[j],
                "step_noise_seed": step_seed,
            }
            # scored on the x0-prediction of the step's own evaluation at x (before the step), as FK steering
            jobs.append(
                Job(x, p.sigmas[t : t + 2], noise_seed=seed, info=info, sampler=state.sampler, noises=eps[None])
            )
        return jobs

    def tell(self, state: FKState, outcomes: list[Outcome]) -> None:
        t, k = state.step, state.particles
        final = t == len(state.problem.sigmas) - 2
        state.step += 1
        state.x = torch.stack([o.x for o in outcomes])  # (k, *noise_shape)
        r = torch.tensor([o.score for o in outcomes], dtype=torch.float64)  # (k,)
        state.rewards = r[:, None] if state.rewards is None else torch.cat([state.rewards, r[:, None]], dim=1)
        state.parents = list(range(k))
        if final:
            state.population = list(range(k))
        if not final and (t + 1) % self.resample_every:
            return  # not a resampling point: the reference does not even score here
        log_w, value = fk_log_weights(r, state.carried, state.log_product, self.potential, self.lmbda, final)
        w = state.weights = normalise(log_w)  # (k,)
        ess = effective_sample_size(w)
        if (self.adaptive or final) and ess >= self.ess_threshold * k:
            state.carried = value  # passed: carried values move on, the applied product does not
            return
        idx = systematic_resample(w, seeded_uniform(state.problem, _RESAMPLE, t))  # (k,)
        state.x, state.rewards, state.carried = state.x[idx], state.rewards[idx], value[idx]
        state.log_product = state.log_product[idx] + torch.nan_to_num(log_w[idx], neginf=0.0)
        state.parents = idx.tolist()
        state.ancestors = [state.ancestors[i] for i in state.parents]
        state.resamplings.append({"step": t, "ess": ess, "indices": state.parents})
        if final:
            state.population = state.parents
