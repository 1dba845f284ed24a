"""The one driver loop: batching, budgeting, stopping and recording for every search algorithm.

``run_search`` runs one search per target, all in lock step, and is this loop::

    check_run(model, algorithm, sampler, verifier, final_steps)   # the one compatibility check, before any work
    state = algorithm.init(problems)                   # every search of the run
    executor = step-level (a StepModel), whole-trajectory (a WholeTrajectoryModel), or step-level behind the
               replay cache: chosen once, from the model's declared protocol (ModelInfo)
    while batches := algorithm.ask(state):             # a list of Jobs (columns, rows of any searches)
        executor.plan(batches)                         # refuse the round if any search's rows cost more than
                                                       # its NFEs left (BudgetExceeded), before any work
        give every row its candidate index within its search (in asked order)
        for each batch:
            outcomes = executor.run(jobs, index)       # chunks of at most max_batch rows: sample with
                                                       # accountant.denoiser, decode, accountant.verify
            keep each search's best finished candidate (a failed score, NaN or +-inf, never ranks)
        record the batches as columns
        algorithm.tell(state, outcomes)                # one Outcomes per Jobs, same rows
    render each search's best noise again (final_steps), then assemble the results

The executors are ``noisesearch.engine.executors`` (one ``Executor`` interface) and
``noisesearch.engine.replay`` (the replay cache, a decorator around the step-level executor); the records
and the best candidates are ``noisesearch.engine.table``.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from noisesearch.accounting import Accountant, check_nfe_convention, nfe_per_call
from noisesearch.algorithms.base import Jobs, Outcomes, Problems, SearchAlgorithm
from noisesearch.contracts import verifier_info
from noisesearch.engine.checks import check_final_steps, check_run, final_schedule
from noisesearch.engine.executors import Executor, RunContext, StepExecutor, WholeExecutor
from noisesearch.engine.replay import ReplayCache
from noisesearch.engine.results import RunStats, SearchResult, SearchRun
from noisesearch.engine.table import HASH_LATER_BYTES, Best, Candidates, CandidateTable
from noisesearch.errors import UserError
from noisesearch.keywords import bind, declare
from noisesearch.models.base import Model, ModelInfo, WholeTrajectoryModel, model_info
from noisesearch.verifiers.base import Verifier
from noisesearch.verifiers.video import for_model as frames_of

__all__ = [
    "HASH_LATER_BYTES",
    "CandidateTable",
    "Candidates",
    "RunStats",
    "SearchResult",
    "RunOptions",
    "SearchRun",
    "check_final_steps",
    "check_run",
    "final_schedule",
    "run_search",
]


def run_search(
    model: Model | WholeTrajectoryModel, verifier: Verifier, algorithm: SearchAlgorithm, targets: Sequence, **options
) -> SearchRun:
    """Run one search per target within ``budget`` NFEs each (see the module docstring).

    Args:
        targets: one target per search (class ids or prompts); ``seeds``: one seed per search.
        options: the keywords of ``RunOptions`` (``seeds``, ``budget``, ``steps`` required), below.
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
    spec = bind(RunOptions, options, where="run_search")
    _check_counts(targets, spec.seeds, spec.budget, spec.max_batch)
    started = time.perf_counter()
    run = _start(model, verifier, algorithm, targets, spec)
    tally = _Tally(run.ctx.problems, run.ctx.info.latent_shape, spec.keep_images, HASH_LATER_BYTES)
    tick = _ticker(spec.progress, run.ctx.acct, spec.budget * len(targets), tally)
    while batches := algorithm.ask(run.state):
        run.executor.plan(batches)
        indices = [_assign(jobs.owner, tally.next_index) for jobs in batches]
        outcomes = [tally.run(run.executor, jobs, index, tick) for jobs, index in zip(batches, indices)]
        tally.record(batches, outcomes)  # before ``tell``: what was run, whatever tell does next
        algorithm.tell(run.state, outcomes)
        tally.stats.rounds += 1
    nfe = run.ctx.acct.nfe.tolist()  # the search's NFEs (the final render's are outside the budget)
    return _assemble(run.ctx, tally, nfe, _render_finals(run, tally.best), started)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """``run_search``'s keywords, as it was given them (frozen: the problem description never changes)."""

    seeds: Sequence[int]
    budget: int
    steps: int
    sampler: str = "euler"
    guidance: float | None = None
    max_batch: int = 4096
    progress: Callable[[int, int, float], None] | None = None
    keep_images: bool = False
    cache: object = None
    final_steps: int | None = None
    nfe_convention: str = "rows"


