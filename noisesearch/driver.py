"""The one driver loop: batching, budgeting, stopping and recording for every search algorithm.

``run_search`` runs one independent search per target, all in lock step, and stands for this loop::

    states = [algorithm.init(problem_i) for each target i]
    while any search is active:
        jobs = {i: algorithm.ask(states[i]) for each active i}     # empty list: search i is done
        refuse the round if any search's jobs cost more than its NFEs left  (BudgetExceeded)
        for each group of jobs that share a sigma schedule, in batches of at most max_batch rows
        (rows from different searches mixed):
            x = sampler(accountant.denoiser(...), stacked starting states, sigmas)
            scores = accountant.verify(verifier, decode(x or last x0-prediction), targets)
        algorithm.tell(states[i], outcomes of i, in job order) for each i
        record every candidate; keep each search's best finished candidate (NaN never ranks)

Candidates are never generated one by one: on a CPU a batch of 32 is over ten times faster than
32 single calls, and on a GPU the gap is larger.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from noisesearch.accounting import Accountant
from noisesearch.algorithms.base import Job, Outcome, Problem, SearchAlgorithm, noise_hash, rank_key
from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models.base import Model, index_cond
from noisesearch.samplers import get_sampler
from noisesearch.verifiers.base import Verifier
from noisesearch.verifiers.video import for_model as frames_of


@dataclass
class SearchResult:
    """The answer of one search and how it was reached.

    ``best_image`` (C, H, W) in [0, 1] and ``best_noise`` (*noise_shape, the starting state of the
    best job) are None only if no finished candidate got a real score. ``candidates`` holds one
    flat dict per evaluated job, in evaluation order; ``images`` maps candidate index -> image
    (C, H, W) for every finished candidate when ``run_search(keep_images=True)``.
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
    candidates: list[dict] = field(default_factory=list)
    images: dict[int, torch.Tensor] = field(default_factory=dict)  # finished candidates' images, if kept
    record: dict = field(default_factory=dict)  # the JSON-ready record (``noisesearch.search`` fills it)
    ledger: dict = field(default_factory=dict)  # its costs, flat (``Accountant.ledger``): FLOPs, decodes, seconds


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
    stats: dict | None = None,
    keep_images: bool = False,
    cache=None,
) -> list[SearchResult]:
    """Run one search per target within ``budget`` NFEs each (see the module docstring).

    Args:
        targets: one target per search (class ids or prompts); ``seeds``: one seed per search.
        budget: hard NFE limit per search; ``steps``: sampling steps of a full candidate.
        sampler: a name in ``noisesearch.samplers.SAMPLERS``; ``guidance``: CFG scale
            (default: the model's).
        max_batch: most rows in one denoiser batch.
        progress: called after every batch with (NFEs spent, NFEs budgeted, best score so far).
        stats: if given, filled with ``wall_seconds``, ``denoise_seconds``, ``verify_seconds`` and
            ``backward_seconds`` (time inside the model, the verifier and autograd's backward pass,
            measured at the accountant) and ``denoise_calls``.
        keep_images: keep every finished candidate's image in ``SearchResult.images`` (memory!).
        cache: a ``noisesearch.cache.CandidateCache`` (or None): cacheable jobs found there are
            replayed (charged to the budget as if computed, counted as ``replayed`` in the ledger),
            the others computed and stored.

    Returns:
        One ``SearchResult`` per target, in order.
    """
    if len(seeds) != len(targets):
        raise ValueError(f"{len(targets)} targets but {len(seeds)} seeds")
    if not isinstance(budget, int) or budget < 1:
        raise UserError(f"budget must be a positive integer number of NFEs, got {budget!r}")
    if not isinstance(max_batch, int) or max_batch < 1:
        raise UserError(f"max batch must be a positive integer, got {max_batch!r}")
    started = time.perf_counter()
    get_sampler(sampler)  # a clear error for an unknown name before any work
    verifier = frames_of(verifier, model)  # a video model's image verifier scores frames (verifiers/video.py)
    whole = getattr(model, "whole_trajectory", False)  # a pipeline run whole (models.generic)
    if whole:
        check_whole_trajectory(model, algorithm, sampler, verifier)
    guidance = model.default_guidance if guidance is None else float(guidance)
    sigmas = model.schedule(steps)
    targets = [model.check_target(t) for t in targets]
    cond_all = model.encode(targets)  # encoded once per target, reused for every candidate
    problems = [
        Problem(t, int(s), budget, tuple(model.noise_shape), sigmas, sampler, model.nfe_per_call(guidance))
        for t, s in zip(targets, seeds)
    ]
    states = [algorithm.init(p) for p in problems]
    acct = Accountant([budget] * len(targets))
    results = [SearchResult(t, int(s), budget, 0, 0, -math.inf, -1, None, None, 0) for t, s in zip(targets, seeds)]
    active = list(range(len(targets)))
    preview_sigma = getattr(verifier, "preview_sigma", None)
    replay = _Replay.open(cache, model, verifier) if cache is not None and not whole else None

    while active:
        asked: dict[int, list[Job]] = {}
        for i in active:
            jobs = algorithm.ask(states[i])
            if jobs:
                asked[i] = jobs
                planned = sum(problems[i].job_cost(j) for j in jobs)
                if planned > acct.left(i):
                    raise BudgetExceeded(
                        f"algorithm {algorithm.name!r} asked for {planned} NFEs in search {i} "
                        f"with {acct.left(i)} of {budget} left"
                    )
        active = list(asked)
        if not active:
            break
        outcomes: dict[int, list[Outcome | None]] = {i: [None] * len(asked[i]) for i in active}
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for i in active:
            for k, job in enumerate(asked[i]):
                groups.setdefault(job.group_key(), []).append((i, k))
        for members in groups.values():
            for start in range(0, len(members), max_batch):
                chunk = members[start : start + max_batch]
                run_batch = _run_whole if whole else _run_batch
                if replay is not None and replay.takes(asked[chunk[0][0]][chunk[0][1]], problems[chunk[0][0]]):
                    run_batch = replay.run_batch
                run_batch(
                    model,
                    verifier,
                    acct,
                    cond_all,
                    problems,
                    asked,
                    outcomes,
                    chunk,
                    guidance,
                    preview_sigma,
                    results,
                    algorithm.name,
                )
                if progress:
                    best = max((r.best_score for r in results), default=-math.inf)
                    progress(int(acct.nfe.sum()), budget * len(targets), best)
        for i in active:
            filed = [o for o in outcomes[i] if o is not None]
            assert len(filed) == len(asked[i]), "every asked job gets exactly one outcome"
            algorithm.tell(states[i], filed)
            _record(results[i], filed, problems[i].sigmas[0], keep_images, getattr(model, "latent_shape", None))

    wall = time.perf_counter() - started
    timed = float(sum(v.sum() for v in acct.seconds.values()))
    for i, r in enumerate(results):
        r.nfe_used, r.verifier_calls = int(acct.nfe[i]), int(acct.verifier_calls[i])
        r.ledger = acct.ledger(i, max(wall - timed, 0.0) / len(results))  # time outside calls, shared equally
    if stats is not None:
        stats.update(
            wall_seconds=wall,
            denoise_seconds=acct.denoise_seconds,
            verify_seconds=acct.verify_seconds,
            backward_seconds=acct.backward_seconds,
            denoise_calls=acct.denoise_calls,
        )
    return results


