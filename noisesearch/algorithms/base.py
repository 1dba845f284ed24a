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
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from noisesearch.cache import declared
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
    data = struct.pack(f"<{1 + len(path)}q", seed, *path)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def gaussian(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` from its own generator seeded with ``seed``.

    This is exactly ``torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))``, the
    draw a diffusers pipeline user writes.
    """
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def gaussians(shape: tuple[int, ...], seeds: Sequence[int]) -> torch.Tensor:
    """``torch.stack([gaussian(shape, s) for s in seeds])`` (len(seeds), *shape), without a tensor per row.

    One generator is reseeded per row and each row is filled in place (the same values as ``gaussian``:
    ``randn`` is ``normal_`` on a fresh tensor). The unavoidable cost of per-candidate seeding is here.
    """
    out = torch.empty((len(seeds), *shape))
    g = torch.Generator()
    for a in range(0, len(seeds), 1024):  # views made by unbind in C, a block at a time (a list of 1e5 is slower)
        for row, seed in zip(out[a : a + 1024].unbind(0), seeds[a : a + 1024]):
            g.manual_seed(seed)
            row.normal_(generator=g)
    return out


def noise_hash(x: torch.Tensor) -> str:
    """First 16 hex digits of the SHA-256 of a tensor's float32 bytes (identifies a noise)."""
    return noise_hashes(x[None])[0]


def noise_hashes(x: torch.Tensor) -> list[str]:
    """``noise_hash`` of each row of ``x`` (B, ...): one copy to the CPU for the batch."""
    rows = x.detach().float().contiguous().cpu().numpy()
    return [hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in rows]


STEP_NOISES = 2**40  # path marker: a stochastic sampler's per-step noises are the stream (*path, STEP_NOISES)
STREAM_CAP_BYTES = 256 * 2**20  # a batch of streams is held whole up to this size, else drawn step by step


def plain_cost(
    sigmas: Sequence[float],
    sampler: str,
    nfe_per_call: int,
    *,
    denoised: bool = False,
    score_end: bool = False,
    grad: bool = False,
    backward_cost: float = 0.0,
) -> tuple[int, int]:
    """(forward NFEs, backward-pass NFE-equivalents) of one row along ``sigmas`` (see ``Jobs`` for the options)."""
    evals = get_sampler(sampler).nfe(tuple(sigmas))
    evals -= bool(denoised)  # the first evaluation is already known
    evals += bool(score_end and sigmas[-1] > 0)  # one more evaluation at the end state
    forward = evals * nfe_per_call
    return forward, (math.ceil(backward_cost * forward) if grad else 0)


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


@dataclass
class Problems:
    """The searches of one run: ``targets[i]`` and ``seeds[i]`` for search ``i``; everything else shared.

    The budget, schedule, sampler and cost per call are the same for every search of a run, so an
    algorithm plans once and runs every search in lock step (rows of all searches in one ``Jobs``).
    ``device`` is where the model computes: draws are moved there once per batch.
    """

    targets: list
    seeds: list[int]
    budget: int
    noise_shape: tuple[int, ...]
    sigmas: tuple[float, ...]
    sampler: str
    nfe_per_call: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    draw_seconds: float = 0.0  # wall time spent drawing seeded noise (the per-candidate cost that cannot go)

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

    @property
    def steps(self) -> int:
        """Steps of a full candidate."""
        return len(self.sigmas) - 1

    @property
    def stochastic(self) -> bool:
        """Whether the run's sampler injects noise at every step."""
        return get_sampler(self.sampler).stochastic

    def starts_at_noise(self, jobs: Jobs) -> bool:
        """Whether the rows of ``jobs`` start from a *noise*: they start at the schedule's first sigma.

        The one place this rule is written: such a row is turned into the model's state by
        ``start_scale`` (VP models), identified in its record by its seed or a hash of it, and may be
        replayed from the cache; a row starting anywhere else starts from an intermediate state.
        """
        return jobs.sigmas[0] == self.sigmas[0]

    # ---- costs -------------------------------------------------------------------------------
    def cost(self, sigmas: Sequence[float] | None = None, sampler: str | None = None, **options: Any) -> int:
        """Exact NFEs of one row along ``sigmas`` (default: a full candidate) with ``sampler`` (default
        the run's) and the ``Jobs`` options given (``denoised``, ``score_end``, ``grad``, ``backward_cost``)."""
        forward, backward = plain_cost(
            tuple(sigmas) if sigmas is not None else self.sigmas, sampler or self.sampler, self.nfe_per_call, **options
        )
        return forward + backward

    def job_costs(self, jobs: Jobs) -> tuple[int, int]:
        """(forward NFEs, backward-pass NFE-equivalents) of one row of ``jobs``."""
        return plain_cost(
            jobs.sigmas,
            jobs.sampler or self.sampler,
            self.nfe_per_call,
            denoised=jobs.denoised is not None,
            score_end=jobs.score_end,
            grad=jobs.grad,
            backward_cost=jobs.backward_cost,
        )

    def job_cost(self, jobs: Jobs) -> int:
        """Exact NFEs that each row of ``jobs`` will be charged."""
        return sum(self.job_costs(jobs))

    def require_budget(self, needed: int, what: str) -> None:
        """Raise a clear ``UserError`` when the budget cannot pay for ``needed`` NFEs.

        Every algorithm refuses a too-small budget through here, so the message always ends with
        ``give --budget >= N ...`` (the smallest budget that works).
        """
        if self.budget < needed:
            raise UserError(
                f"budget {self.budget} is smaller than {what} ({needed} NFEs with {self.steps} "
                f"steps at {self.nfe_per_call} NFE(s) per evaluation); "
                f"give --budget >= {needed} or fewer --steps"
            )

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
        self.draw_seconds += time.perf_counter() - start
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
        self.draw_seconds += time.perf_counter() - start
        return Streams(self, seeds, n_steps, cap_bytes=cap_bytes)

    def uniforms(self, owners: Sequence[int], paths: Sequence[tuple[int, ...]]) -> torch.Tensor:
        """Uniform numbers (n,) float64 in [0, 1) on ``device``: row r is the normal CDF of the first
        element of the draw ``paths[r]`` of search ``owners[r]``."""
        start = time.perf_counter()
        # only the first element is used: a 16-element draw gives the same one as the whole noise on torch's CPU
        # normal_ (its Box-Muller fills blocks of 16 from the first 16 uniforms), so a large latent is not drawn
        size = math.prod(self.noise_shape)
        z = gaussians((size if size < 16 else 16,), self.seeds_of(owners, paths))[:, 0].double()  # (n,)
        self.draw_seconds += time.perf_counter() - start
        u = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        return self.to_device(u.clamp(max=1.0 - 2.0**-53))

    def grid(self, per_search: int) -> tuple[list[int], list[int]]:
        """(owners, k): ``per_search`` rows per search, search-major: row ``i * per_search + k``."""
        n = len(self)
        return [i for i in range(n) for _ in range(per_search)], [k for _ in range(n) for k in range(per_search)]

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
            self.draw_seconds += time.perf_counter() - start
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
            self.draw_seconds += time.perf_counter() - start
            jobs.x = self.to_device(drawn)
        return jobs.x


def _stream_draws_whole(shape: tuple[int, ...]) -> bool:
    """Whether one draw of (steps, *shape) equals ``steps`` successive draws of ``shape`` on one generator.

    On torch's CPU ``normal_`` it does when a draw has one element or a multiple of 16 (the Box-Muller
    transform fills blocks of 16 from a block of uniforms; a ragged tail is filled from fresh uniforms).
    ``tests/test_core_exact.py`` checks both forms against each other for such shapes and others.
    """
    size = math.prod(shape)
    return size == 1 or size % 16 == 0


class Streams:
    """The per-step noises of a stochastic sampler for n candidates: one stream per candidate.

    Stream r is seeded with ``seeds[r]``; its row t (the noise injected at step t) is the ``t + 1``-th
    ``torch.randn(noise_shape, generator=g)`` on ``g = torch.Generator("cpu").manual_seed(seeds[r])``, so
    a candidate's step noises are reproducible with plain PyTorch, and one generator is seeded per
    candidate, not per step. When the n streams of ``n_steps`` rows take at most ``cap_bytes`` they are
    drawn once and held (on the device); beyond it (a video latent, many particles) each keeps its
    generator on the CPU and ``rows`` draws only the rows asked for, in order, so memory holds one step.
    """

    def __init__(self, problems: Problems, seeds: list[int], n_steps: int, *, cap_bytes: int | None):
        self.problems, self.n_steps = problems, n_steps
        self._seeds: list[int] = seeds
        self._pick: torch.Tensor | None = None  # seeds[r] = _seeds[_pick[r]] (a selection read lazily)
        shape = problems.noise_shape
        nbytes = len(seeds) * n_steps * math.prod(shape) * 4
        self.whole: torch.Tensor | None = None
        self.generators: list[torch.Generator] = []
        self.next = 0  # step-by-step: the next row each generator gives
        self.last: tuple[int, int, torch.Tensor] | None = None  # step-by-step: the last block read
        if cap_bytes is None or nbytes <= cap_bytes:
            start = time.perf_counter()
            if _stream_draws_whole(shape):
                drawn = gaussians((n_steps, *shape), seeds)  # (n, n_steps, *shape)
            else:
                drawn = torch.empty((len(seeds), n_steps, *shape))
                g = torch.Generator()
                for rows, seed in zip(drawn.unbind(0), seeds):
                    g.manual_seed(seed)
                    for row in rows.unbind(0):
                        row.normal_(generator=g)
            problems.draw_seconds += time.perf_counter() - start
            self.whole = problems.to_device(drawn)
        else:
            self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    @property
    def seeds(self) -> list[int]:
        """The stream seeds (a host list; after a ``select`` by a device index, one copy when first read)."""
        if self._pick is not None:
            listed = self._pick.tolist()
            self._seeds, self._pick = [self._seeds[i] for i in listed], None
        return self._seeds

    def __len__(self) -> int:
        return len(self._seeds) if self._pick is None else len(self._pick)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of every stream, (n, stop - start, *noise_shape) on the device.

        Held whole: any rows. Step by step: rows are read in order (asking for the last block again gives
        it again, so an algorithm's ``ask`` may run twice; rows skipped are drawn and dropped)."""
        if not 0 <= start <= stop <= self.n_steps:
            raise ValueError(f"rows {start}:{stop} of streams of {self.n_steps} steps")
        if self.whole is not None:
            return self.whole[:, start:stop]
        if self.last is not None and self.last[:2] == (start, stop):
            return self.last[2]
        if start < self.next:
            raise ValueError(f"streams drawn step by step are read in order: rows {start}:{stop} after {self.next}")
        t0 = time.perf_counter()
        shape = self.problems.noise_shape
        out = torch.empty((len(self), stop - start, *shape))
        scratch = torch.empty(shape)
        for g, rows in zip(self.generators, out.unbind(0)):
            for _ in range(self.next, start):
                scratch.normal_(generator=g)
            for row in rows.unbind(0):
                row.normal_(generator=g)
        self.next = stop
        self.problems.draw_seconds += time.perf_counter() - t0
        block = self.problems.to_device(out)
        self.last = (start, stop, block)
        return block

    def select(self, idx: Sequence[int] | torch.Tensor) -> Streams:
        """The streams ``idx`` (in that order; repeats allowed), each continuing where it was."""
        new = Streams.__new__(Streams)
        new.problems, new.n_steps, new.next, new.last = self.problems, self.n_steps, self.next, None
        if self.whole is not None:  # no host copy: the seeds are picked when read
            pick = torch.as_tensor(idx, dtype=torch.int64)
            new.whole, new.generators = self.whole[pick.to(self.whole.device)], []
            base = torch.arange(len(self)) if self._pick is None else self._pick
            new._seeds, new._pick = self._seeds, base.to(pick.device)[pick]
            return new
        listed = idx.tolist() if isinstance(idx, torch.Tensor) else list(idx)  # one copy: generators live here
        new.whole, new.generators = None, []
        for i in listed:
            g = torch.Generator()
            g.set_state(self.generators[i].get_state())
            new.generators.append(g)
        seeds = self.seeds
        new._seeds, new._pick = [seeds[i] for i in listed], None
        return new


@dataclass
class Jobs:
    """Candidates to run, as columns: rows of start states ``x`` (n, *noise_shape) at ``sigmas[0]``,
    each integrated along ``sigmas``, row r for search ``owner[r]``.

    ``noise_seed[r]`` is set only when ``x[r]`` is exactly ``gaussian(noise_shape, noise_seed[r])``
    (None for the column: no row is); for any other start state (a neighbour, an intermediate state)
    it is None and the record carries a hash of the row instead. ``info`` holds the algorithm's notes,
    JSON-serialisable columns of length n (lists or 1-d tensors), recorded per row. Options, shared by
    every row, each with its exact cost (``Problems.job_cost``):

    - ``sampler``: run with another registered sampler than the run's (same cost rules);
    - ``noises`` (n, n_steps, *noise_shape): the per-step noises of a stochastic sampler (required by
      one, refused by a deterministic one);
    - ``denoised`` (n, *noise_shape): the already-computed x0-prediction of ``x`` at ``sigmas[0]``
      (from an earlier ``score_end``), so the first evaluation is not paid twice;
    - ``score_end``: for a batch ending at sigma > 0, evaluate the denoiser once more at the end state
      (+1 evaluation) and score that x0-prediction; without it an unfinished row is scored on the
      x0-prediction of its last evaluated step (free);
    - ``grad``: also return the gradient of the score with respect to ``x`` (first-order search),
      charged ``ceil(backward_cost * forward NFEs)`` extra NFEs for the backward pass.
    """

    owner: torch.Tensor  # (n,) int64, on the CPU
    x: torch.Tensor | None  # None: every row is its seeded draw, not drawn yet (``Problems.start_states``)
    sigmas: tuple[float, ...]
    noise_seed: Sequence[int | None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    noises: torch.Tensor | None = None
    denoised: torch.Tensor | None = None
    score_end: bool = False
    grad: bool = False
    backward_cost: float = 0.0

    def __post_init__(self) -> None:
        self.sigmas = tuple(float(s) for s in self.sigmas)
        if not isinstance(self.owner, torch.Tensor):
            self.owner = torch.as_tensor(self.owner, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.owner)

    @property
    def final(self) -> bool:
        """True when the rows end at sigma = 0, i.e. produce finished samples."""
        return self.sigmas[-1] == 0

    def rows(self, idx: slice | torch.Tensor | Sequence[int]) -> Jobs:
        """The rows ``idx`` (a slice, or indices), every column cut alike."""
        pick: Any = idx if isinstance(idx, slice) else torch.as_tensor(idx, dtype=torch.int64)
        listed: Any = idx if isinstance(idx, slice) else pick.tolist()

        def cut(col):
            if col is None:
                return None
            if isinstance(col, torch.Tensor):
                return col[pick.to(col.device) if isinstance(pick, torch.Tensor) else pick]
            return col[listed] if isinstance(listed, slice) else [col[i] for i in listed]

        return replace(
            self,
            owner=cut(self.owner),
            x=cut(self.x),
            noise_seed=cut(self.noise_seed),
            info={k: cut(v) for k, v in self.info.items()},
            noises=cut(self.noises),
            denoised=cut(self.denoised),
        )

    def options(self) -> tuple:
        """Batches with equal options may run as one."""
        return (
            self.sigmas,
            self.sampler,
            self.noises is not None,
            self.denoised is not None,
            self.score_end,
            self.grad,
            self.backward_cost,
        )


@dataclass
class Outcomes:
    """What the driver reports back for one ``Jobs`` batch, row for row.

    ``x`` (n, *noise_shape): end states; ``denoised``: x0-predictions at the end states when the rows
    ended at sigma = 0 (then equal to ``x``) or asked ``score_end``, else those of their last evaluated
    step; ``image`` (n, C, H, W): decoded, what was scored; ``score`` (n,): the verifier's scores (NaN if
    it failed, a +inf or -inf too: ``failed_as_nan``), on the verifier's device; ``nfe``: NFEs charged per
    row; ``index`` (n,) int64: each row's candidate number within its search (assigned when the jobs were
    asked); ``grad``: d score / d ``jobs.x`` for ``grad`` jobs.
    """

    jobs: Jobs
    x: torch.Tensor
    denoised: torch.Tensor
    image: torch.Tensor
    score: torch.Tensor
    nfe: int
    index: torch.Tensor
    grad: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.score)


def failed_as_nan(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` with every value that is not a finite number (NaN, +inf, -inf) as NaN: a failed score.

    A verifier's +inf or -inf measures nothing that can be ranked against other candidates (nor written
    to a JSON record or the replay cache), so the driver treats it as a NaN: recorded as a failed score
    (``null``), counted in ``nan_scores``, never the best. Autograd passes through the finite rows.
    """
    return torch.where(torch.isfinite(scores), scores, torch.nan)


def rank_values(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` as float64 with every failed score (NaN, and +inf or -inf, see ``failed_as_nan``) as -inf:
    a failed score ranks below every real one. (``nan_to_num(nan=-inf)`` alone would turn +inf into the
    largest float, which would win.)"""
    s = scores.double()
    return torch.where(torch.isfinite(s), s, -math.inf)


