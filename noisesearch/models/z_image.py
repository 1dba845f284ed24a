"""Z-Image and Z-Image-Turbo through diffusers' ``ZImagePipeline`` (Tongyi-MAI 2025, arXiv 2511.22699).

A single-stream DiT on ``FlowMatchEulerDiscreteScheduler`` with the pipeline's own sigmas (a linear grid
from 1 to 1/steps, shifted by the resolution-dependent ``mu``). Its transformer takes per-sample lists and
outputs the negative velocity; its timestep input is ``1 - sigma``; its text embeddings (a Qwen3 hidden
layer) have per-prompt lengths, kept here padded with their lengths. Guidance follows the pipeline:
``pos + g (pos - neg)``, so ``g = 0`` (the Turbo setting) runs the conditional rows only, 1 NFE per step,
and any ``g > 0`` costs 2. The pipeline's ``cfg_normalization`` / ``cfg_truncation`` are left at their
defaults (off).
"""

from __future__ import annotations

import torch

from noisesearch.models._diffusers_common import load_pipeline
from noisesearch.models._flow import FlowModel, calculate_mu

DEFAULT_ID = "Tongyi-MAI/Z-Image-Turbo"


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``ZImagePipeline`` from a folder or hub id (default Z-Image-Turbo)."""
    from diffusers import ZImagePipeline

    return load_pipeline(ZImagePipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


class ZImageModel(FlowModel):
    """Z-Image text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out."""

    name = "z-image"
    step_kwargs = ("joint_attention_kwargs",)
    cond_keys = ("prompt_embeds", "prompt_len")
    uncond_first = False  # the pipeline stacks [cond; uncond]
    default_max_sequence_length = 512

    def patch_size(self) -> int:
        return 2  # the pipeline calls the transformer with its default patch_size=2

    def schedule_args(self, steps: int) -> dict:
        sigmas = torch.linspace(1.0, 1 / steps, steps).tolist()  # the pipeline's default sigmas
        return {"sigmas": sigmas, "mu": calculate_mu(self.pipe, self.seq_len())}

    def guided(self, guidance: float) -> bool:
        return guidance > 0

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        return cond + guidance * (cond - uncond)  # the pipeline's form: g = 0 is the conditional prediction

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, negative = self.pipe.encode_prompt(
            prompt=list(prompts),  # the pipeline rewrites the list in place (chat template)
            device=self.device,
            do_classifier_free_guidance=True,
            max_sequence_length=self.max_sequence_length,
        )
        out = {}
        for key, rows in (("prompt_embeds", embeds), ("negative_prompt_embeds", negative)):
            padded = rows[0].new_zeros(len(rows), self.max_sequence_length, rows[0].shape[-1])  # (N, L, D)
            for i, r in enumerate(rows):
                padded[i, : len(r)] = r
            out[key] = padded
            out[key.replace("embeds", "len")] = torch.tensor([len(r) for r in rows], device=padded.device)  # (N,)
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        caps = [e[: int(n)] for e, n in zip(cond["prompt_embeds"], cond["prompt_len"])]  # B x (L_i, D)
        out = self.pipe.transformer(
            list(x.unsqueeze(2).unbind(0)),  # B x (C, 1, h, w)
            (1000 - t) / 1000,
            caps,
            joint_attention_kwargs=self.pipeline_kwargs.get("joint_attention_kwargs"),
            return_dict=False,
        )[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)  # (B, C, h, w): velocity = -output