def _run_batch(
    model, verifier, acct, cond_all, problems, asked, outcomes, chunk, guidance, preview_sigma, results, algorithm_name
):
    """Integrate one batch of jobs that share a group key, score them, and file their outcomes."""
    jobs = [asked[i][k] for i, k in chunk]
    first = jobs[0]
    sigmas = first.sigmas
    sampler = get_sampler(first.sampler or problems[chunk[0][0]].sampler)
    if sampler.stochastic != (first.noises is not None):
        need = "needs per-step noises" if sampler.stochastic else "is deterministic and takes no noises"
        raise ValueError(f"algorithm {algorithm_name!r} gave a job whose sampler {need}")
    owners = torch.tensor([i for i, _ in chunk], dtype=torch.int64)
    x_start = torch.stack([j.x for j in jobs])  # (B, *noise_shape)
    extra = {"noises": torch.stack([j.noises for j in jobs], dim=1)} if sampler.stochastic else {}  # (n, B, ...)
    preview_at = _preview_step(sigmas, preview_sigma)
    seen: dict[str, torch.Tensor] = {}

    def callback(step, sigma, x, denoised):
        seen["last"] = denoised
        if step == preview_at:
            seen["preview"] = denoised

    denoise = acct.denoiser(model, index_cond(cond_all, owners), owners, guidance=guidance, grad=first.grad)
    if first.denoised is not None:
        denoise = _first_call_known(denoise, torch.stack([j.denoised for j in jobs]))
    with torch.enable_grad() if first.grad else torch.no_grad():
        if first.grad:
            x_start.requires_grad_(True)
        x_in = x_start
        start_scale = getattr(model, "start_scale", None)
        if start_scale is not None and sigmas[0] == problems[chunk[0][0]].sigmas[0]:
            x_in = x_start * start_scale(sigmas[0])  # a noise at the schedule's start -> the model's state there
        x_end = sampler.fn(denoise, x_in, sigmas, callback=callback, **extra)  # (B, *noise_shape)
        if first.final:
            end_denoised = x_end
        elif first.score_end:
            end_denoised = denoise(x_end, sigmas[-1])
        else:
            end_denoised = seen["last"]
        images = acct.decode(model, end_denoised, owners)  # (B, C, H, W)
        # a job too short to reach the preview sigma shows its end state's x0-prediction instead
        previews = acct.decode(model, seen.get("preview", end_denoised), owners) if preview_sigma is not None else None
        targets = [problems[i].target for i, _ in chunk]
        scores = acct.verify(verifier, images, targets, owners, previews=previews, grad=first.grad)
        grads = [None] * len(jobs)
        if first.grad:
            started = time.perf_counter()
            (g,) = torch.autograd.grad(scores.nan_to_num(0.0).sum(), x_start)  # rows are independent
            acct.charge_backward_seconds(owners, time.perf_counter() - started)
            acct.charge_backward(owners, problems[chunk[0][0]].job_costs(first)[1])
    cost = problems[chunk[0][0]].job_cost(first)  # same rules for every search of a run
    rows = zip(
        chunk,
        x_end.detach().unbind(0),
        end_denoised.detach().unbind(0),
        images.detach().unbind(0),
        scores.detach().tolist(),
        (g.unbind(0) if first.grad else grads),
    )
    for (i, k), x, denoised, image, score, grad in rows:
        outcomes[i][k] = Outcome(asked[i][k], x, denoised, image, score, cost, len(results[i].candidates) + k, grad)


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

    def takes(self, job: Job, problem: Problem) -> bool:
        from noisesearch.cache import cacheable

        return cacheable(job, problem)

    def run_batch(
        self,
        model,
        verifier,
        acct,
        cond_all,
        problems,
        asked,
        outcomes,
        chunk,
        guidance,
        preview_sigma,
        results,
        algorithm_name,
    ):
        """``_run_batch`` for cacheable jobs: replay the hits, compute and store the misses, score what
        has no cached score (every row for a verifier without an identity, in one call as uncached)."""
        from noisesearch import ledger
        from noisesearch.cache import job_keys

        jobs = [asked[i][k] for i, k in chunk]
        problem = problems[chunk[0][0]]
        sigmas = jobs[0].sigmas
        preview_at = _preview_step(sigmas, preview_sigma)
        keys = job_keys(self.model_id, jobs, [problems[i] for i, _ in chunk], guidance)
        entries = self.cache.get(keys, preview_at)
        owners = torch.tensor([i for i, _ in chunk], dtype=torch.int64)
        cost = problem.job_cost(jobs[0])
        decodes = 1 + (preview_sigma is not None)
        hit = [n for n, e in enumerate(entries) if e is not None]
        miss = [n for n, e in enumerate(entries) if e is None]
        x_end = [None] * len(jobs)  # per row: end state, image, preview image (replayed or computed)
        images = [None] * len(jobs)
        previews = [None] * len(jobs)
        if miss:
            sampler = get_sampler(jobs[0].sampler or problem.sampler)
            sub = owners if len(miss) == len(jobs) else owners[miss]  # (indexing by a list costs per row)
            seen = {}

            def callback(step, sigma, x, denoised):
                if step == preview_at:
                    seen["preview"] = denoised

            denoise = acct.denoiser(model, index_cond(cond_all, sub), sub, guidance=guidance)
            with torch.no_grad():
                x_in = torch.stack([jobs[n].x for n in miss])  # (b, *noise_shape)
                start_scale = getattr(model, "start_scale", None)
                if start_scale is not None:
                    x_in = x_in * start_scale(sigmas[0])
                x_out = sampler.fn(denoise, x_in, sigmas, callback=callback)  # (b, *noise_shape)
                computed = acct.decode(model, x_out, sub)
                shown = acct.decode(model, seen.get("preview", x_out), sub) if preview_sigma is not None else None
            shown_all = shown
            decode_flops = ledger.cached(model, ("decode", tuple(x_out.shape[1:])))
            rows = zip(
                miss, x_out.unbind(0), computed.unbind(0), shown.unbind(0) if shown is not None else [None] * len(miss)
            )
            for n, x, image, preview in rows:
                x_end[n], images[n], previews[n] = x, image, preview
            self.cache.put(
                [keys[n] for n in miss],
                x_out,
                computed,
                {} if shown is None else {f"preview@{preview_at}": shown},
                flops_per_nfe=acct.flops_per_nfe,
                decode_flops=decode_flops,
            )
        if hit:
            device = x_end[miss[0]].device if miss else jobs[0].x.device
            for n in hit:
                e = entries[n]
                x_end[n], images[n] = e["x"].to(device), e["image"].to(device)
                previews[n] = e["preview"].to(device) if preview_sigma is not None else None
            first = entries[hit[0]]
            acct.replay(
                owners[hit],
                cost,
                decodes=decodes,
                decode_flops=first["decode_flops"],
                flops_per_nfe=first["flops_per_nfe"],
            )
        scores = [None] * len(jobs)  # float per row once known
        if self.verifier_id is not None:
            stored = dict(zip(hit, self.cache.scores([keys[n] for n in hit], self.verifier_id)))
            known = [n for n in hit if stored[n] is not None]
            for n in known:
                scores[n] = stored[n]["score"]
            if known:
                acct.replay_scores(owners[known], [stored[n]["verify_flops"] for n in known])
        need = [n for n in range(len(jobs)) if scores[n] is None]
        if need:
            if not hit:  # nothing replayed: the computed batch as it is
                batch, shown = computed, shown_all
            else:
                batch = torch.stack([images[n] for n in need])
                shown = torch.stack([previews[n] for n in need]) if preview_sigma is not None else None
            targets = [problems[chunk[n][0]].target for n in need]
            with torch.no_grad():  # as in _run_batch: a cacheable job takes no gradient
                scored = owners if len(need) == len(jobs) else owners[need]
                got = acct.verify(verifier, batch, targets, scored, previews=shown).tolist()
            if self.verifier_id is not None:
                key = ("verify", tuple(batch.shape[1:]), None if shown is None else tuple(shown.shape[1:]), False)
                flops = None if getattr(verifier, "usage", None) is not None else ledger.cached(verifier, key)
                self.cache.put_scores([keys[n] for n in need], self.verifier_id, got, flops)
            for n, value in zip(need, got):
                scores[n] = value
        for n, (i, k) in enumerate(chunk):
            x = x_end[n]  # no graph: computed under no_grad, or a copy from the cache
            outcomes[i][k] = Outcome(
                asked[i][k], x, x, images[n], float(scores[n]), cost, len(results[i].candidates) + k
            )


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


