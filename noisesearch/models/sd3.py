"""Stable Diffusion 3 / 3.5 through diffusers' ``StableDiffusion3Pipeline`` (Esser et al. 2024, arXiv 2403.03206).

An MMDiT velocity model on ``FlowMatchEulerDiscreteScheduler`` (a fixed shift, or ``mu`` when the scheduler
shifts dynamically). Prompts go through all three text encoders (two CLIPs and T5; a pipeline built with
``text_encoder_3=None`` runs without T5, as the pipeline does). Classifier-free guidance: 2 NFEs per step.
Everything else is ``FlowModel``'s.
"""

from __future__ import annotations

import torch

from noisesearch.models._diffusers_common import load_pipeline
from noisesearch.models._flow import FlowModel

DEFAULT_ID = "stabilityai/stable-diffusion-3.5-medium"


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``StableDiffusion3Pipeline`` from a folder or hub id (default SD3.5 medium)."""
    from diffusers import StableDiffusion3Pipeline

    return load_pipeline(
        StableDiffusion3Pipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload
    )


class SD3Model(FlowModel):
    """SD3 / SD3.5 text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out."""

    name = "sd3"
    step_kwargs = ("joint_attention_kwargs",)
    cond_keys = ("prompt_embeds", "pooled")
    text_encoders = ("text_encoder", "text_encoder_2", "text_encoder_3")
    default_max_sequence_length = 256

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=True,
            max_sequence_length=self.max_sequence_length,
        )
        return {  # (N, L, D), (N, L, D), (N, P), (N, P)
            "prompt_embeds": embeds,
            "negative_prompt_embeds": negative,
            "pooled": pooled,
            "negative_pooled": negative_pooled,
        }

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        return self.pipe.transformer(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled"],
            joint_attention_kwargs=self.pipeline_kwargs.get("joint_attention_kwargs"),
            return_dict=False,
        )[0]  # (B, C, h, w)
