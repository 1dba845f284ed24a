"""Shared plumbing for the diffusers adapters: loading, prompt caching, VAE decoding (dtype and device names are
parsed by ``noisesearch.devices``).

Loading follows diffusers' ``DiffusionPipeline.from_pretrained`` (https://huggingface.co/docs/diffusers/
api/pipelines/overview) with ``trust_remote_code=False`` and safetensors only: a local folder must
hold ``model_index.json`` and every component it lists; anything else that looks like ``owner/name``
is a hub id. Every mistake becomes a one-line ``UserError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from noisesearch.devices import parse_device, parse_dtype
from noisesearch.errors import UserError
from noisesearch.models._pipeline_args import check_pipeline_kwargs
from noisesearch.models._pipeline_folder import check_folder, pipeline_class

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@contextmanager
def _quiet_loading():
    """diffusers' and transformers' loading progress bars off for the duration (a CLI error stays one line)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    was = [(log, log.is_progress_bar_enabled()) for log in (dlog, tlog)]
    for log, _ in was:
        log.disable_progress_bar()
    try:
        yield
    finally:
        for log, enabled in was:
            if enabled:
                log.enable_progress_bar()


# what diffusers and transformers raise for a folder they cannot build a pipeline from: a missing or unreadable
# file, a config value of the wrong type (TypeError, RuntimeError from the layer constructors), no memory
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, IndexError, MemoryError)


def load_error(cls: str, source: str, error: BaseException) -> str:
    """One line for a pipeline that could not be loaded: the folder, the component being built if known, the cause."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    cause = f"{type(error).__name__}: {first}" if first else type(error).__name__
    name = _failing_component(error)
    where = "" if name is None else f" (building its {name}/ component)"
    return f"cannot load {cls} from {source!r}{where}: {cause}"


def _failing_component(error: BaseException) -> str | None:
    """The pipeline component diffusers was building when ``error`` was raised (its ``load_sub_model`` frame's
    ``name``), or None."""
    tb = error.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "load_sub_model":
            name = tb.tb_frame.f_locals.get("name")
            found = name if isinstance(name, str) else found
        tb = tb.tb_next
    return found


OFFLOAD = ("model", "sequential")


def load_pipeline(pipeline_cls, path, *, default: str, device, dtype, offload: str | None = None, **kwargs):
    """A diffusers pipeline of ``pipeline_cls`` from a local folder or hub id, in eval mode, without grads.

    ``path`` None means the hub id ``default``. Local folders are checked first (``check_folder``);
    loading never runs remote code and reads safetensors only. ``offload`` passes diffusers' CPU
    offload through: "model" (``enable_model_cpu_offload``: whole components move to the GPU when
    used) or "sequential" (``enable_sequential_cpu_offload``: layer by layer, least memory, slowest).
    """
    dev, dt = parse_device(device), parse_dtype(dtype)
    if offload is not None and offload not in OFFLOAD:
        raise UserError(f"unknown offload {offload!r}; accepted: {', '.join(OFFLOAD)}")
    if offload is not None and dev.type != "cuda":
        raise UserError(f"offload {offload!r} moves components between CPU and a GPU; give --device cuda")
    source = default if path is None else str(path)
    local = Path(source).expanduser()
    if local.exists():
        check_folder(local, (pipeline_cls.__name__, *kwargs.pop("also_accept", ())))
        source = str(local)
    elif path is not None and not _HUB_ID.match(source):
        raise UserError(f"model folder {source!r} does not exist (nor is it a hub id owner/name)")
    kwargs.pop("also_accept", None)
    try:
        with _quiet_loading():
            pipe = pipeline_cls.from_pretrained(
                source, dtype=dt, trust_remote_code=False, use_safetensors=True, **kwargs
            )
    except LOAD_ERRORS as e:  # a component config with values its class cannot take, a missing file, no memory
        raise UserError(load_error(pipeline_cls.__name__, source, e)) from None
    pipe.set_progress_bar_config(disable=True)
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.eval().requires_grad_(False)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=dev)
        return pipe
    if offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=dev)
        return pipe
    return pipe.to(dev)


def execution_device(pipe, net) -> torch.device:
    """Where ``net`` computes: its own device, or the GPU that diffusers' CPU offload moves it to."""
    return torch.device(getattr(pipe, "_execution_device", None) or net.device) if pipe is not None else net.device


