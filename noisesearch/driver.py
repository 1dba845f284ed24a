"""The one driver loop: batching, budgeting, stopping and recording for every search algorithm.

``run_search`` runs one search per target, all in lock step, and stands for this loop::

    state = algorithm.init(problems)                   # every search of the run
    while batches := algorithm.ask(state):             # a list of Jobs (columns, rows of any searches)
        refuse the round if any search's rows cost more than its NFEs left  (BudgetExceeded)
        give every row its candidate index within its search (in asked order)
        for each batch, in chunks of at most max_batch rows:
            x = sampler(accountant.denoiser(...), start states, sigmas)
            scores = accountant.verify(verifier, decode(x or last x0-prediction), targets)
        keep each search's best finished candidate (a failed score, NaN or +-inf, never ranks)
        record the batches as columns
        algorithm.tell(state, outcomes)                # one Outcomes per Jobs, same rows

Candidates are never generated one by one, and there is no Python object per candidate in this
loop: start states, noises, scores and indices are tensors of a whole batch, and the records are
columns turned into one dict per candidate only when ``SearchResult.candidates`` is read. States,
previews and scores stay on the model's device; the only copies to the CPU are the scores of a
finished batch (for the best candidate of each search) and the records when they are read. A
noise that is not a seeded draw is recorded by its SHA-256, taken when the records are read (the
noises wait as CPU copies, up to ``HASH_LATER_BYTES``; past that they are hashed at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, overload

import torch

from noisesearch.accounting import Accountant, check_nfe_convention, clock, nfe_per_call, rows_per_nfe
from noisesearch.algorithms.base import (
    Jobs,
    Outcomes,
    Problems,
    SearchAlgorithm,
    failed_as_nan,
    gaussians,
    noise_hashes,
    rank_values,
)
from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models.base import Model, index_cond
from noisesearch.samplers import get_sampler
from noisesearch.verifiers.base import Verifier
from noisesearch.verifiers.video import for_model as frames_of


@dataclass
class SearchResult:
    """The answer of one search and how it was reached.

    ``best_image`` (C, H, W) in [0, 1] and ``best_noise`` (*noise_shape, the starting state of the
    best job) are None only if no finished candidate got a real score; both are on the CPU.
    ``candidates`` holds one flat dict per evaluated job, in candidate-index order (built from the
    run's columns when first read); ``images`` maps candidate index -> image (C, H, W) for every
    finished candidate when ``run_search(keep_images=True)``.

    With ``run_search(final_steps=...)`` the best noise is denoised again with that many steps:
    ``best_image`` is then that final render, ``final_score`` the verifier's score of it (None without a
    render, or when its score failed), and ``nfe_final`` its NFEs (0 without one); ``nfe_used`` stays the
    search's NFEs (at most ``budget``), ``best_score`` the search's best score, and the ledger counts both.
    """

    target: Any
    seed: int
    budget: int
    nfe_used: int
    verifier_calls: int
    best_score: float
    best_index: int
    best_image: torch.Tensor | None
    best_noise: torch.Tensor | None
    nan_scores: int
    candidates: Sequence[dict] = field(default_factory=list)
    images: dict[int, torch.Tensor] = field(default_factory=dict)  # finished candidates' images, if kept
    record: dict = field(default_factory=dict)  # the JSON-ready record (``noisesearch.search`` fills it)
    ledger: dict = field(default_factory=dict)  # its costs, flat (``Accountant.ledger``): FLOPs, decodes, seconds
    nfe_final: int = 0  # NFEs of the final render (``final_steps``), outside the budget
    final_score: float | None = None  # the verifier's score of the final render


@dataclass
class RunStats:
    """Where a run's wall time went, measured at the accountant (for benchmarks and progress reports).

    ``denoise_seconds``, ``verify_seconds`` and ``backward_seconds``: time inside the model, the verifier
    and autograd's backward pass; ``denoise_calls``: batched denoiser calls; ``rounds``: ask/tell rounds;
    ``candidates``: rows run (all searches); ``draw_seconds``: time drawing seeded noise (one generator per
    draw: the per-candidate cost of reproducibility, part of the time outside the calls); ``decode_seconds``:
    time in the model's decoder (a VAE for latent models; also outside the calls of ``inside_share``).
    """

    wall_seconds: float = 0.0
    denoise_seconds: float = 0.0
    verify_seconds: float = 0.0
    backward_seconds: float = 0.0
    denoise_calls: int = 0
    rounds: int = 0
    candidates: int = 0
    draw_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def inside_share(self) -> float:
        """Share of the wall time spent inside the model, the verifier and backward passes."""
        inside = self.denoise_seconds + self.verify_seconds + self.backward_seconds
        return inside / self.wall_seconds if self.wall_seconds > 0 else 0.0


class SearchRun(list):
    """What ``run_search`` returns: the ``SearchResult`` of each target, in order (a list), and ``stats``."""

    stats: RunStats

    def __init__(self, results: list[SearchResult], stats: RunStats):
        super().__init__(results)
        self.stats = stats


HASH_LATER_BYTES = 64 * 2**20  # derived noises a run keeps to hash when its records are read (CandidateTable)


class _Chunk(NamedTuple):
    """One recorded batch: the columns its records are built from (no states or images)."""

    owner: torch.Tensor  # (n,) search of each row
    indices: torch.Tensor  # (n,) candidate index within its search
    seeds: list[int | None] | None  # noise seed per row (None: no seeded draw)
    hashes: list[str | None] | torch.Tensor | None  # per row, or the unseeded rows' noises (u, ...) to hash on read
    sigmas: tuple[float, float]  # (start, end) of every row
    nfe: int  # NFEs of each row
    score: torch.Tensor  # (n,)
    info: dict  # the batch's info columns


class CandidateTable:
    """The records of a run as columns: one chunk per run batch, turned into dicts only when read."""

    def __init__(self, problems: Problems, latent_shape: tuple[int, ...] | None):
        self.n = len(problems)
        self.problems = problems
        self.latent_shape = list(latent_shape) if latent_shape else None
        self.chunks: list[_Chunk] = []  # one per recorded batch
        self._rows: list[list[dict]] | None = None
        self.counts = torch.zeros(self.n, dtype=torch.int64)  # records per search (known without building them)
        self.held_bytes = 0  # bytes of derived noises kept for hashing when the records are read

    def add(self, jobs: Jobs, out: Outcomes) -> None:
        """Record a batch; everything stays as columns until read.

        A noise that is not a seeded draw (a neighbour, an iterate, a CEM sample) is identified in its
        record by its hash. Hashing (SHA-256, about 2 us a row) waits until the records are read, which
        a sweep never does: the batch's derived noises are kept as one float32 CPU copy for it, up to
        ``HASH_LATER_BYTES`` in all; past that they are hashed now and only the hashes are kept.
        """
        hashes: list[str | None] | torch.Tensor | None = None
        if self.problems.starts_at_noise(jobs) and (jobs.noise_seed is None or None in jobs.noise_seed):
            x = self.problems.start_states(jobs)  # drawn: a row without a seed is never deferred
            if jobs.noise_seed is not None:
                x = x[torch.tensor([s is None for s in jobs.noise_seed], device=x.device)]
            size = x.numel() * 4
            if self.held_bytes + size <= HASH_LATER_BYTES:
                hashes = x.detach().to("cpu", torch.float32, copy=True)  # (u, ...): a copy, safe from in-place edits
                self.held_bytes += size
            else:
                got = iter(noise_hashes(x))
                hashes = [next(got) if s is None else None for s in (jobs.noise_seed or [None] * len(x))]
        seeds = None if jobs.noise_seed is None else list(jobs.noise_seed)
        sigmas = (jobs.sigmas[0], jobs.sigmas[-1])
        self.chunks.append(
            _Chunk(jobs.owner, out.index, seeds, hashes, sigmas, out.nfe, out.score.detach(), dict(jobs.info))
        )
        self.counts += torch.bincount(jobs.owner, minlength=self.n)
        self._rows = None

    def rows(self, search: int) -> list[dict]:
        """The records of search ``search``, in candidate-index order (all searches built at once)."""
        if self._rows is None:
            self._rows = self._build()
        return self._rows[search]

    def _build(self) -> list[list[dict]]:
        per: list[list[dict]] = [[] for _ in range(self.n)]
        for c, chunk in enumerate(self.chunks):
            owners, indices, scores = chunk.owner.tolist(), chunk.indices.tolist(), chunk.score.tolist()
            seeds = chunk.seeds or [None] * len(owners)
            hashes = chunk.hashes
            if isinstance(hashes, torch.Tensor):  # kept noises of the rows without a seed: hashed now, once
                got = iter(noise_hashes(hashes))
                self.held_bytes -= hashes.numel() * 4
                hashes = [next(got) if s is None else None for s in seeds]
                self.chunks[c] = chunk._replace(hashes=hashes)
            (start, end), nfe = chunk.sigmas, chunk.nfe
            info = {k: (v.tolist() if isinstance(v, torch.Tensor) else list(v)) for k, v in chunk.info.items()}
            for r, (i, index, score, seed) in enumerate(zip(owners, indices, scores, seeds)):
                record = {
                    "index": index,
                    "noise_seed": seed,
                    # torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(noise_seed)) is the draw
                    **({"latent_shape": self.latent_shape} if self.latent_shape and seed is not None else {}),
                    "noise_sha256": hashes[r] if hashes is not None else None,
                    "sigma_start": start,
                    "sigma_end": end,
                    "nfe": nfe,
                    "score": None if math.isnan(score) else score,
                }
                if info:
                    record["info"] = {k: v[r] for k, v in info.items()}
                per[i].append(record)
        for rows in per:
            rows.sort(key=lambda c: c["index"])
        return per


class Candidates(Sequence[dict]):
    """One search's records, read from the run's ``CandidateTable`` on first use (a read-only list)."""

    def __init__(self, table: CandidateTable, search: int):
        self._table, self._search = table, search

    def _list(self) -> list[dict]:
        return self._table.rows(self._search)

    def __len__(self) -> int:
        return int(self._table.counts[self._search])  # a count needs no records built

    @overload
    def __getitem__(self, i: int) -> dict: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict]: ...
    def __getitem__(self, i):
        return self._list()[i]

    def __iter__(self) -> Iterator[dict]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Sequence) else other)

    def __repr__(self) -> str:
        return repr(self._list())

    def __reduce__(self):
        return (list, (self._list(),))  # pickled (Ray) as a plain list


class _Best:
    """Each search's best finished candidate so far, as tensors (a failed score never ranks; ties keep the earliest)."""

    def __init__(self, n: int):
        self.n = n
        self.score = torch.full((n,), -math.inf, dtype=torch.float64)
        self.index = torch.full((n,), -1, dtype=torch.int64)
        self.image: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.nans = torch.zeros(n, dtype=torch.int64)

    def update(self, jobs: Jobs, out: Outcomes, problems: Problems) -> None:
        score = out.score.detach()
        owner = jobs.owner.to(score.device)
        self.nans = self.nans.to(score.device).index_add_(0, owner, torch.isnan(score).long())
        if not jobs.final:
            return
        self.score, self.index = self.score.to(score.device), self.index.to(score.device)
        ranked = rank_values(score)  # (n,) failed (NaN) -> -inf
        top = self.score.scatter_reduce(0, owner, ranked, "amax")  # (S,) best of the kept one and this batch's
        searches = (top > self.score).nonzero().flatten()  # (m,) strictly better; one copy of a small index
        if not len(searches):
            return
        # each improving search's first row that reaches its new best (rows of other searches never do:
        # their best stays the kept score, which none of their rows exceeds, and a tie is not better)
        n = len(score)
        winner = (ranked == top[owner]) & (ranked > self.score[owner])  # (n,)
        first = torch.full((self.n,), n, dtype=torch.int64, device=score.device)
        first = first.scatter_reduce(0, owner, torch.where(winner, torch.arange(n, device=score.device), n), "amin")
        pick = first[searches]  # (m,) the winning rows
        self.score[searches] = ranked[pick]
        self.index[searches] = out.index.to(score.device)[pick]
        images = out.image.detach()
        if jobs.x is not None:
            noises = jobs.x.detach()[pick.to(jobs.x.device)]
        else:  # a deferred batch: only the winners' noises are drawn
            seeds = jobs.noise_seed
            assert seeds is not None
            noises = problems.to_device(gaussians(problems.noise_shape, [seeds[r] for r in pick.tolist()]))
        if self.image is None:
            self.image = torch.zeros((self.n, *images.shape[1:]), dtype=images.dtype, device=images.device)
            self.noise = torch.zeros((self.n, *noises.shape[1:]), dtype=noises.dtype, device=noises.device)
        assert self.noise is not None
        self.image[searches.to(images.device)] = images[pick.to(images.device)]
        self.noise[searches.to(noises.device)] = noises


