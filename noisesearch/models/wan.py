"""Wan 2.1 / 2.2 text-to-video through diffusers' ``WanPipeline`` (Wan team 2025, arXiv 2503.20314).

A 3-D DiT velocity model on the Wan causal video VAE; prompts through UMT5, as the pipeline's ``encode_prompt``
computes them (cleaned, padded to ``max_sequence_length`` with zeros past each prompt's length).
A candidate is a video: the noise and the state are latents (C, F', H/8, W/8) with ``F' = (F - 1) / 4 + 1``
latent frames for ``F`` frames (the VAE's temporal stride 4, so ``F = 4k + 1``), and ``decode`` gives videos
(B, 3, F, H, W) in [0, 1] (the pipeline's ``output_type="pt"`` is (B, F, 3, H, W): the same pixels, frames and
channels swapped).

Differences from ``FlowModel``:

- classifier-free guidance with the pipeline's negative prompt (``""`` unless ``negative_prompt`` is given), 2 NFEs
  per step above guidance 1, the rows batched as ``[uncond; cond]`` (the pipeline runs them as two calls);
- Wan 2.2's two experts: with ``boundary_ratio`` set, ``transformer`` (high noise) runs at timesteps
  ``t >= boundary_ratio * num_train_timesteps`` with ``guidance`` and ``transformer_2`` (low noise) below with
  ``guidance_2`` (the pipeline's ``guidance_scale_2``, default: ``guidance``); whether the unconditional rows run
  depends on ``guidance`` only, as in the pipeline, so every step costs the same NFEs;
- Wan 2.2 TI2V's per-token timesteps (``expand_timesteps``): the one timestep repeated over the tokens;
- the VAE's per-channel latent mean and std un-scaling before decoding; ``vae_tiling=True`` turns on the Wan
  VAE's tiled decoding (less memory for large frames);
- the schedule is the pipeline's ``scheduler.set_timesteps(steps)`` (no ``mu``).

Scheduler: our samplers integrate the flow themselves (Euler, Heun, ...). With
``FlowMatchEulerDiscreteScheduler`` (as diffusers' own Wan tests build the pipeline) the Euler sampler reproduces
``pipe()`` exactly. Released Wan folders ship ``UniPCMultistepScheduler`` with flow sigmas: the adapter then takes
its sigmas and timesteps (the same grid) but integrates them with our sampler, so its videos differ from
``pipe()``'s multistep solver; it says so once with a ``UserWarning`` (refusing would make every released folder
unusable, and the search's samplers are ours for every model). To reproduce ``pipe()``, give the pipeline
``FlowMatchEulerDiscreteScheduler(shift=flow_shift)``. A scheduler that is not on flow sigmas is refused.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from noisesearch.errors import UserError
from noisesearch.keywords import bind, declare
from noisesearch.models._diffusers_common import decode_rows, decode_slices, guide, load_pipeline
from noisesearch.models._flow import FlowModel, call_default

DEFAULT_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
PIPELINE_MULTIPLE = 16  # WanPipeline.check_inputs refuses sizes that are not multiples of 16


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``WanPipeline`` from a folder or hub id (default Wan 2.1 T2V 1.3B)."""
    from diffusers import WanPipeline

    return load_pipeline(WanPipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


def check_scheduler(pipe) -> str | None:
    """None for a flow-matching Euler scheduler (exact), a warning line for another solver on flow sigmas;
    ``UserError`` for a scheduler whose sigmas are not the flow's."""
    scheduler, config = pipe.scheduler, pipe.scheduler.config
    name = type(scheduler).__name__
    if config.get("use_dynamic_shifting"):
        raise UserError(f"{name} shifts dynamically, but WanPipeline passes no mu; use a fixed shift")
    if name == "FlowMatchEulerDiscreteScheduler":
        return None
    if config.get("use_flow_sigmas") and config.get("prediction_type") == "flow_prediction":
        return (
            f"WanPipeline's scheduler is {name}: noisesearch integrates its flow sigmas with its own sampler (Euler "
            "by default), so videos differ from pipe(); for pipe()'s exact videos give the pipeline "
            f"FlowMatchEulerDiscreteScheduler(shift={config.get('flow_shift', 1.0)})"
        )
    raise UserError(
        f"WanPipeline's scheduler {name} is not on flow-matching sigmas; accepted: FlowMatchEulerDiscreteScheduler, "
        "or a multistep scheduler with use_flow_sigmas=True and prediction_type='flow_prediction'"
    )


FLOW_OPTIONS = ("height", "width", "max_sequence_length", "decode_batch", "release_text_encoders")  # FlowModel's


@dataclass(frozen=True, kw_only=True)
class WanOptions:
    """The Wan adapter's keyword options (``WanModel(pipe, **options)``; ``from_pipeline`` and ``MODELS["wan"]``
    read them from its signature): ``FLOW_OPTIONS`` go to ``FlowModel``; ``num_frames`` (``4k + 1``, default: the
    pipeline's), ``vae_tiling`` (tiled VAE decoding), ``guidance_2`` (Wan 2.2's low-noise expert's scale, default:
    ``guidance``) and ``negative_prompt`` (``""``) are Wan's own."""

    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    max_sequence_length: int | None = None
    decode_batch: int | None = None
    release_text_encoders: bool = False
    vae_tiling: bool = False
    guidance_2: float | None = None
    negative_prompt: str = ""

    def checked_guidance_2(self, boundary: float | None) -> float | None:
        """``guidance_2`` as a float (None: ``guidance``); only for a two-expert pipeline (a ``boundary``)."""
        value = self.guidance_2
        if value is None:
            return None
        if boundary is None:
            raise UserError("guidance_2 is for a two-expert Wan 2.2 pipeline (boundary_ratio set); this has one")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"guidance_2 must be a finite number, got {value!r}")
        return float(value)

    def checked_negative_prompt(self) -> str:
        """``negative_prompt``, refused unless a string."""
        if not isinstance(self.negative_prompt, str):
            raise UserError(f"negative_prompt must be a string, got {self.negative_prompt!r}")
        return self.negative_prompt

    def checked_vae_tiling(self) -> bool:
        """``vae_tiling``, refused unless true or false."""
        if not isinstance(self.vae_tiling, bool):
            raise UserError(f"vae_tiling must be true or false, got {self.vae_tiling!r}")
        return self.vae_tiling


