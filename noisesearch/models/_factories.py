"""``MODELS`` entries that load a diffusers pipeline and wrap it in its step-level adapter.

Such an entry takes the loading options (``path``, ``device``, ``dtype``, ``offload``: its family module's
``load``) and then the adapter class's own keyword-only options, read from the adapter (the ones
``from_pipeline`` takes), so each option is declared once, where it is used. ``inspect.signature`` of the
entry lists both groups in that order, which is what ``registry.check_options`` checks ``--model-param``
names against; a call with an option outside them is refused before anything is loaded.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from noisesearch.models.base import Model


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


def step_adapter(target: str, *, variant: str | None = None) -> Callable[..., Model]:
    """A ``PIPELINES`` factory ``(pipe, **options) -> Model``: the adapter ``target`` (``"module:Class"``) around
    a pipeline object; its ``adapter_class`` names the class whose keyword options it takes."""
    first = () if variant is None else (variant,)

    def build(pipe, **options) -> Model:
        return adapter_class(target)(pipe, *first, **options)

    build.adapter_class = f"noisesearch.models.{target}"  # type: ignore[attr-defined]
    return build


class PipelineFactory:
    """A ``MODELS`` factory: ``load`` of the adapter's module (a folder or hub id), then the adapter around the
    pipeline, with the adapter's keyword options."""

    needs_setup = True  # loads a pipeline (hub id or --model-path); not built from nothing

    def __init__(self, name: str, target: str, doc: str, *, variant: str | None = None, domain: str = "rgb"):
        """``target``: the adapter, ``"module:Class"`` under ``noisesearch.models``; ``variant``: a first argument
        that both the module's ``load`` and the adapter take (Stable Diffusion's "sd" or "sdxl")."""
        self.__name__, self.__doc__ = name, doc
        self.target, self.variant, self.domain = target, variant, domain

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

    def __repr__(self) -> str:
        return f"<model factory {self.__name__} ({self.target})>"
