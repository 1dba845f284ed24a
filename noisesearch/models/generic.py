"""The generic adapter: any diffusers pipeline whose ``__call__`` takes ``latents=``, driven whole.

A pipeline without a step-level adapter (AuraFlow, Lumina 2, CogView 4, SD3, a ControlNet or PAG
pipeline, a video pipeline, ...) is run through its own ``__call__``: several candidates of one
prompt per call (``num_images_per_prompt`` or ``num_videos_per_prompt`` = n with ``latents`` the n
candidates' noises stacked), ``output_type="pt"``. A candidate is therefore one *whole trajectory*:
from the pipeline's first sigma to 0, with the pipeline's own scheduler, guidance and extras.

- Noise: drawn in the pipeline's own latent shape (packed or not), found once by a probe that
  records what ``prepare_latents`` returns; so ``torch.randn((1, *noise_shape), generator=
  torch.Generator("cpu").manual_seed(seed))`` passed as ``latents=`` regenerates a candidate.
- NFEs: a forward pre-hook on the pipeline's denoisers (``transformer``, ``transformer_2``,
  ``unet``, ``prior``) counts the rows of every call, so classifier-free guidance (2 rows), PAG
  (3 rows) or separate conditional/unconditional calls are counted as they really run. The probe
  runs one candidate up to its first scheduler step and reads the rows per step; a full candidate
  then costs ``steps * rows``. Every real call is checked: the hook refuses a forward that would
  go past the planned rows (``BudgetExceeded``) and a call that ran fewer rows is an error too.
- Images: ``(B, C, H, W)`` in [0, 1]; video pipelines give ``(B, C, F, H, W)``, whose frames image
  verifiers score through ``verifiers/video.py`` (``generate`` writes ``best.webp``).

A scheduler that injects noise at every step (ancestral, SDE) draws it inside the pipeline, from
its own generator: such candidates are not reproducible one by one; use a deterministic scheduler.
Only algorithms that choose starting noises of full candidates work here (those that declare
``full_candidates_only``: random and zero-order search); the driver refuses the others in one line naming the pipeline classes with step-level adapters.

Example::

    model = GenericModel(pipe, pipeline_kwargs={"height": 32, "width": 32})
    images, rows = model.trajectories(noises, ["a red cube"] * len(noises), steps=2, guidance=5.0, rows=8)
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import torch

from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models._diffusers_common import check_positive_int, check_prompt, denoise_rows, execution_device
from noisesearch.models._pipeline_args import call_parameters, check_pipeline_kwargs
from noisesearch.samplers import schedule as uniform_schedule

DENOISERS = ("transformer", "transformer_2", "unet", "prior")
PROBE_STEPS = 2


class _ProbeStop(Exception):
    """Raised inside the probe's first scheduler step: everything needed has been seen."""


def _rows(args: tuple, kwargs: dict) -> int:
    """Batch rows of a denoiser call: its first tensor argument's first dimension."""
    for value in (*args, *(kwargs.get(k) for k in ("hidden_states", "sample", "x")), *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise RuntimeError("cannot tell the batch rows of a denoiser call (no tensor argument)")


def to_images(out) -> torch.Tensor:
    """A pipeline's ``output_type="pt"`` (or "np" / PIL) output as float (B, C, H, W) or (B, C, F, H, W) on the CPU."""
    if isinstance(out, (list, tuple)) and out and not isinstance(out[0], (torch.Tensor, np.ndarray)):
        out = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in out])  # PIL images (B, H, W, C)
    if isinstance(out, (list, tuple)):
        out = torch.stack([torch.as_tensor(o) for o in out])
    if isinstance(out, np.ndarray):
        x = torch.from_numpy(out)
        x = x.movedim(-1, -3) if x.shape[-1] in (1, 3, 4) else x  # channels last (numpy) -> channels first
    else:
        x = out
    x = x.float().cpu()
    if x.dim() == 5:  # videos (B, F, C, H, W) -> (B, C, F, H, W)
        x = x.permute(0, 2, 1, 3, 4)
    return x.clamp(0, 1)


