"""FLUX.1 through diffusers' ``FluxPipeline``: a rectified-flow transformer, already in the package convention.

FLUX's transformer predicts the velocity ``v = noise - x0`` of ``x_sigma = (1 - sigma) x0 + sigma noise``
(Black Forest Labs 2024; Esser et al. 2024, arXiv 2403.03206), so ``denoised = x - sigma * v``.
FLUX.1-dev is guidance-distilled: the guidance scale is an embedding input and one call is one NFE.
The search sees unpacked latents (C, H/8, W/8); the adapter packs them into 2x2 patches internally.
Schedule, prompt cache, row chunks and VAE decode are the shared ``FlowModel``'s (``_flow.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from noisesearch.models._diffusers_common import load_pipeline
from noisesearch.models._flow import FlowModel, calculate_mu

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


class FluxModel(FlowModel):
    """FLUX text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out (see the module docstring)."""

    name = "flux"
    step_kwargs = ("joint_attention_kwargs",)  # the pipeline extras this adapter's own loop honours
    cond_keys = ("prompt_embeds", "pooled")
    text_encoders = ("text_encoder", "text_encoder_2")
    default_max_sequence_length = 512

    def setup(self) -> None:
        self.distilled = bool(self.pipe.transformer.config.guidance_embeds)
        self.default_guidance = 3.5 if self.distilled else 1.0  # FLUX.1-dev's default; schnell has none
        self.default_steps = 28 if self.distilled else 4
        c, h, w = self.noise_shape
        self.latents_note = f"FluxPipeline takes latents packed: FluxPipeline._pack_latents(z, 1, {c}, {h}, {w})"
        self.img_ids = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)  # (hw/4, 3)

    def latent_channels(self) -> int:
        return self.pipe.transformer.config.in_channels // 4

    def patch_size(self) -> int:
        return 2

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled": pooled}  # (N, L, D), (N, P)

    def guided(self, guidance: float) -> bool:
        return False  # guidance-distilled (dev) or guidance-free (schnell): one transformer row per sample

    def mu(self) -> float:
        """The resolution-dependent shift ``mu`` of FLUX's dynamic shifting."""
        return calculate_mu(self.pipe, self.seq_len())

    def schedule_args(self, steps: int) -> dict:
        config = self.pipe.scheduler.config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        return {"sigmas": sigmas, "mu": self.mu()}

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        b = x.shape[0]
        tokens = _pack(x)  # (B, hw/4, 4C)
        g = torch.full((b,), float(guidance), dtype=torch.float32, device=self.device) if self.distilled else None
        embeds = cond["prompt_embeds"]  # (B, L, D)
        txt_ids = torch.zeros(embeds.shape[1], 3, device=self.device, dtype=self.dtype)  # (L, 3)
        v = self.pipe.transformer(
            hidden_states=tokens,
            timestep=t.to(self.dtype) / 1000,  # the pipeline's t.to(latents dtype) / 1000
            guidance=g,
            pooled_projections=cond["pooled"],
            encoder_hidden_states=embeds,
            txt_ids=txt_ids,
            img_ids=self.img_ids,
            joint_attention_kwargs=self.pipeline_kwargs.get("joint_attention_kwargs"),
            return_dict=False,
        )[0]  # (B, hw/4, 4C)
        return _unpack(v, self.channels, *self.noise_shape[1:])  # (B, C, h, w)