def first_best(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Index of the first maximum along ``dim`` of ``scores`` with failed scores (NaN, +-inf) ranked lowest
    (ties: the earliest)."""
    s = rank_values(scores)
    return torch.argmax((s == s.amax(dim=dim, keepdim=True)).to(torch.int8), dim=dim)


def rank_order(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Indices that sort ``scores`` best first along ``dim``, failed scores (NaN, +-inf) last, ties in their
    original order."""
    return torch.sort(rank_values(scores), dim=dim, descending=True, stable=True).indices


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

    def init(self, problems: Problems) -> Any:
        """Fresh state for the searches ``problems``; raises ``UserError`` if the budget cannot pay one round."""

    def ask(self, state: Any) -> list[Jobs]:
        """The next batches; an empty list ends every search. Reads ``state``, never advances it."""

    def tell(self, state: Any, outcomes: list[Outcomes]) -> None:
        """Advance ``state`` with the outcomes of the last ``ask``, one ``Outcomes`` per ``Jobs``, in order."""


class SearchAlgorithmFactory(Protocol):
    """An ``ALGORITHMS`` entry: builds an algorithm from keyword-only hyperparameters.

    The CLI checks ``--param`` names against the factory's signature before building it, and the
    algorithm's ``params()`` must rebuild it: ``factory(**algorithm.params())``. Nothing optional is
    looked up on an algorithm outside ``AlgorithmInfo``: the driver uses ``init``, ``ask``, ``tell`` and
    ``algorithm_info`` (declared on the class, so a factory that is the class is read the same way).
    """

    def __call__(self, **hyperparameters: Any) -> SearchAlgorithm:
        """An algorithm with these hyperparameters (``UserError`` for a bad value)."""


@dataclass(frozen=True)
class AlgorithmInfo:
    """What the compatibility check reads of an algorithm (or of its registry factory, the class), defaults here.

    ``full_candidates_only``: it only chooses starting noises of full candidates at the run's steps and
    sampler, so a whole-trajectory model can run it. ``needs_gradients``: it asks for ``grad`` jobs, so the
    model must declare ``denoise_grad`` and the verifier ``score``.
    """

    name: str
    renders_from_noise: bool = False
    full_candidates_only: bool = False
    needs_gradients: bool = False


def algorithm_info(algorithm: Any) -> AlgorithmInfo:
    """``algorithm``'s declarations (an algorithm or its factory), each left out falling back to its default."""
    name = declared(algorithm, "name", None)
    return AlgorithmInfo(
        name=name if isinstance(name, str) else type(algorithm).__name__,
        renders_from_noise=declared(algorithm, "renders_from_noise", False) is True,
        full_candidates_only=declared(algorithm, "full_candidates_only", False) is True,
        needs_gradients=bool(declared(algorithm, "needs_gradients", False)),
    )
