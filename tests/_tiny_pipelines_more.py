"""Tiny random-weight diffusers pipelines built in memory (no folder, no network), for the pipeline API tests.

The step-level families reuse ``_tiny_pipelines``' components; the others are pipelines without a
step-level adapter (ControlNet, PAG, PixArt-alpha, AuraFlow, Wan video), each a few thousand
parameters. Built in a forked RNG seeded with ``seed``, so the global RNG is untouched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402


def _seeded(seed: int):
    rng = torch.random.fork_rng(devices=[])
    rng.__enter__()
    torch.manual_seed(seed)
    return rng


def _sd_parts() -> dict:
    return dict(
        vae=tiny.vae(latent_channels=4, blocks=2, scaling_factor=0.18215),
        text_encoder=tiny.clip_text_model(),
        tokenizer=tiny.clip_tokenizer(),
        unet=tiny._unet(cross=32),
        scheduler=tiny._ddim(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def flux(seed: int = 0):
    """A tiny FluxPipeline (1 latent channel, 4 after packing; VAE factor 1)."""
    import tempfile

    from diffusers import FluxPipeline

    with tempfile.TemporaryDirectory() as folder:  # the saved tiny pipeline is the one the other tests use
        tiny.save_flux(Path(folder), seed=seed)
        pipe = FluxPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd(seed: int = 0):
    """A tiny StableDiffusionPipeline with DDIM (latents 4 x H/2 x W/2)."""
    from diffusers import StableDiffusionPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return StableDiffusionPipeline(**_sd_parts())


def sd_controlnet(seed: int = 0):
    """A tiny StableDiffusionControlNetPipeline (its ControlNet takes a 3 x 32 x 32 control image)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = _sd_parts()
        controlnet = ControlNetModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            in_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(2, 4),
            norm_num_groups=4,
            conditioning_embedding_out_channels=(4, 8),
        ).eval()
        return StableDiffusionControlNetPipeline(controlnet=controlnet, **parts)


def sd_pag(seed: int = 0):
    """A tiny StableDiffusionPAGPipeline (perturbed-attention guidance: 3 UNet rows per sample and step)."""
    from diffusers import StableDiffusionPAGPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return StableDiffusionPAGPipeline(**_sd_parts(), pag_applied_layers=["mid"])


def pixart_alpha(seed: int = 0):
    """A tiny PixArtAlphaPipeline (PixArt-Sigma's tiny transformer under the alpha pipeline)."""
    from diffusers import PixArtAlphaPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = tiny.t5_tokenizer()
        transformer = tiny.pixart_transformer()
        return PixArtAlphaPipeline(
            tokenizer=tok,
            text_encoder=tiny.t5_encoder(len(tok)),
            vae=tiny.vae(latent_channels=4, blocks=2, scaling_factor=0.13025),
            transformer=transformer,
            scheduler=tiny._ddim(),
        )


def auraflow(seed: int = 0):
    """A tiny AuraFlowPipeline (MMDiT + single DiT layers, UMT5 text encoder, flow-matching Euler)."""
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel, FlowMatchEulerDiscreteScheduler

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = tiny.t5_tokenizer()
        transformer = AuraFlowTransformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=4,
            num_mmdit_layers=1,
            num_single_dit_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            caption_projection_dim=16,
            out_channels=4,
            pos_embed_max_size=64,
        ).eval()
        return AuraFlowPipeline(
            tokenizer=tok,
            text_encoder=tiny.umt5_encoder(len(tok)),
            vae=tiny.vae(latent_channels=4, blocks=2, scaling_factor=0.13025),
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(),
        )


def wan(seed: int = 0):
    """A tiny WanPipeline (text-to-video: 3D transformer, Wan VAE, UMT5), latents (B, C, F, H/8, W/8)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = tiny.t5_tokenizer()
        vae = AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).eval()
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        ).eval()
        return WanPipeline(
            tokenizer=tok,
            text_encoder=tiny.umt5_encoder(len(tok)),
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            transformer=transformer,
        )