declare(run_search, RunOptions)


def _ticker(progress, acct: Accountant, total: int, tally: _Tally) -> Callable[[], None] | None:
    """What reports progress after each batch: (NFEs spent, NFEs budgeted, best score so far); None without."""
    if progress is None:
        return None
    return lambda: progress(int(acct.nfe.sum()), total, tally.top())


@dataclass
class _Started:
    """A run ready to loop: its context, the algorithm's state, the executor chosen, the final render's schedule."""

    ctx: RunContext
    state: object
    executor: Executor
    final_sigmas: tuple[float, ...] | None


def _check_counts(targets: Sequence, seeds: Sequence[int], budget, max_batch) -> None:
    """Refuse mismatched seeds, a budget or a batch size that is not a positive integer."""
    if len(seeds) != len(targets):
        raise UserError(f"{len(targets)} targets but {len(seeds)} seeds")
    if not isinstance(budget, int) or budget < 1:
        raise UserError(f"budget must be a positive integer number of NFEs, got {budget!r}")
    if not isinstance(max_batch, int) or max_batch < 1:
        raise UserError(f"max batch must be a positive integer, got {max_batch!r}")


def _start(
    model: Model | WholeTrajectoryModel, verifier, algorithm: SearchAlgorithm, targets: Sequence, spec: RunOptions
) -> _Started:
    """Check the run's parts and options (before any work), build the run's problems, state and executor."""
    check_nfe_convention(spec.nfe_convention)
    check_run(model, algorithm, spec.sampler, verifier, spec.final_steps)
    info = model_info(model)  # read once: the protocol (and so the executor), start_scale, latent shape, ...
    verifier = frames_of(verifier, model)  # a video model's image verifier scores frames (verifiers/video.py)
    final_sigmas = None if spec.final_steps is None else final_schedule(model, spec.steps, spec.final_steps)
    guidance = model.default_guidance if spec.guidance is None else float(spec.guidance)
    checked = [model.check_target(t) for t in targets]
    problems = _problems(model, info, checked, spec, guidance)
    state = algorithm.init(problems)
    acct = Accountant([spec.budget] * len(checked), spec.nfe_convention)
    cond = model.encode(checked)  # encoded once per target, reused for every candidate
    preview_sigma = verifier_info(verifier).preview_sigma
    ctx = RunContext(model, verifier, acct, cond, problems, guidance, preview_sigma, algorithm.name, info)
    return _Started(ctx, state, _executor(ctx, spec), final_sigmas)


def _problems(model, info: ModelInfo, targets: list, spec: RunOptions, guidance: float) -> Problems:
    """The run's searches: one per (checked) target, sharing budget, schedule, sampler and cost per call."""
    device = torch.device(info.device or "cpu")
    nfe = nfe_per_call(model, guidance, spec.nfe_convention)
    seeds = [int(s) for s in spec.seeds]
    return Problems(
        targets, seeds, spec.budget, tuple(model.noise_shape), model.schedule(spec.steps), spec.sampler, nfe, device
    )


def _executor(ctx: RunContext, spec: RunOptions) -> Executor:
    """The run's one executor, chosen by the model's declared protocol: a ``WholeTrajectoryModel``'s pipeline run
    whole, else step-level (a ``StepModel``), behind the replay cache when there is one."""
    if ctx.info.whole_trajectory:
        return WholeExecutor(ctx, spec.max_batch)  # not cached (docs/ARCHITECTURE.md, the replay cache)
    step = StepExecutor(ctx, spec.max_batch)
    return step if spec.cache is None else ReplayCache.around(step, spec.cache)


