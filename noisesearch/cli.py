"""The ``noisesearch`` command line: a thin layer over ``generate``, ``study`` and the registries.

User mistakes (``UserError``) print one line ``error: ...`` on stderr and exit with code 2.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from noisesearch.errors import BudgetExceeded, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Inference-time scaling for diffusion and flow models: search for better noises.",
)
train_app = typer.Typer(no_args_is_help=True, help="Retrain built-in models.")
app.add_typer(train_app, name="train")
console = Console(stderr=True)


def friendly(fn):
    """Turn ``UserError`` and ``BudgetExceeded`` into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, BudgetExceeded) as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )  # a log file gets the summary lines only


def parse_params(pairs: list[str], flag: str) -> dict:
    """``KEY=VALUE`` strings -> dict; values read as JSON where they parse (numbers, true, null)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {pair!r} is not KEY=VALUE")
        try:
            params[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            params[key.replace("-", "_")] = value
    return params


@app.command()
@friendly
def generate(
    out: Path = typer.Option(..., help="Folder for best.png and record.json (created if missing)."),
    budget: int = typer.Option(..., help="Hard NFE limit for the whole search."),
    target: Optional[str] = typer.Option(None, help="Class to generate (digits: 0-9) for class-conditional models."),
    prompt: Optional[str] = typer.Option(None, help="Prompt to generate, for text-conditioned models."),
    model: str = typer.Option("digits", help="Registered model (see `noisesearch list`)."),
    model_path: Optional[str] = typer.Option(None, help="Weights file, local folder or hub id for the model."),
    dtype: Optional[str] = typer.Option(None, help="Model dtype, e.g. float32, bfloat16 (models that take it)."),
    device: Optional[str] = typer.Option(None, help="Model device, e.g. cpu, cuda (models that take it)."),
    model_param: list[str] = typer.Option([], "--model-param", help="Other model option, KEY=VALUE."),
    pipeline_param: list[str] = typer.Option(
        [], "--pipeline-param", help="--model diffusers: pipeline __call__ argument for every candidate, KEY=VALUE."
    ),
    verifier: str = typer.Option("classifier", help="Registered verifier."),
    verifier_path: Optional[str] = typer.Option(None, help="Weights for the verifier (file, folder or hub id)."),
    verifier_param: list[str] = typer.Option([], "--verifier-param", help="Other verifier option, KEY=VALUE."),
    algorithm: str = typer.Option("random", help="Registered search algorithm."),
    steps: Optional[int] = typer.Option(None, help="Sampling steps per candidate (default: the model's)."),
    sampler: str = typer.Option("euler", help="euler, heun, euler-sde or euler-ancestral (see `list`)."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (1.0 = none)."),
    seed: int = typer.Option(0, help="Seed of the search; candidate noises derive from it."),
    neighbours: Optional[int] = typer.Option(None, help="zero-order: neighbours per iteration (default 4)."),
    step_size: Optional[float] = typer.Option(None, help="zero-order: neighbourhood size lambda (default 1.0)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Other algorithm parameter, KEY=VALUE."),
    max_batch: int = typer.Option(4096, help="Most candidates in one denoiser batch."),
):
    """Search for the best sample of one target within a budget; write best.png and record.json."""
    from noisesearch.generate import generate as run

    if (target is None) == (prompt is None):
        raise UserError("give exactly one of --target (class-conditional models) and --prompt (text models)")
    params = parse_params(param, "--param")
    for key, value in (("neighbours", neighbours), ("step_size", step_size)):
        if value is not None:
            params[key] = value
    model_options = parse_params(model_param, "--model-param")
    for key, value in (("dtype", dtype), ("device", device)):
        if value is not None:
            model_options[key] = value
    if pipeline_param:  # an image path is opened by the model factory, so the record keeps the path
        model_options["pipeline_kwargs"] = parse_params(pipeline_param, "--pipeline-param")
    with _progress() as bar:
        task = bar.add_task("searching", total=budget, extra="")

        def progress(spent, total, best):
            bar.update(task, completed=spent, extra=f"best {best:.4g}")

        result, record = run(
            model=model,
            target=target if prompt is None else prompt,
            verifier=verifier,
            algorithm=algorithm,
            algorithm_params=params,
            budget=budget,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            seed=seed,
            model_path=model_path,
            verifier_path=verifier_path,
            model_options=model_options,
            verifier_options=parse_params(verifier_param, "--verifier-param"),
            out=out,
            max_batch=max_batch,
            progress=progress,
        )
    best = "none (every score was NaN)" if record["best_score"] is None else f"{record['best_score']:.4f}"
    print(
        f"{len(record['candidates'])} candidates, {record['nfe_used']}/{budget} NFEs, best {verifier} score "
        f"{best} -> {out / 'best.png'}, {out / 'record.json'}"
    )


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Output folder (reruns skip finished configurations)."),
    quick: bool = typer.Option(False, help="Fewer samples and budgets: under a minute."),
    seed: int = typer.Option(0, help="Seed for every configuration's per-target noises."),
):
    """More denoising steps vs noise search on the built-in digits model: rows, samples, plot, table."""
    from noisesearch.demo import demo_configs
    from noisesearch.plots import results_table, scaling_plot
    from noisesearch.study import run_study

    configs = demo_configs(quick=quick, seed=seed)
    with _progress() as bar:
        task = bar.add_task("demo", total=len(configs), extra="")
        rows = run_study(configs, out, progress=lambda c: bar.update(task, advance=1, extra=c.slug))
    scaling_plot(
        rows,
        out / "scaling.png",
        metrics=("fid", "is"),
        title="digits: more steps vs noise search (FID/IS from the evaluation network)",
    )
    from noisesearch._io import atomic_write_bytes
    from noisesearch.plots import markdown_table

    atomic_write_bytes(out / "table.md", markdown_table(rows).encode())
    Console(width=max(Console().width, 160)).print(
        results_table(rows, title=f"noisesearch demo ({'quick' if quick else 'full'})")
    )
    print(f"rows: {out / 'results.jsonl'}  plot: {out / 'scaling.png'}  samples: {out / 'samples'}")


@app.command()
@friendly
def compare(
    model: str = typer.Option("digits", help="Built-in digits model: digits or digits-large."),
    budgets: str = typer.Option("64,128,256,512,1024", help="NFE budgets per sample, comma-separated."),
    seeds: int = typer.Option(3, help="Seeds per configuration (the spread in plots and tables)."),
    verifier: str = typer.Option("classifier", help="Verifier every algorithm searches with."),
    algorithms: Optional[str] = typer.Option(None, help="Comma-separated subset (default: every registered one)."),
    out: Path = typer.Option(Path("compare-out"), help="Output folder (reruns skip finished configurations)."),
    quick: bool = typer.Option(False, help="Fewer samples and budgets up to 256: about two minutes."),
):
    """Every search algorithm vs more denoising steps at matched NFE budgets, over several seeds."""
    from noisesearch.compare import compare_configs, parse_budgets
    from noisesearch.plots import markdown_table, results_table, scaling_plot
    from noisesearch.study import run_study

    if model not in ("digits", "digits-large"):
        raise UserError(
            f"compare runs on the built-in digits models; got --model {model!r}, accepted: digits, digits-large"
        )
    names = [a.strip() for a in algorithms.split(",")] if algorithms else None
    configs = compare_configs(
        model=model, budgets=parse_budgets(budgets), seeds=seeds, verifier=verifier, algorithms=names, quick=quick
    )
    skipped: list = []
    with _progress() as bar:
        task = bar.add_task("compare", total=len(configs), extra="")
        rows = run_study(configs, out, skipped=skipped, progress=lambda c: bar.update(task, advance=1, extra=c.slug))
    scaling_plot(
        rows,
        out / "scaling.png",
        metrics=("fid", "is", "diversity"),
        title=f"{model}: search algorithms vs more steps at matched NFEs ({verifier} verifier)",
    )
    from noisesearch._io import atomic_write_bytes

    atomic_write_bytes(out / "table.md", markdown_table(rows).encode())
    Console(width=max(Console().width, 160)).print(results_table(rows, title=f"noisesearch compare ({model})"))
    for config, reason in skipped:
        print(f"skipped {config.slug}: {reason}")
    print(f"rows: {out / 'results.jsonl'}  table: {out / 'table.md'}  plot: {out / 'scaling.png'}")


@app.command()
@friendly
def sweep(
    config: Path = typer.Argument(..., help="YAML sweep config (see examples/digits-sweep.yaml)."),
    out: Path = typer.Option(..., help="Output folder; rerunning the same command resumes."),
    backend: str = typer.Option("local", help="local, or ray (one actor per GPU or CPU slot)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
):
    """Run a benchmark x algorithms x budgets x seeds sweep into flat, resumable JSONL rows."""
    from noisesearch.sweep.config import load_config
    from noisesearch.sweep.run import run_sweep

    if backend not in ("local", "ray"):
        raise UserError(f"unknown backend {backend!r}; accepted: local, ray")
    cfg = load_config(config)
    executor = None
    if backend == "ray":
        from noisesearch.sweep.ray_backend import RayExecutor

        executor = RayExecutor(address=address)
    with _progress() as bar:
        task = bar.add_task("sweep", total=None, extra="")

        def progress(done, total, note):
            bar.update(task, completed=done, total=total, extra=note)

        counts = run_sweep(cfg, out, progress=progress, executor=executor)
    print(
        f"{counts['written']} rows written, {counts['skipped']} already there "
        f"({counts['cells']} configurations x {counts['targets']} targets): {out / 'results.jsonl'}"
    )


@app.command()
@friendly
def report(
    folder: Path = typer.Argument(..., help="A sweep's output folder."),
    budget: Optional[int] = typer.Option(None, help="Budget of the tables (default: the largest)."),
):
    """Scaling curves, tables and an HTML page (report/index.html) from a sweep's rows only."""
    from noisesearch.sweep.report import build_report

    print(build_report(folder, budget=budget))


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
    out: Path = typer.Option(Path("digits-weights"), help="Folder for the retrained safetensors files."),
    seed: int = typer.Option(0, help="Training seed (the shipped weights use 0)."),
):
    """Retrain every network of the digits world reproducibly from a seed (about a minute)."""
    from noisesearch._io import ensure_out_dir
    from noisesearch.digits.train import train_world

    out = ensure_out_dir(out)
    files = train_world(out, seed=seed, progress=lambda name: console.print(f"training {name}"))
    print("wrote " + ", ".join(str(f) for f in files))
    print(f"use them with --model-path {out / 'flow.safetensors'} (and --verifier-path for verifiers)")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