def _preview_step(sigmas: tuple[float, ...], preview_sigma: float | None) -> int | None:
    """Index of the first step with sigma <= preview_sigma (the last step if none is)."""
    if preview_sigma is None:
        return None
    for i, s in enumerate(sigmas[:-1]):
        if s <= preview_sigma:
            return i
    return len(sigmas) - 2


def run_search(
    model: Model,
    verifier: Verifier,
    algorithm: SearchAlgorithm,
    targets: Sequence,
    *,
    seeds: Sequence[int],
    budget: int,
    steps: int,
    sampler: str = "euler",
    guidance: float | None = None,
    max_batch: int = 4096,
    progress: Callable[[int, int, float], None] | None = None,
    keep_images: bool = False,
    cache=None,
    final_steps: int | None = None,
    nfe_convention: str = "rows",
) -> SearchRun:
    """Run one search per target within ``budget`` NFEs each (see the module docstring).

    Args:
        targets: one target per search (class ids or prompts); ``seeds``: one seed per search.
        budget: hard NFE limit per search; ``steps``: sampling steps of a full candidate.
        sampler: a name in ``noisesearch.samplers.SAMPLERS``; ``guidance``: CFG scale
            (default: the model's).
        max_batch: most rows in one denoiser batch.
        progress: called after every batch with (NFEs spent, NFEs budgeted, best score so far).
        keep_images: keep every finished candidate's image in ``SearchResult.images`` (memory!).
        cache: a ``noisesearch.cache.CandidateCache`` (or None): cacheable jobs found there are
            replayed (charged to the budget as if computed, counted as ``replayed`` in the ledger),
            the others computed and stored.
        final_steps: "search cheap, render once": after the search, each search's best starting noise is
            denoised again with this many steps of ``sampler`` and scored; that render becomes the
            result's ``best_image`` (``check_final_steps`` says which algorithms and samplers allow it).
            Its NFEs are charged in the ledger but not against ``budget``, which bounds the search only.
        nfe_convention: what one NFE is (``accounting.NFE_CONVENTIONS``): "rows" (one model row; a CFG
            step costs 2) or "steps" (one denoising step whatever the guidance, as the paper plots).

    Returns:
        A ``SearchRun``: one ``SearchResult`` per target, in order, and the run's ``stats``.
    """
    if len(seeds) != len(targets):
        raise ValueError(f"{len(targets)} targets but {len(seeds)} seeds")
    if not isinstance(budget, int) or budget < 1:
        raise UserError(f"budget must be a positive integer number of NFEs, got {budget!r}")
    if not isinstance(max_batch, int) or max_batch < 1:
        raise UserError(f"max batch must be a positive integer, got {max_batch!r}")
    started = time.perf_counter()
    get_sampler(sampler)  # a clear error for an unknown name before any work
    check_nfe_convention(nfe_convention)
    verifier = frames_of(verifier, model)  # a video model's image verifier scores frames (verifiers/video.py)
    whole = getattr(model, "whole_trajectory", False)  # a pipeline run whole (models.generic)
    check_final_steps(final_steps, algorithm, sampler, whole=whole)
    if whole:
        check_whole_trajectory(model, algorithm, sampler, verifier)
    final_sigmas = None if final_steps is None else final_schedule(model, steps, final_steps)
    guidance = model.default_guidance if guidance is None else float(guidance)
    targets = [model.check_target(t) for t in targets]
    device = torch.device(getattr(model, "device", None) or "cpu")
    problems = Problems(
        targets,
        [int(s) for s in seeds],
        budget,
        tuple(model.noise_shape),
        model.schedule(steps),
        sampler,
        nfe_per_call(model, guidance, nfe_convention),
        device,
    )
    state = algorithm.init(problems)
    run = _Run(
        model,
        verifier,
        Accountant([budget] * len(targets), nfe_convention),
        model.encode(targets),  # encoded once per target, reused for every candidate
        problems,
        guidance,
        getattr(verifier, "preview_sigma", None),
        algorithm.name,
        max_batch,
        whole,
        _Replay.open(cache, model, verifier) if cache is not None and not whole else None,
    )
    table = CandidateTable(problems, getattr(model, "latent_shape", None))
    best = _Best(len(targets))
    stats = RunStats()
    images: list[dict[int, torch.Tensor]] = [{} for _ in targets]
    next_index = torch.zeros(len(targets), dtype=torch.int64)

    while batches := algorithm.ask(state):
        run.plan(batches)
        indices = [_assign(jobs.owner, next_index) for jobs in batches]
        outcomes = []
        for jobs, index in zip(batches, indices):
            out = run.run(jobs, index)
            outcomes.append(out)
            best.update(jobs, out, problems)
            if progress:
                progress(int(run.acct.nfe.sum()), budget * len(targets), float(best.score.max()))
        for jobs, out in zip(batches, outcomes):  # recorded before ``tell``: what was run, whatever tell does next
            table.add(jobs, out)
            if keep_images and jobs.final:
                for i, k, image in zip(jobs.owner.tolist(), out.index.tolist(), out.image.detach().unbind(0)):
                    images[i][k] = image
            stats.candidates += len(jobs)
        algorithm.tell(state, outcomes)
        stats.rounds += 1

    acct = run.acct
    nfe = acct.nfe.tolist()  # the search's NFEs (the final render's are outside the budget)
    final_scores: list[float | None] = [None] * len(targets)
    if final_sigmas is not None:
        final_scores = _render_finals(run, best, final_sigmas)
    wall = time.perf_counter() - started
    timed = float(sum(v.sum() for v in acct.seconds.values()))
    best_score, best_index, nans = best.score.tolist(), best.index.tolist(), best.nans.tolist()
    calls = acct.verifier_calls.tolist()
    nfe_final = [total - search for total, search in zip(acct.nfe.tolist(), nfe)]
    # each search's best image and noise: rows of one copy of the stacks to the CPU (none when already there)
    best_images = [None] * len(targets) if best.image is None else list(best.image.cpu().unbind(0))
    best_noises = [None] * len(targets) if best.noise is None else list(best.noise.cpu().unbind(0))
    results = []
    ledgers = acct.ledgers(max(wall - timed, 0.0) / len(targets))  # time outside calls, shared equally
    for i, (t, s) in enumerate(zip(targets, seeds)):
        found = best_index[i] >= 0
        result = SearchResult(
            t,
            int(s),
            budget,
            nfe[i],
            calls[i],
            best_score[i],
            best_index[i],
            best_images[i] if found else None,
            best_noises[i] if found else None,
            nans[i],
            Candidates(table, i),
            images[i],
        )
        result.ledger = ledgers[i]
        result.nfe_final, result.final_score = nfe_final[i], final_scores[i]
        results.append(result)
    stats.wall_seconds = time.perf_counter() - started
    stats.denoise_seconds, stats.verify_seconds = acct.denoise_seconds, acct.verify_seconds
    stats.backward_seconds, stats.denoise_calls = acct.backward_seconds, acct.denoise_calls
    stats.decode_seconds = acct.decode_seconds
    stats.draw_seconds = problems.draw_seconds
    return SearchRun(results, stats)


