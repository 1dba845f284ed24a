"""Our driver vs diffusers' own calls on tiny pipelines of every step-level family, measured in one run.

Families: FLUX.1, PixArt-Sigma and SD (at ``--sizes``), and the rectified-flow families on the shared base,
SD3, FLUX.2, Z-Image, SANA and Qwen-Image (at 32x32 only, to keep the run short; ``--flow-sizes``). A row
is added by one ``FAMILIES`` entry (and its pipeline extras in ``EXTRA``). For one prompt and N candidates
(random search, 4 steps, the model's default guidance), three ways to make the same N images from the same
N noises:
- loop: one ``pipe(prompt, latents=noise_k)`` call per candidate (the prompt re-encoded each time);
- batched: one ``pipe(prompt, num_images_per_prompt=N, latents=all noises)`` call;
- ours: ``run_search`` with ``RandomSearch(candidates=N)`` and a cheap brightness verifier (included
  in its time), noises ``gaussian(shape, seed_k)`` fed to the baselines as ``latents``.
Also 8 prompts x 8 candidates: one ``run_search`` over 8 targets vs one batched call per prompt.

Reports candidates/s ratios (best of ``--repeats``, the three ways taking turns so that a busy
machine slows them alike), the largest image difference to ours (same noises -> same images), and
peak memory: each way runs in a fresh process that loads the model, makes one warm-up call,
returns freed heap memory to the system (``malloc_trim``), resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``) and reports the kernel's exact peak (``VmHWM``) of one more call above the
RSS just before it. The fresh processes are forked by a ``multiprocessing`` fork server that imported the
measured pipelines' modules once and ran nothing (so torch's thread pools are never forked), after all
timings. Writes the table into BENCHMARKS.md between the ``bench_models`` markers.
Run: ``python bench/bench_models.py`` (tiny pipelines are built in a temporary folder).
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _tiny_flow as tiny_flow  # noqa: E402
import _tiny_pipelines as tiny  # noqa: E402
from _common import write_section  # noqa: E402

from noisesearch.algorithms import RandomSearch, gaussian  # noqa: E402
from noisesearch.driver import run_search  # noqa: E402
from noisesearch.models import MODELS  # noqa: E402


def _saved(build):
    """A ``save(folder) -> folder`` for an in-memory tiny pipeline builder of ``_tiny_flow``."""

    def save(folder: Path) -> Path:
        build().save_pretrained(folder)
        return folder

    return save


# registry name -> (writes its tiny pipeline into a folder, flow family: sized by --flow-sizes instead of --sizes)
FAMILIES = {
    "flux": (tiny.save_flux, False),
    "pixart-sigma": (tiny.save_pixart, False),
    "sd": (tiny.save_sd, False),
    "sd3": (_saved(tiny_flow.sd3), True),
    "flux2": (_saved(tiny_flow.flux2), True),
    "z-image": (_saved(tiny_flow.z_image), True),
    "sana": (_saved(tiny_flow.sana), True),
    "qwen-image": (_saved(tiny_flow.qwen_image), True),
}
MAX_SEQUENCE_LENGTH = {"sd": None, "qwen-image": 256, "flux2": 48}  # else 16 (the prompt must fit past a template)
EXTRA = {  # pipeline __call__ arguments that make its images the adapter's
    "pixart-sigma": {"use_resolution_binning": False, "clean_caption": False},
    "sana": {"use_resolution_binning": False},
    "qwen-image": {"negative_prompt": " "},  # the adapter's negative prompt: the pipeline guides only with one
}
PACKED = {"flux", "qwen-image"}  # pipelines whose latents= are packed 2x2 tokens
PROMPTS = [
    "a red cube",
    "a blue cat",
    "a photo of the dog",
    "a red cat",
    "the blue cube",
    "a dog",
    "a cat of the dog",
    "a photo of a red cube",
]
STEPS = 4


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_of(fn) -> int:
    """Exact peak RSS (bytes) of one call of ``fn`` above the RSS just before it, as the kernel tracks it.

    Freed heap memory is first given back (``malloc_trim``) so that the call cannot hide its needs in
    memory the allocator kept, and the kernel's high-water mark is reset (``clear_refs`` 5, Linux >= 4.0).
    """
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS")
    fn()
    return max(0, _status("VmHWM") - before)


class Recorder:
    """Mean brightness as the score; keeps every image it scores, in call order."""

    name, preview_sigma = "brightness", None

    def __init__(self):
        self.images = []

    def __call__(self, images, targets, *, previews=None):
        self.images.append(images)
        return images.mean(dim=(1, 2, 3))


def msl(name: str) -> dict:
    """``max_sequence_length`` for the model and the pipeline (none for SD)."""
    length = MAX_SEQUENCE_LENGTH.get(name, 16)
    return {} if length is None else {"max_sequence_length": length}


def pipe_kwargs(name: str, model) -> dict:
    return {
        "height": model.height,
        "width": model.width,
        "num_inference_steps": STEPS,
        "output_type": "pt",
        getattr(model, "guidance_arg", "guidance_scale"): model.default_guidance,
        **msl(name),
        **EXTRA.get(name, {}),
    }


def latents_of(name: str, noises: torch.Tensor) -> torch.Tensor:
    from noisesearch.models.flux import _pack

    return _pack(noises) if name in PACKED else noises  # VP pipelines take the noise itself (DDIM: x1)


def timed(fns: dict, repeats: int) -> dict:
    """{name: (best wall seconds, result of the last call)}, the callables taking turns in each repeat."""
    best = {name: (float("inf"), None) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - start
            best[name] = (min(best[name][0], wall), out)
    return best


def ours(model, prompts, candidates):
    """run_search over ``prompts``; returns (images (P*N, 3, H, W) in candidate order, their noise seeds)."""
    recorder = Recorder()
    cost = STEPS * model.nfe_per_call(model.default_guidance)
    results = run_search(
        model,
        recorder,
        RandomSearch(candidates=candidates),
        prompts,
        seeds=list(range(len(prompts))),
        budget=candidates * cost,
        steps=STEPS,
    )
    images = torch.cat(recorder.images)
    return images, [c["noise_seed"] for r in results for c in sorted(r.candidates, key=lambda c: c["index"])]


def noises_of(model, seeds) -> torch.Tensor:
    """The noises (P*N, C, h, w) of ``seeds``, drawn again outside the timed run for the baselines' ``latents``."""
    return torch.stack([gaussian(model.noise_shape, s) for s in seeds])


