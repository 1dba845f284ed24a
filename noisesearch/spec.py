"""``RunSpec``: the one description of a search run, validated once, built once and run once.

Every entrance translates its own input into a ``RunSpec``: the CLI's flags and ``generate(...)``'s keywords
(``noisesearch.generate``), ``noisesearch.search``'s keywords (``noisesearch.api``) and a sweep cell
(``noisesearch.sweep.run``). Then:

- ``RunSpec.validate()`` runs every cheap check, in one place and one order (numbers, names, options, the
  algorithm's parameters, ``final_steps``, the model factory's own ``precheck``); it returns a checked copy and
  a checked spec is never checked again. A sweep checks its config's values one by one with ``check_value``
  (the same checks, named by their place in the YAML file).
- ``build(spec)`` makes the model, verifier and algorithm of a registry run; ``spec.resolved(model)`` fills
  the model's defaults (steps, guidance) and checks what needs the model; ``run(spec, ...)`` is the one call
  of ``driver.run_search``.
- ``noisesearch.records`` turns the spec and a result into the one row every writer writes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from noisesearch.checks import (
    PROMPT_MAX_CHARS,
    check_budget,
    check_guidance,
    check_positive_int,
    check_seed,
    check_steps,
)
from noisesearch.errors import UserError


def _check_sampler(name, *, what: str = "sampler") -> str:
    from noisesearch.samplers import get_sampler

    get_sampler(name)
    return name


def _check_convention(convention, *, what: str = "nfe convention") -> str:
    from noisesearch.accounting import check_nfe_convention

    return check_nfe_convention(convention, what=what)


def _check_final_value(final_steps, *, what: str = "final steps") -> int | None:
    return None if final_steps is None else check_steps(final_steps, what=what)


def _check_max_batch(value, *, what: str = "max batch") -> int:
    return check_positive_int(value, what=what)


# The check of each value a run is described by, and its default name in messages (an entrance may name it
# otherwise: the CLI says "--guidance"). The one table of these checks: RunSpec.validate and the sweep config use it.
VALUE_CHECKS: dict[str, tuple[Callable[..., Any], str]] = {
    "budget": (check_budget, "budget"),
    "steps": (check_steps, "steps"),
    "seed": (check_seed, "seed"),
    "guidance": (check_guidance, "guidance"),
    "final_steps": (_check_final_value, "final steps"),
    "max_batch": (_check_max_batch, "max batch"),
    "sampler": (_check_sampler, "sampler"),
    "nfe_convention": (_check_convention, "nfe convention"),
}


def check_value(name: str, value, *, what: str | None = None):
    """``value`` of the run field ``name`` checked (``VALUE_CHECKS``) and normalised; a ``UserError`` if refused."""
    check, default = VALUE_CHECKS[name]
    return check(value, what=what or default)


def check_one_candidate(budget: int, steps: int) -> None:
    """Refuse a budget that cannot pay for one finished candidate (at least 1 NFE per step)."""
    if steps > budget:
        raise UserError(
            f"budget {budget} is smaller than 1 candidate(s) ({steps} NFEs with {steps} steps at the least, "
            f"1 NFE per step); give --budget >= {steps} or fewer --steps"
        )


def check_target_text(target) -> None:
    """Refuse a prompt too long for any text encoder (they cut it and log the rest on every call)."""
    if isinstance(target, str) and len(target) > PROMPT_MAX_CHARS:
        raise UserError(
            f"prompt is {len(target):,} characters long; at most {PROMPT_MAX_CHARS:,} are accepted "
            "(text encoders read at most 512 tokens)"
        )


class Parts(NamedTuple):
    """What a registry run is built from, checked and cheap (no weights): factories, their keywords, the algorithm."""

    model_factory: Any
    model_kwargs: dict
    verifier_factory: Any
    verifier_kwargs: dict
    video_options: dict
    algorithm: Any


def _frozen(value):
    """A mapping as a read-only copy (anything else, e.g. a wrong type the checks refuse, as it is)."""
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """A search run: what to search, with what, for how much; the same for every entrance (see the module).

    ``model`` and ``verifier`` are registry names, or (``noisesearch.search``) a built ``Model`` and a
    callable. ``seed`` is the seed the user gave; ``seeds`` one search seed per target (``generate`` and
    ``noisesearch.search``: ``seed`` itself; a sweep derives one per target). ``steps`` and ``guidance`` None
    are the model's defaults (``resolved``).
    """

    model: Any = "digits"
    verifier: Any = "classifier"
    algorithm: str = "random"
    budget: Any
    targets: tuple = ()
    seed: Any = 0
    seeds: tuple = ()
    steps: Any = None
    sampler: str = "euler"
    guidance: Any = None
    model_path: Any = None
    verifier_path: Any = None
    model_options: Mapping = field(default_factory=dict)
    verifier_options: Mapping = field(default_factory=dict)
    algorithm_params: Any = field(default_factory=dict)
    pipeline_kwargs: Mapping = field(default_factory=dict)
    final_steps: Any = None
    nfe_convention: str = "rows"
    max_batch: Any = 4096
    keep_images: bool = False
    _parts: Parts | None = field(default=None, init=False, repr=False, compare=False)
    _valid: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("model_options", "verifier_options", "algorithm_params", "pipeline_kwargs"):
            object.__setattr__(self, name, _frozen(getattr(self, name) or {}))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "seeds", tuple(self.seeds) or (self.seed,) * len(self.targets))

    @property
    def registry(self) -> bool:
        """Whether model and verifier are registry names (``generate``, sweeps), not built objects."""
        return isinstance(self.model, str)

    @property
    def checked(self) -> bool:
        """Whether ``validate`` accepted this spec."""
        return self._valid

    def validate(self, names: Mapping[str, str] | None = None) -> RunSpec:
        """This spec checked, in one order, before any work: a ``UserError`` naming the first bad value.

        ``names``: how the entrance calls a field in messages (the CLI: ``{"guidance": "--guidance"}``).
        Returns a checked copy (values normalised, e.g. ``guidance`` a float); a checked spec returns itself.
        """
        if self._valid:
            return self
        names = names or {}
        values = {}
        for name in ("budget", "steps", "seed", "guidance", "final_steps", "max_batch", "sampler", "nfe_convention"):
            value = getattr(self, name)
            if name == "steps" and value is None:
                continue
            values[name] = check_value(name, value, what=names.get(name))
        if not self.targets:
            raise UserError("targets must hold at least one prompt or class id")
        for target in self.targets:
            check_target_text(target)
        if self.steps is not None:
            check_one_candidate(self.budget, self.steps)
        parts = self._registry_parts() if self.registry else self._algorithm_part()
        from noisesearch.driver import check_final_steps

        check_final_steps(self.final_steps, parts.algorithm if parts else self.algorithm, self.sampler)
        spec = dataclasses.replace(self, **values)
        object.__setattr__(spec, "_parts", parts)
        object.__setattr__(spec, "_valid", True)
        return spec

    def _algorithm_part(self) -> Parts:
        """The algorithm of a run on built objects (``noisesearch.search``), checked against its factory."""
        from noisesearch.algorithms import ALGORITHMS
        from noisesearch.registry import check_options, pick

        factory = pick(ALGORITHMS, self.algorithm, "algorithm")
        params = self._params()
        check_options(factory, params, "algorithm", self.algorithm)
        return Parts(None, {}, None, {}, {}, factory(**params))

    def _params(self):
        """The algorithm's parameters as a plain dict (anything else as given: ``check_options`` refuses it)."""
        return dict(self.algorithm_params) if isinstance(self.algorithm_params, Mapping) else self.algorithm_params

    def _registry_parts(self) -> Parts:
        """Factories and keywords of a registry run, checked, and the algorithm; then the model factory's
        ``precheck`` (``diffusers``: the pipeline folder and its arguments). Cheap: no weights."""
        from noisesearch.algorithms import ALGORITHMS
        from noisesearch.models import MODELS
        from noisesearch.registry import check_options, pick
        from noisesearch.verifiers import VERIFIERS
        from noisesearch.verifiers.video import split_options

        model_factory = pick(MODELS, self.model, "model")
        verifier_factory = pick(VERIFIERS, self.verifier, "verifier")
        algorithm_factory = pick(ALGORITHMS, self.algorithm, "algorithm")
        params = self._params()
        model_kwargs = {**self.model_options, **({"path": self.model_path} if self.model_path is not None else {})}
        verifier_kwargs = {
            **self.verifier_options,
            **({"path": self.verifier_path} if self.verifier_path is not None else {}),
        }
        verifier_kwargs, video_options = split_options(verifier_kwargs)  # frames/combine: the video wrapper's
        check_options(algorithm_factory, params, "algorithm", self.algorithm)
        check_options(model_factory, model_kwargs, "model", self.model)
        check_options(verifier_factory, verifier_kwargs, "verifier", self.verifier)
        for flag, value in (("--model-path", self.model_path), ("--verifier-path", self.verifier_path)):
            if value is not None and not str(value).strip():
                raise UserError(f"{flag} is empty; give a weights file, a local folder or a hub id")
        for what, kwargs in (("model", model_kwargs), ("verifier", verifier_kwargs)):
            path = kwargs.get("path")
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise UserError(f"{what} option path={path!r} is not a path; give a file, folder or hub id as text")
        try:  # validate cheap knobs before loading weights
            algo = algorithm_factory(**params)
        except (TypeError, ValueError) as e:  # e.g. a word where a number goes: the knob's own check cannot compare it
            raise UserError(f"algorithm {self.algorithm!r}: bad parameter value in {params!r} ({e})") from None
        check = getattr(model_factory, "precheck", None)
        if check is not None:
            check(**model_kwargs)
        return Parts(model_factory, model_kwargs, verifier_factory, verifier_kwargs, video_options, algo)

    @property
    def parts(self) -> Parts:
        """The checked factories and algorithm (``validate`` first)."""
        spec = self.validate()
        assert spec._parts is not None
        return spec._parts

    def resolved(self, model) -> RunSpec:
        """The checked spec with the model's defaults filled in (``steps``, ``guidance``) and what needs the
        model checked: a budget for one candidate at the default steps, the targets, ``final_steps``' render."""
        from noisesearch.driver import check_final_steps, final_schedule

        spec = self.validate()
        steps = model.default_steps if spec.steps is None else spec.steps
        if spec.steps is None and spec.registry:  # ns.search: run_search's own checks of the pipeline come first
            check_one_candidate(spec.budget, steps)
        guidance = model.default_guidance if spec.guidance is None else float(spec.guidance)
        check = getattr(model, "check_target", None)
        if check is not None:
            for target in spec.targets:
                check(target)  # before the search starts, not inside it
        if spec.final_steps is not None:  # what needs the model: a whole-trajectory pipeline, the render's start
            algorithm = spec.parts.algorithm
            check_final_steps(
                spec.final_steps, algorithm, spec.sampler, whole=getattr(model, "whole_trajectory", False)
            )
            final_schedule(model, steps, spec.final_steps)
        out = dataclasses.replace(spec, steps=steps, guidance=guidance)
        object.__setattr__(out, "_parts", spec._parts)
        object.__setattr__(out, "_valid", True)
        return out