def _run_whole(
    model, verifier, acct, cond_all, problems, asked, outcomes, chunk, guidance, preview_sigma, results, algorithm_name
):
    """Run one batch of full candidates through a whole-trajectory model, score them, and file their outcomes."""
    jobs = [asked[i][k] for i, k in chunk]
    problem = problems[chunk[0][0]]
    for job in jobs:
        step_level = job.sampler not in (None, "euler") or job.noises is not None or job.denoised is not None
        if step_level or job.score_end or job.grad or job.sigmas != problem.sigmas:
            raise UserError(
                f"algorithm {algorithm_name!r} asked for a step-level job; {model.name} runs only full candidates"
            )
    owners = torch.tensor([i for i, _ in chunk], dtype=torch.int64)
    cost = problem.job_cost(jobs[0])
    targets = [problems[i].target for i, _ in chunk]
    run = acct.trajectories(model, owners, cost, steps=len(problem.sigmas) - 1, guidance=guidance)
    images = run(torch.stack([j.x for j in jobs]), targets)  # (B, C, H, W), or (B, C, F, H, W) for video
    scores = acct.verify(verifier, images, targets, owners)
    for (i, k), image, score in zip(chunk, images.unbind(0), scores.tolist()):
        outcomes[i][k] = Outcome(asked[i][k], image, image, image, score, cost, len(results[i].candidates) + k)


