"""FLUX.2 through diffusers' ``Flux2Pipeline``: a rectified-flow transformer on 2x2-patchified latents.

FLUX.2 (Black Forest Labs 2025) keeps FLUX.1's convention: the transformer predicts the velocity
``v = noise - x0`` of ``x_sigma = (1 - sigma) x0 + sigma noise``, so ``denoised = x - sigma * v``. Its
differences from FLUX.1, as ``Flux2Pipeline.__call__`` computes them (diffusers 0.42):

- prompts go through a Mistral-3 model with the pipeline's system message (its chat template), padded to
  ``max_sequence_length``; the embedding is the hidden states of layers ``text_encoder_out_layers``
  (default 10, 20, 30) side by side, and there is no pooled vector;
- the latents the pipeline takes (``latents=``) are already patchified: (4C, H/16, W/16) for an 8x VAE, and
  that is this adapter's noise shape; tokens are those pixels in row-major order, with 4-axis position ids
  (0, row, column, 0) and text ids (0, 0, 0, token);
- guidance is distilled: the scale is an embedding input, one transformer row per sample and step (1 NFE);
- the schedule is ``sigmas = linspace(1, 1/n, n)`` shifted with ``mu = compute_empirical_mu(tokens, n)``, a
  shift that depends on the number of steps as well as on the resolution;
- before decoding, the latents are un-normalised with the VAE's batch-norm running statistics and
  un-patchified to (C, H/8, W/8).
"""

from __future__ import annotations

import numpy as np
import torch

from noisesearch.models._diffusers_common import load_pipeline
from noisesearch.models._flow import FlowModel, call_default

DEFAULT_ID = "black-forest-labs/FLUX.2-dev"


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``Flux2Pipeline`` from a folder or hub id (default FLUX.2-dev), ready for ``Flux2Model``."""
    from diffusers import Flux2Pipeline

    return load_pipeline(Flux2Pipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


def _ids(*axes: int) -> torch.Tensor:
    """Position ids (prod(sizes), 4) over the 4 axes (time, height, width, text token), row-major."""
    return torch.cartesian_prod(*(torch.arange(n) for n in axes))


class Flux2Model(FlowModel):
    """FLUX.2 text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out (see the module docstring)."""

    name = "flux2"
    step_kwargs = ("attention_kwargs", "text_encoder_out_layers")  # the pipeline extras this loop honours
    default_max_sequence_length = 512

    def setup(self) -> None:
        # the base checked the size against VAE factor x 2x2 patch; our noise is the patchified latent grid
        f = self.vae_factor() * self.patch
        self.noise_shape = (self.channels, self.height // f, self.width // f)
        self.latent_shape = (1, *self.noise_shape)
        self.latents_note = f"Flux2Pipeline takes latents (1, {', '.join(map(str, self.noise_shape))})"
        h, w = self.noise_shape[1:]
        self.img_ids = _ids(1, h, w, 1).to(self.device)  # (hw, 4): the pipeline's _prepare_latent_ids
        self.txt_ids: dict[int, torch.Tensor] = {}  # text length -> (L, 4)

    def patch_size(self) -> int:
        return 2  # the pipeline patchifies the VAE's latents 2x2 (the transformer's own patch is 1)

    def latent_channels(self) -> int:
        return int(self.pipe.transformer.config.in_channels)  # 4 x the VAE's latent channels

    def seq_len(self) -> int:
        return self.noise_shape[1] * self.noise_shape[2]

    def schedule_args(self, steps: int) -> dict:
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        sigmas = None if self.pipe.scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        return {"sigmas": sigmas, "mu": compute_empirical_mu(image_seq_len=self.seq_len(), num_steps=steps)}

    def guided(self, guidance: float) -> bool:
        return False  # guidance-distilled: the scale is an input of the one transformer row per sample

    def out_layers(self) -> tuple[int, ...]:
        """The text encoder's hidden-state layers that make the embedding (pipeline kwarg or its default)."""
        layers = self.pipeline_kwargs.get("text_encoder_out_layers")
        return tuple(call_default(self.pipe, "text_encoder_out_layers", (10, 20, 30)) if layers is None else layers)

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, _ = self.pipe.encode_prompt(
            prompt=prompts,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
            text_encoder_out_layers=self.out_layers(),
        )
        return {"prompt_embeds": embeds}  # (N, max_sequence_length, layers x hidden)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        b, c, h, w = x.shape
        embeds = cond["prompt_embeds"]  # (B, L, D)
        length = embeds.shape[1]
        if length not in self.txt_ids:
            self.txt_ids[length] = _ids(1, 1, 1, length).to(self.device)  # (L, 4): _prepare_text_ids
        v = self.pipe.transformer(
            hidden_states=x.reshape(b, c, h * w).transpose(1, 2),  # (B, hw, C): the pipeline's _pack_latents
            timestep=t.to(self.dtype) / 1000,  # the pipeline's t.to(latents dtype) / 1000
            guidance=torch.full((b,), float(guidance), dtype=torch.float32, device=self.device),
            encoder_hidden_states=embeds,
            txt_ids=self.txt_ids[length],
            img_ids=self.img_ids,
            joint_attention_kwargs=self.pipeline_kwargs.get("attention_kwargs"),
            return_dict=False,
        )[0]  # (B, hw, C)
        return v.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)

    def vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Un-normalise with the VAE's batch-norm statistics (on the 4C channels), then un-patchify 2x2."""
        vae = self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(z.device, z.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(z.device, z.dtype)
        z = z * std + mean  # (b, 4C, h, w)
        b, c4, h, w = z.shape
        z = z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (b, C, h, 2, w, 2)
        return z.reshape(b, c4 // 4, 2 * h, 2 * w)  # (b, C, 2h, 2w)
