"""The ``noisesearch`` command line: a thin layer over ``generate``, ``study`` and the registries.

User mistakes (``UserError``) print one line ``error: ...`` on stderr and exit with code 2.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.26 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError

from noisesearch.checks import check_guidance, check_out_dir, check_prompt, check_seed
from noisesearch.errors import BudgetExceeded, UserError


class OneLineErrors(TyperGroup):
    """The command group, with click's own usage errors as one line ``error: ...`` too.

    Click answers an unknown option or a value that does not parse (``--seed abc``, ``--budget 1e12``)
    with a usage block and ``Error: ...``; here it is one line on stderr and exit code 2, as for
    every other bad input.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:  # `noisesearch` alone: the help text
            if not standalone_mode:
                raise
            e.show()
            sys.exit(e.exit_code)
        except ClickException as e:
            if not standalone_mode:
                raise
            lines = [line.strip() for line in e.format_message().splitlines() if line.strip()]
            ctx = getattr(e, "ctx", None)
            hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
            print(f"error: {'; '.join(lines)}{hint}", file=sys.stderr)
            sys.exit(e.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Inference-time scaling for diffusion and flow models: search for better noises.",
)
train_app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, help="Retrain built-in models.")
app.add_typer(train_app, name="train")
console = Console(stderr=True)


# The system refused a file: one line naming it, as for a user mistake (a full disk, a read-only folder, a
# file where a folder is needed). Any other OSError is a bug or a broken machine and keeps its traceback.
CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
CANNOT_ACCESS = frozenset({errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR})


def environment_error(e: BaseException) -> str | None:
    """The one line for an ``OSError`` (also one carried by a wrapper, e.g. Ray's) the user can act on, or None."""
    from noisesearch._io import os_error_of

    error = os_error_of(e)
    if error is None or error.errno not in CANNOT_WRITE | CANNOT_ACCESS:
        return None
    verb = "write" if error.errno in CANNOT_WRITE else "access"
    where = f" {error.filename}" if error.filename is not None else ""
    also = f" (and {error.filename2})" if getattr(error, "filename2", None) is not None else ""
    hint = "; free some space or give another folder" if error.errno in CANNOT_WRITE - {errno.EROFS} else ""
    return f"cannot {verb}{where}{also}: {error.strerror or os.strerror(error.errno)}{hint}"


def friendly(fn):
    """Turn ``UserError``, ``BudgetExceeded`` and a refused file (``environment_error``) into one line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, BudgetExceeded) as e:
            cause = getattr(e, "cause", None)  # raised in a Ray actor: the original, not Ray's traceback text
            print(f"error: {cause if isinstance(cause, (UserError, BudgetExceeded)) else e}", file=sys.stderr)
            raise typer.Exit(2) from None
        except Exception as e:
            line = environment_error(e)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
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


NON_FINITE = {"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def parse_params(pairs: list[str], flag: str) -> dict:
    """``KEY=VALUE`` strings -> dict; values read as JSON where they parse (numbers, true, null)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {pair!r} is not KEY=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if isinstance(parsed, float) and not math.isfinite(parsed) or value.strip().lower() in NON_FINITE:
            raise UserError(f"{flag} {pair!r}: a parameter must be a finite number, got {value!r}")
        params[key.replace("-", "_")] = parsed
    return params


FLAG_NAMES = {"guidance": "--guidance", "final_steps": "--final-steps", "nfe_convention": "--nfe-convention"}


