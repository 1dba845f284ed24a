"""The search-algorithm contract: explicit state, ask/tell, and jobs as columns.

An algorithm object holds only its hyperparameters. Everything that changes lives in a state object
that ``init`` creates for *all the searches of one run* (``Problems``: one target and seed each, the
same budget, schedule, sampler and noise shape)::

    state = algorithm.init(problems)
    while batches := algorithm.ask(state):       # a list of Jobs; empty when every search is done
        outcomes = [run and score each batch]    # the driver does this, in chunks of max_batch rows
        algorithm.tell(state, outcomes)          # one Outcomes per Jobs, rows in the same order

``tell`` is the only place where a state advances; ``ask`` reads it. A ``Jobs`` batch is a set of
candidates that share a sigma schedule and options, held as columns: one tensor of start states
(``x``, rows of any searches, ``owner`` says whose), optional per-row noises, seeds and the
algorithm's notes (``info``, a dict of columns). A row starts at ``sigmas[0]`` (fresh noise at the
schedule's first sigma, or an intermediate state) and is integrated along ``sigmas``; a batch ending at
sigma = 0 holds finished samples, any other is scored on the decoded x0-prediction of its last step
(a preview). There is no Python object per candidate.

Noise is drawn by algorithms only, on the CPU, each draw from its own generator seeded with
``derive_seed(search seed, *path)`` (``Problems.noise``), so a candidate is reproducible on its own,
on any device and in plain diffusers; a batch of draws is moved to the model's device once
(``Problems.device``), and states stay there.

The parts live in sibling modules, re-exported here: ``Jobs`` and ``Outcomes`` (``_jobs``), seeded draws and
``Streams`` (``_draws``), ranking scores (``_ranking``); ``AlgorithmInfo`` is ``noisesearch.contracts``'s.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from noisesearch.algorithms import _cost
from noisesearch.algorithms._cost import CostModel
from noisesearch.algorithms._draws import DrawClock, Streams, derive_seed, gaussian, gaussians, noise_hash, noise_hashes
from noisesearch.algorithms._jobs import Jobs, Outcomes, plain_cost
from noisesearch.algorithms._ranking import failed_as_nan, first_best, rank_order, rank_values
from noisesearch.contracts import AlgorithmInfo, algorithm_info
from noisesearch.errors import UserError

__all__ = [
    "STEP_NOISES",
    "STREAM_CAP_BYTES",
    "AlgorithmInfo",
    "Jobs",
    "Outcomes",
    "Problem",
    "Problems",
    "SearchAlgorithm",
    "SearchAlgorithmFactory",
    "CostModel",
    "Streams",
    "algorithm_info",
    "budget_needed_by",
    "derive_seed",
    "failed_as_nan",
    "first_best",
    "gaussian",
    "gaussians",
    "is_count",
    "noise_hash",
    "noise_hashes",
    "plain_cost",
    "rank_order",
    "rank_values",
]


def is_count(value: object) -> bool:
    """An integer that is not a bool (JSON ``true`` from ``--param`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


STEP_NOISES = 2**40  # path marker: a stochastic sampler's per-step noises are the stream (*path, STEP_NOISES)
STREAM_CAP_BYTES = 256 * 2**20  # a batch of streams is held whole up to this size, else drawn step by step


@dataclass(frozen=True)
class Problem:
    """One search of a run: its ``target`` and ``seed``, and what every search of the run shares.

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

    def noise(self, *path: int) -> tuple[int, torch.Tensor]:
        """(seed, noise) for the draw named by ``path``: the same path always gives the same noise."""
        seed = derive_seed(self.seed, *path)
        return seed, gaussian(self.noise_shape, seed)


@dataclass(frozen=True)
class Problems:
    """The searches of one run: ``targets[i]`` and ``seeds[i]`` for search ``i``; everything else shared.

    The budget, schedule, sampler and cost per call are the same for every search of a run, so an
    algorithm plans once and runs every search in lock step (rows of all searches in one ``Jobs``).
    ``device`` is where the model computes: draws are moved there once per batch. The description is
    frozen (targets and seeds are held as tuples); the time spent drawing goes to its ``clock``.
    """

    targets: Sequence
    seeds: Sequence[int]
    budget: int
    noise_shape: tuple[int, ...]
    sigmas: tuple[float, ...]
    sampler: str
    nfe_per_call: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    clock: DrawClock = field(default_factory=DrawClock, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("targets", "seeds", "noise_shape", "sigmas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def draw_seconds(self) -> float:
        """Wall time spent drawing seeded noise so far (``clock``)."""
        return self.clock.seconds

    @classmethod
    def of(cls, *problems: Problem, device: torch.device | None = None) -> Problems:
        """The run made of these searches (which must share everything but target and seed)."""
        first = problems[0]
        for p in problems[1:]:
            if (p.budget, p.noise_shape, p.sigmas, p.sampler, p.nfe_per_call) != (
                first.budget,
                first.noise_shape,
                first.sigmas,
                first.sampler,
                first.nfe_per_call,
            ):
                raise ValueError("the searches of one run share budget, noise shape, schedule, sampler and cost")
        return cls(
            [p.target for p in problems],
            [int(p.seed) for p in problems],
            first.budget,
            tuple(first.noise_shape),
            tuple(first.sigmas),
            first.sampler,
            first.nfe_per_call,
            device or torch.device("cpu"),
        )

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i: int) -> Problem:
        return Problem(
            self.targets[i], self.seeds[i], self.budget, self.noise_shape, self.sigmas, self.sampler, self.nfe_per_call
        )

    # ---- costs: pure functions of the run's schedule, sampler and NFEs per call (``_cost``) -----------------
    @cached_property
    def costs(self) -> CostModel:
        """The run's ``CostModel`` (schedule, sampler, NFEs per call): what an algorithm's budget rule reads, and
        what the cost methods below delegate to."""
        return CostModel(self.sigmas, self.sampler, self.nfe_per_call)

    @property
    def steps(self) -> int:
        """Steps of a full candidate."""
        return self.costs.steps

    @property
    def stochastic(self) -> bool:
        """Whether the run's sampler injects noise at every step."""
        return self.costs.stochastic

    def starts_at_noise(self, jobs: Jobs) -> bool:
        """Whether the rows of ``jobs`` start from a noise, at the schedule's first sigma (``_cost.starts_at_noise``)."""
        return _cost.starts_at_noise(self.sigmas, jobs)

    def cost(self, sigmas: Sequence[float] | None = None, sampler: str | None = None, **options: Any) -> int:
        """Exact NFEs of one row along ``sigmas`` (default: a full candidate) with ``sampler`` (default
        the run's) and the ``Jobs`` options given (``denoised``, ``score_end``, ``grad``, ``backward_cost``)."""
        return self.costs.cost(sigmas, sampler, **options)

    def job_costs(self, jobs: Jobs) -> tuple[int, int]:
        """(forward NFEs, backward-pass NFE-equivalents) of one row of ``jobs``."""
        return _cost.job_costs(jobs, self.sampler, self.nfe_per_call)

    def job_cost(self, jobs: Jobs) -> int:
        """Exact NFEs that each row of ``jobs`` will be charged."""
        return _cost.job_cost(jobs, self.sampler, self.nfe_per_call)

    def require_budget(self, needed: int, what: str) -> None:
        """Raise a clear ``UserError`` when the run's budget cannot pay for ``needed`` NFEs (``CostModel.shortfall``'s message)."""
        reason = self.costs.shortfall(self.budget, needed, what)
        if reason is not None:
            raise UserError(reason)

    # ---- draws -------------------------------------------------------------------------------
    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device: the one place where drawn noise leaves the CPU (once per batch)."""
        return x.to(self.device)

    def seeds_of(self, owners: Sequence[int], paths: Sequence[tuple[int, ...]]) -> list[int]:
        """The seed of draw ``paths[r]`` of search ``owners[r]`` for every row r (``derive_seed``, with each
        search's seed hashed once: BLAKE2b is a stream, so a copy of its state after the seed's 8 bytes
        continues with the path's)."""
        prefix: dict[int, Any] = {}
        seeds = []
        for o, p in zip(owners, paths):
            h = prefix.get(o)
            if h is None:
                h = prefix[o] = hashlib.blake2b(struct.pack("<q", self.seeds[o]), digest_size=8)
            h = h.copy()
            h.update(struct.pack(f"<{len(p)}q", *p))
            seeds.append(int.from_bytes(h.digest(), "little") >> 1)
        return seeds

    def noise(self, owners: Sequence[int], paths: Sequence[tuple[int, ...]]) -> tuple[list[int], torch.Tensor]:
        """(seeds, noises (n, *noise_shape) on ``device``): row r is the draw ``paths[r]`` of search ``owners[r]``,
        ``gaussian(noise_shape, seed)``; drawn on the CPU, moved once."""
        start = time.perf_counter()
        seeds = self.seeds_of(owners, paths)
        drawn = gaussians(self.noise_shape, seeds)
        self.clock.since(start)
        return seeds, self.to_device(drawn)

    def step_noises(
        self, owners: Sequence[int], paths: Sequence[tuple[int, ...]], n_steps: int
    ) -> tuple[list[int], torch.Tensor]:
        """(stream seeds, noises (n, n_steps, *noise_shape) on ``device``): the per-step noises of a
        stochastic sampler, one stream per row, drawn whole (see ``Streams`` for the definition; use
        ``streams`` to hold streams across rounds without holding every step at once)."""
        streams = self.streams(owners, paths, n_steps, cap_bytes=None)
        return streams.seeds, streams.rows(0, n_steps)

    def streams(
        self,
        owners: Sequence[int],
        paths: Sequence[tuple[int, ...]],
        n_steps: int,
        *,
        cap_bytes: int | None = -1,
    ) -> Streams:
        """The step-noise streams of draws ``paths`` of searches ``owners`` (``Streams``): seeded with
        ``derive_seed(seed, *path, STEP_NOISES)``; held whole when they take at most ``cap_bytes`` (-1: the
        module's ``STREAM_CAP_BYTES`` now; None: always), else drawn step by step (the same values either way)."""
        if cap_bytes == -1:
            cap_bytes = STREAM_CAP_BYTES
        start = time.perf_counter()
        seeds = self.seeds_of(owners, [(*p, STEP_NOISES) for p in paths])
        self.clock.since(start)
        return Streams(self, seeds, n_steps, cap_bytes=cap_bytes)

    def uniforms(self, owners: Sequence[int], paths: Sequence[tuple[int, ...]]) -> torch.Tensor:
        """Uniform numbers (n,) float64 in [0, 1) on ``device``: row r is the normal CDF of the first
        element of the draw ``paths[r]`` of search ``owners[r]``."""
        start = time.perf_counter()
        # only the first element is used: a 16-element draw gives the same one as the whole noise on torch's CPU
        # normal_ (its Box-Muller fills blocks of 16 from the first 16 uniforms), so a large latent is not drawn
        size = math.prod(self.noise_shape)
        z = gaussians((size if size < 16 else 16,), self.seeds_of(owners, paths))[:, 0].double()  # (n,)
        self.clock.since(start)
        u = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        return self.to_device(u.clamp(max=1.0 - 2.0**-53))

    def grid(self, per_search: int) -> tuple[list[int], list[int]]:
        """(owners, k): ``per_search`` rows per search, search-major: row ``i * per_search + k``."""
        return _cost.grid(len(self), per_search)

    def fresh(self, per_search: int, *prefix: int, info: dict | None = None, deferred: bool = False) -> Jobs:
        """Full candidates: ``per_search`` per search, candidate k from the draw ``(*prefix, k)`` (and,
        for a stochastic sampler, its step-noise stream), search-major. ``deferred``: leave ``x`` undrawn
        (None) for an algorithm that never reads it; the driver draws only the rows it computes (a candidate
        replayed from the cache needs its seed, not its noise)."""
        owners, ks = self.grid(per_search)
        paths = [(*prefix, k) for k in ks]
        x: torch.Tensor | None = None
        if deferred:
            start = time.perf_counter()
            seeds = self.seeds_of(owners, paths)
            self.clock.since(start)
        else:
            seeds, x = self.noise(owners, paths)
        noises = self.step_noises(owners, paths, self.steps)[1] if self.stochastic else None
        return Jobs(
            torch.tensor(owners, dtype=torch.int64), x, self.sigmas, noise_seed=seeds, info=info or {}, noises=noises
        )

    def start_states(self, jobs: Jobs) -> torch.Tensor:
        """``jobs.x``, drawn now (once, kept on ``jobs``) if the batch was asked with its draws deferred."""
        if jobs.x is None:
            seeds = jobs.noise_seed
            if seeds is None or any(seed is None for seed in seeds):
                raise ValueError("a batch without start states must have a seeded draw on every row")
            start = time.perf_counter()
            drawn = gaussians(self.noise_shape, seeds)  # type: ignore[arg-type]
            self.clock.since(start)
            jobs.x = self.to_device(drawn)
        return jobs.x


@runtime_checkable
class SearchAlgorithm(Protocol):
    """Proposes candidates for the searches of a run through explicit state (see module docstring).

    ``renders_from_noise``: True when every finished candidate is a full trajectory of the run's
    sampler from a starting noise at the schedule's first sigma, so the best one is a function of its
    noise alone and may be denoised again with other steps (``run_search(final_steps=...)``); False
    when a finished candidate may start from an intermediate state or depend on injected noises.
    Its other declarations (``AlgorithmInfo``) are optional and read through ``algorithm_info``.
    """

    name: str
    renders_from_noise: ClassVar[bool]

    def params(self) -> dict:
        """Hyperparameters, as recorded."""

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        """(NFEs, what for) of the plan that ``budget`` buys on ``costs``' schedule, sampler and cost per call: its
        minimum-budget rule, pure (``init`` refuses through it: ``problems.require_budget(*needed)``, and a sweep
        asks it before anything loads). Raises ``UserError`` where no plan fits the schedule at all. Optional, read
        through ``budget_needed_by``; the default: no minimum beyond one full candidate."""
        return _cost.one_candidate(costs, budget)

    def init(self, problems: Problems) -> Any:
        """Fresh state for the searches ``problems``; raises ``UserError`` if the budget cannot pay one round."""

    def ask(self, state: Any) -> list[Jobs]:
        """The next batches; an empty list ends every search. Reads ``state``, never advances it."""

    def tell(self, state: Any, outcomes: list[Outcomes]) -> None:
        """Advance ``state`` with the outcomes of the last ``ask``, one ``Outcomes`` per ``Jobs``, in order."""


def budget_needed_by(algorithm: Any, costs: CostModel, budget: int) -> tuple[int, str]:
    """(NFEs, what for) that ``algorithm``'s plan at ``budget`` needs on ``costs``: its declared ``budget_needed``
    (``AlgorithmInfo``), else one full candidate. Raises ``UserError`` where no plan fits the schedule."""
    rule = algorithm_info(algorithm).budget_needed
    return _cost.one_candidate(costs, budget) if rule is None else rule(costs, budget)


class SearchAlgorithmFactory(Protocol):
    """An ``ALGORITHMS`` entry: builds an algorithm from keyword-only hyperparameters.

    The CLI checks ``--param`` names against the factory's signature before building it, and the
    algorithm's ``params()`` must rebuild it: ``factory(**algorithm.params())``. Nothing optional is
    looked up on an algorithm outside ``AlgorithmInfo``: the driver uses ``init``, ``ask``, ``tell`` and
    ``algorithm_info`` (declared on the class, so a factory that is the class is read the same way).
    """

    def __call__(self, **hyperparameters: Any) -> SearchAlgorithm:
        """An algorithm with these hyperparameters (``UserError`` for a bad value)."""