def load(name: str, folder: Path, size: int):
    return MODELS[name](path=folder, height=size, width=size, **msl(name))


def methods(name: str, model, candidates: int, latents: torch.Tensor) -> dict:
    """The three ways to make ``candidates`` images of one prompt (``latents``: the baselines' noises)."""
    pipe, kwargs, prompt = model.pipe, pipe_kwargs(name, model), PROMPTS[0]
    return {
        "ours": lambda: ours(model, [prompt], candidates),
        "loop": lambda: torch.cat(
            [pipe(prompt=prompt, latents=latents[k : k + 1], **kwargs).images for k in range(candidates)]
        ),
        "batched": lambda: pipe(prompt=prompt, num_images_per_prompt=candidates, latents=latents, **kwargs).images,
    }


def peak_child(name: str, folder: str, size: int, candidates: int, method: str, send) -> None:
    """In a fresh process: send the peak memory (bytes) of one call of ``method`` after one warm-up call."""
    model = load(name, Path(folder), size)
    noises = torch.randn(candidates, *model.noise_shape, generator=torch.Generator().manual_seed(0))
    fn = methods(name, model, candidates, latents_of(name, noises))[method]
    fn()  # warm-up: one-time allocations (prompt caches, kernels) are not what a call needs
    send.send(peak_of(fn))


def modules_of(model) -> set[str]:
    """The modules of an adapter, its pipeline and the pipeline's components (what the fork server imports)."""
    parts = [model, model.pipe, *(c for c in model.pipe.components.values() if c is not None)]
    return {type(part).__module__ for part in parts}


def peak_in_child(ctx, name: str, folder: Path, size: int, candidates: int, method: str) -> int:
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=peak_child, args=(name, str(folder), size, candidates, method, send))
    child.start()
    send.close()
    try:
        peak = receive.recv()  # EOFError if the child died first
    finally:
        child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the peak-memory child of {name} {size} {method} exited with {child.exitcode}")
    return peak


