"""Keyword options declared once, as the fields of a frozen dataclass, for a callable that takes them as ``**options``.

A callable with many knobs (``noisesearch.search``, ``generate``, ``driver.run_search``, the Wan adapter, the LLM
grader) spells out only its few positional parameters and takes its keywords as ``**options``:

- ``bind(Options, options, where=...)`` makes the options record; a keyword it does not know, or a required one
  left out, is a ``TypeError`` worded as Python's own (``where`` is the callable's name), listing the accepted
  keywords; ``split`` keeps the unknown keywords apart instead (``search``'s algorithm parameters).
- ``declare(fn, Options)`` gives ``fn`` the signature it would have with every option spelled out, in the
  record's order, so ``help()``, ``inspect.signature`` and the registries' option checks
  (``registry.check_options``, ``models._factories``) see each keyword with its default.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _fields(options: type) -> list[dataclasses.Field]:
    """The fields of an options dataclass that are keywords (those of its ``__init__``), in declared order."""
    return [f for f in dataclasses.fields(options) if f.init]


def accepted(options: type) -> list[str]:
    """The keywords of an options dataclass, in declared order."""
    return [f.name for f in _fields(options)]


def _required(field: dataclasses.Field) -> bool:
    """Whether a field has no default (its keyword must be given)."""
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _default(field: dataclasses.Field) -> Any:
    """A field's default as a signature shows it (``inspect.Parameter.empty`` for a required one)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return inspect.Parameter.empty


def split(options: type[T], given: Mapping[str, Any], *, where: str) -> tuple[T, dict[str, Any]]:
    """The options record made of the keywords of ``given`` it declares, and the other keywords (as given).

    A required keyword missing from ``given`` is a ``TypeError`` as Python words it for ``where()``."""
    names = accepted(options)
    missing = [f.name for f in _fields(options) if _required(f) and f.name not in given]
    if missing:
        s = "s" if len(missing) > 1 else ""
        raise TypeError(
            f"{where}() missing {len(missing)} required keyword-only argument{s}: "
            + " and ".join(repr(name) for name in missing)
        )
    known = {key: value for key, value in given.items() if key in names}
    return options(**known), {key: value for key, value in given.items() if key not in names}


def bind(options: type[T], given: Mapping[str, Any], *, where: str) -> T:
    """The options record of ``given``; a keyword it does not declare is a ``TypeError`` naming the accepted ones."""
    names = accepted(options)
    for key in given:
        if key not in names:
            raise TypeError(f"{where}() got an unexpected keyword argument {key!r}; accepted: {', '.join(names)}")
    return split(options, given, where=where)[0]


def declare(fn: F, options: type, *, rest: str | None = None) -> F:
    """``fn`` with the signature of its parameters, its ``**options`` replaced by the keyword-only parameters of
    ``options`` (their defaults; required ones without); ``rest``: the name of a ``**`` parameter kept after them."""
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    keywords = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_default(f),
            annotation=f.type,
        )
        for f in _fields(options)
    ]
    tail = [] if rest is None else [inspect.Parameter(rest, inspect.Parameter.VAR_KEYWORD)]
    fn.__signature__ = sig.replace(parameters=[*own, *keywords, *tail])  # type: ignore[attr-defined]
    return fn