def build(spec: RunSpec):
    """Model, verifier and algorithm of a registry run (weights are loaded here), checked against each other."""
    from noisesearch.verifiers.video import for_model

    parts = spec.parts
    m = parts.model_factory(**parts.model_kwargs)
    domain = getattr(parts.verifier_factory, "domain", None)
    if domain is not None and domain != getattr(m, "domain", None):
        raise UserError(
            f"verifier {spec.verifier!r} scores {domain} images only; model {spec.model!r} makes other images"
        )
    v = for_model(parts.verifier_factory(**parts.verifier_kwargs), m, **parts.video_options, domain=domain)
    return m, v, parts.algorithm


def run(spec: RunSpec, model, verifier, algorithm, *, progress=None, cache=None):
    """The one call of ``driver.run_search`` for a spec: one search per target; returns the ``SearchRun``."""
    from noisesearch.driver import run_search

    return run_search(
        model,
        verifier,
        algorithm,
        list(spec.targets),
        seeds=list(spec.seeds),
        budget=spec.budget,
        steps=spec.steps,
        sampler=spec.sampler,
        guidance=spec.guidance,
        max_batch=spec.max_batch,
        progress=progress,
        keep_images=spec.keep_images,
        cache=cache,
        final_steps=spec.final_steps,
        nfe_convention=spec.nfe_convention,
    )