def expert_boundary(pipe) -> float | None:
    """Wan 2.2's expert boundary as a timestep (``boundary_ratio * num_train_timesteps``); None for one expert."""
    ratio = pipe.config.get("boundary_ratio")
    if ratio is None:
        return None
    if getattr(pipe, "transformer_2", None) is None:
        raise UserError(f"WanPipeline has boundary_ratio {ratio} but no transformer_2 (its low-noise expert)")
    return float(ratio) * pipe.scheduler.config.get("num_train_timesteps", 1000)


def check_frames(pipe, num_frames, stride: int) -> int:
    """The frame count (default: the pipeline's ``num_frames``), refused unless ``stride * k + 1``."""
    frames = int(call_default(pipe, "num_frames", 81)) if num_frames is None else num_frames
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or (frames - 1) % stride:
        raise UserError(
            f"num_frames {frames!r} is not {stride}k + 1 frames (the Wan VAE's temporal stride {stride}); "
            f"accepted: 1, {stride + 1}, {2 * stride + 1}, ..."
        )
    return frames


class WanModel(FlowModel):
    """Wan 2.1 / 2.2 text-to-video adapter: prompts in, videos (B, 3, F, H, W) in [0, 1] out."""

    name = "wan"
    domain = "video"
    step_kwargs = ("attention_kwargs",)
    cond_keys = ("prompt_embeds",)
    default_max_sequence_length = 512
    size_note = ", and WanPipeline's multiple of 16"

    def __init__(self, pipe, **options):
        o = bind(WanOptions, options, where="WanModel.__init__")
        if getattr(pipe, "transformer", None) is None:
            raise UserError("the Wan adapter needs the pipeline's transformer (the high-noise expert of Wan 2.2)")
        self.boundary = expert_boundary(pipe)
        self.guidance_2 = o.checked_guidance_2(self.boundary)
        self.negative_prompt, self.vae_tiling = o.checked_negative_prompt(), o.checked_vae_tiling()
        self.scheduler_warning = check_scheduler(pipe)
        super().__init__(pipe, **{name: getattr(o, name) for name in FLOW_OPTIONS})
        stride = int(pipe.vae_scale_factor_temporal)
        self.frames = frames = check_frames(pipe, o.num_frames, stride)
        c, h, w = self.noise_shape
        self.noise_shape = (c, (frames - 1) // stride + 1, h, w)  # (C, F', H/8, W/8)
        self.latent_shape = (1, *self.noise_shape)  # what the pipeline takes as latents=
        self.latents_note = f"WanPipeline takes latents (1, {', '.join(map(str, self.noise_shape))})"
        if self.vae_tiling:
            pipe.vae.enable_tiling()
        self.fps = 24 if pipe.config.get("expand_timesteps") else 16  # Wan 2.2 TI2V-5B makes 24 fps, the others 16
        if self.scheduler_warning:
            warnings.warn(self.scheduler_warning, UserWarning, stacklevel=2)
        self._stage: tuple = (pipe.transformer, None)  # (expert, guidance scale) of the current call

    # -- family hooks ------------------------------------------------------------------------------------------
    def vae_factor(self) -> int:
        return int(self.pipe.vae_scale_factor_spatial)

    def patch_size(self) -> int:
        return int(self.pipe.transformer.config.patch_size[1])

    def size_multiple(self) -> int:
        patch = self.pipe.transformer.config.patch_size  # (frames, height, width)
        return math.lcm(PIPELINE_MULTIPLE, self.vae_factor() * int(patch[1]), self.vae_factor() * int(patch[2]))

    def schedule_args(self, steps: int) -> dict:
        return {}  # WanPipeline calls set_timesteps(steps) alone

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, negative = self.pipe.encode_prompt(
            prompt=prompts,
            negative_prompt=[self.negative_prompt] * len(prompts),
            do_classifier_free_guidance=True,
            max_sequence_length=self.max_sequence_length,
            device=self.device,
        )  # (N, L, D) each, zero past each prompt's tokens
        return {"prompt_embeds": embeds.to(self.dtype), "negative_prompt_embeds": negative.to(self.dtype)}

    def low_noise(self, sigma: float) -> bool:
        """Whether Wan 2.2's low-noise expert runs at ``sigma`` (its timestep below the boundary, in float32)."""
        if self.boundary is None:
            return False
        return bool(self.timestep(sigma, 1)[0] < self.boundary)

    def velocity(self, x: torch.Tensor, sigma: float, cond: dict, guidance: float) -> torch.Tensor:
        low = self.low_noise(sigma)
        scale = (guidance if self.guidance_2 is None else self.guidance_2) if low else guidance
        self._stage = (self.pipe.transformer_2 if low else self.pipe.transformer, scale)
        return super().velocity(x, sigma, cond, guidance)

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        return guide(uncond, cond, self._stage[1])  # this step's expert's scale

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        net = self._stage[0]
        timestep = t.to(self.device)
        if self.pipe.config.get("expand_timesteps"):  # Wan 2.2 TI2V: one timestep per token (all equal here)
            f, h, w = x.shape[2:]
            timestep = timestep[:, None].expand(-1, f * ((h + 1) // 2) * ((w + 1) // 2))  # (B, tokens)
        return net(
            hidden_states=x.to(net.dtype),
            timestep=timestep,
            encoder_hidden_states=cond["prompt_embeds"],
            attention_kwargs=self.pipeline_kwargs.get("attention_kwargs"),
            return_dict=False,
        )[0]  # (B, C, F', h, w)

    def vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        return z / std + mean  # (b, C, F', h, w): the pipeline's de-normalisation

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, F', h, w) -> videos (B, 3, F, H, W) in [0, 1], in slices of whole videos."""
        vae = self.pipe.vae

        def one(z: torch.Tensor) -> torch.Tensor:
            video = vae.decode(self.vae_latents(z.to(vae.device, vae.dtype)), return_dict=False)[0]  # [-1, 1]
            return (video.float() / 2 + 0.5).clamp(0, 1).cpu()  # (b, 3, F, H, W)

        return decode_slices(one, x0, decode_rows(self.decode_batch, self.frames * self.height * self.width))


declare(WanModel.__init__, WanOptions)  # its keywords, as from_pipeline and MODELS["wan"] read them
