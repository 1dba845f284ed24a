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

With a stochastic sampler, member ``(generation, member)`` takes its per-step noises from the stream
``(generation, member, STEP_NOISES)`` of ``steps`` rows (one per step of the run's schedule): its
preview uses the first rows (for a large latent only those are drawn, see ``Streams``), and its final
run, if it gets one, the same stream whole.

With ``low_frequency`` = f in (0, 1] only the spatial frequencies of the last two dimensions whose
radius is at most f times the largest (the Nyquist corner) move, through ``torch.fft.rfft2``; the
other frequencies stay those of the first sample (generation 0, member 0, of each search), and
standardising rescales the moving band only, so that the energy split with the fixed band stays exact.
Sampling and refitting still act on pixel values; only the band of each sample is kept.

Every search of a run evolves in lock step: the mean, std and best previews carry a leading search
dimension, and one batch holds a generation of every search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, is_count, rank_order
from noisesearch.errors import UserError


def _standardise(y: torch.Tensor) -> torch.Tensor:
    """Each row of ``y`` (n, ...) with zero mean and unit variance (a one-coordinate noise can only be
    scaled, to +-1)."""
    dims = tuple(range(1, y.dim()))
    size = math.prod(y.shape[1:])
    if size > 1:
        y = y - y.mean(dim=dims, keepdim=True)
    return y * (math.sqrt(size) / torch.linalg.vector_norm(y, dim=dims, keepdim=True).clamp_min(1e-12))


def _band_mask(shape: tuple[int, ...], fraction: float) -> torch.Tensor:
    """Boolean rfft2 mask (H, W // 2 + 1) of the frequencies with radius <= fraction * the largest."""
    fy, fx = torch.fft.fftfreq(shape[-2], dtype=torch.float64), torch.fft.rfftfreq(shape[-1], dtype=torch.float64)
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()  # (H, W // 2 + 1)
    return radius <= fraction * float(radius.max()) + 1e-9


def _lowpass(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of each noise of ``y`` (N, ..., H, W) onto the frequencies in ``mask``.

    One FFT call per noise: with several threads a batched FFT groups transforms into SIMD lanes by the
    batch's size, so a noise's last bits would depend on which other searches share the batch.
    """
    return torch.stack([torch.fft.irfft2(torch.fft.rfft2(row) * mask, s=row.shape[-2:]) for row in y.unbind(0)])


def _take(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``values[i, idx[i, j]]`` for every search i: rows of ``values`` (S, m, ...) picked by ``idx`` (S, k)."""
    return values[torch.arange(len(idx), device=values.device)[:, None], idx.to(values.device)]  # (S, k, ...)


@dataclass
class EvolutionState:
    """Every search's search distribution and best previews; one generation of all searches per round.

    ``top_*`` hold the ``final`` best previewed noises of each search so far, best first: their
    starting states ``top_x`` (S, t, *noise_shape), preview scores ``top_score`` (S, t) (NaN: failed),
    and names ``top_generation`` / ``top_member`` (S, t). t grows to ``final`` as generations come in.
    """

    problems: Problems
    preview_sigmas: tuple[float, ...]
    previews_left: int  # previews (per search) the budget still pays for, after the reserved final runs
    mean: torch.Tensor  # (S, *noise_shape)
    std: torch.Tensor  # (S, *noise_shape)
    top_x: torch.Tensor  # (S, t, *noise_shape)
    top_score: torch.Tensor  # (S, t) float64
    top_generation: torch.Tensor  # (S, t) int64
    top_member: torch.Tensor  # (S, t) int64
    mask: torch.Tensor | None = None  # low-frequency band (H, W // 2 + 1), or None for the whole noise
    base: torch.Tensor | None = None  # (S, *noise_shape) each search's first sample: its other frequencies stay
    base_low: torch.Tensor | None = None  # (S, *noise_shape) the band of ``base``
    generation: int = 0
    done: bool = False


class EvolutionSearch:
    """Cross-entropy method over the noise on cheap previews (as Spectral Evolution Search, arXiv:2602.03208)."""

    name = "evolution"
    renders_from_noise = True  # final_steps: previews never finish; final runs go from the noise to sigma 0

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
            if not is_count(value) or value < 1:
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

    def _preview_sigmas(self, costs: CostModel) -> tuple[float, ...]:
        """The preview schedule: every (steps / preview_steps)-th sigma of the run's own schedule (so VP models
        start where their schedule does), stopping before sigma = 0 (the x0-prediction there is scored)."""
        steps = costs.steps
        if self.preview_steps >= steps:
            raise UserError(f"preview steps must be fewer than the run's {steps} steps, got {self.preview_steps}")
        return tuple(costs.sigmas[round(i * steps / self.preview_steps)] for i in range(self.preview_steps))

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        preview_cost = costs.cost(self._preview_sigmas(costs), score_end=True)
        needed = self.final * costs.cost() + self.final * preview_cost
        return needed, f"{self.final} preview(s) and {self.final} full run(s)"

    def init(self, problems: Problems) -> EvolutionState:
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        preview_sigmas = self._preview_sigmas(problems.costs)
        preview_cost = problems.cost(preview_sigmas, score_end=True)
        reserved = self.final * problems.cost()
        n, device, shape = len(problems), problems.device, problems.noise_shape
        state = EvolutionState(
            problems,
            preview_sigmas,
            (problems.budget - reserved) // preview_cost,
            torch.zeros((n, *shape), device=device),
            torch.ones((n, *shape), device=device),
            torch.empty((n, 0, *shape), device=device),
            torch.empty((n, 0), dtype=torch.float64, device=device),
            torch.empty((n, 0), dtype=torch.int64, device=device),
            torch.empty((n, 0), dtype=torch.int64, device=device),
        )
        if self.low_frequency is not None:
            if len(shape) < 2:
                raise UserError(
                    f"low frequency needs a noise with 2 spatial dimensions, got noise shape {shape}; leave it unset"
                )
            mask = _band_mask(shape, self.low_frequency)
            if mask.sum() < 2:
                raise UserError(
                    f"low frequency {self.low_frequency:g} keeps only the mean of a {shape[-2:]} noise; "
                    "give a larger fraction"
                )
            state.mask = mask.to(device)
            state.base = _standardise(problems.noise(range(n), [(0, 0)] * n)[1])  # (S, *noise_shape)
            state.base_low = _lowpass(state.base, state.mask)  # (S, *noise_shape) its moving band
        return state

    def ask(self, state: EvolutionState) -> list[Jobs]:
        if state.done:
            return []
        if state.previews_left > 0:
            return [self._previews(state)]
        return [self._finals(state)]

    def tell(self, state: EvolutionState, outcomes: list[Outcomes]) -> None:
        if state.previews_left <= 0:  # the final runs: the driver keeps each search's best
            state.done = True
            return
        (out,) = outcomes
        jobs = out.jobs
        n_searches, shape = len(state.problems), state.problems.noise_shape
        members = len(jobs) // n_searches
        x = jobs.x.view(n_searches, members, *shape)  # (S, n, *noise_shape)
        score = out.score.to(x.device).double().view(n_searches, members)  # (S, n), NaN: failed
        order = rank_order(score, dim=1)  # (S, n) best first, stable: ties by member, NaN last
        elites = _take(x, order[:, : self.elites])  # (S, E, *noise_shape)
        state.mean = elites.mean(1)
        state.std = elites.std(1, unbiased=False).clamp_min(self.std_floor)
        # merge the generation's best into the kept best previews (kept first: a tie keeps the older)
        best = order[:, : self.final]  # (S, m)
        generation = torch.full_like(best, state.generation)
        score_all = torch.cat([state.top_score, torch.gather(score, 1, best)], 1)  # (S, t + m)
        keep = rank_order(score_all, dim=1)[:, : self.final]  # (S, t')
        state.top_score = torch.gather(score_all, 1, keep)
        state.top_x = _take(torch.cat([state.top_x, _take(x, best)], 1), keep)
        state.top_generation = torch.gather(torch.cat([state.top_generation, generation], 1), 1, keep)
        state.top_member = torch.gather(torch.cat([state.top_member, best], 1), 1, keep)
        state.generation += 1
        state.previews_left -= members

    def _previews(self, state: EvolutionState) -> Jobs:
        """Generation ``state.generation`` of every search: standardised samples, as preview jobs."""
        p = state.problems
        g, members = state.generation, min(self.population, state.previews_left)
        owners, ks = p.grid(members)
        z = p.noise(owners, [(g, k) for k in ks])[1].view(len(p), members, *p.noise_shape)  # (S, n, *noise_shape)
        y = (state.mean[:, None] + state.std[:, None] * z).flatten(0, 1)  # (S * n, *noise_shape)
        if state.mask is None:
            x = _standardise(y)
        else:
            assert state.base is not None and state.base_low is not None
            x = self._standardise_band(
                y, state.base.repeat_interleave(members, 0), state.base_low.repeat_interleave(members, 0), state.mask
            )
        n_steps = len(state.preview_sigmas) - 1
        noises = None
        if p.stochastic:
            # the first rows of the member's stream of ``steps`` rows (its final run takes them all)
            noises = p.streams(owners, [(g, k) for k in ks], p.steps).rows(0, n_steps)  # (S * n, n_steps, ...)
        return Jobs(
            torch.tensor(owners, dtype=torch.int64),
            x,
            state.preview_sigmas,
            info={
                "role": ["preview"] * len(owners),
                "generation": [g] * len(owners),
                "member": ks,
            },
            noises=noises,
            score_end=True,
        )

    def _finals(self, state: EvolutionState) -> Jobs:
        """The full runs of every search's best previewed noises, best first."""
        p = state.problems
        n_searches, kept = state.top_x.shape[:2]
        owners = torch.arange(n_searches).repeat_interleave(kept)  # (S * t,)
        # one copy to the CPU per run: the draws' names and the recorded preview scores
        generation, member = state.top_generation.flatten().cpu(), state.top_member.flatten().cpu()
        noises = None
        if p.stochastic:
            paths = list(zip(generation.tolist(), member.tolist()))
            noises = p.step_noises(owners.tolist(), paths, p.steps)[1]  # (S * t, steps, *noise_shape)
        previewed = [None if math.isnan(s) else s for s in state.top_score.flatten().tolist()]
        return Jobs(
            owners,
            state.top_x.flatten(0, 1),
            p.sigmas,
            info={
                "role": ["final"] * len(owners),
                "generation": generation,
                "member": member,
                "preview_score": previewed,
            },
            noises=noises,
        )

    @staticmethod
    def _standardise_band(
        y: torch.Tensor, base: torch.Tensor, base_low: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Each row of ``y`` (n, ...): its band (mean removed) scaled to the band energy ``base_low`` of the
        same row of ``base``, plus the base's other frequencies.

        The base rows have zero mean and unit variance and the bands are orthogonal, so the result has too.
        """
        dims = tuple(range(1, y.dim()))
        low = _lowpass(y, mask)
        low = low - low.mean(dim=dims, keepdim=True)  # a constant lies in the band (radius 0)
        scale = torch.linalg.vector_norm(base_low, dim=dims, keepdim=True) / torch.linalg.vector_norm(
            low, dim=dims, keepdim=True
        ).clamp_min(1e-12)
        return base - base_low + low * scale  # (n, *noise_shape)
