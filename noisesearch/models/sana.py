"""SANA through diffusers' ``SanaPipeline`` (Xie et al. 2024, arXiv 2410.10629): a linear-attention DiT on a
32x deep-compression autoencoder, prompts through Gemma-2 (with the pipeline's default complex human
instruction prepended), classifier-free guidance 2 NFEs per step.

The schedule is the pipeline scheduler's own sigmas (SANA checkpoints ship ``DPMSolverMultistepScheduler``
with flow sigmas; ``FlowMatchEulerDiscreteScheduler`` works too). Our samplers (Euler, Heun) run on those
sigmas, so the result equals ``pipe()`` exactly when the pipeline's scheduler is flow-matching Euler; with
DPM-Solver the sigmas are the same and only the solver differs. The adapter never bins resolutions: it
renders the size asked for (the pipeline's ``use_resolution_binning=False``).
"""

from __future__ import annotations

import math

import torch

from noisesearch.models._diffusers_common import load_pipeline
from noisesearch.models._flow import FlowModel, call_default

DEFAULT_ID = "Efficient-Large-Model/Sana_1600M_1024px_diffusers"


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``SanaPipeline`` from a folder or hub id (default SANA 1.6B at 1024px)."""
    from diffusers import SanaPipeline

    return load_pipeline(SanaPipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


class SanaModel(FlowModel):
    """SANA text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out."""

    name = "sana"
    step_kwargs = ("attention_kwargs",)
    cond_keys = ("prompt_embeds", "mask")
    default_max_sequence_length = 300
    size_note = ", and SanaPipeline's multiple of 32"

    def size_multiple(self) -> int:
        return math.lcm(32, self.vae_factor() * self.patch_size())  # SanaPipeline.check_inputs refuses others

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, mask, negative, negative_mask = self.pipe.encode_prompt(
            list(prompts),
            do_classifier_free_guidance=True,
            negative_prompt="",
            device=self.device,
            clean_caption=False,
            max_sequence_length=self.max_sequence_length,
            complex_human_instruction=call_default(self.pipe, "complex_human_instruction", None),
        )
        return {
            "prompt_embeds": embeds,
            "mask": mask,
            "negative_prompt_embeds": negative,
            "negative_mask": negative_mask,
        }

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        config = self.pipe.transformer.config
        out = self.pipe.transformer(
            x,
            encoder_hidden_states=cond["prompt_embeds"].to(self.dtype),
            encoder_attention_mask=cond["mask"],
            timestep=t * config.timestep_scale,
            return_dict=False,
            attention_kwargs=self.pipeline_kwargs.get("attention_kwargs"),
        )[0].float()  # (B, C or 2C, h, w)
        return out.chunk(2, dim=1)[0] if config.out_channels // 2 == self.channels else out  # learned sigma: v half

    def vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.pipe.vae.config.scaling_factor  # the DC-AE has no shift
