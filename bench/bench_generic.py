"""The generic adapter vs the step-level adapter vs diffusers' own calls, on tiny FLUX and SD pipelines.

For one prompt and 32 candidates (random search, 4 steps, the model's default guidance, 32x32
images), four ways to make 32 images:
- loop: one ``pipe(prompt, latents=noise_k)`` call per candidate;
- batched: one ``pipe(prompt, num_images_per_prompt=32, latents=all noises)`` call;
- generic: ``ns.search`` on ``ns.from_pipeline(pipe, adapter="generic")`` (hooked NFEs, a probe,
  a brightness verifier included in its time);
- step: ``ns.search`` on the step-level adapter (our own batched loop).
Each way runs ``--repeats`` times, taking turns; the best time counts. Writes candidates/s and the
ratios into BENCHMARKS.md between the ``bench_generic`` markers.
Run: ``python bench/bench_generic.py`` (one thread; tiny pipelines built in memory).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _tiny_pipelines_more as more  # noqa: E402
from _common import write_section  # noqa: E402

import noisesearch as ns  # noqa: E402

PROMPT, N, STEPS, SIZE = "a red cube", 32, 4, {"height": 32, "width": 32}
EXTRA = {"flux": {"max_sequence_length": 16}, "sd": {}}


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


def ways(name: str, pipe) -> dict:
    extra = EXTRA[name]
    generic = ns.from_pipeline(pipe, adapter="generic", **SIZE, pipeline_kwargs=extra)
    step = ns.from_pipeline(pipe, **SIZE, **extra)
    g = step.default_guidance
    noises = torch.randn(N, *generic.noise_shape, generator=torch.Generator().manual_seed(0))
    budget = N * STEPS * generic.nfe_per_call(g)

    def loop():
        for k in range(N):
            pipe(PROMPT, latents=noises[k : k + 1], num_inference_steps=STEPS, output_type="pt", **SIZE, **extra)

    def batched():
        pipe(
            PROMPT,
            latents=noises,
            num_images_per_prompt=N,
            num_inference_steps=STEPS,
            output_type="pt",
            **SIZE,
            **extra,
        )

    def search(model):
        return lambda: ns.search(model, PROMPT, verifier=brightness, budget=budget, steps=STEPS, guidance=g)

    return {"loop": loop, "batched": batched, "generic": search(generic), "step": search(step)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, build in (("flux", more.flux), ("sd", more.sd)):
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        fns = ways(name, pipe)
        for fn in fns.values():
            fn()  # warm-up (and the generic adapter's probe)
        best = {k: float("inf") for k in fns}
        for _ in range(args.repeats):
            for k, fn in fns.items():
                start = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - start)
        rate = {k: N / t for k, t in best.items()}
        rows.append(
            f"| {name} | {rate['loop']:.1f} | {rate['batched']:.1f} | {rate['generic']:.1f} | {rate['step']:.1f} "
            f"| {rate['generic'] / rate['batched']:.2f} | {rate['generic'] / rate['loop']:.2f} "
            f"| {rate['step'] / rate['generic']:.2f} |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "## The generic adapter (`bench/bench_generic.py`)",
            "",
            f"32 candidates of one prompt, {STEPS} steps, 32x32, default guidance, tiny random pipelines, "
            f"1 thread ({platform.processor() or platform.machine()}, torch {torch.__version__}); "
            f"candidates/s, best of {args.repeats}. generic and step include the search's own work "
            "(a brightness verifier, records).",
            "",
            "| pipeline | pipe() loop | batched pipe() | generic | step-level | generic / batched | generic / loop "
            "| step / generic |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    if not args.no_write:
        write_section("bench_generic", text)
    print(text)


if __name__ == "__main__":
    main()
