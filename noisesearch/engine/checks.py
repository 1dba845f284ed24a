"""Refusals a run makes before any work: ``check_run``, the one compatibility check of a run's parts.

``check_run(model, algorithm, sampler, verifier, final_steps)`` reads only what each part declares (``ModelInfo``,
``AlgorithmInfo``, ``VerifierInfo``; no model call, no probe) and refuses, in one ``UserError`` line, a video
model with a verifier that cannot score its frames, a final render the algorithm or sampler cannot make, a
whole-trajectory model with what needs step-level control, and a gradient search without gradients. The driver
calls it first; an entrance may call it (or ``check_final_steps`` alone, before a model is built) earlier.
"""

from __future__ import annotations

from noisesearch.contracts import AlgorithmInfo, ModelInfo, VerifierInfo, algorithm_info, model_info, verifier_info
from noisesearch.errors import UserError
from noisesearch.samplers import get_sampler
from noisesearch.verifiers.video import check_pairing


def check_run(model, algorithm, sampler: str, verifier, final_steps: int | None = None) -> None:
    """Refuse (one ``UserError``) a run whose model, algorithm, sampler, verifier and final steps do not fit.

    ``algorithm``: an algorithm, its registry factory or its registry name. Cheap and side-effect free: call it
    before any work.
    """
    from noisesearch.algorithms import ALGORITHMS

    get_sampler(sampler)  # a clear error for an unknown name
    if isinstance(algorithm, str) and algorithm not in ALGORITHMS:
        raise UserError(f"unknown algorithm {algorithm!r}; accepted: {', '.join(ALGORITHMS)}")
    declared = ALGORITHMS.get(algorithm, algorithm) if isinstance(algorithm, str) else algorithm
    m, a, v = model_info(model), algorithm_info(declared), verifier_info(verifier)
    check_pairing(model, verifier)
    check_final_steps(final_steps, algorithm, sampler, whole=m.whole_trajectory)
    if m.whole_trajectory:
        _check_whole(model.name, a, sampler, verifier.name, v)
    if a.needs_gradients:
        _check_gradients(model.name, m, a, verifier.name, v)


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
    name = algorithm if isinstance(algorithm, str) else algorithm_info(algorithm).name
    declared = ALGORITHMS.get(algorithm) if isinstance(algorithm, str) else algorithm
    if algorithm is not None and not algorithm_info(declared).renders_from_noise:
        accepted = [n for n, factory in ALGORITHMS.items() if algorithm_info(factory).renders_from_noise]
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


def _check_whole(model: str, a: AlgorithmInfo, sampler: str, verifier: str, v: VerifierInfo) -> None:
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.models import PIPELINES

    if not a.full_candidates_only:
        accepted = [n for n, factory in ALGORITHMS.items() if algorithm_info(factory).full_candidates_only]
        raise UserError(
            f"algorithm {a.name!r} needs step-level control, which {model} (generic adapter) lacks; "
            f"accepted here: {', '.join(accepted)}; step-level adapters: {', '.join(PIPELINES)}"
        )
    if sampler != "euler":
        raise UserError(f"sampler {sampler!r} cannot be chosen for {model}: the pipeline's own scheduler runs")
    if v.preview_sigma is not None:
        raise UserError(f"verifier {verifier!r} needs x0-previews, which {model} (generic adapter) has not")


def _check_gradients(model: str, m: ModelInfo, a: AlgorithmInfo, verifier: str, v: VerifierInfo) -> None:
    """Refuse a gradient search (``needs_gradients``) with a model or a verifier that cannot be differentiated."""
    if m.denoise_grad is None:
        raise UserError(
            f"algorithm {a.name!r} follows gradients, but model {model!r} cannot be differentiated (no denoise_grad)"
        )
    if v.score is None:
        raise UserError(
            f"algorithm {a.name!r} follows gradients, but verifier {verifier!r} is not differentiable; it needs "
            "one with a score() method (the digits, toy and CLIP-based verifiers have one)"
        )