class _Tally:
    """What the loop keeps across rounds: the records, each search's best, kept images, stats, next indices."""

    def __init__(self, problems: Problems, latent_shape, keep_images: bool, hash_later: int):
        self.problems, self.keep_images = problems, keep_images
        n = len(problems)
        self.table = CandidateTable(problems, latent_shape, hash_later)
        self.best = Best(n)
        self.stats = RunStats()
        self.images: list[dict[int, torch.Tensor]] = [{} for _ in range(n)]
        self.next_index = torch.zeros(n, dtype=torch.int64)

    def top(self) -> float:
        """The best score of any search so far (-inf before the first)."""
        return float(self.best.score.max())

    def run(self, executor: Executor, jobs: Jobs, index: torch.Tensor, tick: Callable[[], None] | None) -> Outcomes:
        """Run one batch and keep each search's best finished candidate."""
        out = executor.run(jobs, index)
        self.best.update(jobs, out, self.problems)
        if tick:
            tick()
        return out

    def record(self, batches: list[Jobs], outcomes: list[Outcomes]) -> None:
        """Add a round's batches to the records (and keep finished images when asked)."""
        for jobs, out in zip(batches, outcomes):
            self.table.add(jobs, out)
            if self.keep_images and jobs.final:
                for i, k, image in zip(jobs.owner.tolist(), out.index.tolist(), out.image.detach().unbind(0)):
                    self.images[i][k] = image
            self.stats.candidates += len(jobs)


def _render_finals(run: _Started, best: Best) -> list[float | None]:
    """Denoise each search's best starting noise again along the final schedule, score it, make it the best image.

    One batch of every search that has a best candidate (run by the run's executor in chunks of ``max_batch``, so
    the accountant counts every NFE, decode and verifier call); each such search's NFE limit is first raised by the
    render's exact cost (``Accountant.extend``), outside its budget. Returns each search's final score (None
    without a render, or for a failed score)."""
    scores: list[float | None] = [None] * best.n
    found = (best.index >= 0).nonzero().flatten().cpu()
    if run.final_sigmas is None or not len(found) or best.noise is None or best.image is None:
        return scores
    jobs = Jobs(found, best.noise[found.to(best.noise.device)], run.final_sigmas)
    run.ctx.acct.extend(found, run.ctx.problems.job_cost(jobs))
    out = run.executor.run(jobs, torch.full((len(found),), -1, dtype=torch.int64))
    best.image[found.to(best.image.device)] = out.image.detach().to(best.image.device, best.image.dtype)
    for i, score in zip(found.tolist(), out.score.tolist()):
        scores[i] = None if math.isnan(score) else score
    return scores


def _assemble(ctx: RunContext, tally: _Tally, nfe: list[int], final_scores: list, started: float) -> SearchRun:
    """The ``SearchRun``: each search's result (best, records, ledger, final render) and the run's stats."""
    acct, best, problems = ctx.acct, tally.best, ctx.problems
    wall = time.perf_counter() - started
    timed = float(sum(v.sum() for v in acct.seconds.values()))
    best_score, best_index, nans = best.score.tolist(), best.index.tolist(), best.nans.tolist()
    calls = acct.verifier_calls.tolist()
    nfe_final = [total - search for total, search in zip(acct.nfe.tolist(), nfe)]
    n = len(problems)
    # each search's best image and noise: rows of one copy of the stacks to the CPU (none when already there)
    best_images = [None] * n if best.image is None else list(best.image.cpu().unbind(0))
    best_noises = [None] * n if best.noise is None else list(best.noise.cpu().unbind(0))
    ledgers = acct.ledgers(max(wall - timed, 0.0) / n)  # time outside calls, shared equally
    results = []
    for i, (t, s) in enumerate(zip(problems.targets, problems.seeds)):
        found = best_index[i] >= 0
        result = SearchResult(
            t,
            s,
            problems.budget,
            nfe[i],
            calls[i],
            best_score[i],
            best_index[i],
            best_images[i] if found else None,
            best_noises[i] if found else None,
            nans[i],
            Candidates(tally.table, i),
            tally.images[i],
        )
        result.ledger = ledgers[i]
        result.nfe_final, result.final_score = nfe_final[i], final_scores[i]
        results.append(result)
    return SearchRun(results, _stats(tally.stats, acct, problems, started))


def _stats(stats: RunStats, acct: Accountant, problems: Problems, started: float) -> RunStats:
    """The run's stats, completed from the accountant and the problems' draws."""
    stats.wall_seconds = time.perf_counter() - started
    stats.denoise_seconds, stats.verify_seconds = acct.denoise_seconds, acct.verify_seconds
    stats.backward_seconds, stats.denoise_calls = acct.backward_seconds, acct.denoise_calls
    stats.decode_seconds = acct.decode_seconds
    stats.draw_seconds = problems.clock.seconds
    return stats


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
