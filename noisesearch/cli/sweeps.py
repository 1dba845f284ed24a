"""``noisesearch sweep``, ``report`` and ``paper``: sweeps of searches, their report, the paper's figures."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from noisesearch.checks import check_out_dir
from noisesearch.cli._app import app, friendly, progress_bar
from noisesearch.errors import UserError


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
    from noisesearch.sweep.backends import check_backend, make_executor
    from noisesearch.sweep.config import load_config
    from noisesearch.sweep.run import FILES, run_sweep

    # every option, the folders and the config before anything is created (run_sweep checks them again)
    check_backend(backend)  # a name in the registry of backends (sweep/backends.py)
    if no_cache and cache is not None:
        raise UserError("give --cache DIR or --no-cache, not both")
    out = check_out_dir(out_text, files=FILES)  # str: an empty --out is not '.'
    check_settings(cache_max_mb, cache_images)
    if cache is not None:
        check_out_dir(cache, what="--cache")
    cfg = load_config(config)
    executor = make_executor(backend, address=address)  # --address only for a backend that takes it
    with progress_bar() as bar:
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
