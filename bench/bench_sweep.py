"""Sweep throughput, local vs Ray on 2 CPU slots, and the cost of recording rows, in one run.

A digits sweep of 200 targets x 3 algorithms x 4 budgets (one seed, no baseline): wall time with
the local backend and with Ray (a local Ray with 2 CPU slots, one actor each, model and verifiers
loaded once per actor), and the time to append one JSONL row (flushed and fsynced, as sweeps
write them). Writes the table into BENCHMARKS.md between the ``bench_sweep`` markers.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_section  # noqa: E402

from noisesearch._io import append_jsonl  # noqa: E402
from noisesearch.sweep.config import SweepConfig  # noqa: E402
from noisesearch.sweep.run import run_sweep  # noqa: E402

CONFIG = {
    "model": "digits",
    "benchmark": {"name": "digits", "per_class": 20},
    "verifier": {"name": "classifier"},
    "algorithms": [{"name": "random"}, {"name": "zero-order"}, {"name": "halving"}],
    "budgets": [16, 32, 64, 128],
    "seeds": [0],
    "steps": 8,
    "baseline": False,
    "chunk": 50,
}


def timed_sweep(executor=None) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        counts = run_sweep(  # no replay cache: this measures computing every row (bench_cache measures replays)
            SweepConfig.model_validate(CONFIG), Path(tmp) / "out", executor=executor, cache=False
        )
        return time.perf_counter() - start, counts["written"]


def row_write_seconds(n: int = 2000) -> float:
    row = {
        "cell": "x" * 80,
        "target": 3,
        "best_score": -0.01,
        "eval_oracle-is": -0.02,
        "params": {"a": 1},
        "versions": {"noisesearch": "0.1.0", "torch": torch.__version__},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.jsonl"
        start = time.perf_counter()
        for _ in range(n):
            append_jsonl(path, row)
        return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import ray

    from noisesearch.sweep.ray_backend import RayExecutor

    local, rows = timed_sweep()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_time, ray_rows = timed_sweep(RayExecutor(workers=2))
    ray.shutdown()
    write = row_write_seconds()
    per_row_local = local / rows
    text = "\n".join(
        [
            "## Sweeps: local vs Ray, and recording",
            "",
            f"Measured by `bench/bench_sweep.py` in one run on {platform.machine()}, torch {torch.__version__}: "
            f"digits, 200 targets x 3 algorithms (random, zero-order, halving) x 4 budgets (16-128 NFEs), one seed, "
            f"{rows} rows; Ray = a local Ray with 2 CPU slots (one actor each, 1 torch thread per actor), "
            "its start-up and actor loading included.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| local backend | {local:.1f} s ({rows / local:.0f} rows/s) |",
            f"| Ray, 2 CPU slots | {ray_time:.1f} s ({ray_rows / ray_time:.0f} rows/s); local / Ray = **{local / ray_time:.2f}x** |",
            f"| recording one row (JSONL append, flush, fsync) | {1e3 * write:.3f} ms = **{100 * write / per_row_local:.1f}%** "
            "of a local row's time |",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("bench_sweep", text)


if __name__ == "__main__":
    main()
