"""Evolution search: a cross-entropy method over the noise, scored on cheap previews.

The cross-entropy method (Rubinstein 1999; de Boer et al. 2005), as Spectral Evolution Search
(SES, arXiv:2602.03208) runs it over the starting noise (SES on a wavelet band; here optionally an
FFT band, see below). Each generation samples ``population`` noises ``y = mean + std * z`` (``z``
the draw ``(generation, member)``), re-standardises each to zero mean and unit variance (the
Gaussian shell), scores them on a short preview of ``preview_steps`` steps (every ``steps / preview_steps``-th
sigma of the run's own schedule), and refits ``mean`` and ``std`` per coordinate on the ``elites`` best
of the generation (``std`` floored at ``std_floor``). The first generation samples N(0, I).

A preview runs the preview schedule up to its last state before sigma = 0 and is scored on the
x0-prediction there (``score_end``). For every registered sampler the step to sigma = 0 returns
exactly that x0-prediction, so this costs and scores what a run to sigma = 0 would, while the
preview stays an unfinished job that the driver never takes as the answer. (With ``preview_steps``
= 1 the preview is the x0-prediction of the noise itself.)

Budget: ``final`` full runs are reserved; the rest pays for previews, in generations of
``population`` (the last may be smaller); then the ``final`` best previewed noises run over the
full schedule and the best of them is the answer. The budget is so used to within one preview.

With ``low_frequency`` = f in (0, 1] only the spatial frequencies of the last two dimensions whose
radius is at most f times the largest (the Nyquist corner) move, through ``torch.fft.rfft2``; the
other frequencies stay those of the first sample (generation 0, member 0), and standardising
rescales the moving band only, so that the energy split with the fixed band stays exact.
Sampling and refitting still act on pixel values; only the band of each sample is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from noisesearch.algorithms.base import Job, Outcome, Problem, rank_key
from noisesearch.errors import UserError


def _standardise(y: torch.Tensor) -> torch.Tensor:
    """``y`` with zero mean and unit variance (a one-coordinate noise can only be scaled, to +-1)."""
    if y.numel() > 1:
        y = y - y.mean()
    return y * (math.sqrt(y.numel()) / y.norm().clamp_min(1e-12))


def _band_mask(shape: tuple[int, ...], fraction: float) -> torch.Tensor:
    """Boolean rfft2 mask (H, W // 2 + 1) of the frequencies with radius <= fraction * the largest."""
    fy, fx = torch.fft.fftfreq(shape[-2], dtype=torch.float64), torch.fft.rfftfreq(shape[-1], dtype=torch.float64)
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()  # (H, W // 2 + 1)
    return radius <= fraction * float(radius.max()) + 1e-9


def _lowpass(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of ``y`` (..., H, W) onto the frequencies in ``mask``."""
    return torch.fft.irfft2(torch.fft.rfft2(y) * mask, s=y.shape[-2:])  # (..., H, W)


@dataclass
class Previewed:
    score: float
    x: torch.Tensor  # (*noise_shape)
    path: tuple[int, int]  # (generation, member)


@dataclass
class EvolutionState:
    problem: Problem
    preview_sigmas: tuple[float, ...]
    previews_left: int  # previews the budget still pays for, after the reserved final runs
    mean: torch.Tensor  # (*noise_shape)
    std: torch.Tensor  # (*noise_shape)
    mask: torch.Tensor | None = None  # low-frequency band, or None for the whole noise
    base: torch.Tensor | None = None  # the first sample: its other frequencies stay
    generation: int = 0
    top: list[Previewed] = field(default_factory=list)  # the best previewed noises, best first
    finals_asked: bool = False
    best_x: torch.Tensor | None = None
    best_score: float = -math.inf
    best_index: int = -1


class EvolutionSearch:
    """Cross-entropy method over the noise on cheap previews (as Spectral Evolution Search, arXiv:2602.03208)."""

    name = "evolution"

    def __init__(
        self,
        *,
        population: int = 16,
        elites: int = 4,
        preview_steps: int = 2,
        final: int = 2,
        low_frequency: float | None = None,
        std_floor: float = 0.05,
    ):
        for what, value in (
            ("population", population),
            ("elites", elites),
            ("preview steps", preview_steps),
            ("final", final),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{what} must be a positive integer, got {value!r}")
        if elites > population:
            raise UserError(f"elites must be at most the population ({population}), got {elites}")
        fraction_ok = isinstance(low_frequency, (int, float)) and not isinstance(low_frequency, bool)
        if low_frequency is not None and not (fraction_ok and 0 < low_frequency <= 1):
            raise UserError(f"low frequency must be a fraction in (0, 1] or unset, got {low_frequency!r}")
        if isinstance(std_floor, bool) or not isinstance(std_floor, (int, float)) or not 0 < std_floor < math.inf:
            raise UserError(f"std floor must be a positive number, got {std_floor!r}")
        self.population, self.elites, self.preview_steps, self.final = population, elites, preview_steps, final
        self.low_frequency = None if low_frequency is None else float(low_frequency)
        self.std_floor = float(std_floor)

    def params(self) -> dict:
        return {
            "population": self.population,
            "elites": self.elites,
            "preview_steps": self.preview_steps,
            "final": self.final,
            "low_frequency": self.low_frequency,
            "std_floor": self.std_floor,
        }

    def init(self, problem: Problem) -> EvolutionState:
        steps = len(problem.sigmas) - 1
        if self.preview_steps >= steps:
            raise UserError(f"preview steps must be fewer than the run's {steps} steps, got {self.preview_steps}")
        # every (steps / preview_steps)-th sigma of the run's own schedule (so VP models start where
        # their schedule does); stop before sigma = 0 and score the x0-prediction there
        n = len(problem.sigmas) - 1
        preview_sigmas = tuple(problem.sigmas[round(i * n / self.preview_steps)] for i in range(self.preview_steps))
        preview_cost = problem.job_cost(Job(torch.empty(0), preview_sigmas, score_end=True))
        reserved = self.final * problem.cost()
        problem.require_budget(
            reserved + self.final * preview_cost, f"{self.final} preview(s) and {self.final} full run(s)"
        )
        shape = problem.noise_shape
        state = EvolutionState(
            problem, preview_sigmas, (problem.budget - reserved) // preview_cost, torch.zeros(shape), torch.ones(shape)
        )
        if self.low_frequency is not None:
            if len(shape) < 2:
                raise UserError(
                    f"low frequency needs a noise with 2 spatial dimensions, got noise shape {shape}; leave it unset"
                )
            state.mask = _band_mask(shape, self.low_frequency)
            if state.mask.sum() < 2:
                raise UserError(
                    f"low frequency {self.low_frequency:g} keeps only the mean of a {shape[-2:]} noise; "
                    "give a larger fraction"
                )
            state.base = _standardise(problem.noise(0, 0)[1])
        return state

    def ask(self, state: EvolutionState) -> list[Job]:
        p = state.problem
        if state.previews_left > 0:
            g, n = state.generation, min(self.population, state.previews_left)
            state.generation += 1
            state.previews_left -= n
            return [self._preview(state, g, k) for k in range(n)]
        if state.finals_asked:
            return []
        state.finals_asked = True
        n_steps = len(p.sigmas) - 1
        return [
            Job(
                c.x,
                p.sigmas,
                noises=p.step_noises(n_steps, *c.path) if p.stochastic else None,
                info={
                    "role": "final",
                    "generation": c.path[0],
                    "member": c.path[1],
                    "preview_score": None if math.isnan(c.score) else c.score,
                },
            )
            for c in state.top
        ]

    def tell(self, state: EvolutionState, outcomes: list[Outcome]) -> None:
        if outcomes and outcomes[0].job.info["role"] == "final":
            for o in outcomes:
                if state.best_x is None or rank_key(o.score) > rank_key(state.best_score):
                    state.best_x, state.best_score, state.best_index = o.job.x, o.score, o.index
            return
        ranked = sorted(outcomes, key=lambda o: rank_key(o.score), reverse=True)  # stable: ties by member
        elites = torch.stack([o.job.x for o in ranked[: self.elites]])  # (E, *noise_shape)
        state.mean = elites.mean(0)
        state.std = elites.std(0, unbiased=False).clamp_min(self.std_floor)
        merged = state.top + [
            Previewed(o.score, o.job.x, (o.job.info["generation"], o.job.info["member"])) for o in ranked[: self.final]
        ]
        state.top = sorted(merged, key=lambda c: rank_key(c.score), reverse=True)[: self.final]

    def _preview(self, state: EvolutionState, g: int, k: int) -> Job:
        """Member ``k`` of generation ``g``: a standardised sample, as a preview job."""
        p = state.problem
        y = state.mean + state.std * p.noise(g, k)[1]  # (*noise_shape)
        if state.mask is None:
            x = _standardise(y)
        else:
            x = self._standardise_band(y, state.base, state.mask)
        n_steps = len(state.preview_sigmas) - 1
        noises = None
        if p.stochastic:
            noises = p.step_noises(n_steps, g, k) if n_steps else torch.empty(0, *p.noise_shape)
        return Job(
            x,
            state.preview_sigmas,
            noises=noises,
            score_end=True,
            info={"role": "preview", "generation": g, "member": k},
        )

    @staticmethod
    def _standardise_band(y: torch.Tensor, base: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``y``'s band (mean removed) scaled to the base's band energy, plus the base's other frequencies.

        The base has zero mean and unit variance and the bands are orthogonal, so the result has too.
        """
        base_low = _lowpass(base, mask)  # (*noise_shape)
        low = _lowpass(y, mask)
        low = low - low.mean()  # a constant lies in the band (radius 0)
        low = low * (base_low.norm() / low.norm().clamp_min(1e-12))
        return base - base_low + low  # (*noise_shape)
