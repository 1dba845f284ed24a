"""The replay cache: a budget x verifier sweep with and without it, and its overhead when nothing hits.

On the digits world (digits-large, 20 targets, 32 steps): random search over 6 budgets (32 ... 1024 NFEs), searched with each of
the 3 digits verifiers as its own sweep. Without the cache every sweep computes every budget; with one
cache folder shared by the three sweeps (``--cache DIR``) the first computes the largest budget once
(with the x0-previews feature-similarity needs; a cached sweep runs its largest budget first, so the
smaller budgets replay its first candidates) and the others only score. The rows must agree apart
from ``nfe_computed``, ``replayed``, ``decode_computed``, ``verify_computed`` and wall times (floats to
1e-5: a batch of fewer rows can move a score's last bits on some kernels; the table says how many rows
are bit-identical). The overhead: one random search of 16 candidates over 100 targets into an empty
cache (every candidate a miss, written) against no cache, best of 7, on digits (the cheapest denoiser:
the worst case) and digits-large. Writes the table into
BENCHMARKS.md between the ``bench_cache`` markers.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_section  # noqa: E402

from noisesearch import _io, ledger  # noqa: E402
from noisesearch.algorithms.random import RandomSearch  # noqa: E402
from noisesearch.cache import CandidateCache  # noqa: E402
from noisesearch.driver import run_search  # noqa: E402
from noisesearch.models import MODELS  # noqa: E402
from noisesearch.sweep.config import SweepConfig  # noqa: E402
from noisesearch.sweep.run import run_sweep  # noqa: E402
from noisesearch.verifiers import VERIFIERS  # noqa: E402

VERIFIER_NAMES = ("feature-similarity", "classifier", "oracle-is")  # previews first: the entries then keep them
MODEL = "digits-large"  # the digits world's larger flow network: its denoiser, not bookkeeping, dominates a search
STEPS = 32
BUDGETS = [32, 64, 128, 256, 512, 1024]  # 1 to 32 candidates of 32 Euler steps


def config(verifier: str, per_class: int) -> SweepConfig:
    return SweepConfig.model_validate(
        {
            "model": MODEL,
            "benchmark": {"name": "digits", "per_class": per_class},
            "verifier": {"name": verifier},
            "algorithms": [{"name": "random"}],
            "budgets": BUDGETS,
            "seeds": [0],
            "steps": STEPS,
            "baseline": False,
            "chunk": 10,
        }
    )


def sweeps(tmp: Path, name: str, cache, per_class: int) -> tuple[float, list[dict]]:
    """The three sweeps into tmp/name-<verifier>; wall seconds and every row (``seconds_total``: its search)."""
    start = time.perf_counter()
    rows = []
    for v in VERIFIER_NAMES:
        out = tmp / f"{name}-{v}"
        run_sweep(config(v, per_class), out, cache=cache, note=lambda message: None)
        rows += _io.read_jsonl(out / "results.jsonl")
    return time.perf_counter() - start, rows


def agree(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(agree(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(agree(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    return a == b


def plain(row: dict) -> dict:
    return ledger.drop_computed(ledger.drop_seconds(dict(row)))


class _Clock:
    """Seconds spent inside the cache's own calls (identities, keys, lookups, writes), summed while installed."""

    NAMES = ("get", "put", "scores", "put_scores")

    def __init__(self):
        self.seconds = 0.0
        self.saved = {}

    def wrap(self, f):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed

    def __enter__(self):
        from noisesearch import cache

        module = {n: getattr(cache, n) for n in ("job_keys", "model_identity", "verifier_identity")}
        self.saved = {(n, cache): f for n, f in module.items()} | {
            (n, CandidateCache): getattr(CandidateCache, n) for n in self.NAMES
        }
        for (name, owner), f in self.saved.items():
            setattr(owner, name, self.wrap(f))
        return self

    def __exit__(self, *exc):
        for (name, owner), f in self.saved.items():
            setattr(owner, name, f)