@app.command()
@friendly
def generate(
    out: str = typer.Option(
        ..., help="Folder for best.png (videos: best.webp + keyframes.png) and record.json (created if missing)."
    ),
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
    cache: Optional[str] = typer.Option(None, help="Replay-cache folder: candidates found there are not recomputed."),
    cache_max_mb: Optional[float] = typer.Option(None, help="Size cap of --cache in MiB (least recently used go)."),
    cache_images: str = typer.Option("exact", help="Images in --cache: exact (bit-exact replays) or uint8."),
    final_steps: Optional[int] = typer.Option(
        None, help="Search cheap, render once: denoise the best noise again with this many steps (outside --budget)."
    ),
    nfe_convention: str = typer.Option(
        "rows", help="What one NFE is: rows (a guided step costs 2) or steps (1 per step, as the paper plots)."
    ),
):
    """Search for the best sample of one target within a budget; write best.png and record.json."""
    # a translation of the flags into a RunSpec; execute() checks it (numbers first, before torch is imported)
    out_dir = check_out_dir(out, files=("best.png", "record.json"))  # str: an empty --out is not '.'
    if (target is None) == (prompt is None):
        raise UserError("give exactly one of --target (class-conditional models) and --prompt (text models)")
    if prompt is not None:
        check_prompt(prompt, what="--prompt")
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
    from noisesearch.spec import RunSpec

    spec = RunSpec(
        model=model,
        verifier=verifier,
        algorithm=algorithm,
        algorithm_params=params,
        budget=budget,
        targets=(target if prompt is None else prompt,),
        seed=seed,
        steps=steps,
        sampler=sampler,
        guidance=guidance,
        model_path=model_path,
        verifier_path=verifier_path,
        model_options=model_options,
        verifier_options=parse_params(verifier_param, "--verifier-param"),
        max_batch=max_batch,
        final_steps=final_steps,
        nfe_convention=nfe_convention,
    )
    from noisesearch.generate import execute

    with _progress() as bar:
        task = bar.add_task("searching", total=budget, extra="")

        def progress(spent, total, best):
            bar.update(task, completed=spent, extra=f"best {best:.4g}")

        result, record = execute(
            spec,
            out=out_dir,
            progress=progress,
            cache=cache,
            cache_max_mb=cache_max_mb,
            cache_images=cache_images,
            names=FLAG_NAMES,
        )
    if record["best_score"] is None:  # a verifier that failed on every image: say so, exit 1
        print(
            f"error: every candidate's score failed ({record['nan_scores']} NaN or infinite scores); "
            f"{out_dir / 'record.json'} written, no best.png",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    final = ""
    if final_steps is not None:
        shown = "failed" if record["final_score"] is None else f"{record['final_score']:.4f}"
        final = f"; rendered again with {final_steps} steps ({record['nfe_final']} NFEs), score {shown}"
    print(
        f"{record['candidates_count']} candidates, {record['nfe_used']}/{budget} NFEs, best {verifier} score "
        f"{record['best_score']:.4f}{final} -> {out_dir / record.get('video', {}).get('path', 'best.png')}, "
        f"{out_dir / 'record.json'}"
    )


@app.command()
@friendly
def demo(
    out_text: str = typer.Option("demo-out", "--out", help="Output folder (reruns skip finished configurations)."),
    quick: bool = typer.Option(False, help="Fewer samples and budgets: under a minute."),
    seed: int = typer.Option(0, help="Seed for every configuration's per-target noises."),
    guidance: Optional[float] = typer.Option(
        None, help="Classifier-free guidance scale (default 1.0 = none); other than 1, a step costs 2 NFEs."
    ),
):
    """More denoising steps vs noise search on the built-in digits model: rows, samples, plot, table."""
    out = check_out_dir(out_text)
    check_seed(seed)
    check_guidance(guidance, what="--guidance")
    from noisesearch.studies import demo_study, draw

    study = demo_study(quick=quick, seed=seed, guidance=guidance)
    counts = _run_study(study, out, "demo")
    lines = draw(
        study,
        out,
        metrics=["fid", "is", "is_single_split"],
        title="digits: more steps vs noise search (FID/IS from the evaluation network)",
    )
    _print_table(
        lines,
        f"noisesearch demo ({'quick' if quick else 'full'}): mean ± 95% CI over seeds",
    )
    for algorithm, budget, reason in study.skipped:
        print(f"skipped {algorithm} at {budget} NFEs: {reason}")
    print(_written(counts, out))
    print(f"rows: {out / 'results.jsonl'}  plot: {out / 'scaling.png'}  samples: {out / 'samples'}")


def _run_study(study, out: Path, name: str) -> dict:
    from noisesearch.studies import run_study

    with _progress() as bar:
        task = bar.add_task(name, total=None, extra="")

        def progress(done, total, note):
            bar.update(task, completed=done, total=total, extra=note)

        return run_study(study, out, progress=progress)


def _print_table(lines: list[list[str]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for n, head in enumerate(lines[0]):
        table.add_column(head, justify="left" if n == 0 else "right", no_wrap=n == 0)
    for n, line in enumerate(lines[1:], start=1):
        last = n == len(lines) - 1 or lines[n + 1][0] != line[0]
        table.add_row(*line, end_section=last)
    Console(width=max(Console().width, 160)).print(table)


def _written(counts: dict, out: Path) -> str:
    """What a study run did, in one line (a rerun of a finished study says that it computed nothing)."""
    if counts["written"] == 0 and counts["already"] > 0:
        return f"all {counts['already']} rows were already in {out / 'results.jsonl'}; nothing recomputed"
    skipped = f", {counts['skipped']} configurations skipped" if counts.get("skipped") else ""
    return f"{counts['written']} rows written, {counts['already']} already there{skipped}"


@app.command()
@friendly
def compare(
    model: str = typer.Option("digits", help="Built-in digits model: digits or digits-large."),
    budgets: Optional[str] = typer.Option(
        None, help="NFE budgets per sample, comma-separated (default 64,...,1024; with --quick 64,128,256)."
    ),
    seeds: int = typer.Option(3, help="Seeds per configuration (the spread in plots and tables)."),
    verifier: str = typer.Option("classifier", help="Verifier every algorithm searches with."),
    algorithms: Optional[str] = typer.Option(None, help="Comma-separated subset (default: every registered one)."),
    out_text: str = typer.Option("compare-out", "--out", help="Output folder (reruns skip finished configurations)."),
    quick: bool = typer.Option(False, help="Fewer samples and budgets up to 256: about two minutes."),
    guidance: Optional[float] = typer.Option(
        None, help="Classifier-free guidance scale (default 1.0 = none); other than 1, a step costs 2 NFEs."
    ),
):
    """Every search algorithm vs more denoising steps at matched NFE budgets, over several seeds."""
    from noisesearch.studies import compare_study, draw, parse_budgets, parse_list

    out = check_out_dir(out_text)
    names = None if algorithms is None else parse_list(algorithms, "--algorithms", "random,zero-order")
    budget_list = None if budgets is None else parse_budgets(budgets)
    check_guidance(guidance, what="--guidance")
    study = compare_study(
        model=model,
        budgets=budget_list,
        seeds=seeds,
        verifier=verifier,
        algorithms=names,
        quick=quick,
        guidance=guidance,
    )
    counts = _run_study(study, out, "compare")
    lines = draw(
        study,
        out,
        metrics=["fid", "is", "is_single_split", "diversity"],
        title=f"{model}: search algorithms vs more steps at matched NFEs ({verifier} verifier)",
    )
    _print_table(lines, f"noisesearch compare ({model}): mean ± 95% CI over seeds")
    for algorithm, budget, reason in study.skipped:
        print(f"skipped {algorithm} at {budget} NFEs: {reason}")
    print(_written({**counts, "skipped": len(study.skipped)}, out))
    print(f"rows: {out / 'results.jsonl'}  table: {out / 'table.md'}  plot: {out / 'scaling.png'}")


@app.command()
@friendly
def sweep(
    config: str = typer.Argument(..., help="YAML sweep config (see examples/digits-sweep.yaml)."),
    out_text: str = typer.Option(..., "--out", help="Output folder; rerunning the same command resumes."),
    backend: str = typer.Option("local", help="local, or ray (one actor per GPU or CPU slot)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    cache: Optional[str] = typer.Option(
        None, help="Replay-cache folder (default: OUT/cache; share one across sweeps)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Compute every candidate (no replay cache)."),
    cache_max_mb: Optional[float] = typer.Option(None, help="Size cap of the cache in MiB (least recently used go)."),
    cache_images: str = typer.Option("exact", help="Images in the cache: exact (bit-exact replays) or uint8."),
):
    """Run a benchmark x algorithms x budgets x seeds sweep into flat, resumable JSONL rows.

    Exit 0 when every row is written, including a rerun of a finished sweep (it prints "nothing to
    do"). Exit 2, before any work, for a config that cannot run as written: a mistake, or a budget
    some configuration cannot spend (it is refused, never skipped); also for a folder another sweep
    is writing.
    """
    from noisesearch.cache import check_settings
    from noisesearch.sweep.config import load_config
    from noisesearch.sweep.run import FILES, run_sweep

    # every option, the folders and the config before anything is created (run_sweep checks them again)
    if backend not in ("local", "ray"):
        raise UserError(f"unknown backend {backend!r}; accepted: local, ray")
    if no_cache and cache is not None:
        raise UserError("give --cache DIR or --no-cache, not both")
    out = check_out_dir(out_text, files=FILES)  # str: an empty --out is not '.'
    check_settings(cache_max_mb, cache_images)
    if cache is not None:
        check_out_dir(cache, what="--cache")
    cfg = load_config(config)
    executor = None
    if backend == "ray":
        from noisesearch.sweep.ray_backend import RayExecutor

        executor = RayExecutor(address=address)
    elif address is not None:
        raise UserError("--address is a Ray cluster address; it needs --backend ray")
    with _progress() as bar:
        task = bar.add_task("sweep", total=None, extra="")

        def progress(done, total, note):
            bar.update(task, completed=done, total=total, extra=note)

        counts = run_sweep(
            cfg,
            out,
            progress=progress,
            executor=executor,
            cache=False if no_cache else (cache if cache is not None else True),
            cache_max_mb=cache_max_mb,
            cache_images=cache_images,
        )
    rows = counts["cells"] * counts["targets"]
    if counts["written"] == 0 and counts["sets"] == 0:
        print(f"nothing to do: all {rows} rows are in {out / 'results.jsonl'}")
        return
    print(
        f"{counts['written']} rows written, {counts['skipped']} already there "
        f"({counts['cells']} configurations x {counts['targets']} targets): {out / 'results.jsonl'}"
    )


@app.command()
@friendly
def report(
    folder: str = typer.Argument(..., help="A sweep's output folder."),
    budget: Optional[int] = typer.Option(None, help="Budget of the tables (default: the largest)."),
    x: str = typer.Option("nfe", "--x", help="Cost axis of the curves: nfe, flops, seconds or dollars (per sample)."),
):
    """Scaling curves, tables and an HTML page (report/index.html) from a sweep's rows only (never writes them)."""
    from noisesearch.sweep.report import build_report

    warn = lambda message: print(f"warning: {message}", file=sys.stderr)  # noqa: E731
    print(build_report(folder, budget=budget, x=x, warn=warn))


@app.command()
@friendly
def paper(
    out_text: str = typer.Option(
        ..., "--out", help="Output folder: figN.png, figN.jsonl and sweeps/; rerunning resumes."
    ),
    quick: bool = typer.Option(False, help="2 targets per class, one seed, budgets up to 128: about a minute."),
    figures: Optional[str] = typer.Option(None, help="Comma-separated subset, e.g. fig1,fig5 (default: all)."),
):
    """Ma et al. 2025 figure by figure on the digits world (shipped sweeps; docs/PAPER.md reads them)."""
    from noisesearch.paper import pick_figures, run_paper

    out = check_out_dir(out_text)  # str: an empty --out is not '.'
    result = run_paper(out, quick=quick, figures=pick_figures(figures))
    print(f"{len(result['figures'])} figures in {out}: " + ", ".join(p.name for p in result["figures"]))
    if result.get("tables"):
        n = len(result["tables"])
        print(f"{n} table{'s' if n != 1 else ''} in {out}: " + ", ".join(p.name for p in result["tables"]))


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


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
