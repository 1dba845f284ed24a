"""How a batch of jobs is run: one ``Executor`` interface, a step-level and a whole-trajectory implementation.

``run_search`` picks one executor per run and calls ``plan`` once per round (refuse an overspending round
before any work) and ``run`` once per batch (its rows in chunks of at most ``max_batch``; scores that are not
finite numbers come back as NaN). ``StepExecutor`` integrates through the sampler step by step, ``WholeExecutor``
calls a whole pipeline (``models/generic.py``); ``engine.replay.ReplayCache`` wraps a step executor with the
replay cache. What every batch needs (model, verifier, accountant, conditions, ...) is the run's ``RunContext``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import torch

from noisesearch.accounting import Accountant, clock
from noisesearch.algorithms.base import Jobs, Outcomes, Problems, failed_as_nan
from noisesearch.contracts import ModelInfo
from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models.base import Model, WholeTrajectoryModel, index_cond
from noisesearch.samplers import get_sampler


class Executor(Protocol):
    """Runs the batches of a run's rounds (see the module docstring)."""

    def plan(self, batches: list[Jobs]) -> None:
        """Refuse a round that would take any search past its budget, before any work (``BudgetExceeded``)."""
        ...

    def run(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """Outcomes of ``jobs`` (rows numbered ``index`` within their searches), failed scores as NaN."""
        ...


@dataclass
class RunContext:
    """What every batch of a run needs: the run state that ``run_search`` builds once."""

    model: Model | WholeTrajectoryModel  # which one: ``info.whole_trajectory``, and so the executor
    verifier: Any
    acct: Accountant
    cond: Any  # every target's condition, rows selected per batch
    problems: Problems
    guidance: float
    preview_sigma: float | None
    algorithm: str  # its name, for errors
    info: ModelInfo  # the model's declared capabilities, read once per run

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
        """The model's state at ``jobs.sigmas[0]``: a noise is scaled by the declared ``start_scale`` (VP models)."""
        start_scale = self.info.start_scale
        if start_scale is not None and self.problems.starts_at_noise(jobs):
            return x * start_scale(jobs.sigmas[0])
        return x

    def targets(self, owner: torch.Tensor) -> list:
        """The target of each row's search."""
        targets = self.problems.targets
        return [targets[i] for i in owner.tolist()]


class Chunked:
    """An executor that runs a batch in chunks of at most ``max_batch`` rows, each through ``batch``."""

    def __init__(self, ctx: RunContext, max_batch: int):
        self.ctx, self.max_batch = ctx, max_batch

    def plan(self, batches: list[Jobs]) -> None:
        """Refuse an overspending round (``RunContext.plan``)."""
        self.ctx.plan(batches)

    def run(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """Outcomes of ``jobs``, run in chunks of at most ``max_batch`` rows; a score that is not a finite number
        (NaN, +inf, -inf) comes back as NaN, a failed score (``failed_as_nan``): best, records and algorithms
        all see the same failed score."""
        out = self._chunks(jobs, index)
        out.score = failed_as_nan(out.score)
        return out

    def batch(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """Outcomes of one chunk of at most ``max_batch`` rows (scores as the verifier gave them)."""
        raise NotImplementedError

    def _chunks(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        n = len(jobs)
        if n <= self.max_batch:
            return self.batch(jobs, index)
        parts = [
            self.batch(jobs.rows(slice(a, a + self.max_batch)), index[a : a + self.max_batch])
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


class Rendered(NamedTuple):
    """A chunk integrated and decoded, not scored yet."""

    start: torch.Tensor  # the start states integrated (with ``requires_grad`` for a gradient job)
    x: torch.Tensor  # end states
    denoised: torch.Tensor  # the x0-predictions decoded into ``image``
    image: torch.Tensor
    preview: torch.Tensor | None  # decoded x0-previews (None: the verifier takes none)


class StepExecutor(Chunked):
    """Jobs integrated step by step through the sampler with ``Accountant.denoiser``, decoded and scored."""

    def batch(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """Integrate one chunk of jobs, decode and score it (and take the score's gradient for ``grad`` jobs)."""
        ctx, owners = self.ctx, jobs.owner
        grad = None
        with torch.enable_grad() if jobs.grad else torch.no_grad():
            done = self.render(jobs)
            targets = ctx.targets(owners)
            scores = ctx.acct.verify(ctx.verifier, done.image, targets, owners, previews=done.preview, grad=jobs.grad)
            if jobs.grad:
                grad = self._backward(jobs, scores, done.start)
        cost = ctx.problems.job_cost(jobs)
        return Outcomes(
            jobs, done.x.detach(), done.denoised.detach(), done.image.detach(), scores.detach(), cost, index, grad
        )

    def render(self, jobs: Jobs) -> Rendered:
        """Integrate one chunk and decode its images (and x0-previews when the verifier takes them), unscored;
        gradients flow where the caller enables them."""
        ctx = self.ctx
        model = cast(Model, ctx.model)  # a StepModel: the driver picks this executor for one only
        sampler = get_sampler(jobs.sampler or ctx.problems.sampler)
        if sampler.stochastic != (jobs.noises is not None):
            need = "needs per-step noises" if sampler.stochastic else "is deterministic and takes no noises"
            raise ValueError(f"algorithm {ctx.algorithm!r} gave a job whose sampler {need}")
        owners = jobs.owner
        extra = {"noises": jobs.noises.transpose(0, 1)} if jobs.noises is not None else {}  # (n_steps, B, ...)
        preview_at = preview_step(jobs.sigmas, ctx.preview_sigma)
        seen: dict[str, torch.Tensor] = {}

        def callback(step, sigma, x, denoised):
            seen["last"] = denoised
            if step == preview_at:
                seen["preview"] = denoised

        denoise = ctx.acct.denoiser(model, index_cond(ctx.cond, owners), owners, guidance=ctx.guidance, grad=jobs.grad)
        if jobs.denoised is not None:
            denoise = _first_call_known(denoise, jobs.denoised)
        x = ctx.problems.start_states(jobs)
        x_start = x.detach().requires_grad_(True) if jobs.grad else x
        x_end = sampler.fn(denoise, ctx.start_state(jobs, x_start), jobs.sigmas, callback=callback, **extra)
        if jobs.final:
            end_denoised = x_end
        elif jobs.score_end:
            end_denoised = denoise(x_end, jobs.sigmas[-1])
        else:
            end_denoised = seen["last"]
        images = ctx.acct.decode(model, end_denoised, owners)  # (B, C, H, W)
        # a job too short to reach the preview sigma shows its end state's x0-prediction instead
        previews = None
        if ctx.preview_sigma is not None:
            previews = ctx.acct.decode(model, seen.get("preview", end_denoised), owners)
        return Rendered(x_start, x_end, end_denoised, images, previews)

    def _backward(self, jobs: Jobs, scores: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        """d score / d start state, rows apart (a failed score contributes nothing), its time and NFEs charged."""
        acct, owners = self.ctx.acct, jobs.owner
        started = clock()
        (grad,) = torch.autograd.grad(torch.where(torch.isfinite(scores), scores, 0.0).sum(), x_start)
        acct.charge_backward_seconds(owners, clock() - started)
        acct.charge_backward(owners, self.ctx.problems.job_costs(jobs)[1])
        return grad


class WholeExecutor(Chunked):
    """Full candidates through a whole-trajectory model (a pipeline's own ``__call__``), scored."""

    def batch(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """One chunk of full candidates through the pipeline (``Accountant.trajectories``), scored."""
        ctx, problems = self.ctx, self.ctx.problems
        step_level = jobs.sampler not in (None, "euler") or jobs.noises is not None or jobs.denoised is not None
        if step_level or jobs.score_end or jobs.grad or jobs.sigmas != problems.sigmas:
            raise UserError(
                f"algorithm {ctx.algorithm!r} asked for a step-level job; {ctx.model.name} runs only full candidates"
            )
        owners = jobs.owner
        cost = problems.job_cost(jobs)
        targets = ctx.targets(owners)
        run = ctx.acct.trajectories(ctx.model, owners, cost, steps=problems.steps, guidance=ctx.guidance)
        images = run(problems.start_states(jobs), targets)  # (B, C, H, W), or (B, C, F, H, W) for video
        scores = ctx.acct.verify(ctx.verifier, images, targets, owners)
        return Outcomes(jobs, images, images, images, scores, cost, index)


def preview_step(sigmas: tuple[float, ...], preview_sigma: float | None) -> int | None:
    """Index of the first step with sigma <= preview_sigma (the last step if none is)."""
    if preview_sigma is None:
        return None
    for i, s in enumerate(sigmas[:-1]):
        if s <= preview_sigma:
            return i
    return len(sigmas) - 2


def _first_call_known(denoise, known: torch.Tensor):
    """A denoiser whose first call returns ``known`` (already computed and paid for) without a new call."""
    state = {"first": True}

    def wrapped(x, sigma):
        if state.pop("first", False):
            return known
        return denoise(x, sigma)

    return wrapped