def overhead(tmp: Path, model_name: str, per_class: int, repeats: int = 7) -> tuple[float, float, float]:
    """Best-of wall seconds of one search of 16 candidates per target, without and with an
    empty cache (every candidate a miss, computed and written), and the least seconds spent inside the
    cache's calls (identities, key derivation, lookup, pack and score writes) in one run with it."""
    model, verifier = MODELS[model_name](), VERIFIERS["classifier"]()
    targets = [c for c in range(10) for _ in range(per_class)]
    seeds = list(range(len(targets)))  # one search seed per target: every candidate distinct

    def once(cache) -> float:
        start = time.perf_counter()
        run_search(model, verifier, RandomSearch(), targets, seeds=seeds, budget=16 * STEPS, steps=STEPS, cache=cache)
        return time.perf_counter() - start

    once(None)  # warm up (FLOPs measured, kernels loaded)
    once(CandidateCache(tmp / f"warm-{model_name}"))  # the model's weights hash, computed once per model object
    plain_s, cached_s, inside = [], [], []
    for r in range(repeats):
        plain_s.append(once(None))
        with _Clock() as clock:
            cached_s.append(once(CandidateCache(tmp / f"empty-{model_name}-{r}")))
        inside.append(clock.seconds)
    packs = list((tmp / f"empty-{model_name}-0" / "packs").glob("*.safetensors"))
    assert len(packs) == 1  # one batch, one pack
    return min(plain_s), min(cached_s), min(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2, help="targets per digit class in the sweeps")
    parser.add_argument("--overhead-per-class", type=int, default=10, help="targets per class, overhead run")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--note", default="", help="a line about the machine's load, added under the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        without_s, without = sweeps(tmp, "plain", False, args.per_class)
        with_s, cached = sweeps(tmp, "cached", tmp / "cache", args.per_class)
        key = lambda r: (r["verifier"], r["budget"], r["target_index"])  # noqa: E731
        without, cached = sorted(without, key=key), sorted(cached, key=key)
        assert len(without) == len(cached) == 3 * len(BUDGETS) * 10 * args.per_class
        assert all(agree(plain(a), plain(b)) for a, b in zip(without, cached)), "rows differ beyond the cache fields"
        identical = sum(plain(a) == plain(b) for a, b in zip(without, cached))
        nfe_without = sum(r["nfe_computed"] for r in without)
        nfe_with = sum(r["nfe_computed"] for r in cached)
        assert sum(r["nfe_used"] for r in cached) == nfe_without  # every row still reports what the search spends
        assert nfe_with == max(BUDGETS) * 10 * args.per_class  # the largest budget, once per target
        search_without = sum(r["seconds_total"] for r in without)
        search_with = sum(r["seconds_total"] for r in cached)
        costs = {name: overhead(tmp, name, args.overhead_per_class) for name in ("digits", MODEL)}
    speedup, search_speedup = without_s / with_s, search_without / search_with
    lines = [
        "## Replay cache: a budget x verifier sweep with and without it",
        "",
        f"Replay cache on the digits world ({MODEL}, {10 * args.per_class} targets, {STEPS} Euler steps, random "
        f"search, budgets {', '.join(map(str, BUDGETS))}; one sweep per verifier: {', '.join(VERIFIER_NAMES)}; "
        f"{platform.machine()}, torch {torch.__version__}, 1 thread; `python bench/bench_cache.py`):",
        "",
        "| run | sweep wall s | search s (rows' `seconds_total`) | denoiser NFEs computed | NFEs reported (`nfe_used`) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| 3 sweeps, no cache | {without_s:.1f} | {search_without:.1f} | {nfe_without:,} | {nfe_without:,} |",
        f"| 3 sweeps, one shared cache | {with_s:.1f} | {search_with:.1f} | {nfe_with:,} | {nfe_without:,} |",
        "",
        f"With the cache the searches run **{search_speedup:.1f}x** faster (goal: at least 4x) and the whole "
        f"sweeps {speedup:.1f}x (each sweep also loads its world, writes rows and images, and computes FID, "
        "precision and recall per cell, which the cache does not touch). Rows agree apart from the cache's "
        f"fields and wall times: all {len(cached)} (floats to 1e-5), {identical} of them bit for bit.",
        "",
        f"Overhead when nothing hits (one search batch of 100 targets x 16 candidates of {STEPS} steps, every candidate "
        "computed and written as one pack, best of 7 interleaved; goal: under 5%). The last columns time the "
        "cache's own calls (model and verifier identities, key derivation, lookup, pack and score writes) inside a run with it, which the "
        "machine's load disturbs less than the difference of two wall times:",
        "",
        "| model | no cache s | empty cache s | overhead (wall) | in cache calls s | cache calls / no-cache run |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {name} | {b:.3f} | {c:.3f} | {100 * (c / b - 1):+.1f}% | {inside:.4f} | **{100 * inside / b:.1f}%** |"
            for name, (b, c, inside) in costs.items()
        ),
    ]
    lines += [
        "",
        "The wall difference of two such runs moves by several percent either way with the machine's load (a "
        "negative overhead is that noise); the time inside the cache's calls is the cost the cache adds to a run "
        "where nothing hits. Besides those calls, a run with the cache does the same work as one without: one "
        "denoiser batch, one decode, one verifier call (a cached sweep runs its largest budget first, so its "
        "smaller budgets replay instead of computing small batches one budget at a time).",
        "",
        f"Load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run on {os.cpu_count()} "
        "CPUs: a machine shared with other jobs, so the seconds (not the NFE counts) are noisy.",
    ]
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("bench_cache", text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
