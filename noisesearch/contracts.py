"""Declared contracts: what the engine reads of a model, verifier or algorithm beyond its protocol's methods.

Each capability is declared with its default on an info record (``ModelInfo``, ``VerifierInfo``,
``AlgorithmInfo``, and ``Identity`` for the replay cache) and read only through ``declared``, by one reader per
record (``model_info``, ``verifier_info``, ``algorithm_info``, ``declared_identity``), so an object that leaves a
declaration out (a user's own) gets the default. The protocols themselves stay with their registries
(``models/base.py``, ``verifiers/base.py``, ``algorithms/base.py``), which re-export these names.

This module sits below the registries, the accountant and the replay cache, which all read these records
(the accountant and the verifiers may not import each other); it imports nothing else of the package.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


def declared(obj: Any, name: str, default: Any) -> Any:
    """``obj``'s declared attribute ``name``, or ``default`` where it declares none (absent, or None).

    The one place a declared capability is looked up; callers are the info builders (``model_info``,
    ``verifier_info``, ``algorithm_info``, ``declared_identity``), never the engine directly.
    """
    value = getattr(obj, name, None)
    return default if value is None else value


@dataclass(frozen=True)
class Identity:
    """What a model or verifier declares about its identity in the cache, each name's default here.

    ``cache_key``: a name standing for its weights and options (e.g. one whose weights live elsewhere);
    ``batch_dependent``: its scores depend on the other images of the batch (the rank ensemble): never replayed;
    ``needs_cache_key``: only a declared ``cache_key`` can name what it computes (a wrapped callable);
    ``members``: an ensemble's verifiers, whose identities are part of its own.
    """

    cache_key: str | None = None
    batch_dependent: bool = False
    needs_cache_key: bool = False
    members: tuple = ()


def declared_identity(obj: Any) -> Identity:
    """``obj``'s ``Identity`` declarations, each left out falling back to its default (``model_info`` and
    ``verifier_info`` take theirs from here)."""
    key, members = declared(obj, "cache_key", None), declared(obj, "members", ())
    return Identity(
        cache_key=key if isinstance(key, str) else None,
        batch_dependent=bool(declared(obj, "batch_dependent", False)),
        needs_cache_key=bool(declared(obj, "needs_cache_key", False)),
        members=tuple(members) if isinstance(members, (list, tuple)) else (),
    )


# -- models ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """A model's declared capabilities: each is the model's attribute of that name, or the default here.

    Built by ``model_info`` (the one place they are read). ``latent_shape`` is read on first use only: a
    whole-trajectory adapter probes its pipeline (denoiser calls) to know it, which the compatibility check
    must not cause.
    """

    whole_trajectory: bool = False  # True: a WholeTrajectoryModel, else a StepModel
    domain: str | None = None  # the family of images it makes ("digits", "toy", "rgb", "video")
    adapter: str = "step"  # "step" or "generic" (recorded)
    device: str | torch.device | None = None  # where its states live (None: the CPU)
    frames: int | None = None  # frames of each video (video models; None: read from each batch)
    fps: int = 16  # frames per second of the videos written
    latents_note: str | None = None  # how its pipeline takes a drawn noise as ``latents=`` (recorded)
    cache_key: str | None = None  # a declared identity for the replay cache (else its weights' hash)
    start_scale: Callable[[float], float] | None = None  # ModelExtras.start_scale (None: 1)
    denoise_grad: Callable[..., torch.Tensor] | None = None  # ModelExtras.denoise_grad (None: not differentiable)
    flops_per_nfe: Callable[[], float] | None = None  # ModelExtras.flops_per_nfe (None: measured)
    flops_per_row: Callable[[tuple], float | None] | None = None  # ModelExtras.flops_per_row (None: measured)
    source: Any = field(default=None, repr=False, compare=False)  # the model, for ``latent_shape``

    @property
    def protocol(self) -> str:
        """ "whole" for a ``WholeTrajectoryModel``, "step" for a ``StepModel``."""
        return "whole" if self.whole_trajectory else "step"

    @functools.cached_property
    def latent_shape(self) -> tuple[int, ...] | None:
        """The shape of one seeded draw as its pipeline takes it (``latents=``), recorded per candidate; None
        where the model declares none (read on first use: see the class docstring)."""
        shape = declared(self.source, "latent_shape", None)
        return None if shape is None else tuple(int(n) for n in shape)


_CALLABLES = ("start_scale", "denoise_grad", "flops_per_nfe", "flops_per_row")


def model_info(model: Any) -> ModelInfo:
    """``model``'s declared capabilities (``ModelInfo``), each left out falling back to its default.

    The only place the engine looks up a model attribute outside the ``StepModel`` / ``WholeTrajectoryModel``
    protocols; cheap (no probe, no denoiser call), so a run reads it once before any work.
    """
    defaults = ModelInfo()
    values = {
        name: declared(model, name, getattr(defaults, name))
        for name in ("domain", "adapter", "device", "frames", "fps", "latents_note")
    }
    callables = {name: declared(model, name, None) for name in _CALLABLES}
    return ModelInfo(
        whole_trajectory=bool(declared(model, "whole_trajectory", False)),
        cache_key=declared_identity(model).cache_key,
        source=model,
        **values,
        **callables,
    )


# -- verifiers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierInfo:
    """A verifier's declared capabilities: each is the verifier's attribute of that name, or the default here.

    Built by ``verifier_info`` (the one place they are read). ``usage`` is the verifier's live counters (the
    accountant reads a fresh info after a call to see what it cost).
    """

    preview_sigma: float | None = None  # the sigma of the x0-previews it wants (None: none)
    value_range: tuple[float, float] | None = None  # (lo, hi) bounding every finite score (None: not stated)
    domain: str | None = None  # the model family whose images it understands (None: any)
    video: bool = False  # it scores whole videos (B, C, F, H, W) itself
    takes_frames: bool = True  # False: a video's frames cannot be scored one by one
    usage: dict | None = None  # an API grader's counters (None: not metered, FLOPs measured)
    score: Callable[..., torch.Tensor] | None = None  # VerifierExtras.score (None: not differentiable)
    flops_per_row: Callable[[tuple], float | None] | None = None  # VerifierExtras.flops_per_row (None: measured)
    identity: Identity = Identity()  # what the replay cache keys its scores by

    @property
    def metered(self) -> bool:
        """An API grader: it counts tokens and cost in ``usage``, and its FLOPs are unknown."""
        return self.usage is not None


def verifier_info(verifier: Any) -> VerifierInfo:
    """``verifier``'s declared capabilities (``VerifierInfo``), each left out falling back to its default.

    The only place the engine looks up a verifier attribute outside the ``Verifier`` protocol (``name``,
    ``__call__``); the types are ``verifiers.base.VerifierExtras``'s.
    """
    return VerifierInfo(
        preview_sigma=declared(verifier, "preview_sigma", None),
        value_range=declared(verifier, "value_range", None),
        domain=declared(verifier, "domain", None),
        video=bool(declared(verifier, "video", False)),
        takes_frames=declared(verifier, "takes_frames", True) is not False,
        usage=declared(verifier, "usage", None),
        score=declared(verifier, "score", None),
        flops_per_row=declared(verifier, "flops_per_row", None),
        identity=declared_identity(verifier),
    )


# -- search algorithms -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlgorithmInfo:
    """What the compatibility check reads of an algorithm (or of its registry factory, the class), defaults here.

    ``full_candidates_only``: it only chooses starting noises of full candidates at the run's steps and
    sampler, so a whole-trajectory model can run it. ``needs_gradients``: it asks for ``grad`` jobs, so the
    model must declare ``denoise_grad`` and the verifier ``score``. ``budget_needed``: its budget rule, ``(costs,
    budget) -> (NFEs, what for)`` (``SearchAlgorithm.budget_needed``; None: one full candidate), bound when read
    from an algorithm rather than its factory.
    """

    name: str
    renders_from_noise: bool = False
    full_candidates_only: bool = False
    needs_gradients: bool = False
    budget_needed: Callable[..., tuple[int, str]] | None = None


def algorithm_info(algorithm: Any) -> AlgorithmInfo:
    """``algorithm``'s declarations (an algorithm or its factory), each left out falling back to its default."""
    name, rule = declared(algorithm, "name", None), declared(algorithm, "budget_needed", None)
    return AlgorithmInfo(
        name=name if isinstance(name, str) else type(algorithm).__name__,
        renders_from_noise=declared(algorithm, "renders_from_noise", False) is True,
        full_candidates_only=declared(algorithm, "full_candidates_only", False) is True,
        needs_gradients=bool(declared(algorithm, "needs_gradients", False)),
        budget_needed=rule if callable(rule) else None,
    )