def check_final_steps(final_steps, algorithm, sampler: str | None, *, whole: bool = False) -> int | None:
    """``final_steps`` (None: no final render), refused as a ``UserError`` where a render cannot stand for the search.

    ``algorithm``: a registry name or an algorithm; it must declare ``renders_from_noise`` (its best candidate is
    a full trajectory from its noise). The sampler must be deterministic (a stochastic trajectory is not a
    function of its noise alone) and the model must run steps (``whole``: a whole-trajectory pipeline cannot).
    ``algorithm`` or ``sampler`` None: not checked here (a sweep checks its one sampler once, then each algorithm).
    Cheap: every entrance calls it before any work (the schedule's start is checked by ``final_schedule``).
    """
    if final_steps is None:
        return None
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.checks import check_steps

    check_steps(final_steps, what="final steps")
    name = algorithm if isinstance(algorithm, str) else getattr(algorithm, "name", type(algorithm).__name__)
    declared = ALGORITHMS.get(algorithm) if isinstance(algorithm, str) else algorithm
    if algorithm is not None and getattr(declared, "renders_from_noise", False) is not True:
        accepted = [n for n, factory in ALGORITHMS.items() if getattr(factory, "renders_from_noise", False) is True]
        raise UserError(
            f"final steps {final_steps}: algorithm {name!r} does not end in a full trajectory from a starting noise, "
            f"so its best noise cannot be denoised again; accepted with final steps: {', '.join(accepted)}"
        )
    if sampler is not None and get_sampler(sampler).stochastic:
        from noisesearch.samplers import SAMPLERS

        accepted = [n for n, s in SAMPLERS.items() if not s.stochastic]
        raise UserError(
            f"final steps {final_steps}: sampler {sampler!r} is stochastic, so a noise does not fix its sample; "
            f"accepted with final steps: {', '.join(accepted)}"
        )
    if whole:
        raise UserError(
            f"final steps {final_steps}: a whole-trajectory (generic) pipeline runs only full candidates at the "
            "search's steps; use a step-level adapter (see `noisesearch list`) or leave out final steps"
        )
    return final_steps


