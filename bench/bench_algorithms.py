"""Per-algorithm speed on the digits models, measured in one run.

For every registered algorithm (default parameters, classifier verifier, 8 Euler steps per full
candidate, the same targets and budget): NFEs and candidates per second through the driver, the
share of wall time spent outside denoiser and verifier calls (the algorithm's own work plus the
driver's; goals: under 25% on ``digits``, under 10% on ``digits-large``), and how much of that is
drawing seeded noise (one generator per draw: the per-candidate cost of reproducibility). Writes the
table into BENCHMARKS.md between the ``bench_algorithms`` markers.
Run: ``make bench`` or ``python bench/bench_algorithms.py``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_section  # noqa: E402

from noisesearch.algorithms import ALGORITHMS, derive_seed  # noqa: E402
from noisesearch.driver import run_search  # noqa: E402
from noisesearch.models import MODELS  # noqa: E402
from noisesearch.verifiers import VERIFIERS  # noqa: E402


def measure(model_name: str, name: str, *, targets: int, budget: int, steps: int, repeats: int) -> dict:
    model, verifier = MODELS[model_name](), VERIFIERS["classifier"]()
    ts = [t % 10 for t in range(targets)]
    seeds = [derive_seed(0, i) for i in range(targets)]
    best = None
    for _ in range(repeats):
        run = run_search(model, verifier, ALGORITHMS[name](), ts, seeds=seeds, budget=budget, steps=steps)
        stats = run.stats
        if best is None or stats.wall_seconds < best["total"]:
            best = {
                "total": stats.wall_seconds,
                "nfe": sum(r.nfe_used for r in run),
                "candidates": stats.candidates,
                "outside": 1 - stats.inside_share,
                "seeding": stats.draw_seconds / stats.wall_seconds,
            }
    assert best is not None
    return {**best, "nfe_per_s": best["nfe"] / best["total"], "cand_per_s": best["candidates"] / best["total"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--budget", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--algorithms", nargs="*", default=list(ALGORITHMS))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    lines = [
        "## Search algorithms (classifier verifier, default parameters)",
        "",
        f"Measured by `bench/bench_algorithms.py` in one run on {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}: {args.targets} targets, budget {args.budget} NFEs each, "
        f"{args.steps} Euler steps per full candidate; best of {args.repeats}. NFEs include backward passes "
        "charged as forward-pass equivalents (first-order). *outside*: share of wall time outside denoiser and "
        "verifier calls (goals: < 25% on digits, < 10% on digits-large); *seeding*: the part of it spent drawing "
        "each candidate's noise from its own seeded generator (the cost of per-candidate reproducibility).",
        "",
        "| algorithm | digits NFEs/s | cand./s | outside | seeding | digits-large NFEs/s | cand./s | outside | seeding |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in args.algorithms:
        small, large = (
            measure(m, name, targets=args.targets, budget=args.budget, steps=args.steps, repeats=args.repeats)
            for m in ("digits", "digits-large")
        )
        lines.append(
            f"| {name} | {small['nfe_per_s']:,.0f} | {small['cand_per_s']:,.0f} | {100 * small['outside']:.0f}% "
            f"| {100 * small['seeding']:.0f}% | {large['nfe_per_s']:,.0f} | {large['cand_per_s']:,.0f} "
            f"| {100 * large['outside']:.0f}% | {100 * large['seeding']:.0f}% |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("bench_algorithms", text)


if __name__ == "__main__":
    main()