class GenericModel:
    """Whole-trajectory adapter over a diffusers pipeline's own ``__call__`` (see the module docstring).

    Args:
        pipe: the pipeline object, used as it is (never reloaded, moved or cast).
        pipeline_kwargs: extra ``__call__`` arguments applied identically to every candidate
            (``height``/``width``, a control image, ``negative_prompt``, ...), checked against its signature.
        batch: most candidates per pipeline call (default: 32 on a CPU, all on an accelerator).
    """

    adapter = "generic"
    whole_trajectory = True

    def __init__(self, pipe, *, pipeline_kwargs: dict | None = None, batch: int | None = None):
        params = call_parameters(pipe)
        cls = type(pipe).__name__
        if "latents" not in params:
            raise UserError(f"{cls}.__call__ takes no latents=, so its noise cannot be searched")
        per_prompt = [k for k in ("num_images_per_prompt", "num_videos_per_prompt") if k in params]
        if not per_prompt:
            raise UserError(f"{cls}.__call__ takes neither num_images_per_prompt nor num_videos_per_prompt")
        self.denoisers = [getattr(pipe, n) for n in DENOISERS if isinstance(getattr(pipe, n, None), torch.nn.Module)]
        if not self.denoisers:
            raise UserError(f"{cls} has no denoiser to count NFEs on; expected one of: {', '.join(DENOISERS)}")
        self.pipe = pipe
        self.name = f"diffusers:{cls}"
        self.per_prompt = per_prompt[0]
        self.video = self.per_prompt == "num_videos_per_prompt"
        self.domain = "video" if self.video else "rgb"
        self.takes_guidance = "guidance_scale" in params
        steps, g = (params[k].default if k in params else None for k in ("num_inference_steps", "guidance_scale"))
        self.default_steps = steps if isinstance(steps, int) and steps > 0 else 50
        self.default_guidance = float(g) if isinstance(g, (int, float)) else 1.0
        self.pipeline_kwargs = check_pipeline_kwargs(pipe, pipeline_kwargs)
        self.batch = None if batch is None else check_positive_int(batch, "batch")
        self.device = execution_device(pipe, self.denoisers[0])
        self._probes: dict[float, tuple[tuple[int, ...], int]] = {}

    def with_pipeline_kwargs(self, kwargs: dict) -> GenericModel:
        """The same adapter over the same pipeline with other extra ``__call__`` arguments (probed anew)."""
        new = copy.copy(self)
        new.pipeline_kwargs = check_pipeline_kwargs(self.pipe, kwargs)
        new._probes = {}
        return new

    def check_target(self, target) -> str:
        return check_prompt(target)

    def encode(self, targets: list) -> torch.Tensor:
        """Row numbers only: the pipeline encodes each prompt itself, once per call."""
        return torch.arange(len(targets))

    def schedule(self, steps: int) -> tuple[float, ...]:
        """A nominal uniform grid of ``steps`` steps (the pipeline's own scheduler picks its real sigmas)."""
        return uniform_schedule(check_positive_int(steps, "steps"))

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """The pipeline's own latent shape for one candidate (what ``latents=`` takes, packed or not)."""
        return self._probe(self.default_guidance)[0]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (1, *self.noise_shape)

    latents_note = "the pipeline takes them as drawn"

    def nfe_per_call(self, guidance: float) -> int:
        """Denoiser rows per candidate and step at this guidance, as the probe counted them."""
        return self._probe(float(guidance))[1]

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        raise UserError(f"{self.name} runs whole trajectories through the pipeline; it has no step-level decode")

    def _call(self, prompt: str, latents: torch.Tensor | None, n: int, steps: int, guidance: float, **extra):
        kwargs = {**self.pipeline_kwargs, **extra}
        if self.takes_guidance:
            kwargs["guidance_scale"] = guidance
        if latents is not None:
            latents = latents.to(self.device, self.denoisers[0].dtype)
        return self.pipe(
            prompt=prompt,
            latents=latents,
            num_inference_steps=steps,
            output_type="pt",
            return_dict=False,
            **{self.per_prompt: n},
            **kwargs,
        )

    @contextmanager
    def _counting(self, limit: int | None):
        """Count denoiser rows; with ``limit``, refuse (before it runs) a call that would pass it."""
        count = {"rows": 0}

        def hook(module, args, kwargs):
            rows = _rows(args, kwargs)
            if limit is not None and count["rows"] + rows > limit:
                raise BudgetExceeded(
                    f"{self.name} asked for {count['rows'] + rows} denoiser rows, more than the {limit} planned"
                )
            count["rows"] += rows

        handles = [net.register_forward_pre_hook(hook, with_kwargs=True) for net in self.denoisers]
        bar = getattr(self.pipe, "_progress_bar_config", None)
        self.pipe.set_progress_bar_config(disable=True)
        try:
            yield count
        finally:
            for h in handles:
                h.remove()
            if bar is None:
                del self.pipe._progress_bar_config
            else:
                self.pipe._progress_bar_config = bar

    def _probe(self, guidance: float) -> tuple[tuple[int, ...], int]:
        """(latent shape of one candidate, denoiser rows per candidate and step), from one call stopped at its first step."""
        if guidance in self._probes:
            return self._probes[guidance]
        seen: dict = {}
        pipe, scheduler = self.pipe, self.pipe.scheduler
        prepare = pipe.prepare_latents

        def prepare_latents(*args, **kwargs):
            out = prepare(*args, **kwargs)
            seen["latents"] = out[0] if isinstance(out, tuple) else out
            return out

        def step(*args, **kwargs):
            seen["timesteps"] = len(scheduler.timesteps)
            raise _ProbeStop

        pipe.prepare_latents, scheduler.step = prepare_latents, step  # instance attributes shadow the methods
        try:
            with self._counting(None) as count, torch.no_grad():
                self._call("a photo", None, 1, PROBE_STEPS, guidance)
        except _ProbeStop:
            pass
        except (TypeError, ValueError) as e:  # the pipeline's own input checks (a ControlNet pipeline without image=)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            given = ", ".join(self.pipeline_kwargs) or "none"
            raise UserError(
                f"{self.name} refused its arguments before the first step ({first}); pipeline arguments given: {given}"
            ) from None
        finally:
            del pipe.prepare_latents, scheduler.step
        if "latents" not in seen or "timesteps" not in seen:
            raise UserError(f"{self.name}: the probe saw no prepare_latents or scheduler step; cannot plan its NFEs")
        if seen["timesteps"] != PROBE_STEPS:
            raise UserError(
                f"{self.name}: its scheduler {type(scheduler).__name__} runs {seen['timesteps']} denoiser steps for "
                f"{PROBE_STEPS} inference steps; the generic adapter needs a one-step-per-step scheduler"
            )
        shape = tuple(int(d) for d in seen["latents"].shape[1:])
        self._probes[guidance] = (shape, count["rows"])
        return self._probes[guidance]

    @torch.no_grad()
    def trajectories(
        self, x: torch.Tensor, prompts: list[str], *, steps: int, guidance: float, rows: int
    ) -> tuple[torch.Tensor, int]:
        """Images of the candidates ``x`` (B, *noise_shape) for ``prompts`` (B), and the denoiser rows they took.

        Candidates of one prompt run together (``batch`` at most per call), in the order given; the
        hook refuses any forward past ``rows`` in all.
        """
        limit = denoise_rows(self.batch, self.device) or len(x)
        out: list[torch.Tensor | None] = [None] * len(x)
        order: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            order.setdefault(p, []).append(i)
        with self._counting(rows) as count:
            for prompt, idx in order.items():
                for start in range(0, len(idx), limit):
                    part = idx[start : start + limit]
                    images = to_images(self._call(prompt, x[part], len(part), steps, guidance)[0])
                    for i, image in zip(part, images):
                        out[i] = image
        return torch.stack(out), count["rows"]  # type: ignore[arg-type]