def check_prompt(target) -> str:
    """A prompt as a non-empty string, else ``UserError``."""
    if not isinstance(target, str) or not target.strip():
        raise UserError("prompt must be a non-empty string")
    return target


class PromptCache:
    """Embeddings per distinct prompt, computed once by ``embed(prompts) -> dict of (N, ...)`` and reused while
    the pipeline's text encoders stay the same.

    With ``pipe``, the weights identity of its ``text_encoder*`` components (``noisesearch.cache.model_identity``,
    the replay cache's own: weights of at most 64 MiB compared by their bytes, larger ones by their version
    counters and data pointers) is taken on every call, and every kept embedding is dropped when it changed:
    an in-place edit of an encoder's weights, a LoRA loaded on it, or another encoder put in its place after
    ``from_pipeline``. Released encoders (``release_text_encoders``) leave the kept embeddings as they are.
    """

    def __init__(self, embed: Callable[[list[str]], dict[str, torch.Tensor]], pipe=None):
        self.embed = embed
        self.pipe = pipe
        self.cache: dict[str, dict[str, torch.Tensor]] = {}
        self.encoders_identity: tuple | None = None  # of the text encoders the kept embeddings came from

    def text_encoders(self) -> list[torch.nn.Module]:
        """The pipeline's text encoders now (components named ``text_encoder...``), by name."""
        components = getattr(self.pipe, "components", None) or {}
        return [
            m for k, m in sorted(components.items()) if k.startswith("text_encoder") and isinstance(m, torch.nn.Module)
        ]

    def refresh(self) -> None:
        """Drop every kept embedding if the text encoders are not the ones (or their weights not the ones) they came
        from."""
        encoders = self.text_encoders()
        if not encoders:  # none, or released: the kept embeddings are all there is
            return
        from noisesearch.cache import model_identity

        identity = tuple((id(m), model_identity(m)) for m in encoders)
        if identity != self.encoders_identity:
            self.cache.clear()
            self.encoders_identity = identity

    def __call__(self, prompts: list[str], *, refresh: bool = True) -> dict[str, torch.Tensor]:
        """Batch-first embeddings for ``prompts`` (duplicates encoded once); ``refresh=False`` when the caller has
        just called ``refresh``."""
        if refresh:
            self.refresh()
        new = list(dict.fromkeys(p for p in prompts if p not in self.cache))
        if new:
            with torch.no_grad():
                fresh = self.embed(new)
            for i, p in enumerate(new):
                self.cache[p] = {k: v[i] for k, v in fresh.items()}
        keys = self.cache[prompts[0]].keys()
        return {k: torch.stack([self.cache[p][k] for p in prompts]) for k in keys}  # each (B, ...)


DECODE_PIXELS = 4 * 512 * 512  # image pixels per VAE decode slice by default: 4 images at 512x512


def check_decode_batch(value) -> int | None:
    """``decode_batch`` as a positive int, or None (slices sized by ``decode_rows``), else ``UserError``."""
    return None if value is None else check_positive_int(value, "decode_batch")


