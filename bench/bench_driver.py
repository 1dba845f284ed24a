"""Driver throughput and overhead on the digits model, measured in one run.

Measures, for the same candidates (random search, 8 Euler steps, classifier verifier):
- candidates per second through ``run_search`` (batched across candidates and targets);
- candidates per second for a plain loop of one-candidate calls (sampler + verifier per noise);
- the driver's overhead: wall time outside denoiser and verifier calls, as a share of the total.

Writes its figures into BENCHMARKS.md between the ``bench_driver`` markers (ratios, since these
machines are noisy) and prints them. Run: ``make bench`` or ``python bench/bench_driver.py``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Timed, write_section  # noqa: E402

from noisesearch.algorithms import RandomSearch, derive_seed, gaussian
from noisesearch.driver import run_search
from noisesearch.models import MODELS
from noisesearch.samplers import sample_euler
from noisesearch.verifiers import VERIFIERS


def measure(model_name: str, targets: int, candidates: int, steps: int, loop_sample: int, repeats: int) -> dict:
    model, verifier = MODELS[model_name](), VERIFIERS["classifier"]()
    budget = candidates * steps
    ts = [t % 10 for t in range(targets)]
    seeds = [derive_seed(0, i) for i in range(targets)]

    best = None
    for _ in range(repeats):
        model.denoise = Timed(type(model).denoise.__get__(model))
        verifier_timed = Timed(verifier)
        verifier_timed.name, verifier_timed.preview_sigma = verifier.name, None
        algorithm = RandomSearch()
        algorithm.ask, algorithm.tell = Timed(algorithm.ask), Timed(algorithm.tell)
        start = time.perf_counter()
        run_search(model, verifier_timed, algorithm, ts, seeds=seeds, budget=budget, steps=steps)
        total = time.perf_counter() - start
        if best is None or total < best["total"]:
            inside = model.denoise.seconds + verifier_timed.seconds
            proposing = algorithm.ask.seconds + algorithm.tell.seconds
            best = {
                "total": total,
                "inside": inside / total,
                "proposing": proposing / total,
                "driver": (total - inside - proposing) / total,
            }
        del model.denoise

    # Plain loop: one candidate at a time, same noises, same sampler and verifier.
    sigmas = model.schedule(steps)
    cond_all = model.encode(ts)
    jobs = [(i, k) for i in range(targets) for k in range(candidates)][:loop_sample]
    best_loop = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i, k in jobs:
            noise = gaussian(model.noise_shape, derive_seed(seeds[i], k))[None]
            cond = cond_all[i : i + 1]
            x = sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=1.0), noise, sigmas)  # noqa: B023 (called at once)
            verifier(model.decode(x), [ts[i]])
        best_loop = min(best_loop, time.perf_counter() - start)

    n = targets * candidates
    return {
        **best,
        "model": model_name,
        "params": sum(p.numel() for p in model.net.parameters()),
        "candidates": n,
        "driver_cps": n / best["total"],
        "loop_cps": len(jobs) / best_loop,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--loop-sample", type=int, default=256, help="candidates timed in the plain loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = [
        measure(m, args.targets, args.candidates, args.steps, args.loop_sample, args.repeats)
        for m in ("digits", "digits-large")
    ]
    lines = [
        "## Driver vs a plain loop (random search, classifier verifier)",
        "",
        f"Measured by `bench/bench_driver.py` in one run on {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}: {results[0]['candidates']} candidates per model ({args.targets} "
        f"targets x {args.candidates}), {args.steps} Euler steps each; best of {args.repeats}. Shares are of the "
        "driver's wall time: inside denoiser and verifier calls, inside the algorithm's ask/tell (drawing each "
        "candidate's noise from its own seeded generator), and the rest (the driver's own bookkeeping).",
        "",
        "| model | params | driver / plain loop | driver cand./s | loop cand./s | in denoiser + verifier "
        "| in ask/tell | driver bookkeeping (goal < 10%) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['params']:,} | **{r['driver_cps'] / r['loop_cps']:.1f}x** | {r['driver_cps']:.0f} "
            f"| {r['loop_cps']:.0f} | {100 * r['inside']:.0f}% | {100 * r['proposing']:.0f}% "
            f"| **{100 * r['driver']:.0f}%** |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("bench_driver", text)


if __name__ == "__main__":
    main()
