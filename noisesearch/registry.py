"""The registries' one record type and one way to register, and looking up a user-given name in a registry
(``MODELS``, ``VERIFIERS``, ``ALGORITHMS``, ``BENCHMARKS``, ...) with the keyword options given to its factory
checked, the same way for every way in (``generate``, the Python API, sweeps, the studies) and for the
registries themselves (``verifiers.as_verifier``).

A registry is a plain dict name -> ``Entry``, made by ``registry_of(Entry(...), ...)`` and grown only by
``register``, which refuses a name twice. An entry is called as its factory is (``MODELS["digits"]()``), and
``inspect.signature`` of it is its factory's (or the options it declares), so callers need not tell the two
apart. What is known of an entry before it is built (the images it makes or understands, whether it needs
weights that are not shipped, a cheap check of its options) is a field of the record, declared with it.

It sits below every registry and imports none: each caller passes the registry it looks in.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from noisesearch.errors import UserError


@dataclass(frozen=True)
class Entry:
    """One registry entry, declared whole where it is registered.

    ``name``: the name users give; ``factory``: builds the thing from keyword options (a function or a
    class); ``doc``: what it is, its first line the summary ``noisesearch list`` prints (default: the
    factory's docstring). The rest is known without building it:

    - ``domain``: the family of images it makes (a model) or understands (a verifier): "digits", "toy",
      "rgb", "video"; None for any, or where only a loaded pipeline knows;
    - ``needs_setup``: it loads weights or needs options that are not shipped, and without them raises
      ``UserError`` (the contract tests build every entry without it from nothing);
    - ``precheck``: a cheap check of the factory's options run before any work (``RunSpec.validate``).

    What the factory itself declares (an algorithm class's ``renders_from_noise``) is read through the entry.
    """

    name: str
    factory: Callable[..., Any]
    doc: str = field(default="", repr=False)
    _: KW_ONLY
    domain: str | None = None
    needs_setup: bool = False
    precheck: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a registry entry's name must be a non-empty string, got {self.name!r}")
        if not callable(self.factory) or (self.precheck is not None and not callable(self.precheck)):
            raise TypeError(f"registry entry {self.name!r}: factory and precheck must be callable")
        doc = self.doc or inspect.getdoc(self.factory) or ""
        if not doc.strip():
            raise TypeError(f"registry entry {self.name!r} has no doc and its factory no docstring")
        object.__setattr__(self, "doc", doc)
        object.__setattr__(self, "__doc__", doc)  # what ``inspect.getdoc(entry)`` reads (``noisesearch list``)

    @property
    def summary(self) -> str:
        """The first line of ``doc``."""
        return self.doc.strip().splitlines()[0]

    @property
    def __signature__(self) -> inspect.Signature:
        """The keyword options the entry takes: its factory's (what ``registry.check_options`` reads)."""
        return inspect.signature(self.factory)

    def __call__(self, *args: Any, **options: Any) -> Any:
        """What the factory builds from ``options``."""
        return self.factory(*args, **options)

    def __getattr__(self, attr: str) -> Any:
        """The factory's own declarations (an algorithm class's ``renders_from_noise``, ``name``, ...)."""
        if attr.startswith("__") or attr == "factory":  # never a special name (copy, pickle, inspect.unwrap)
            raise AttributeError(attr)
        return getattr(self.factory, attr)


def register(registry: dict, entry: Entry) -> Entry:
    """Add ``entry`` to ``registry`` under its name; a name registered already is refused."""
    if not isinstance(entry, Entry):
        raise UserError(f"a registry takes Entry records, got {type(entry).__name__}")
    if entry.name in registry:
        raise UserError(f"{entry.name!r} is registered already; pick another name")
    registry[entry.name] = entry
    return entry


def registry_of(*entries: Entry) -> dict[str, Entry]:
    """A registry: ``entries`` by name, in order (``register`` each)."""
    registry: dict[str, Entry] = {}
    for entry in entries:
        register(registry, entry)
    return registry


def factory_of(value: Any) -> Any:
    """The factory behind a registry value: an ``Entry``'s, or ``value`` itself (a plain factory that a caller put
    in a registry); e.g. an algorithm class, whose ``__init__`` declares its parameters' types."""
    return value.factory if isinstance(value, Entry) else value


def pick(registry: dict, name: str, what: str):
    """The factory registered as ``name``, or a clear error listing the accepted names."""
    if not isinstance(name, str) or name not in registry:
        raise UserError(f"unknown {what} {name!r}; accepted: {', '.join(registry)}")
    return registry[name]


def check_options(factory, options: dict, what: str, name: str) -> None:
    """Refuse keyword options that ``factory`` does not take, naming the ones it does."""
    if not isinstance(options, dict):
        raise UserError(f"{what} options must be a dict of keyword arguments, got {options!r}")
    params = inspect.signature(factory).parameters
    accepted = [p for p, v in params.items() if p != "self" and v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)]
    for key in options:
        if not isinstance(key, str) or key not in accepted:
            raise UserError(f"{what} {name!r} takes no parameter {key!r}; accepted: {', '.join(accepted) or 'none'}")
