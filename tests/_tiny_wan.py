"""Tiny random-weight ``WanPipeline`` builders (Wan 2.1, and Wan 2.2's two experts) built in memory, nothing downloaded.

Each pipeline has a few thousand parameters, built in a forked RNG seeded with ``seed`` (the global RNG is
untouched), every module in ``eval()``: a 1-layer 3-D transformer on (1, 2, 2) patches, the causal Wan VAE at its
smallest width (base_dim 3; spatial factor 8, temporal stride 4: videos of 4k + 1 frames, sizes a multiple of 16), a 2-layer
UMT5 encoder and the unigram T5 tokenizer of ``_tiny_pipelines``, and ``FlowMatchEulerDiscreteScheduler`` (the
scheduler under which the adapter reproduces ``pipe()``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402


def _transformer(channels: int = 8):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=channels,
        out_channels=channels,
        text_dim=16,
        freq_dim=32,
        ffn_dim=24,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def wan(
    seed: int = 0,
    *,
    two_experts: bool = False,
    boundary_ratio: float = 0.875,
    shift: float = 3.0,
    expand_timesteps: bool = False,
):
    """A tiny ``WanPipeline``; ``two_experts``: Wan 2.2's layout (``transformer_2`` below ``boundary_ratio``);
    ``expand_timesteps``: Wan 2.2 TI2V's per-token timesteps."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    channels = 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = tiny.t5_tokenizer()
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=channels,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            latents_mean=torch.linspace(-0.5, 0.5, channels).tolist(),  # not the identity: the un-scaling matters
            latents_std=torch.linspace(0.5, 2.0, channels).tolist(),
        ).eval()
        pipe = WanPipeline(
            tokenizer=tok,
            text_encoder=tiny.umt5_encoder(len(tok), d_model=16, d_ff=24, num_heads=2),  # text_dim 16
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
            transformer=_transformer(channels),
            transformer_2=_transformer(channels) if two_experts else None,
            boundary_ratio=boundary_ratio if two_experts else None,
            expand_timesteps=expand_timesteps,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
