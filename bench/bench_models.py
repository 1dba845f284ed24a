"""Our driver vs diffusers' own calls on tiny FLUX, PixArt-Sigma and SD pipelines, measured in one run.

For one prompt and N candidates (random search, 4 steps, the model's default guidance) at two image
sizes, three ways to make the same N images from the same N noises:
- loop: one ``pipe(prompt, latents=noise_k)`` call per candidate (the prompt re-encoded each time);
- batched: one ``pipe(prompt, num_images_per_prompt=N, latents=all noises)`` call;
- ours: ``run_search`` with ``RandomSearch(candidates=N)`` and a cheap brightness verifier (included
  in its time), noises ``gaussian(shape, seed_k)`` fed to the baselines as ``latents``.
Also 8 prompts x 8 candidates: one ``run_search`` over 8 targets vs one batched call per prompt.

Reports candidates/s ratios, the largest image difference to ours (same noises -> same images), and
peak memory as the largest resident set size (RSS, sampled every ms from /proc/self/statm) above
the RSS at the start of each run. Writes the table into BENCHMARKS.md between the ``bench_models``
markers. Run: ``python bench/bench_models.py`` (tiny pipelines are built in a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _tiny_pipelines as tiny  # noqa: E402
from _common import write_section  # noqa: E402

from noisesearch.driver import run_search  # noqa: E402
from noisesearch.models import MODELS  # noqa: E402
from noisesearch.search import RandomSearch, gaussian  # noqa: E402

FAMILIES = {"flux": tiny.save_flux, "pixart-sigma": tiny.save_pixart, "sd": tiny.save_sd}
PROMPTS = ["a red cube", "a blue cat", "a photo of the dog", "a red cat", "the blue cube", "a dog", "a cat of the dog",
           "a photo of a red cube"]
STEPS = 4


class PeakRSS:
    """Largest RSS above the starting RSS while inside the ``with`` block, sampled every millisecond (bytes)."""

    page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())
        self.delta = self.peak - self.start


class Recorder:
    """Mean brightness as the score; keeps every image it scores, in call order."""

    name, preview_sigma = "brightness", None

    def __init__(self):
        self.images = []

    def __call__(self, images, targets, *, previews=None):
        self.images.append(images)
        return images.mean(dim=(1, 2, 3))


def pipe_kwargs(name: str, model) -> dict:
    extra = {"flux": {"max_sequence_length": 16},
             "pixart-sigma": {"max_sequence_length": 16, "use_resolution_binning": False,
                              "clean_caption": False}}.get(name, {})
    return {"height": model.height, "width": model.width, "num_inference_steps": STEPS, "output_type": "pt",
            "guidance_scale": model.default_guidance, **extra}


def latents_of(name: str, noises: torch.Tensor) -> torch.Tensor:
    from noisesearch.models.flux import _pack

    return _pack(noises) if name == "flux" else noises  # VP pipelines take the noise itself (DDIM: x1)


def timed(fn, repeats: int):
    """(best wall seconds, result of the last call, peak RSS delta of the best call)."""
    best = (float("inf"), None, 0)
    for _ in range(repeats):
        with PeakRSS() as mem:
            start = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - start
        if wall < best[0]:
            best = (wall, out, mem.delta)
    return best


def ours(model, prompts, candidates):
    """run_search over ``prompts``; returns (images (P*N, 3, H, W) in candidate order, noises (P*N, ...))."""
    recorder = Recorder()
    cost = STEPS * model.nfe_per_call(model.default_guidance)
    results = run_search(model, recorder, RandomSearch(candidates=candidates), prompts,
                         seeds=list(range(len(prompts))), budget=candidates * cost, steps=STEPS)
    images = torch.cat(recorder.images)
    seeds = [c["noise_seed"] for r in results for c in sorted(r.candidates, key=lambda c: c["index"])]
    noises = torch.stack([gaussian(model.noise_shape, s) for s in seeds])  # (P*N, C, h, w)
    return images, noises


def measure(name: str, folder: Path, size: int, candidates: int, repeats: int) -> dict:
    options = {"height": size, "width": size, **({"max_sequence_length": 16} if name != "sd" else {})}
    model = MODELS[name](path=folder, **options)
    pipe, kwargs = model.pipe, pipe_kwargs(name, model)
    prompt = PROMPTS[0]
    t_ours, (images, noises), m_ours = timed(lambda: ours(model, [prompt], candidates), repeats)
    latents = latents_of(name, noises)
    t_loop, loop, m_loop = timed(lambda: torch.cat([pipe(prompt, latents=latents[k:k + 1], **kwargs).images
                                                    for k in range(candidates)]), repeats)
    t_batch, batch, m_batch = timed(lambda: pipe(prompt, num_images_per_prompt=candidates, latents=latents,
                                                 **kwargs).images, repeats)
    # 8 prompts x 8 candidates: one run_search over 8 targets vs one batched call per prompt
    t_many, (many, many_noises), _ = timed(lambda: ours(model, PROMPTS, 8), repeats)
    many_latents = latents_of(name, many_noises).reshape(len(PROMPTS), 8, *latents.shape[1:])
    t_per, per, _ = timed(lambda: torch.cat([pipe(p, num_images_per_prompt=8, latents=many_latents[i], **kwargs).images
                                             for i, p in enumerate(PROMPTS)]), repeats)
    return {"model": name, "size": size, "ours_cps": candidates / t_ours, "loop_cps": candidates / t_loop,
            "batch_cps": candidates / t_batch, "diff": max((images - loop).abs().max().item(),
                                                           (images - batch).abs().max().item()),
            "mem": (m_ours, m_loop, m_batch), "many_ratio": t_per / t_many, "many_diff": (many - per).abs().max().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: save(Path(tmp) / name) for name, save in FAMILIES.items()}
        for name in FAMILIES:
            for size in args.sizes:
                rows.append(measure(name, folders[name], size, args.candidates, args.repeats))
                print(rows[-1], flush=True)
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    lines = [
        "## Our driver vs diffusers' own calls (tiny FLUX, PixArt-Sigma, SD)",
        "",
        f"Measured by `bench/bench_models.py` in one run on {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}: one prompt, {args.candidates} candidates, {STEPS} steps, the "
        "model's default guidance; best of "
        f"{args.repeats}. *loop*: one pipeline call per candidate; *batched*: one call with "
        f"`num_images_per_prompt={args.candidates}`; *ours*: `run_search` (random search, brightness verifier "
        "included). All three start from the same noises (`latents=`); *max diff* is the largest pixel "
        "difference of the baselines' images to ours. Memory: peak RSS above the RSS at the start of the run, "
        "sampled every ms from /proc/self/statm (MiB). *8x8*: 8 prompts x 8 candidates, one `run_search` over "
        "8 targets vs one batched call per prompt (time ratio, and max image difference).",
        "",
        "| model | image | ours / loop | ours / batched | ours cand./s | max diff | peak MiB ours / loop / batched "
        "| 8x8: ours / per-prompt batched | 8x8 max diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']}x{r['size']} | **{r['ours_cps'] / r['loop_cps']:.1f}x** "
            f"| **{r['ours_cps'] / r['batch_cps']:.2f}x** | {r['ours_cps']:.0f} | {r['diff']:.1e} "
            f"| {' / '.join(mib(m) for m in r['mem'])} | **{r['many_ratio']:.2f}x** | {r['many_diff']:.1e} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("bench_models", text)


if __name__ == "__main__":
    main()
