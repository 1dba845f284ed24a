"""``noisesearch list`` and ``train digits``: what is registered, and the digits world retrained."""

from __future__ import annotations

import inspect

import typer

from noisesearch.checks import check_out_dir, check_seed
from noisesearch.cli._app import app, console, friendly, train_app


@app.command("list")
def list_registered():
    """Show the registered models, verifiers, algorithms and samplers, one line each."""
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.models import MODELS
    from noisesearch.samplers import SAMPLERS
    from noisesearch.verifiers import VERIFIERS

    def summary(obj) -> str:
        return (inspect.getdoc(obj) or "").splitlines()[0]

    for title, registry in (("models", MODELS), ("verifiers", VERIFIERS), ("algorithms", ALGORITHMS)):
        print(f"{title}:")
        for name, factory in registry.items():
            print(f"  {name:20s} {summary(factory)}")
    print("samplers:")
    for name, s in SAMPLERS.items():
        print(f"  {name:20s} {s.summary}")
    from noisesearch.models import PIPELINES

    print("diffusers pipeline classes with a step-level adapter (--model diffusers; any other runs generic):")
    print("  " + ", ".join(PIPELINES))


@train_app.command("digits")
@friendly
def train_digits(
    out_text: str = typer.Option("digits-weights", "--out", help="Folder for the retrained safetensors files."),
    seed: int = typer.Option(0, help="Training seed (the shipped weights use 0)."),
):
    """Retrain every network of the digits world reproducibly from a seed (about a minute)."""
    check_seed(seed)
    out = check_out_dir(out_text)
    from noisesearch._io import ensure_out_dir
    from noisesearch.digits.train import WORLD, train_world

    out = ensure_out_dir(check_out_dir(out, files=tuple(WORLD)))
    files = train_world(out, seed=seed, progress=lambda name: console.print(f"training {name}"))
    print("wrote " + ", ".join(str(f) for f in files))
    print(f"use them with --model-path {out / 'flow.safetensors'} (and --verifier-path for verifiers)")
