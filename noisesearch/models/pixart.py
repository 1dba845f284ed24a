"""PixArt-Sigma through diffusers: an eps-prediction DiT on a VP schedule, rescaled like ``sd``.

PixArt-Sigma (Chen et al. 2024, arXiv 2403.04692) predicts ``eps`` and, in its released weights, a
learned variance in the second half of its output channels; only the ``eps`` half is used (as the
pipeline does). Conversion, schedule (DDIM timesteps as RF sigmas, then 0) and CFG (2 NFEs per
call) follow ``noisesearch.models.sd``.
"""

from __future__ import annotations

import torch

from noisesearch.errors import UserError
from noisesearch.models._diffusers_common import (
    CFGStack,
    PromptCache,
    StepKwargs,
    VPModel,
    VPTable,
    check_decode_batch,
    check_positive_int,
    check_prompt,
    decode_rows,
    decode_slices,
    execution_device,
    guide,
    load_pipeline,
)
from noisesearch.models.sd import LATENTS_NOTE, negative_prompts, vae_decode

DEFAULT_ID = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``PixArtSigmaPipeline`` from a folder or hub id, ready for ``PixArtSigmaModel``."""
    from diffusers import PixArtSigmaPipeline

    return load_pipeline(PixArtSigmaPipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


class PixArtSigmaModel(VPModel, StepKwargs):
    """PixArt-Sigma text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out."""

    domain = "rgb"
    adapter = "step"
    step_kwargs = ("negative_prompt",)  # the pipeline extras this adapter's own loop honours

    def __init__(
        self,
        pipe,
        *,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int = 300,
        decode_batch: int | None = None,
    ):
        from diffusers import DDIMScheduler

        self.name = "pixart-sigma"
        self.pipe = pipe  # used as it is: device map, dtype, offload hooks, LoRA, compiled modules untouched
        net = self.pipe.transformer
        self.device, self.dtype = execution_device(self.pipe, net), net.dtype
        self.decode_batch = check_decode_batch(decode_batch)  # None: sized by image pixels (decode_rows)
        self.max_sequence_length = check_positive_int(max_sequence_length, "max_sequence_length")
        self.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)  # timesteps only; we step ourselves
        self.vp = VPTable(self.scheduler.alphas_cumprod)
        factor, patch = self.pipe.vae_scale_factor, net.config.patch_size
        native = net.config.sample_size * factor
        self.height, self.width = (native if height is None else height), (native if width is None else width)
        for what, size in (("height", self.height), ("width", self.width)):
            if isinstance(size, bool) or not isinstance(size, int) or size < factor * patch or size % (factor * patch):
                raise UserError(
                    f"{what} {size!r} is not a positive multiple of {factor * patch} "
                    f"(the VAE's {factor}x downsampling times the {patch}x{patch} patches)"
                )
        self.channels = net.config.in_channels
        self.noise_shape = (self.channels, self.height // factor, self.width // factor)
        self.latent_shape = (1, *self.noise_shape)  # the pipeline's ``latents=`` as drawn
        self.latents_note = LATENTS_NOTE
        self.default_steps, self.default_guidance = 20, 4.5  # the pipeline's defaults
        self.prompts = PromptCache(self._embed, pipe)  # dropped when the text encoders change
        self.cfg_stack = CFGStack()

    def check_target(self, target) -> str:
        return check_prompt(target)

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, mask, neg, neg_mask = self.pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=True,
            negative_prompt=negative_prompts(self.pipeline_kwargs.get("negative_prompt", ""), len(prompts)),
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        return {"embeds": embeds, "mask": mask, "neg": neg, "neg_mask": neg_mask}  # (N, L, D), (N, L)

    def encode(self, targets: list) -> dict[str, torch.Tensor]:
        return self.prompts([self.check_target(t) for t in targets])

    def eps(self, x_vp: torch.Tensor, t: float, cond: dict, guidance: float) -> torch.Tensor:
        """The transformer's guided noise prediction for VP states ``x_vp`` (B, C, h, w) at timestep ``t``."""
        x_vp = x_vp.to(self.device, self.dtype)
        cfg = guidance != 1.0
        rows = torch.cat([x_vp, x_vp]) if cfg else x_vp  # unconditional rows first, as the pipeline
        if cfg:  # (2B, L, D) and (2B, L): concatenated once per condition, not per call
            embeds, mask = self.cfg_stack(cond, (("neg", "embeds"), ("neg_mask", "mask")))
        else:
            embeds, mask = cond["embeds"], cond["mask"]  # (B, L, D), (B, L)
        timestep = torch.full((len(rows),), t, dtype=torch.float32, device=self.device)
        out = self.pipe.transformer(
            rows,
            encoder_hidden_states=embeds,
            encoder_attention_mask=mask,
            timestep=timestep,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]  # (rows, C or 2C, h, w)
        eps = out[:, : self.channels]  # the eps half when the variance is learned
        return guide(*eps.chunk(2), guidance) if cfg else eps  # (B, C, h, w)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        rows = decode_rows(self.decode_batch, self.height * self.width)
        return decode_slices(lambda z: vae_decode(self.pipe.vae, z), x0, rows)
