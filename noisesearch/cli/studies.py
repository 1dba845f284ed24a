"""``noisesearch demo`` and ``compare``: studies on the digits world, their table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from noisesearch.checks import check_guidance, check_out_dir, check_seed
from noisesearch.cli._app import app, friendly, progress_bar


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

    with progress_bar() as bar:
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