def final_schedule(model, steps: int, final_steps: int) -> tuple[float, ...]:
    """The model's schedule of ``final_steps`` steps; a ``UserError`` if it starts at another sigma than the
    search's schedule of ``steps`` (the best starting noise is reused as the render's start state)."""
    sigmas = tuple(float(s) for s in model.schedule(final_steps))
    start = float(model.schedule(steps)[0])
    if sigmas[0] != start:
        raise UserError(
            f"final steps {final_steps}: {model.name}'s schedule of {final_steps} steps starts at sigma {sigmas[0]:.6g}, "
            f"its schedule of {steps} steps at {start:.6g}, so the searched noise cannot start the render; "
            f"accepted: final steps whose schedule starts where the search's does (e.g. {steps})"
        )
    return sigmas


def _render_finals(run: _Run, best: _Best, sigmas: tuple[float, ...]) -> list[float | None]:
    """Denoise each search's best starting noise again along ``sigmas``, score it, and make it the best image.

    One batch of every search that has a best candidate (run in chunks of ``max_batch`` through ``_Run``, so the
    accountant counts every NFE, decode and verifier call); each such search's NFE limit is first raised by the
    render's exact cost (``Accountant.extend``), outside its budget. Returns each search's final score (None
    without a render, or for a failed score)."""
    scores: list[float | None] = [None] * best.n
    found = (best.index >= 0).nonzero().flatten().cpu()
    if not len(found) or best.noise is None or best.image is None:
        return scores
    jobs = Jobs(found, best.noise[found.to(best.noise.device)], sigmas)
    run.acct.extend(found, run.problems.job_cost(jobs))
    out = run.run(jobs, torch.full((len(found),), -1, dtype=torch.int64))
    best.image[found.to(best.image.device)] = out.image.detach().to(best.image.device, best.image.dtype)
    for i, score in zip(found.tolist(), out.score.tolist()):
        scores[i] = None if math.isnan(score) else score
    return scores


