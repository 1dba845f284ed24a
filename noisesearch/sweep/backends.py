"""Sweep backends: where the chunks of a sweep are searched, declared as data in ``BACKENDS``.

Each entry is a ``Backend`` record (a ``registry.Entry``, registered as every registry's are) under its name
(what ``noisesearch sweep --backend NAME`` accepts): its ``factory`` (the backend's options as keywords -> an
executor), a one-line ``doc``, the package it ``requires`` beyond noisesearch (its import name, or None: known
before anything is loaded) and the command-line ``options`` it takes (option -> what it is, for the message
when another backend is given it).

An executor has one method, ``map(config, items, tasks, cache=None)``: for every ``(cell, chunk)`` task it yields
``chunk.run_chunk``'s ``(cell, rows, images)``, in any order. ``run_sweep`` files each result as it arrives, in
the one process that writes the folder, so a backend never writes rows itself and a task retried elsewhere can
neither lose nor duplicate one. A backend that loads the world in this process may keep it as ``world``
(``run.LocalExecutor``): its set evaluator is then reused for the sample sets.

Adding a backend (Slurm, Dask, ...) is one new file and one line here:

1. ``noisesearch/sweep/slurm_backend.py``: a class whose ``map`` sends each task to a worker that calls
   ``chunk.load_world(config)`` once and ``chunk.run_chunk(config, world, items, cell, chunk, cache=cache)`` per
   task, and yields the results as they come back; its constructor refuses a missing package or a bad option
   with one ``UserError`` line (as ``ray_backend.RayExecutor`` does);
2. in ``BACKENDS`` below: ``Backend("slurm", SlurmExecutor, "one Slurm job per chunk", requires="submitit"),``
   (or, from outside the package, ``registry.register(BACKENDS, Backend(...))``).

The command line then accepts ``--backend slurm`` and lists it among the accepted names.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from noisesearch.errors import UserError
from noisesearch.registry import Entry, pick, registry_of
from noisesearch.sweep.ray_backend import RayExecutor
from noisesearch.sweep.run import LocalExecutor


@dataclass(frozen=True)
class Backend(Entry):
    """A registry ``Entry`` of a sweep backend, with what it needs and which command-line options it takes."""

    requires: str | None = field(default=None, kw_only=True)  # the import name of a package beyond noisesearch
    options: dict[str, str] = field(default_factory=dict, kw_only=True)  # command-line option -> what it is

    def installed(self) -> bool:
        """Whether the package it requires can be imported here (found without importing it)."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


BACKENDS: dict[str, Entry] = registry_of(
    Backend("local", LocalExecutor, "every chunk in this process, one after another"),
    Backend(
        "ray",
        RayExecutor,
        "one actor per GPU or CPU slot",
        requires="ray",
        options={"address": "a Ray cluster address"},
    ),
)


def check_backend(name: str, **options) -> Entry:
    """The backend registered as ``name``, once the options given (not None) are ones it takes.

    A ``UserError`` names the accepted backends for an unknown name, and the backends an option needs.
    """
    backend = pick(BACKENDS, name, "backend")
    for option, value in options.items():
        if value is not None and option not in _options(backend):
            takers = [n for n, b in BACKENDS.items() if option in _options(b)]
            if not takers:
                raise UserError(f"--{option} is not an option of any backend; accepted backends: {', '.join(BACKENDS)}")
            what = _options(BACKENDS[takers[0]])[option]
            raise UserError(f"--{option} is {what}; it needs --backend {' or '.join(takers)}")
    return backend


def _options(backend: Entry) -> dict[str, str]:
    """The command-line options a backend takes (none for an entry that declares none)."""
    return backend.options if isinstance(backend, Backend) else {}


def make_executor(name: str, **options):
    """The executor of backend ``name`` (checked by ``check_backend``), made with the options given (not None)."""
    backend = check_backend(name, **options)
    return backend(**{k: v for k, v in options.items() if v is not None})
