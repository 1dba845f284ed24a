"""The ``noisesearch`` command line: a thin layer over ``generate``, ``study`` and the registries.

User mistakes (``UserError``) print one line ``error: ...`` on stderr and exit with code 2.

The commands, in the order ``--help`` lists them, by module: ``search`` (generate), ``studies`` (demo, compare),
``sweeps`` (sweep, report, paper), ``registries`` (list, train digits); ``_app`` holds the app and what they share.
"""

from __future__ import annotations

# importing a module registers its commands: this order is the order --help lists them
# isort: off
import noisesearch.cli.search  # noqa: F401
import noisesearch.cli.studies  # noqa: F401
import noisesearch.cli.sweeps  # noqa: F401
import noisesearch.cli.registries  # noqa: F401

# isort: on
from noisesearch.cli._app import (
    CANNOT_ACCESS,
    CANNOT_WRITE,
    NON_FINITE,
    OneLineErrors,
    app,
    console,
    environment_error,
    friendly,
    parse_params,
    train_app,
)
from noisesearch.cli.search import FLAG_NAMES
from noisesearch.cli.studies import _written

__all__ = [
    "CANNOT_ACCESS",
    "CANNOT_WRITE",
    "FLAG_NAMES",
    "NON_FINITE",
    "OneLineErrors",
    "_written",
    "app",
    "console",
    "environment_error",
    "friendly",
    "main",
    "parse_params",
    "train_app",
]


def main() -> None:  # console-script entry point
    """Run the command line (``noisesearch ...``; ``python -m noisesearch.cli ...``)."""
    app()
