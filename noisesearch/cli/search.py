"""``noisesearch generate``: one search from the command line's flags to best.png and record.json."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from noisesearch.checks import check_out_dir, check_prompt
from noisesearch.cli._app import app, friendly, parse_params, progress_bar
from noisesearch.errors import UserError

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
    from noisesearch.spec import RunSpec

    spec = RunSpec(
        model=model,
        verifier=verifier,
        algorithm=algorithm,
        algorithm_params=_algorithm_params(param, neighbours=neighbours, step_size=step_size),
        budget=budget,
        targets=(target if prompt is None else prompt,),
        seed=seed,
        steps=steps,
        sampler=sampler,
        guidance=guidance,
        model_path=model_path,
        verifier_path=verifier_path,
        model_options=_model_options(model_param, pipeline_param, dtype=dtype, device=device),
        verifier_options=parse_params(verifier_param, "--verifier-param"),
        max_batch=max_batch,
        final_steps=final_steps,
        nfe_convention=nfe_convention,
    )
    cache_options = {"cache": cache, "cache_max_mb": cache_max_mb, "cache_images": cache_images}
    record = _execute(spec, out_dir, cache_options)
    _summary(record, out_dir, verifier=verifier, budget=budget, final_steps=final_steps)


def _algorithm_params(pairs: list[str], **flags) -> dict:
    """The algorithm's parameters: ``--param KEY=VALUE`` pairs, then the flags given (``--neighbours``, ...)."""
    params = parse_params(pairs, "--param")
    params.update({key: value for key, value in flags.items() if value is not None})
    return params


def _model_options(pairs: list[str], pipeline_pairs: list[str], **flags) -> dict:
    """The model factory's options: ``--model-param`` pairs, the flags given (``--dtype``, ``--device``), and the
    ``--pipeline-param`` pairs as ``pipeline_kwargs``."""
    options = parse_params(pairs, "--model-param")
    options.update({key: value for key, value in flags.items() if value is not None})
    if pipeline_pairs:  # an image path is opened by the model factory, so the record keeps the path
        options["pipeline_kwargs"] = parse_params(pipeline_pairs, "--pipeline-param")
    return options


def _execute(spec, out_dir: Path, cache_options: dict) -> dict:
    """Run the search with a progress bar (``generate.execute``); its record."""
    from noisesearch.generate import execute

    with progress_bar() as bar:
        task = bar.add_task("searching", total=spec.budget, extra="")

        def progress(spent, total, best):
            bar.update(task, completed=spent, extra=f"best {best:.4g}")

        _, record = execute(spec, out=out_dir, progress=progress, names=FLAG_NAMES, **cache_options)
    return record


def _summary(record: dict, out_dir: Path, *, verifier: str, budget: int, final_steps: int | None) -> None:
    """The one line of a finished search; a search whose every score failed says so and exits 1."""
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
