"""Candidates per second of each algorithm at two git revisions, measured in one run, alternating.

The machine's speed drifts (other jobs, turbo, thermals), so a ratio of two figures measured minutes or
days apart says little. This script checks out ``--before`` (default: the commit before the columnar
driver) into a temporary git worktree, then times the same search with each tree's package in fresh
subprocesses, alternating before/after ``--repeats`` times, and keeps each side's best. Timing is taken
around ``run_search`` from outside, so it works with both APIs. Writes the ``bench_ab`` section of
BENCHMARKS.md. Run: ``python bench/bench_ab.py [--before REV] [--algorithms NAME ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT, write_section  # noqa: E402

BEFORE = "4437f86"  # the last commit before issue 13's columnar jobs

SNIPPET = r"""
import gc, inspect, json, sys, time
import torch
from noisesearch.algorithms import ALGORITHMS, derive_seed
from noisesearch.driver import run_search
from noisesearch.models import MODELS
from noisesearch.verifiers import VERIFIERS
name, model_name, targets, budget, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
model, verifier = MODELS[model_name](), VERIFIERS["classifier"]()
ts = [t % 10 for t in range(targets)]
seeds = [derive_seed(0, i) for i in range(targets)]
old_api = "stats" in inspect.signature(run_search).parameters  # before: stats filled into a dict argument
stats = {}
kwargs = {"stats": stats} if old_api else {}
# warm-up: the same search, so that both sides are timed in a process whose allocator and thread pool
# have seen this workload (what every search of a sweep but its first sees)
run_search(model, verifier, ALGORITHMS[name](), ts, seeds=seeds, budget=budget, steps=steps, **kwargs)
gc.collect()  # both sides start the timed run with the same clean heap
start = time.perf_counter()
results = run_search(model, verifier, ALGORITHMS[name](), ts, seeds=seeds, budget=budget, steps=steps, **kwargs)
searched = time.perf_counter()
candidates = sum(len(list(r.candidates)) for r in results)  # every record read: lazily built ones are timed too
wall = time.perf_counter() - start
if not old_api:
    stats = {k: getattr(results.stats, k) for k in ("denoise_seconds", "verify_seconds", "backward_seconds")}
inside = sum(stats.get(k, 0.0) for k in ("denoise_seconds", "verify_seconds", "backward_seconds"))
out = {"wall": wall, "search": searched - start, "inside": inside, "candidates": candidates,
       "nfe": sum(r.nfe_used for r in results)}
print(json.dumps(out))
"""


def once(tree: Path, name: str, model: str, targets: int, budget: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET, name, model, str(targets), str(budget), str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--algorithms", nargs="*", default=None)
    parser.add_argument("--models", nargs="*", default=["digits", "digits-large"])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--budget", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--section", default="bench_ab", help="BENCHMARKS.md section to write (for a subset run)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from noisesearch.algorithms import ALGORITHMS

    names = args.algorithms or list(ALGORITHMS)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before], cwd=ROOT, check=True)
        try:
            for name in names:
                for model in args.models:
                    best: dict[str, dict] = {}
                    for _ in range(args.repeats):
                        for side, tree in (("before", old), ("after", ROOT)):
                            got = once(tree, name, model, args.targets, args.budget, args.steps)
                            mine = best.setdefault(side, {"candidates": got["candidates"], "wall": got["wall"]})
                            mine["wall"] = min(mine["wall"], got["wall"])
                            if got["search"] <= mine.get("search", got["search"]):  # inside time of the fastest search
                                mine["search"], mine["inside"] = got["search"], got["inside"]
                    b, a = best["before"], best["after"]
                    n_b, n_a = b["candidates"], a["candidates"]
                    row = (name, model, n_b / b["wall"], n_a / a["search"], b["wall"] / a["search"])
                    row += (
                        n_a / a["wall"],
                        b["wall"] / a["wall"],
                        1 - a["inside"] / a["search"],
                        b["wall"] / a["inside"],
                    )
                    rows.append(row)
                    print(f"{name} {model}: {row[2]:,.0f} -> {row[3]:,.0f} / {row[5]:,.0f} cand/s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    title = (
        "## Before and after the columnar driver (candidates per second, measured in one run)"
        if args.section == "bench_ab"
        else f"## {args.before} against {head.strip()} (candidates per second, measured in one run): "
        f"{', '.join(names)} on {', '.join(args.models)}"
    )
    lines = [
        title,
        "",
        f"Measured by `bench/bench_ab.py` on {platform.machine()}: revision {args.before} (before) and "
        f"{head.strip()} (after), each in fresh subprocesses, alternating, best of {args.repeats}; "
        f"{args.targets} targets, budget {args.budget} NFEs, {args.steps} Euler steps, classifier verifier, "
        "default parameters; a `gc.collect()` before each timed run. *Before* is timed with every record read; "
        "*search* is the after side's `run_search` alone, *+ records* adds reading every record, so the *+ records* "
        "ratio compares like with like"
        + (
            " (before the columnar driver, records were built inside `run_search`; since, only when read)"
            if args.section == "bench_ab"
            else ""
        )
        + ". Each process runs the same search once untimed first, so both sides are timed warm (as every search of "
        "a sweep but its first).",
        "",
        "*Outside*: the after search's share of time outside denoiser and verifier calls. *Ceiling*: the before "
        "run's time over the after search's time inside those calls alone, in the same run: the ratio the after "
        "side would reach if everything outside the model and verifier took no time at all.",
        "",
        "| algorithm | model | before cand./s | after cand./s (search) | ratio | after cand./s (+ records) | ratio "
        "| outside | ceiling |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {n} | {m} | {b:,.0f} | {a:,.0f} | **{r:.2f}x** | {a2:,.0f} | **{r2:.2f}x** | {o:.0%} | {c:.2f}x |"
        for n, m, b, a, r, a2, r2, o, c in rows
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(args.section, text)


if __name__ == "__main__":
    main()