def _assign(owner: torch.Tensor, next_index: torch.Tensor) -> torch.Tensor:
    """Candidate indices (n,) of a batch's rows: each search's next numbers, in row order (advances ``next_index``)."""
    counts = torch.bincount(owner, minlength=len(next_index))  # (S,)
    order = torch.sort(owner, stable=True).indices  # (n,) rows grouped by search, in row order
    starts = torch.cumsum(counts, 0) - counts  # (S,) first sorted position of each search
    rank = torch.empty_like(owner)
    rank[order] = torch.arange(len(owner)) - starts[owner[order]]
    index = next_index[owner] + rank
    next_index += counts
    return index


@dataclass
class _Run:
    """What every batch of a run needs: the run state that ``run_search`` builds once."""

    model: Model
    verifier: Any
    acct: Accountant
    cond: Any  # every target's condition, rows selected per batch
    problems: Problems
    guidance: float
    preview_sigma: float | None
    algorithm: str  # its name, for errors
    max_batch: int
    whole: bool
    replay: _Replay | None

    def plan(self, batches: list[Jobs]) -> None:
        """Refuse a round that would take any search past its budget, before any work."""
        planned = torch.zeros(len(self.problems), dtype=torch.int64)
        for jobs in batches:
            planned += torch.bincount(jobs.owner, minlength=len(planned)) * self.problems.job_cost(jobs)
        left = self.acct.budgets - self.acct.nfe
        over = (planned > left).nonzero().flatten()
        if len(over):
            i = int(over[0])
            raise BudgetExceeded(
                f"algorithm {self.algorithm!r} asked for {int(planned[i])} NFEs in search {i} "
                f"with {int(left[i])} of {self.problems.budget} left"
            )

    def start_state(self, jobs: Jobs, x: torch.Tensor) -> torch.Tensor:
        """The model's state at ``jobs.sigmas[0]``: a noise is scaled by ``model.start_scale`` (VP models)."""
        start_scale = getattr(self.model, "start_scale", None)
        if start_scale is not None and self.problems.starts_at_noise(jobs):
            return x * start_scale(jobs.sigmas[0])
        return x

    def run(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """Outcomes of ``jobs``, run in chunks of at most ``max_batch`` rows; a score that is not a finite number
        (NaN, +inf, -inf) comes back as NaN, a failed score (``failed_as_nan``): best, records and algorithms
        all see the same failed score."""
        out = self._chunks(jobs, index)
        out.score = failed_as_nan(out.score)
        return out

    def _chunks(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        n = len(jobs)
        if n <= self.max_batch:
            return self._chunk(jobs, index)
        parts = [
            self._chunk(jobs.rows(slice(a, a + self.max_batch)), index[a : a + self.max_batch])
            for a in range(0, n, self.max_batch)
        ]
        grads = [p.grad for p in parts]
        return Outcomes(
            jobs,
            torch.cat([p.x for p in parts]),
            torch.cat([p.denoised for p in parts]),
            torch.cat([p.image for p in parts]),
            torch.cat([p.score for p in parts]),
            parts[0].nfe,
            index,
            None if grads[0] is None else torch.cat(grads),  # type: ignore[arg-type]
        )

    def _chunk(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        if self.whole:
            return self.run_whole(jobs, index)
        if self.replay is not None and self.replay.takes(jobs, self.problems):
            return self.replay.run(self, jobs, index)
        return self.compute(jobs, index)

    def targets(self, owner: torch.Tensor) -> list:
        targets = self.problems.targets
        return [targets[i] for i in owner.tolist()]

    def compute(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """Integrate one batch of jobs, decode and score it."""
        problems, acct, model = self.problems, self.acct, self.model
        sampler = get_sampler(jobs.sampler or problems.sampler)
        if sampler.stochastic != (jobs.noises is not None):
            need = "needs per-step noises" if sampler.stochastic else "is deterministic and takes no noises"
            raise ValueError(f"algorithm {self.algorithm!r} gave a job whose sampler {need}")
        owners = jobs.owner
        extra = {"noises": jobs.noises.transpose(0, 1)} if jobs.noises is not None else {}  # (n_steps, B, ...)
        preview_at = _preview_step(jobs.sigmas, self.preview_sigma)
        seen: dict[str, torch.Tensor] = {}

        def callback(step, sigma, x, denoised):
            seen["last"] = denoised
            if step == preview_at:
                seen["preview"] = denoised

        denoise = acct.denoiser(model, index_cond(self.cond, owners), owners, guidance=self.guidance, grad=jobs.grad)
        if jobs.denoised is not None:
            denoise = _first_call_known(denoise, jobs.denoised)
        grad = None
        with torch.enable_grad() if jobs.grad else torch.no_grad():
            x = problems.start_states(jobs)
            x_start = x.detach().requires_grad_(True) if jobs.grad else x
            x_end = sampler.fn(denoise, self.start_state(jobs, x_start), jobs.sigmas, callback=callback, **extra)
            if jobs.final:
                end_denoised = x_end
            elif jobs.score_end:
                end_denoised = denoise(x_end, jobs.sigmas[-1])
            else:
                end_denoised = seen["last"]
            images = acct.decode(model, end_denoised, owners)  # (B, C, H, W)
            # a job too short to reach the preview sigma shows its end state's x0-prediction instead
            previews = None
            if self.preview_sigma is not None:
                previews = acct.decode(model, seen.get("preview", end_denoised), owners)
            targets = self.targets(owners)
            scores = acct.verify(self.verifier, images, targets, owners, previews=previews, grad=jobs.grad)
            if jobs.grad:
                started = clock()
                (grad,) = torch.autograd.grad(
                    torch.where(torch.isfinite(scores), scores, 0.0).sum(), x_start
                )  # rows apart
                acct.charge_backward_seconds(owners, clock() - started)
                acct.charge_backward(owners, problems.job_costs(jobs)[1])
        return Outcomes(
            jobs,
            x_end.detach(),
            end_denoised.detach(),
            images.detach(),
            scores.detach(),
            problems.job_cost(jobs),
            index,
            grad,
        )

    def run_whole(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """One batch of full candidates through a whole-trajectory model, scored."""
        problems = self.problems
        step_level = jobs.sampler not in (None, "euler") or jobs.noises is not None or jobs.denoised is not None
        if step_level or jobs.score_end or jobs.grad or jobs.sigmas != problems.sigmas:
            raise UserError(
                f"algorithm {self.algorithm!r} asked for a step-level job; {self.model.name} runs only full candidates"
            )
        owners = jobs.owner
        cost = problems.job_cost(jobs)
        targets = self.targets(owners)
        run = self.acct.trajectories(self.model, owners, cost, steps=problems.steps, guidance=self.guidance)
        images = run(problems.start_states(jobs), targets)  # (B, C, H, W), or (B, C, F, H, W) for video
        scores = self.acct.verify(self.verifier, images, targets, owners)
        return Outcomes(jobs, images, images, images, scores, cost, index)


@dataclass
class _Replay:
    """The driver's side of the replay cache (``noisesearch.cache``): runs a batch of cacheable jobs."""

    cache: Any
    model_id: str
    verifier_id: str | None

    @classmethod
    def open(cls, cache, model, verifier) -> _Replay | None:
        from noisesearch.cache import model_identity, verifier_identity

        model_id = model_identity(model)
        return None if model_id is None else cls(cache, model_id, verifier_identity(verifier))

    @staticmethod
    def rows_per_nfe(run: _Run) -> int:
        """Model rows per NFE of the run: the cache stores FLOPs per model row, whatever the NFE convention."""
        return rows_per_nfe(run.model, run.guidance, run.acct.nfe_convention)

    def takes(self, jobs: Jobs, problems: Problems) -> bool:
        from noisesearch.cache import cacheable

        return cacheable(jobs, problems)

    def run(self, run: _Run, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """``_Run.compute`` for cacheable jobs: replay the hits, compute and store the misses, score what
        has no cached score (every row for a verifier without an identity, in one call as uncached)."""
        from noisesearch import ledger
        from noisesearch.cache import job_keys

        problems, acct = run.problems, run.acct
        preview_sigma = run.preview_sigma
        preview_at = _preview_step(jobs.sigmas, preview_sigma)
        keys = job_keys(self.model_id, jobs, problems, run.guidance)
        hits = self.cache.get_rows(keys, preview_at)
        owners = jobs.owner
        cost = problems.job_cost(jobs)
        decodes = 1 + (preview_sigma is not None)
        n = len(jobs)
        hit = [] if hits is None else hits.rows
        taken = set(hit)
        miss = [r for r in range(n) if r not in taken]
        computed = None
        if miss:
            computed = self._compute_unscored(run, jobs.rows(miss) if hit else jobs, preview_at)
            self.cache.put(
                [keys[r] for r in miss],
                computed["x"],
                computed["image"],
                {} if computed["preview"] is None else {f"preview@{preview_at}": computed["preview"]},
                flops_per_nfe=None if acct.flops_per_nfe is None else acct.flops_per_nfe / self.rows_per_nfe(run),
                decode_flops=ledger.cached(run.model, ("decode", tuple(computed["x"].shape[1:]))),
            )
        if hits is None:
            assert computed is not None
            x, image_all, preview_all = computed["x"], computed["image"], computed["preview"]
        else:
            device = problems.device
            got = {"x": hits.x.to(device), "image": hits.image.to(device), "preview": None}
            if preview_sigma is not None:
                assert hits.preview is not None
                got["preview"] = hits.preview.to(device)
            if computed is None:  # every row replayed
                x, image_all, preview_all = got["x"], got["image"], got["preview"]
            else:  # the two parts put back in row order
                at_hit = torch.tensor(hit, dtype=torch.int64, device=device)
                at_miss = torch.tensor(miss, dtype=torch.int64, device=device)

                def merge(part: str) -> torch.Tensor:
                    a, b = got[part], computed[part]
                    out = torch.empty((n, *b.shape[1:]), dtype=b.dtype, device=b.device)
                    out[at_hit] = a.to(b.dtype)
                    out[at_miss] = b
                    return out

                x, image_all = merge("x"), merge("image")
                preview_all = merge("preview") if preview_sigma is not None else None
            acct.replay(
                owners[torch.tensor(hit)],
                cost,
                decodes=decodes,
                decode_flops=hits.decode_flops,
                flops_per_nfe=None if hits.flops_per_nfe is None else hits.flops_per_nfe * self.rows_per_nfe(run),
            )
        scores: list[Any] = [None] * n  # float per row once known
        if self.verifier_id is not None and hit:
            stored = dict(zip(hit, self.cache.scores([keys[r] for r in hit], self.verifier_id)))
            known = [r for r in hit if stored[r] is not None]
            for r in known:
                scores[r] = stored[r]["score"]
            if known:
                acct.replay_scores(owners[torch.tensor(known)], [stored[r]["verify_flops"] for r in known])
        need = [r for r in range(n) if scores[r] is None]
        if len(need) == n:  # every row scored in one call, as without the cache
            score = self._score(run, keys, need, image_all, preview_all, owners)
        else:
            if need:
                values = self._score(run, keys, need, image_all, preview_all, owners).tolist()
                for r, value in zip(need, values):
                    scores[r] = value
            score = torch.tensor(scores, dtype=torch.float32, device=image_all.device)
        return Outcomes(jobs, x, x, image_all, score, cost, index)

    def _score(self, run: _Run, keys: list[str], need: list[int], images, previews, owners) -> torch.Tensor:
        """Score rows ``need`` of a batch in one verifier call and store their scores."""
        from noisesearch import ledger

        whole = len(need) == len(images)
        pick = torch.tensor(need, dtype=torch.int64)
        batch = images if whole else images[pick.to(images.device)]
        shown = None if previews is None else (previews if whole else previews[pick.to(previews.device)])
        scored = owners if whole else owners[pick]
        with torch.no_grad():  # a cacheable job takes no gradient
            got = run.acct.verify(run.verifier, batch, run.targets(scored), scored, previews=shown)
        if self.verifier_id is not None:
            key = ("verify", tuple(batch.shape[1:]), None if shown is None else tuple(shown.shape[1:]), False)
            flops = None if getattr(run.verifier, "usage", None) is not None else ledger.cached(run.verifier, key)
            self.cache.put_scores([keys[r] for r in need], self.verifier_id, got.tolist(), flops)
        return got

    @staticmethod
    def _compute_unscored(run: _Run, jobs: Jobs, preview_at: int | None) -> dict:
        """Integrate and decode rows without scoring them (their scores are taken with the replayed rows')."""
        sampler = get_sampler(jobs.sampler or run.problems.sampler)
        seen: dict[str, torch.Tensor] = {}

        def callback(step, sigma, x, denoised):
            if step == preview_at:
                seen["preview"] = denoised

        denoise = run.acct.denoiser(run.model, index_cond(run.cond, jobs.owner), jobs.owner, guidance=run.guidance)
        with torch.no_grad():
            x_out = sampler.fn(
                denoise, run.start_state(jobs, run.problems.start_states(jobs)), jobs.sigmas, callback=callback
            )
            image = run.acct.decode(run.model, x_out, jobs.owner)
            preview = None
            if run.preview_sigma is not None:
                preview = run.acct.decode(run.model, seen.get("preview", x_out), jobs.owner)
        return {"x": x_out, "image": image, "preview": preview}


def check_whole_trajectory(model, algorithm, sampler: str, verifier) -> None:
    """Refuse what a whole-trajectory model cannot run: step-level algorithms, other samplers, x0-previews."""
    from noisesearch.models import PIPELINES
    from noisesearch.models.generic import WHOLE_TRAJECTORY_ALGORITHMS

    if algorithm.name not in WHOLE_TRAJECTORY_ALGORITHMS:
        raise UserError(
            f"algorithm {algorithm.name!r} needs step-level control, which {model.name} (generic adapter) lacks; "
            f"accepted here: {', '.join(WHOLE_TRAJECTORY_ALGORITHMS)}; step-level adapters: {', '.join(PIPELINES)}"
        )
    if sampler != "euler":
        raise UserError(f"sampler {sampler!r} cannot be chosen for {model.name}: the pipeline's own scheduler runs")
    if getattr(verifier, "preview_sigma", None) is not None:
        raise UserError(f"verifier {verifier.name!r} needs x0-previews, which {model.name} (generic adapter) has not")


def _first_call_known(denoise, known: torch.Tensor):
    """A denoiser whose first call returns ``known`` (already computed and paid for) without a new call."""
    state = {"first": True}

    def wrapped(x, sigma):
        if state.pop("first", False):
            return known
        return denoise(x, sigma)

    return wrapped
