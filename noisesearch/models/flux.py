"""FLUX.1 through diffusers' ``FluxPipeline``: a rectified-flow transformer, already in the package convention.

FLUX's transformer predicts the velocity ``v = noise - x0`` of ``x_sigma = (1 - sigma) x0 + sigma noise``
(Black Forest Labs 2024; Esser et al. 2024, arXiv 2403.03206), so ``denoised = x - sigma * v``.
FLUX.1-dev is guidance-distilled: the guidance scale is an embedding input and one call is one NFE.
The search sees unpacked latents (C, H/8, W/8); the adapter packs them into 2x2 patches internally.
"""

from __future__ import annotations

import numpy as np
import torch

from noisesearch.errors import UserError
from noisesearch.models._diffusers_common import (
    PromptCache,
    StepKwargs,
    check_decode_batch,
    check_positive_int,
    check_prompt,
    decode_rows,
    decode_slices,
    denoise_rows,
    execution_device,
    in_chunks,
    load_pipeline,
)

DEFAULT_ID = "black-forest-labs/FLUX.1-dev"


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``FluxPipeline`` from a folder or hub id (default FLUX.1-dev), ready for ``FluxModel``."""
    from diffusers import FluxPipeline

    return load_pipeline(FluxPipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


def _pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): FLUX's 2x2 patch tokens, in the pipeline's order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (B, h/2, w/2, C, 2, 2)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def _unpack(tokens: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``_pack``: (B, h/2 * w/2, 4C) -> (B, C, h, w)."""
    b = tokens.shape[0]
    x = tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)  # (B, C, h/2, 2, w/2, 2)
    return x.reshape(b, c, h, w)


class FluxModel(StepKwargs):
    """FLUX text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out (see the module docstring)."""

    domain = "rgb"
    adapter = "step"
    step_kwargs = ("joint_attention_kwargs",)  # the pipeline extras this adapter's own loop honours

    def __init__(
        self,
        pipe,
        *,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int = 512,
        decode_batch: int | None = None,
    ):
        self.name = "flux"
        self.pipe = pipe  # used as it is: device map, dtype, offload hooks, LoRA, compiled modules untouched
        self.device = execution_device(self.pipe, self.pipe.transformer)
        self.dtype = self.pipe.transformer.dtype
        self.decode_batch = check_decode_batch(decode_batch)  # None: sized by image pixels (decode_rows)
        self.max_sequence_length = check_positive_int(max_sequence_length, "max_sequence_length")
        factor = self.pipe.vae_scale_factor
        native = self.pipe.default_sample_size * factor
        self.height, self.width = (native if height is None else height), (native if width is None else width)
        for what, size in (("height", self.height), ("width", self.width)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 2 * factor or size % (2 * factor):
                raise UserError(
                    f"{what} {size!r} is not a positive multiple of {2 * factor} "
                    f"(the VAE's {factor}x downsampling times FLUX's 2x2 packing)"
                )
        self.channels = self.pipe.transformer.config.in_channels // 4
        self.noise_shape = (self.channels, self.height // factor, self.width // factor)
        self.distilled = bool(self.pipe.transformer.config.guidance_embeds)
        self.default_guidance = 3.5 if self.distilled else 1.0  # FLUX.1-dev's default; schnell has none
        self.default_steps = 28 if self.distilled else 4
        h, w = self.noise_shape[1:]
        self.latent_shape = (1, self.channels, h, w)  # what a seeded draw has; the pipeline takes it packed
        self.latents_note = (
            f"FluxPipeline takes latents packed: FluxPipeline._pack_latents(z, 1, {self.channels}, {h}, {w})"
        )
        self.img_ids = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)  # (hw/4, 3)
        self.prompts = PromptCache(self._embed)

    def check_target(self, target) -> str:
        return check_prompt(target)

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled": pooled}  # (N, L, D), (N, P)

    def encode(self, targets: list) -> dict[str, torch.Tensor]:
        return self.prompts([self.check_target(t) for t in targets])

    def nfe_per_call(self, guidance: float) -> int:
        return 1  # guidance-distilled (dev) or guidance-free (schnell): one transformer row per sample

    def mu(self) -> float | None:
        """The resolution-dependent shift ``mu`` of FLUX's dynamic shifting (None if not used)."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.pipe.scheduler.config
        seq_len = (self.noise_shape[1] // 2) * (self.noise_shape[2] // 2)
        return calculate_shift(
            seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )

    def schedule(self, steps: int) -> tuple[float, ...]:
        """The pipeline's own sigmas for ``steps`` steps (shifted as the scheduler does), ending at 0."""
        check_positive_int(steps, "steps")
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        sigmas = None if scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(steps, sigmas=sigmas, mu=self.mu())
        return tuple(float(s) for s in scheduler.sigmas)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float, cond: dict, *, guidance: float) -> torch.Tensor:
        return self.denoise_grad(x, sigma, cond, guidance=guidance)

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond: dict, *, guidance: float) -> torch.Tensor:
        """``denoise`` with autograd left on (for first-order search)."""
        rows = denoise_rows(getattr(self, "denoise_batch", None), self.device)
        return in_chunks(lambda xs, cs: self._denoise(xs, sigma, cs, guidance), x, cond, rows)  # (B, C, h, w)

    def _denoise(self, x: torch.Tensor, sigma: float, cond: dict, guidance: float) -> torch.Tensor:
        """The x0-prediction of one forward over all rows of ``x`` (B, C, h, w)."""
        b = x.shape[0]
        tokens = _pack(x.to(self.device, self.dtype))  # (B, hw/4, 4C)
        # the pipeline feeds timestep = (sigma * 1000 in float32) / 1000 in the latents' dtype
        t = (torch.full((b,), sigma, dtype=torch.float32, device=self.device) * 1000).to(self.dtype) / 1000  # (B,)
        g = torch.full((b,), float(guidance), dtype=torch.float32, device=self.device) if self.distilled else None
        embeds = cond["prompt_embeds"]  # (B, L, D)
        txt_ids = torch.zeros(embeds.shape[1], 3, device=self.device, dtype=self.dtype)  # (L, 3)
        v = self.pipe.transformer(
            hidden_states=tokens,
            timestep=t,
            guidance=g,
            pooled_projections=cond["pooled"],
            encoder_hidden_states=embeds,
            txt_ids=txt_ids,
            img_ids=self.img_ids,
            joint_attention_kwargs=self.pipeline_kwargs.get("joint_attention_kwargs"),
            return_dict=False,
        )[0]  # (B, hw/4, 4C)
        v = _unpack(v, self.channels, *self.noise_shape[1:]).to(x.device, x.dtype)  # (B, C, h, w)
        return x - sigma * v

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae

        def one(z: torch.Tensor) -> torch.Tensor:
            z = z.to(vae.device, vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor  # (b, C, h, w)
            return (vae.decode(z, return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1).cpu()  # (b, 3, H, W)

        return decode_slices(one, x0, decode_rows(self.decode_batch, self.height * self.width))
