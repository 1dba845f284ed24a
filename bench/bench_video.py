"""Our driver vs WanPipeline's own calls on a tiny Wan 2.1 (text-to-video), at two frame counts, in one run.

For one prompt and N candidates (random search, 20 steps, guidance 5: 2 NFEs per step) three ways to make the same
N videos from the same N noises:
- loop: one ``pipe(prompt, latents=noise_k)`` call per candidate (the prompt re-encoded each time);
- batched: one ``pipe(prompt, num_videos_per_prompt=N, latents=all noises)`` call;
- ours: ``run_search`` with ``RandomSearch(candidates=N)`` and a brightness verifier that scores whole videos
  (included in its time), noises ``gaussian(shape, seed_k)`` fed to the baselines as ``latents``.
Times are the best of ``--repeats`` with the three ways taking turns; *max diff* is the largest pixel difference of
the baselines' videos to ours; peak memory is measured as ``bench_models.py`` does (its ``peak_of``: the kernel's
exact VmHWM above the RSS before one call after a warm-up call, each way in a fresh process).
Writes the table into BENCHMARKS.md between the ``bench_video`` markers. Run: ``python bench/bench_video.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _tiny_wan as tiny  # noqa: E402
from _common import write_section  # noqa: E402
from bench_models import peak_of, timed  # noqa: E402

from noisesearch.algorithms import RandomSearch, gaussian  # noqa: E402
from noisesearch.driver import run_search  # noqa: E402
from noisesearch.models import MODELS  # noqa: E402

PROMPT = "a red cube"
STEPS = 20  # at 4 steps the tiny causal VAE's decode is ~90% of every way's time (measured), hiding the loop
GUIDANCE = 5.0
MSL = 16


class VideoRecorder:
    """Mean brightness of whole videos (``video = True``: not split into frames); keeps every video it scores."""

    name, preview_sigma, video = "brightness", None, True

    def __init__(self):
        self.videos = []

    def __call__(self, videos, targets, *, previews=None):
        self.videos.append(videos)
        return videos.mean(dim=(1, 2, 3, 4))


def load(folder: Path, size: int, frames: int):
    return MODELS["wan"](path=folder, height=size, width=size, num_frames=frames, max_sequence_length=MSL)


def ours(model, candidates: int):
    """run_search on one prompt: the videos (N, 3, F, H, W) in candidate order, and their noise seeds."""
    recorder = VideoRecorder()
    (result,) = run_search(
        model,
        recorder,
        RandomSearch(candidates=candidates),
        [PROMPT],
        seeds=[0],
        budget=candidates * STEPS * model.nfe_per_call(GUIDANCE),
        steps=STEPS,
        guidance=GUIDANCE,
    )
    return torch.cat(recorder.videos), [c["noise_seed"] for c in sorted(result.candidates, key=lambda c: c["index"])]


def methods(model, candidates: int, latents: torch.Tensor) -> dict:
    pipe = model.pipe
    kwargs = dict(
        height=model.height,
        width=model.width,
        num_frames=model.frames,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="pt",
        max_sequence_length=MSL,
    )

    def video(out):
        return out.frames.transpose(1, 2)  # (B, F, 3, H, W) -> (B, 3, F, H, W)

    return {
        "ours": lambda: ours(model, candidates),
        "loop": lambda: torch.cat(
            [video(pipe(PROMPT, latents=latents[k : k + 1], **kwargs)) for k in range(candidates)]
        ),
        "batched": lambda: video(pipe(PROMPT, num_videos_per_prompt=candidates, latents=latents, **kwargs)),
    }


def peak_child(folder: str, size: int, frames: int, candidates: int, method: str) -> None:
    model = load(Path(folder), size, frames)
    noises = torch.randn(candidates, *model.noise_shape, generator=torch.Generator().manual_seed(0))
    fn = methods(model, candidates, noises)[method]
    fn()  # warm-up
    print(json.dumps({"peak": peak_of(fn)}))


def peak_in_subprocess(folder: Path, size: int, frames: int, candidates: int, method: str) -> int:
    args = [sys.executable, __file__, "--peak-child", str(folder), str(size), str(frames), str(candidates), method]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak"]


def transformer_clock(net) -> dict:
    """Seconds spent inside ``net``'s forward, accumulated in the returned dict's ``"seconds"``."""
    clock, forward = {"seconds": 0.0}, net.forward

    def timed_forward(*args, **kwargs):
        start = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            clock["seconds"] += time.perf_counter() - start

    net.forward = timed_forward
    return clock


def measure(folder: Path, size: int, frames: int, candidates: int, repeats: int) -> dict:
    model = load(folder, size, frames)
    _, seeds = ours(model, candidates)
    latents = torch.stack([gaussian(model.noise_shape, s) for s in seeds])  # (N, C, F', h, w)
    clock, inside = transformer_clock(model.pipe.transformer), {}

    def clocked(name, fn):
        def run():
            clock["seconds"] = 0.0
            out = fn()
            inside[name] = min(inside.get(name, float("inf")), clock["seconds"])
            return out

        return run

    runs = timed({k: clocked(k, fn) for k, fn in methods(model, candidates, latents).items()}, repeats)
    (t_ours, (videos, _)), (t_loop, loop), (t_batch, batch) = runs["ours"], runs["loop"], runs["batched"]
    mem = tuple(peak_in_subprocess(folder, size, frames, candidates, m) for m in ("ours", "loop", "batched"))
    return {
        "size": size,
        "frames": frames,
        "ours_cps": candidates / t_ours,
        "loop_cps": candidates / t_loop,
        "batch_cps": candidates / t_batch,
        "diff": max((videos - loop).abs().max().item(), (videos - batch).abs().max().item()),
        "mem": mem,
        "inside": (inside["ours"], inside["batched"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, nargs="+", default=[5, 17])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--peak-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        folder, size, frames, candidates, method = args.peak_child
        peak_child(folder, int(size), int(frames), int(candidates), method)
        return
    load_avg = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny.wan().save_pretrained(Path(tmp) / "wan")
        for frames in args.frames:
            rows.append(measure(Path(tmp) / "wan", args.size, frames, args.candidates, args.repeats))
            print(rows[-1], flush=True)
    mib = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    lines = [
        "## Video: our driver vs WanPipeline's own calls (tiny Wan 2.1)",
        "",
        f"Measured by `bench/bench_video.py` in one run on {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}, load average {load_avg:.1f} when it started (other jobs shared the "
        f"cores): one prompt, {args.candidates} candidates of {args.size}x{args.size} pixels, {STEPS} steps, "
        f"guidance {GUIDANCE} (2 NFEs per step), FlowMatchEuler; best of {args.repeats}. *loop*: one `pipe()` call "
        f"per candidate; *batched*: one call with `num_videos_per_prompt={args.candidates}`; *ours*: `run_search` "
        "(random search, a whole-video brightness verifier included). All three start from the same noises "
        "(`latents=`); *max diff* is the largest pixel difference of the baselines' videos to ours. Peak memory "
        "as in `bench_models` (MiB, one call after a warm-up, each way in a fresh process). The tiny VAE is "
        "costly next to the tiny transformer (at 4 steps its decode, the same one call in *ours* and *batched*, "
        "was ~90% of both times), hence 20 steps; *transformer s* is the time inside the transformer's forward "
        "calls alone (best of the repeats), ours vs batched: the part where the ways differ.",
        "",
        "| frames | latent frames | ours / loop | ours / batched | ours videos/s | transformer s ours / batched "
        "| max diff | peak MiB ours / loop / batched |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['frames']} | {(r['frames'] - 1) // 4 + 1} | **{r['ours_cps'] / r['loop_cps']:.1f}x** "
            f"| **{r['ours_cps'] / r['batch_cps']:.2f}x** | {r['ours_cps']:.1f} "
            f"| {r['inside'][0]:.2f} / {r['inside'][1]:.2f} | {r['diff']:.1e} "
            f"| {' / '.join(mib(m) for m in r['mem'])} |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("bench_video", text)


if __name__ == "__main__":
    main()
