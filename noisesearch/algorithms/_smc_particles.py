"""The particles both SMC variants keep for the searches of a run (``noisesearch.algorithms.smc``): states,
noises, step-noise streams, resampling uniforms, lineages and resampling events, and the rows of one step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from noisesearch.algorithms._smc_weights import systematic_resample
from noisesearch.algorithms.base import Jobs, Problems, Streams

RESAMPLE = 2**41  # path marker of the resampling uniforms


@dataclass
class Particles:
    """What both SMC variants keep for the S searches of a run, k particles each (slot-major per search)."""

    problems: Problems
    sampler: str
    particles: int
    x: torch.Tensor  # (S, k, *noise_shape) current states (the initial noises before step 0)
    noise_seed: list[int | None]  # (S * k) seeds of the initial noises, search-major
    streams: Streams  # (S * k) slot j's step-noise stream of ``steps`` rows, search-major; row t read at step t
    uniforms: torch.Tensor  # (S, steps) float64 resampling uniform of each search and step (NaN: no point)
    info: dict  # plan columns (S * k), CPU int64: "owner", "particle", "step_noise_seed"
    ancestors: torch.Tensor  # (S, k) int64 initial particle of each slot's lineage
    parents: torch.Tensor  # (S, k) int64 slot each particle was copied from at the last step
    step: int = 0  # the next step to run
    rewards: torch.Tensor | None = None  # (S, k, steps told) float64 rewards per slot, reordered with the particles
    events: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # (step, resampled (S,) bool, ess (S,), indices (S, k)) per resampling point reached (``resamplings`` reads it)

    @property
    def searches(self) -> int:
        return self.x.shape[0]

    @property
    def resamplings(self) -> list[list[dict]]:
        """Per search, {"step", "ess", "indices"} of each of its resamplings (read from the device once)."""
        out: list[list[dict]] = [[] for _ in range(self.searches)]
        for t, done, ess, idx in self.events:
            for i, (d, e, ix) in enumerate(zip(done.tolist(), ess.tolist(), idx.tolist())):
                if d:
                    out[i].append({"step": t, "ess": e, "indices": ix})
        return out

    def resample(self, t: int, weights: torch.Tensor, ess: torch.Tensor, resampled: torch.Tensor) -> torch.Tensor:
        """Systematic indices (S, k) of the searches ``resampled`` (S,) (identity elsewhere); sets parents and
        ancestors and records the event."""
        k = self.particles
        keep = torch.arange(k, device=weights.device).expand_as(weights)  # (S, k)
        idx = torch.where(resampled[:, None], systematic_resample(weights, self.uniforms[:, t]), keep)  # (S, k)
        self.parents = idx
        self.ancestors = self.ancestors.gather(1, idx)
        self.events.append((t, resampled, ess, idx))
        return idx

    def jobs(self, denoised: torch.Tensor | None, score_end: bool) -> Jobs:
        """The rows of step ``self.step``: every particle of every search, search-major."""
        p, t = self.problems, self.step
        info = {
            "particle": self.info["particle"],
            "step": torch.full((len(self.noise_seed),), t, dtype=torch.int64),
            "ancestor": self.ancestors.flatten(),  # data-dependent: tensor columns on the device
            "parent": self.parents.flatten(),
            "step_noise_seed": self.info["step_noise_seed"],
        }
        return Jobs(
            self.info["owner"],
            self.x.flatten(0, 1),  # (S * k, *noise_shape)
            p.sigmas[t : t + 2],
            noise_seed=self.noise_seed if t == 0 else None,
            info=info,
            sampler=self.sampler,
            noises=self.streams.rows(t, t + 1),  # (S * k, 1, *noise_shape) row t of each slot's stream
            denoised=denoised,
            score_end=score_end,
        )


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[i, idx[i, j]]`` for x (S, k, ...) and idx (S, k) (one ``index_select`` of the flattened rows)."""
    S, k = idx.shape
    rows = (torch.arange(S, device=idx.device)[:, None] * k + idx).flatten()  # (S * k,)
    return x.flatten(0, 1).index_select(0, rows).view(x.shape)


def initial_fields(problems: Problems, sampler: str, k: int, points: list[int], **fields) -> dict:
    """The shared initial fields: noises, streams, resampling uniforms at ``points``, plan columns."""
    S, device = len(problems), problems.device
    owners, slots = problems.grid(k)
    paths = [(j,) for j in slots]
    seeds, x = problems.noise(owners, paths)
    streams = problems.streams(owners, paths, problems.steps)
    uniforms = torch.full((S, problems.steps), math.nan, dtype=torch.float64, device=device)
    if points:
        u = problems.uniforms(
            [i for i in range(S) for _ in points], [(RESAMPLE, t) for _ in range(S) for t in points]
        )  # (S * len(points),)
        uniforms[:, points] = u.view(S, len(points))
    slot = torch.arange(k, device=device)
    return dict(
        problems=problems,
        sampler=sampler,
        particles=k,
        x=x.view(S, k, *x.shape[1:]),
        noise_seed=seeds,
        streams=streams,
        uniforms=uniforms,
        info={
            "owner": torch.tensor(owners, dtype=torch.int64),
            "particle": torch.tensor(slots, dtype=torch.int64),
            "step_noise_seed": torch.tensor(streams.seeds, dtype=torch.int64),
        },
        ancestors=slot.expand(S, k).clone(),
        parents=slot.expand(S, k).clone(),
        **fields,
    )