def decode_rows(batch: int | None, pixels: int) -> int:
    """Rows per VAE decode slice: ``batch`` if given, else as many images of ``pixels`` pixels as fit in
    ``DECODE_PIXELS`` (at least 4). VAE memory grows with rows x pixels, so 512x512 and larger images
    decode 4 at a time as before, while small images decode in one call as the pipelines do (slicing
    a batch of small images costs more per-call overhead than it saves)."""
    return batch if batch is not None else max(4, DECODE_PIXELS // max(1, pixels))


def decode_slices(decode_one: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    """``decode_one`` over slices of at most ``batch`` rows, concatenated (VAE memory grows with the batch)."""
    if len(x) <= batch:
        return decode_one(x)  # (B, 3, H, W): one slice, no copy into a concatenation
    return torch.cat([decode_one(x[i : i + batch]) for i in range(0, len(x), batch)])  # (B, 3, H, W)


def check_positive_int(value, what: str) -> int:
    """``value`` as a positive int, else ``UserError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    return value


CPU_DENOISE_ROWS = 32  # most candidate rows per network forward on a CPU (see ``denoise_rows``)


def denoise_rows(batch: int | None, device: torch.device) -> int | None:
    """Most candidate rows per network forward: ``batch`` if set, else ``CPU_DENOISE_ROWS`` on a CPU, else all.

    On a CPU a forward over more rows than fit its caches is slower per row (tiny FLUX at 64x64 on
    2 threads: 64 rows in one forward 336 ms, in two of 32 rows 253 ms; SD and PixArt about 10%),
    and every row's result is the same either way, so large batches run in equal chunks there. On
    an accelerator a bigger forward is never slower per row, so nothing is split.
    """
    if batch is not None:
        return batch
    return CPU_DENOISE_ROWS if device.type == "cpu" else None


def row_chunks(n: int, limit: int | None) -> list[slice]:
    """``n`` rows as consecutive slices of at most ``limit`` rows, as equal in size as possible."""
    if limit is None or n <= limit:
        return [slice(0, n)]
    size = -(-n // -(-n // limit))  # ceil(n / number of chunks)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def cond_rows(cond, rows: slice):
    """Rows ``rows`` of a condition (a tensor or a dict of tensors) as views, without copying."""
    if isinstance(cond, torch.Tensor):
        return cond[rows]
    return {k: cond_rows(v, rows) for k, v in cond.items()}


def in_chunks(fn: Callable, x: torch.Tensor, cond, limit: int | None) -> torch.Tensor:
    """``fn(x, cond)`` over ``row_chunks`` of ``x`` and ``cond``, concatenated (one call if one chunk)."""
    chunks = row_chunks(len(x), limit)
    if len(chunks) == 1:
        return fn(x, cond)
    return torch.cat([fn(x[r], cond_rows(cond, r)) for r in chunks])


def _base(t: torch.Tensor) -> torch.Tensor:
    return t if t._base is None else t._base


class CFGStack:
    """``[uncond; cond]`` row stacks of a condition's tensors for classifier-free guidance, built once per condition.

    The driver indexes a condition once per batch and then calls ``denoise`` at every step with the
    same tensors; concatenating the unconditional and conditional embeddings at each call would copy
    them ``steps`` times. This keeps the stacks of the condition last seen, recognised by the identity
    and in-place version of its tensors (or of the tensors they are views of, for the row chunks of
    ``in_chunks``, each stacked once), so a batch pays for one concatenation of each chunk.
    """

    def __init__(self):
        self.bases: tuple = ()
        self.stacks: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def __call__(self, cond: dict, pairs: tuple[tuple[str, str], ...]) -> tuple[torch.Tensor, ...]:
        """``torch.cat([cond[u], cond[c]])`` for each ``(u, c)`` of ``pairs`` (each (2B, ...))."""
        tensors = [cond[k] for pair in pairs for k in pair]
        if any(t.requires_grad for t in tensors):  # a differentiable condition: a fresh graph per call
            return tuple(torch.cat([cond[u], cond[c]]) for u, c in pairs)
        bases = tuple((_base(t), t._version) for t in tensors)  # held: their storage cannot be reused
        if len(bases) != len(self.bases) or any(a is not b or u != v for (a, u), (b, v) in zip(bases, self.bases)):
            self.bases, self.stacks = bases, {}
        key = (pairs, *((t.storage_offset(), tuple(t.shape), t.stride()) for t in tensors))
        if key not in self.stacks:
            self.stacks[key] = tuple(torch.cat([cond[u], cond[c]]) for u, c in pairs)
        return self.stacks[key]


class VPTable:
    """A discrete VP schedule (``alphas_cumprod``) seen in the package's sigma convention.

    A VP state ``x_vp = alpha x0 + sigma_vp noise`` is ``x_rf = x_vp / (alpha + sigma_vp)`` at
    ``sigma_rf = sigma_vp / (alpha + sigma_vp)`` (the DDIM-Euler equivalence of Song et al. 2021,
    arXiv 2010.02502, Sec. 4.3). Sigmas outside the trained range are clamped to it.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        acp = alphas_cumprod.double()  # (T,)
        self.sigmas = ((1 - acp).sqrt() / (acp.sqrt() + (1 - acp).sqrt())).tolist()  # increasing in t
        self.exact = {s: t for t, s in enumerate(self.sigmas)}

    def sigma(self, t: int) -> float:
        """RF sigma of integer timestep ``t``."""
        return self.sigmas[int(t)]

    def at(self, sigma: float) -> tuple[float, float, float]:
        """(timestep, alpha, sigma_vp) for an RF ``sigma``; grid sigmas map to their integer timestep."""
        sigma = min(max(float(sigma), self.sigmas[0]), self.sigmas[-1])
        t = self.exact.get(sigma)
        if t is None:
            import numpy as np

            t = float(np.interp(sigma, self.sigmas, np.arange(len(self.sigmas))))
        ratio = sigma / (1 - sigma)  # sigma_vp / alpha
        alpha = (1 + ratio**2) ** -0.5
        return t, alpha, ratio * alpha


def guide(uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance (Ho and Salimans 2022): ``uncond + guidance * (cond - uncond)``."""
    return uncond + guidance * (cond - uncond)


class VPModel:
    """Shared part of the eps-prediction adapters on a discrete VP schedule (SD, SDXL, PixArt-Sigma, DiT).

    Subclasses set ``self.scheduler`` (a DDIMScheduler, for its timesteps only) and ``self.vp`` (its
    ``VPTable``), and implement ``eps(x_vp, t, cond, guidance) -> (B, C, h, w)``: the guided noise
    prediction for VP states ``x_vp`` at timestep ``t``. The state in the package convention is
    ``x = x_vp / (alpha + sigma_vp)`` and the x0-prediction ``(x_vp - sigma_vp * eps) / alpha``.
    Classifier-free guidance runs the unconditional and conditional rows as one batch: 2 NFEs per call.
    """

    def nfe_per_call(self, guidance: float) -> int:
        return 1 if guidance == 1.0 else 2

    def schedule(self, steps: int) -> tuple[float, ...]:
        """DDIM's timesteps for ``steps`` steps as RF sigmas, then 0."""
        check_positive_int(steps, "steps")
        self.scheduler.set_timesteps(steps)
        return tuple(self.vp.sigma(int(t)) for t in self.scheduler.timesteps) + (0.0,)

    def start_scale(self, sigma: float) -> float:
        """``x_rf / x_vp`` at RF ``sigma``: the pipeline's ``latents = noise`` is ``x_rf = start_scale * noise``."""
        _, alpha, sigma_vp = self.vp.at(sigma)
        return 1 / (alpha + sigma_vp)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float, cond, *, guidance: float) -> torch.Tensor:
        return self.denoise_grad(x, sigma, cond, guidance=guidance)

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond, *, guidance: float) -> torch.Tensor:
        """``denoise`` with autograd left on (for first-order search)."""
        t, alpha, sigma_vp = self.vp.at(sigma)
        x_vp = x * (alpha + sigma_vp)  # (B, C, h, w)
        rows = denoise_rows(getattr(self, "denoise_batch", None), self.device)
        eps = in_chunks(lambda xs, cs: self.eps(xs, t, cs, guidance), x_vp, cond, rows).to(x.device, x.dtype)
        return (x_vp - sigma_vp * eps) / alpha


def load_any(path, *, device="cpu", dtype="float32", offload: str | None = None):
    """The pipeline in a folder (its class read from ``model_index.json``'s ``_class_name``) or hub id."""
    import diffusers

    if path is None:
        raise UserError("model 'diffusers' needs --model-path: a pipeline folder with model_index.json, or a hub id")
    cls = pipeline_class(path) or diffusers.DiffusionPipeline
    return load_pipeline(cls, path, default=str(path), device=device, dtype=dtype, offload=offload)


class StepKwargs:
    """``with_pipeline_kwargs`` for the step-level adapters: the few ``__call__`` extras their own loops honour.

    Subclasses list them in ``step_kwargs``; anything else the pipeline takes is refused with a pointer
    to the generic adapter, which passes every ``__call__`` argument through.
    """

    step_kwargs: tuple[str, ...] = ()
    pipeline_kwargs: dict = {}

    def with_pipeline_kwargs(self, kwargs: dict):
        """A copy of this adapter (same pipeline) that applies ``kwargs`` to every candidate."""
        import copy

        kwargs = check_pipeline_kwargs(self.pipe, kwargs)  # type: ignore[attr-defined]
        for key in kwargs:
            if key not in self.step_kwargs:
                raise UserError(
                    f"pipeline kwarg {key!r} is not supported by the step-level {self.name!r} adapter "  # type: ignore[attr-defined]
                    f"(it takes: {', '.join(self.step_kwargs) or 'none'}); "
                    "use ns.from_pipeline(pipe, adapter='generic') to pass any __call__ argument"
                )
        new = copy.copy(self)
        new.pipeline_kwargs = kwargs
        new.prompts = PromptCache(new._embed, new.pipe)  # type: ignore[attr-defined]
        if hasattr(new, "cfg_stack"):
            new.cfg_stack = CFGStack()
        return new