def measure(name: str, folder: Path, size: int, candidates: int, repeats: int) -> dict:
    model = load(name, folder, size)
    images, seeds = ours(model, [PROMPTS[0]], candidates)
    latents = latents_of(name, noises_of(model, seeds))
    runs = timed(methods(name, model, candidates, latents), repeats)
    (t_ours, (images, _)), (t_loop, loop), (t_batch, batch) = runs["ours"], runs["loop"], runs["batched"]
    # 8 prompts x 8 candidates: one run_search over 8 targets vs one batched call per prompt
    pipe, kwargs = model.pipe, pipe_kwargs(name, model)
    _, many_seeds = ours(model, PROMPTS, 8)
    many_latents = latents_of(name, noises_of(model, many_seeds)).reshape(len(PROMPTS), 8, *latents.shape[1:])
    many_runs = timed(
        {
            "ours": lambda: ours(model, PROMPTS, 8),
            "per": lambda: torch.cat(
                [
                    pipe(prompt=p, num_images_per_prompt=8, latents=many_latents[i], **kwargs).images
                    for i, p in enumerate(PROMPTS)
                ]
            ),
        },
        repeats,
    )
    (t_many, (many, _)), (t_per, per) = many_runs["ours"], many_runs["per"]
    return {
        "model": name,
        "modules": modules_of(model),
        "guidance": f"{model.default_guidance:g} ({model.nfe_per_call(model.default_guidance)})",
        "size": size,
        "ours_cps": candidates / t_ours,
        "loop_cps": candidates / t_loop,
        "batch_cps": candidates / t_batch,
        "diff": max((images - loop).abs().max().item(), (images - batch).abs().max().item()),
        "many_ratio": t_per / t_many,
        "many_diff": (many - per).abs().max().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--flow-sizes", type=int, nargs="+", default=[32], help="sizes of the flow-base families")
    parser.add_argument("--models", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for name in args.models:
            save, flow = FAMILIES[name]
            folders[name] = save(Path(tmp) / name)
            for size in args.flow_sizes if flow else args.sizes:
                rows.append(measure(name, folders[name], size, args.candidates, args.repeats))
                print({k: v for k, v in rows[-1].items() if k != "modules"}, flush=True)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", *sorted(set().union(*(r["modules"] for r in rows)))])
        for r in rows:
            ways = ("ours", "loop", "batched")
            r["mem"] = tuple(
                peak_in_child(ctx, r["model"], folders[r["model"]], r["size"], args.candidates, m) for m in ways
            )
            print(r["model"], r["size"], "peak bytes", r["mem"], flush=True)
    mib = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    lines = [
        "## Our driver vs diffusers' own calls (tiny pipelines of every step-level family)",
        "",
        f"Measured by `bench/bench_models.py` in one run on {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}: one prompt, {args.candidates} candidates, {STEPS} steps, the "
        "model's default guidance (NFEs per step in brackets); best of "
        f"{args.repeats}. *loop*: one pipeline call per candidate; *batched*: one call with "
        f"`num_images_per_prompt={args.candidates}`; *ours*: `run_search` (random search, brightness verifier "
        "included). All three start from the same noises (`latents=`); *max diff* is the largest pixel "
        "difference of the baselines' images to ours. Memory: the kernel's exact peak RSS (VmHWM, reset "
        "before the call) above the RSS before it, for one call after a warm-up call, each way in a fresh "
        "process (forked from a server that only imported) with freed heap returned first (MiB). *8x8*: 8 prompts x 8 candidates, one `run_search` over "
        "8 targets vs one batched call per prompt (time ratio, and max image difference). Image sizes: "
        f"{', '.join(map(str, args.sizes))} for FLUX.1, PixArt-Sigma and SD, {', '.join(map(str, args.flow_sizes))} "
        "for the families on the flow base (one size keeps the run short).",
        "",
        "| model | image | guidance | ours / loop | ours / batched | ours cand./s | max diff | peak MiB ours / loop / batched "
        "| 8x8: ours / per-prompt batched | 8x8 max diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']}x{r['size']} | {r['guidance']} | **{r['ours_cps'] / r['loop_cps']:.1f}x** "
            f"| **{r['ours_cps'] / r['batch_cps']:.2f}x** | {r['ours_cps']:.0f} | {r['diff']:.1e} "
            f"| {' / '.join(mib(m) for m in r['mem'])} | **{r['many_ratio']:.2f}x** | {r['many_diff']:.1e} |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("bench_models", text)


if __name__ == "__main__":
    main()
