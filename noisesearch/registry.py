"""Looking up a user-given name in a registry (``MODELS``, ``VERIFIERS``, ``ALGORITHMS``, ...) and checking the
keyword options given to the factory registered under it, the same way for every way in (``generate``, the
Python API, sweeps, the studies) and for the registries themselves (``verifiers.as_verifier``).

It sits below every registry and imports none: each caller passes the registry it looks in.
"""

from __future__ import annotations

import inspect

from noisesearch.errors import UserError


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
