"""Qwen-Image through diffusers' ``QwenImagePipeline`` (Qwen team 2025, arXiv 2508.02324): an MMDiT on packed
2x2 latents of a (video-style) Wan-type VAE, prompts through Qwen2.5-VL, with *true* classifier-free guidance.

``guidance`` is the pipeline's ``true_cfg_scale``: above 1 the unconditional rows (negative prompt ``" "``, as
in the model card's example; the pipeline needs one to guide) run in the same batch, 2 NFEs per step, and the
guided velocity is rescaled per token to the conditional prediction's norm, as the pipeline does. The search
sees unpacked latents (C, H/8, W/8); the pipeline takes them packed (FLUX's ``_pack`` order).
"""

from __future__ import annotations

import numpy as np
import torch

from noisesearch.errors import UserError
from noisesearch.models._diffusers_common import load_pipeline
from noisesearch.models._flow import FlowModel, calculate_mu
from noisesearch.models.flux import _pack, _unpack

DEFAULT_ID = "Qwen/Qwen-Image"
NEGATIVE_PROMPT = " "


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``QwenImagePipeline`` from a folder or hub id (default Qwen/Qwen-Image)."""
    from diffusers import QwenImagePipeline

    return load_pipeline(QwenImagePipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


class QwenImageModel(FlowModel):
    """Qwen-Image text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out."""

    name = "qwen-image"
    step_kwargs = ("attention_kwargs",)
    cond_keys = ("prompt_embeds", "mask")
    default_max_sequence_length = 512
    guidance_arg = "true_cfg_scale"
    cfg_two_calls = True  # the negative prompt " " is a few tokens; stacked, it would run at the prompt's length

    def latent_channels(self) -> int:
        if self.pipe.transformer.config.guidance_embeds:
            raise UserError("a guidance-distilled Qwen-Image transformer is not supported by the step-level adapter")
        return self.pipe.transformer.config.in_channels // 4

    def patch_size(self) -> int:
        return 2

    def schedule_args(self, steps: int) -> dict:
        return {"sigmas": np.linspace(1.0, 1 / steps, steps), "mu": calculate_mu(self.pipe, self.seq_len())}

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        out = {}
        for key, texts in (("", list(prompts)), ("negative_", [NEGATIVE_PROMPT] * len(prompts))):
            embeds, mask = self.pipe.encode_prompt(
                prompt=texts, device=self.device, max_sequence_length=self.max_sequence_length
            )  # (N, L, D), (N, L) with L this call's longest prompt: padded to max_sequence_length
            if mask is None:  # the pipeline drops an all-ones mask
                mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            pad = self.max_sequence_length - embeds.shape[1]
            out[f"{key}prompt_embeds"] = torch.nn.functional.pad(embeds, (0, 0, 0, pad))  # (N, Lmax, D)
            out[f"{key}mask"] = torch.nn.functional.pad(mask, (0, pad))  # (N, Lmax)
        return out

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        """True CFG, then each token rescaled to the conditional prediction's norm (on packed tokens)."""
        neg, pos = _pack(uncond), _pack(cond)  # (B, hw/4, 4C)
        comb = neg + guidance * (pos - neg)
        comb = comb * (torch.norm(pos, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True))
        return _unpack(comb, self.channels, *self.noise_shape[1:])  # (B, C, h, w)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        b, (h, w) = x.shape[0], self.noise_shape[1:]
        # the cache pads every prompt to max_sequence_length; past the batch's longest prompt the tokens are masked
        # padding that would still go through every block (the pipeline passes each call's longest length)
        length = int(cond["mask"].sum(dim=1).max())
        v = self.pipe.transformer(
            hidden_states=_pack(x),  # (B, hw/4, 4C)
            timestep=t.to(self.dtype) / 1000,
            guidance=None,
            encoder_hidden_states_mask=cond["mask"][:, :length],  # (B, L)
            encoder_hidden_states=cond["prompt_embeds"][:, :length],  # (B, L, D)
            img_shapes=[[(1, h // 2, w // 2)]] * b,
            attention_kwargs=self.pipeline_kwargs.get("attention_kwargs") or {},
            return_dict=False,
        )[0]  # (B, hw/4, 4C)
        return _unpack(v, self.channels, h, w)  # (B, C, h, w)

    def vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        config = self.pipe.vae.config
        mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1).to(z.device, z.dtype)
        return z.unsqueeze(2) / std + mean  # (b, C, 1, h, w): the pipeline's de-normalisation
