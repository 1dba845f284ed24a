"""Sequential Monte Carlo over stochastic trajectories: Feynman-Kac steering.

Singhal et al. 2025, "A General Framework for Inference-time Scaling and Steering of Diffusion
Models" (FK steering). ``k`` particles run a stochastic sampler in lock step, one step per round.
Each step ends with ``score_end``: the verifier scores the x0-prediction of the particle's new
state, and that prediction is passed as ``denoised`` to the next step, so a particle costs one
evaluation per step in all (the first step pays two, the free last step to sigma = 0 none).

With rewards ``r_0 .. r_t`` of a particle (``r_s`` scores the state after step ``s``) the
potentials are, with temperature ``lmbda``:

    difference:  G_t = exp(lmbda (r_t - r_{t-1})),   r_{-1} = 0
    max:         G_t = exp(lmbda max_{s <= t} r_s)
    sum:         G_t = exp(lmbda sum_{s <= t} r_s)

At a resampling point ``t`` (every ``resample_every`` steps) the weight of a particle whose last
resampling was at ``tau`` (-1 at the start) is, normalised over the particles:

    difference:  prod_{tau < s <= t} G_s  = exp(lmbda (r_t - r_tau))   (FK's incremental weights)
    max, sum:    G_t / G_tau                                            (G_{-1} = 1)

Both read ``exp(Phi_t - Phi_tau)`` with ``Phi_t = log G_0 + .. + log G_t`` for difference and
``Phi_t = log G_t`` for max and sum. A NaN reward inside that window makes the weight zero. If the
effective sample size is below ``ess_threshold * k`` (always, for 1.0) the particles are resampled
systematically with one seeded uniform; a copied particle takes its parent's state, cached
x0-prediction and reward history. Particle ``j``'s initial noise is the draw ``(j,)`` and its step
``i`` noise the draw ``(j, STEP_NOISES, i)``, so without resampling particle ``j`` follows exactly
the trajectory of candidate ``j`` of random search with the same stochastic sampler. The final
step to sigma = 0 is never followed by resampling: its particles are the finished candidates.
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


class SMCSearch:
    """Feynman-Kac steering: particles resampled by reward potentials (Singhal et al. 2025)."""

    name = "smc"

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
