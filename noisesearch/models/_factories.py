"""The records behind ``MODELS`` and ``PIPELINES``: ``ModelEntry`` (a registry ``Entry`` that also declares what
one denoiser call costs), ``PipelineFactory`` (the factory of an entry that loads a diffusers pipeline and wraps
it in its step-level adapter) and ``StepAdapter`` (a ``PIPELINES`` entry: the adapter around a pipeline object).

A ``PipelineFactory`` takes the loading options (``path``, ``device``, ``dtype``, ``offload``: its family
module's ``load``) and then the adapter class's own keyword-only options, read from the adapter (the ones
``from_pipeline`` takes), so each option is declared once, where it is used. ``inspect.signature`` of it
lists both groups in that order, which is what ``registry.check_options`` checks ``--model-param`` names
against; a call with an option outside them is refused before anything is loaded.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from noisesearch.models.base import Model
from noisesearch.registry import Entry

# when one denoiser call also runs classifier-free guidance's unconditional rows (2 rows per sample, else 1):
# the adapters' own rule (``nfe_per_call``/``guided``), written where it is known without weights
CFG_RULES: dict[str, Callable[[float], bool]] = {
    "never": lambda g: False,  # guidance-distilled (the scale is an input) or unguided
    "guidance != 1": lambda g: g != 1.0,  # the VP/DDIM adapters, the class-conditional ones, digits
    "guidance > 1": lambda g: g > 1.0,  # the rectified-flow pipelines' ``do_classifier_free_guidance``
    "guidance > 0": lambda g: g > 0.0,  # Z-Image (guidance 0: Turbo's conditional prediction)
}


@dataclass(frozen=True)
class ModelEntry(Entry):
    """A ``MODELS`` entry: an ``Entry`` that also declares its cost per denoiser call where it is known
    without weights (tests hold it equal to the built model's ``nfe_per_call``).

    ``cfg``: when a call runs the unconditional rows too, one of ``CFG_RULES`` (None: known once loaded);
    ``default_guidance``: the guidance of a run that gives none (None: the loaded pipeline's own).
    """

    cfg: str | None = field(default=None, kw_only=True)
    default_guidance: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cfg is not None and self.cfg not in CFG_RULES:
            raise TypeError(f"model entry {self.name!r}: cfg {self.cfg!r} is none of {', '.join(CFG_RULES)}")

    def nfe_per_call(self, guidance: float | None) -> int | None:
        """NFEs (model rows) one denoiser call costs per sample at ``guidance`` (None: the model's default), as
        the built model counts them; None where only a loaded model knows (a rule or a default not declared)."""
        if self.cfg is None:
            return None
        g = self.default_guidance if guidance is None else float(guidance)
        if g is None:
            return 1 if self.cfg == "never" else None
        return 2 if CFG_RULES[self.cfg](g) else 1


def keyword_options(**defaults) -> tuple[inspect.Parameter, ...]:
    """Keyword-only parameters named and defaulted as ``defaults``, in that order."""
    return tuple(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d) for name, d in defaults.items())


LOAD_OPTIONS = keyword_options(path=None, device="cpu", dtype="float32", offload=None)  # a family module's ``load``


def family_module(target: str):
    """The module of ``target`` (``"module:Class"`` under ``noisesearch.models``), imported on first use."""
    return importlib.import_module(f"noisesearch.models.{target.split(':')[0]}")


def adapter_class(target: str) -> type:
    """The adapter class ``"module:Class"`` under ``noisesearch.models``."""
    return getattr(family_module(target), target.split(":")[1])


@dataclass(frozen=True)
class StepAdapter:
    """A ``PIPELINES`` entry ``(pipe, **options) -> Model``: the adapter ``target`` (``"module:Class"`` under
    ``noisesearch.models``) around a pipeline object, after ``variant`` where the adapter takes one first."""

    target: str
    variant: str | None = None

    @property
    def adapter_class(self) -> str:
        """The adapter class whose keyword options it takes, ``"noisesearch.models.module:Class"``."""
        return f"noisesearch.models.{self.target}"

    def __call__(self, pipe, **options) -> Model:
        first = () if self.variant is None else (self.variant,)
        return adapter_class(self.target)(pipe, *first, **options)


@dataclass(frozen=True)
class PipelineFactory:
    """A ``MODELS`` factory: ``load`` of the adapter's module (a folder or hub id), then the adapter around the
    pipeline, with the adapter's keyword options.

    ``target``: the adapter, ``"module:Class"`` under ``noisesearch.models``; ``variant``: a first argument
    that both the module's ``load`` and the adapter take (Stable Diffusion's "sd" or "sdxl"); ``pipeline``:
    the diffusers pipeline class the adapter is for (its ``PIPELINES`` entry), None for none.
    """

    target: str
    variant: str | None = None
    pipeline: str | None = None

    @property
    def __signature__(self) -> inspect.Signature:
        """The loading options, then the adapter's keyword-only ones (what ``inspect.signature`` reports)."""
        params = inspect.signature(adapter_class(self.target)).parameters.values()
        return inspect.Signature([*LOAD_OPTIONS, *(p for p in params if p.kind is p.KEYWORD_ONLY)])

    def __call__(self, **options) -> Model:
        self.__signature__.bind(**options)  # an option it does not take: TypeError, before anything loads
        load = {p.name: options.pop(p.name, p.default) for p in LOAD_OPTIONS}
        first = () if self.variant is None else (self.variant,)
        pipe = family_module(self.target).load(*first, load.pop("path"), **load)
        return adapter_class(self.target)(pipe, *first, **options)

    def step_adapter(self) -> StepAdapter:
        """Its adapter around a pipeline object already loaded (the ``PIPELINES`` entry of ``pipeline``)."""
        return StepAdapter(self.target, self.variant)
