"""Refusals a run makes before any work: a final render it cannot make, a whole-trajectory model's limits."""

from __future__ import annotations

from noisesearch.errors import UserError
from noisesearch.samplers import get_sampler


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
