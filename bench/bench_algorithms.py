"""Per-algorithm speed of the driver, measured in one run (the digits models by default).

For every registered algorithm (default parameters, 8 Euler steps per full candidate, the same targets
and budget): NFEs and candidates per second through the driver, the share of wall time spent outside
denoiser and verifier calls (the algorithm's own work plus the driver's; goals: under 25% on
``digits``, under 10% on ``digits-large``), and how much of that is drawing seeded noise (one
generator per draw: the per-candidate cost of reproducibility). Writes the table into BENCHMARKS.md
between the ``bench_algorithms`` markers (``bench_algorithms_cuda`` etc. for ``--device``).

``--models`` takes registry names of the digits world (classifier verifier, class targets) and
``tiny-sd3``: a tiny random-weight Stable Diffusion 3 pipeline built in code (``tests/_tiny_flow.py``;
CFG, 2 NFEs per step) with a mean-brightness verifier and a few prompts as targets. ``--device cuda``
puts models, search states and scores on the GPU and makes the accountant's timers wait for the
GPU's queued work (``accounting.SYNC_TIMERS``), so that a model's time is counted inside its call.
Run: ``make bench`` or ``python bench/bench_algorithms.py [--device cuda] [--models ...]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_section  # noqa: E402

from noisesearch import accounting  # noqa: E402
from noisesearch.algorithms import ALGORITHMS, derive_seed  # noqa: E402
from noisesearch.driver import run_search  # noqa: E402
from noisesearch.models import MODELS  # noqa: E402
from noisesearch.verifiers import VERIFIERS  # noqa: E402

DIGITS = ("digits", "digits-large")
PROMPTS = ["a red cube", "a blue cat", "a photo of the dog", "a red cat", "the blue cube"]


class Brightness:
    """Mean brightness of each image (B,): a verifier that costs next to nothing and stays on the device."""

    name, preview_sigma = "brightness", None

    def __call__(self, images, targets, *, previews=None):
        return images.mean(dim=(1, 2, 3))

    score = __call__  # differentiable: first-order search runs too


def world(model_name: str, device: str, targets: int):
    """(model, verifier, targets) of ``--models`` entry ``model_name`` on ``device``."""
    if model_name == "tiny-sd3":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import _tiny_flow

        from noisesearch import from_pipeline

        model = from_pipeline(_tiny_flow.sd3().to(device), height=32, width=32, max_sequence_length=16)
        return model, Brightness(), [PROMPTS[t % len(PROMPTS)] for t in range(targets)]
    if model_name not in DIGITS:
        raise SystemExit(f"--models: unknown {model_name!r}; accepted: {', '.join(DIGITS)}, tiny-sd3")
    return MODELS[model_name](device=device), VERIFIERS["classifier"](), [t % 10 for t in range(targets)]


# Entries whose source defaults cost more than the bench's budget pays for one search: measured at a smaller size
# of the same algorithm (epsilon-greedy's 20 iterations x 4 proposals per step need 640 NFEs at 8 steps).
OPTIONS = {"epsilon-greedy": {"iterations": 1}}


def measure(built, name: str, *, budget: int, steps: int, repeats: int) -> dict:
    model, verifier, ts = built
    seeds = [derive_seed(0, i) for i in range(len(ts))]
    best = None
    for _ in range(repeats):
        algorithm = ALGORITHMS[name](**OPTIONS.get(name, {}))
        run = run_search(model, verifier, algorithm, ts, seeds=seeds, budget=budget, steps=steps)
        stats = run.stats
        if best is None or stats.wall_seconds < best["total"]:
            best = {
                "total": stats.wall_seconds,
                "nfe": sum(r.nfe_used for r in run),
                "candidates": stats.candidates,
                "outside": 1 - stats.inside_share,
                "seeding": stats.draw_seconds / stats.wall_seconds,
                "decode": stats.decode_seconds / stats.wall_seconds,
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
    parser.add_argument("--models", nargs="+", default=list(DIGITS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    on_gpu = torch.device(args.device).type != "cpu"
    accounting.SYNC_TIMERS = on_gpu  # a GPU model's time inside its call (see accounting.clock)
    worlds = {m: world(m, args.device, args.targets) for m in args.models}
    where = (
        f"{torch.get_num_threads()} torch threads"
        if not on_gpu
        else f"{args.device} ({torch.cuda.get_device_name(args.device) if torch.cuda.is_available() else args.device}),"
        " timers synchronized"
    )
    lines = [
        "## Search algorithms (default parameters)" + ("" if not on_gpu else f" on {args.device}"),
        "",
        f"Measured by `bench/bench_algorithms.py` in one run on {platform.machine()}, {where}, torch "
        f"{torch.__version__}: {args.targets} targets, budget {args.budget} NFEs each, {args.steps} Euler steps "
        f"per full candidate; best of {args.repeats}. Digits models: classifier verifier; `tiny-sd3`: a tiny "
        "random-weight SD3 pipeline (CFG), brightness verifier. NFEs include backward passes charged as "
        "forward-pass equivalents (first-order). *outside*: share of wall time outside denoiser and verifier "
        "calls (goals: < 25% on digits, < 10% on digits-large); *seeding*: the part of it spent drawing each "
        "candidate's noise from its own seeded generator (the cost of per-candidate reproducibility); *decode* (latent "
        "models): the part of it in the model's VAE decoder.",
        "",
        "| algorithm | "
        + " | ".join(
            f"{m} NFEs/s | cand./s | outside | seeding" + ("" if m in DIGITS else " | decode") for m in args.models
        )
        + " |",
        "| --- |" + "".join(" ---: |" * (4 if m in DIGITS else 5) for m in args.models),
    ]
    for name in args.algorithms:
        cells = []
        for m in args.models:
            got = measure(worlds[m], name, budget=args.budget, steps=args.steps, repeats=args.repeats)
            cells.append(
                f"{got['nfe_per_s']:,.0f} | {got['cand_per_s']:,.0f} | {100 * got['outside']:.0f}% "
                f"| {100 * got['seeding']:.0f}%" + ("" if m in DIGITS else f" | {100 * got['decode']:.0f}%")
            )
        options = ", ".join(f"{k}={v}" for k, v in OPTIONS.get(name, {}).items())
        lines.append(f"| {name}{f' ({options})' if options else ''} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        default = not on_gpu and args.models == list(DIGITS)
        write_section("bench_algorithms" if default else f"bench_algorithms_{args.device.split(':')[0]}", text)


if __name__ == "__main__":
    main()