def _first_call_known(denoise, known: torch.Tensor):
    """A denoiser whose first call returns ``known`` (already computed and paid for) without a new call."""
    state = {"first": True}

    def wrapped(x, sigma):
        if state.pop("first", False):
            return known
        return denoise(x, sigma)

    return wrapped


def _record(
    result: SearchResult,
    outcomes: list[Outcome],
    schedule_start: float,
    keep_images: bool,
    latent_shape: tuple[int, ...] | None = None,
) -> None:
    for o in outcomes:
        if keep_images and o.job.final:
            result.images[o.index] = o.image
        nan = math.isnan(o.score)
        result.nan_scores += nan
        # A seeded draw is identified by its seed, any other noise (a neighbour, an iterate) by a hash
        # of it; an intermediate state (paths, halving, SMC steps) by the algorithm's notes in "info".
        derived_noise = o.job.noise_seed is None and o.job.sigmas[0] == schedule_start
        result.candidates.append(
            {
                "index": o.index,
                "noise_seed": o.job.noise_seed,
                # torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(noise_seed)) is the draw
                **({"latent_shape": list(latent_shape)} if latent_shape and o.job.noise_seed is not None else {}),
                "noise_sha256": noise_hash(o.job.x) if derived_noise else None,
                "sigma_start": o.job.sigmas[0],
                "sigma_end": o.job.sigmas[-1],
                "nfe": o.nfe,
                "score": None if nan else o.score,
                **({"info": o.job.info} if o.job.info else {}),
            }
        )
        if o.job.final and not nan and rank_key(o.score) > result.best_score:
            result.best_score, result.best_index = o.score, o.index
            result.best_image, result.best_noise = o.image, o.job.x
