"""The search-algorithm contract: explicit state and ask/tell, driven by ``noisesearch.driver``.

An algorithm object holds only its hyperparameters. Everything that changes lives in a state
object that ``init`` creates for one search problem (one target, one seed, one budget)::

    state = algorithm.init(problem)
    while jobs := algorithm.ask(state):          # a list of Jobs; empty when the search is done
        outcomes = [run and score each job]      # the driver does this, batched across searches
        algorithm.tell(state, outcomes)          # outcomes in the order of the jobs

A ``Job`` is one candidate: a starting state ``x`` at ``sigmas[0]`` (fresh noise at sigma = 1,
or an intermediate state) integrated along ``sigmas``. A job that ends at sigma = 0 is a finished
sample and may become the search's answer; one that ends earlier is scored on the decoded
x0-prediction of its last step (a preview). Noise is drawn by the algorithm from explicit
generators (``Problem.noise``), one seed per draw, so each candidate is reproducible on its own.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from noisesearch.errors import UserError
from noisesearch.samplers import get_sampler


def is_count(value: object) -> bool:
    """An integer that is not a bool (JSON ``true`` from ``--param`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def derive_seed(seed: int, *path: int) -> int:
    """A 63-bit seed derived from ``seed`` and a path of integers (BLAKE2b of their 8-byte forms).

    Different paths give independent-looking seeds; the same path always gives the same seed, on
    every platform.
    """
    data = b"".join(int(v).to_bytes(8, "little", signed=True) for v in (seed, *path))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def gaussian(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` from its own generator seeded with ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def noise_hash(x: torch.Tensor) -> str:
    """First 16 hex digits of the SHA-256 of a tensor's float32 bytes (identifies a noise)."""
    return hashlib.sha256(x.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


STEP_NOISES = 2**40  # path marker: draws under it are a stochastic sampler's per-step noises


@dataclass(frozen=True)
class Problem:
    """One search: find a good noise for ``target`` within ``budget`` NFEs.

    ``sigmas`` is the full sampling schedule of one finished candidate and ``sampler`` the run's
    sampler; ``nfe_per_call`` is what one denoiser evaluation costs per sample (2 with
    classifier-free guidance).
    """

    target: Any
    seed: int
    budget: int
    noise_shape: tuple[int, ...]
    sigmas: tuple[float, ...]
    sampler: str
    nfe_per_call: int

    def cost(self, sigmas: tuple[float, ...] | None = None) -> int:
        """Exact NFEs of one plain job along ``sigmas`` (default: a full candidate) with the run's sampler."""
        return get_sampler(self.sampler).nfe(sigmas or self.sigmas) * self.nfe_per_call

    def job_cost(self, job: Job) -> int:
        """Exact NFEs that ``job`` will be charged (see ``Job`` for what each option costs)."""
        return sum(self.job_costs(job))

    def job_costs(self, job: Job) -> tuple[int, int]:
        """(forward NFEs, backward-pass NFE-equivalents) of ``job``."""
        evals = get_sampler(job.sampler or self.sampler).nfe(job.sigmas)
        evals -= job.denoised is not None  # the first evaluation is already known
        evals += job.score_end and job.sigmas[-1] > 0  # one more evaluation at the end state
        forward = evals * self.nfe_per_call
        return forward, (math.ceil(job.backward_cost * forward) if job.grad else 0)

    def noise(self, *path: int) -> tuple[int, torch.Tensor]:
        """(seed, noise) for the draw named by ``path``: the same path always gives the same noise."""
        seed = derive_seed(self.seed, *path)
        return seed, gaussian(self.noise_shape, seed)

    def step_noises(self, n_steps: int, *path: int) -> torch.Tensor:
        """Per-step noises (n_steps, *noise_shape) for a stochastic sampler: step i is the draw
        ``(*path, STEP_NOISES, i)``."""
        return torch.stack([self.noise(*path, STEP_NOISES, i)[1] for i in range(n_steps)])

    @property
    def stochastic(self) -> bool:
        """Whether the run's sampler injects noise at every step."""
        return get_sampler(self.sampler).stochastic

    def fresh_job(self, *path: int, info: dict | None = None) -> Job:
        """A full candidate from the draw ``path`` (and, for a stochastic sampler, its per-step noises)."""
        seed, noise = self.noise(*path)
        noises = self.step_noises(len(self.sigmas) - 1, *path) if self.stochastic else None
        return Job(noise, self.sigmas, noise_seed=seed, info=info or {}, noises=noises)

    def require_budget(self, needed: int, what: str) -> None:
        """Raise a clear ``UserError`` when the budget cannot pay for ``needed`` NFEs.

        Every algorithm refuses a too-small budget through here, so the message always ends with
        ``give --budget >= N ...`` (the smallest budget that works).
        """
        if self.budget < needed:
            raise UserError(
                f"budget {self.budget} is smaller than {what} ({needed} NFEs with {len(self.sigmas) - 1} "
                f"steps at {self.nfe_per_call} NFE(s) per evaluation); "
                f"give --budget >= {needed} or fewer --steps"
            )


@dataclass
class Job:
    """A candidate to run: start state ``x`` (*noise_shape) at ``sigmas[0]``, integrated along ``sigmas``.

    ``noise_seed`` is set only when ``x`` is exactly ``gaussian(noise_shape, noise_seed)``; for
    any other start state (a neighbour, an intermediate state) it is None and the record carries
    a hash of ``x`` instead. Options, each with its exact cost (``Problem.job_cost``):

    - ``sampler``: run this job with another registered sampler than the run's (same cost rules);
    - ``noises`` (n_steps, *noise_shape): the per-step noises of a stochastic sampler (required by
      one, refused by a deterministic one);
    - ``denoised``: the already-computed x0-prediction of ``x`` at ``sigmas[0]`` (from an earlier
      ``score_end``), so the first evaluation is not paid twice;
    - ``score_end``: for a job ending at sigma > 0, evaluate the denoiser once more at the end state
      (+1 evaluation) and score that x0-prediction; without it an unfinished job is scored on the
      x0-prediction of its last evaluated step (free);
    - ``grad``: also return the gradient of the score with respect to ``x`` (first-order search),
      charged ``ceil(backward_cost * forward NFEs)`` extra NFEs for the backward pass.
    """

    x: torch.Tensor
    sigmas: tuple[float, ...]
    noise_seed: int | None = None
    info: dict = field(default_factory=dict)  # the algorithm's own notes, JSON-serialisable; recorded
    sampler: str | None = None
    noises: torch.Tensor | None = None
    denoised: torch.Tensor | None = None
    score_end: bool = False
    grad: bool = False
    backward_cost: float = 0.0

    @property
    def final(self) -> bool:
        """True when the job ends at sigma = 0, i.e. produces a finished sample."""
        return self.sigmas[-1] == 0

    def group_key(self) -> tuple:
        """Jobs with equal keys run in one batch."""
        return (
            tuple(self.sigmas),
            self.sampler,
            self.noises is not None,
            self.denoised is not None,
            self.score_end,
            self.grad,
            self.backward_cost,
        )


@dataclass
class Outcome:
    """What the driver reports back for one job.

    ``x``: end state; ``denoised``: x0-prediction at the end state when the job ended at sigma = 0
    (then equal to ``x``) or asked ``score_end``, else that of its last evaluated step;
    ``image``: decoded (C, H, W) in [0, 1], what was scored; ``score``: the verifier's score (NaN if
    it failed); ``nfe``: NFEs charged; ``index``: candidate number within its search; ``grad``:
    d score / d ``job.x`` for ``grad`` jobs.
    """

    job: Job
    x: torch.Tensor
    denoised: torch.Tensor
    image: torch.Tensor
    score: float
    nfe: int
    index: int
    grad: torch.Tensor | None = None


def rank_key(score: float) -> float:
    """Sort key that ranks a NaN score below every real one."""
    return -math.inf if math.isnan(score) else score


@runtime_checkable
class SearchAlgorithm(Protocol):
    """Proposes candidates for one problem at a time through explicit state (see module docstring)."""

    name: str

    def params(self) -> dict:
        """Hyperparameters, as recorded."""

    def init(self, problem: Problem) -> Any:
        """Fresh state for ``problem``; raises ``UserError`` if the budget cannot pay one round."""

    def ask(self, state: Any) -> list[Job]:
        """The next jobs; an empty list ends the search."""

    def tell(self, state: Any, outcomes: list[Outcome]) -> None:
        """Update ``state`` with the outcomes of the last ``ask``, in the same order."""


class SearchAlgorithmFactory(Protocol):
    """An ``ALGORITHMS`` entry: builds an algorithm from keyword-only hyperparameters.

    The CLI checks ``--param`` names against the factory's signature before building it, and the
    algorithm's ``params()`` must rebuild it: ``factory(**algorithm.params())``. Nothing optional is
    looked up on an algorithm: the driver uses only ``name``, ``init``, ``ask`` and ``tell``.
    """

    def __call__(self, **hyperparameters: Any) -> SearchAlgorithm:
        """An algorithm with these hyperparameters (``UserError`` for a bad value)."""
