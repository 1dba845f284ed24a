"""Stable Diffusion 1.x/2.x and SDXL through diffusers: an eps-prediction UNet on a VP schedule, rescaled.

The UNet predicts the noise ``eps`` of ``x_vp = alpha x0 + sigma_vp noise`` (Rombach et al. 2022,
arXiv 2112.10752; Podell et al. 2023, arXiv 2307.01952). In the package convention the state is
``x_rf = x_vp / (alpha + sigma_vp)`` at ``sigma_rf = sigma_vp / (alpha + sigma_vp)`` and the
x0-prediction is ``(x_vp - sigma_vp eps) / alpha``; Euler there is exactly DDIM (eta = 0).
Classifier-free guidance runs the unconditional and conditional rows as one batch: 2 NFEs per call.

The schedule is DDIM's timesteps (the folder's spacing) in RF sigmas, so it starts below 1
(``sigma_rf`` of the first timestep, about 0.93 for 50 steps) and ends at 0. The pipeline starts
from ``latents = noise`` there, which is ``x_rf = noise * start_scale(sigmas[0])``.
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
    check_prompt,
    decode_rows,
    decode_slices,
    execution_device,
    guide,
    load_pipeline,
)

DEFAULT_IDS = {"sd": "stable-diffusion-v1-5/stable-diffusion-v1-5", "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}


def load(name: str, path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``StableDiffusionPipeline`` (``name`` "sd") or ``StableDiffusionXLPipeline`` ("sdxl") from a folder or hub id."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if name == "sdxl" else StableDiffusionPipeline
    return load_pipeline(cls, path, default=DEFAULT_IDS[name], device=device, dtype=dtype, offload=offload)


LATENTS_NOTE = (
    "the pipeline takes them as drawn, with pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)"
)


class StableDiffusionModel(VPModel, StepKwargs):
    """SD / SDXL text-to-image adapter: prompts in, images (B, 3, H, W) in [0, 1] out (see the module docstring)."""

    domain = "rgb"
    adapter = "step"
    step_kwargs = ("negative_prompt",)  # the pipeline extras this adapter's own loop honours

    def __init__(
        self,
        pipe,
        name: str = "sd",
        *,
        height: int | None = None,
        width: int | None = None,
        decode_batch: int | None = None,
    ):
        from diffusers import DDIMScheduler

        self.name, self.xl = name, name == "sdxl"
        self.pipe = pipe  # used as it is: device map, dtype, offload hooks, LoRA, compiled modules untouched
        unet, vae = self.pipe.unet, self.pipe.vae
        self.device, self.dtype = execution_device(self.pipe, unet), unet.dtype
        self.decode_batch = check_decode_batch(decode_batch)  # None: sized by image pixels (decode_rows)
        self.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)  # timesteps only; we step ourselves
        self.vp = VPTable(self.scheduler.alphas_cumprod)
        factor = self.pipe.vae_scale_factor
        native = unet.config.sample_size * factor
        self.height, self.width = (native if height is None else height), (native if width is None else width)
        for what, size in (("height", self.height), ("width", self.width)):
            if isinstance(size, bool) or not isinstance(size, int) or size < factor or size % factor:
                raise UserError(f"{what} {size!r} is not a positive multiple of {factor} (the VAE's downsampling)")
        self.noise_shape = (unet.config.in_channels, self.height // factor, self.width // factor)
        self.latent_shape = (1, *self.noise_shape)  # the pipeline's ``latents=`` as drawn
        self.latents_note = LATENTS_NOTE
        self.default_steps = 50
        self.default_guidance = 5.0 if self.xl else 7.5  # the pipelines' defaults
        if vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae.to(torch.float32)  # SDXL's VAE overflows in float16 (as the pipeline's own upcast)
        if self.xl:
            proj = self.pipe.text_encoder_2.config.projection_dim
            size = (self.height, self.width)
            self.time_ids = self.pipe._get_add_time_ids(
                size, (0, 0), size, self.dtype, text_encoder_projection_dim=proj
            ).to(self.device)  # (1, 6)
        self.prompts = PromptCache(self._embed, pipe)  # dropped when the text encoders change
        self.cfg_stack = CFGStack()

    def check_target(self, target) -> str:
        return check_prompt(target)

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        out = self.pipe.encode_prompt(
            prompts,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative_prompts(self.pipeline_kwargs.get("negative_prompt"), len(prompts)),
        )
        names = ("embeds", "neg", "pooled", "neg_pooled") if self.xl else ("embeds", "neg")
        return dict(zip(names, out))  # (N, L, D) each; pooled (N, P)

    def encode(self, targets: list) -> dict[str, torch.Tensor]:
        return self.prompts([self.check_target(t) for t in targets])

    def eps(self, x_vp: torch.Tensor, t: float, cond: dict, guidance: float) -> torch.Tensor:
        """The UNet's guided noise prediction for VP states ``x_vp`` (B, C, h, w) at timestep ``t``."""
        x_vp = x_vp.to(self.device, self.dtype)
        cfg = guidance != 1.0
        rows = torch.cat([x_vp, x_vp]) if cfg else x_vp  # (2B or B, C, h, w): unconditional rows first
        if cfg:  # (2B, L, D) and (2B, P): concatenated once per condition, not per call
            pairs = (("neg", "embeds"), ("neg_pooled", "pooled")) if self.xl else (("neg", "embeds"),)
            embeds, *pooled = self.cfg_stack(cond, pairs)
        else:
            embeds, pooled = cond["embeds"], [cond["pooled"]] if self.xl else []
        extra = {}
        if self.xl:
            pooled = pooled[0]  # (rows, P)
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": self.time_ids.expand(len(rows), -1)}
        timestep = torch.full((len(rows),), t, dtype=torch.float32, device=self.device)
        eps = self.pipe.unet(rows, timestep, encoder_hidden_states=embeds, return_dict=False, **extra)[0]
        return guide(*eps.chunk(2), guidance) if cfg else eps  # (B, C, h, w)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        rows = decode_rows(self.decode_batch, self.height * self.width)
        return decode_slices(lambda z: vae_decode(self.pipe.vae, z), x0, rows)


def negative_prompts(negative, n: int):
    """A negative prompt for each of ``n`` prompts (a single string is repeated; None stays None)."""
    return [negative] * n if isinstance(negative, str) else negative


def vae_decode(vae, z: torch.Tensor) -> torch.Tensor:
    """Images (b, 3, H, W) in [0, 1] from latents (b, C, h, w), unscaled as the SD-family pipelines do."""
    z = z.to(vae.device, vae.dtype)
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        z = z * torch.tensor(std).view(shape).to(z) / vae.config.scaling_factor + torch.tensor(mean).view(shape).to(z)
    else:
        z = z / vae.config.scaling_factor
    return (vae.decode(z, return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1).cpu()
