"""Tiny random-weight diffusers pipelines built in code and saved to a folder (no network).

Each ``save_*`` builds a pipeline whose components are a few thousand parameters, seeded with
``torch.manual_seed`` inside a forked RNG so the global state is untouched, and writes it with
``save_pretrained`` to ``folder``. Tests then load it back through the adapters' own loaders.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _byte_vocab() -> dict[str, int]:
    """A byte-level CLIP vocabulary without merges: 256 bytes, 256 word-final bytes, 2 specials."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    chars, extra = [], 0
    for b in range(256):
        chars.append(chr(b) if b in printable else chr(256 + extra))
        extra += b not in printable
    words = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}  # 514 entries


def clip_tokenizer():
    """A CLIP tokenizer over single bytes (distinct prompts give distinct token ids)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_vocab(), merges=[], model_max_length=77)


def t5_tokenizer():
    """A unigram T5 tokenizer over ~100 pieces: lowercase letters, digits and a few words."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -2.0) for w in ("a", "red", "blue", "cube", "cat", "dog", "photo", "of", "the")]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += [("\u2581" + c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    pieces += [("\u2581", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def clip_text_model(vocab_size: int = 520, *, hidden: int = 32, projection: bool = False):
    """A 2-layer CLIP text encoder (with a projection head for SDXL's second encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        projection_dim=hidden,
        hidden_act="gelu",
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def t5_encoder(vocab_size: int):
    """A 2-layer T5 encoder with d_model 32."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
    )
    return T5EncoderModel(config).eval()


def umt5_encoder(vocab_size: int, *, d_model: int = 32, d_ff: int = 37, num_heads: int = 4):
    """A 2-layer UMT5 encoder (AuraFlow's and Wan's text encoder), d_model 32 unless given."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=d_ff,
        num_layers=2,
        num_heads=num_heads,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
    )
    return UMT5EncoderModel(config).eval()


def vae(*, latent_channels: int, blocks: int = 1, **kwargs):
    """An AutoencoderKL with ``blocks`` resolution levels (downsampling ``2**(blocks-1)``)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,) * blocks,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        sample_size=32,
        **kwargs,
    ).eval()


def save_flux(folder: Path, *, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """A tiny FLUX pipeline (1 latent channel, 4 after 2x2 packing; VAE factor 1) saved to ``folder``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t5_tok = t5_tokenizer()
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
            guidance_embeds=guidance_embeds,
        ).eval()
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(
                shift=3.0,
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
            vae=vae(
                latent_channels=1,
                shift_factor=0.0609,
                scaling_factor=1.5035,
                use_quant_conv=False,
                use_post_quant_conv=False,
            ),
            text_encoder=clip_text_model(),
            tokenizer=clip_tokenizer(),
            text_encoder_2=t5_encoder(len(t5_tok)),
            tokenizer_2=t5_tok,
            transformer=transformer,
        )
    pipe.save_pretrained(folder)
    return Path(folder)


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
    )


def _unet(*, cross: int, sdxl: bool = False):
    from diffusers import UNet2DConditionModel

    kwargs = {}
    if sdxl:  # pooled text (cross // 2 from the second encoder) + 6 size/crop ids of 8 dims each
        kwargs = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=cross // 2 + 6 * 8,
            transformer_layers_per_block=(1, 1),
        )
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross,
        attention_head_dim=(2, 4),
        norm_num_groups=4,
        **kwargs,
    ).eval()


def save_sd(folder: Path, *, seed: int = 0) -> Path:
    """A tiny Stable Diffusion pipeline with a DDIM scheduler saved to ``folder`` (latents 4 x H/2 x W/2)."""
    from diffusers import StableDiffusionPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = StableDiffusionPipeline(
            vae=vae(latent_channels=4, blocks=2, scaling_factor=0.18215),
            text_encoder=clip_text_model(),
            tokenizer=clip_tokenizer(),
            unet=_unet(cross=32),
            scheduler=_ddim(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(folder)
    return Path(folder)


def save_sdxl(folder: Path, *, seed: int = 0) -> Path:
    """A tiny SDXL pipeline (two CLIP encoders, text-time conditioning) with DDIM saved to ``folder``."""
    from diffusers import StableDiffusionXLPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = StableDiffusionXLPipeline(
            vae=vae(latent_channels=4, blocks=2, scaling_factor=0.13025),
            text_encoder=clip_text_model(hidden=16),
            tokenizer=clip_tokenizer(),
            text_encoder_2=clip_text_model(hidden=16, projection=True),
            tokenizer_2=clip_tokenizer(),
            unet=_unet(cross=32, sdxl=True),
            scheduler=_ddim(),
            force_zeros_for_empty_prompt=True,
        )
    pipe.save_pretrained(folder)
    return Path(folder)


def pixart_transformer():
    """PixArt's tiny transformer (learned-variance output: 8 channels for 4 latent ones), from the current RNG."""
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        sample_size=16,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
    ).eval()


def save_pixart(folder: Path, *, seed: int = 0) -> Path:
    """A tiny PixArt-Sigma pipeline (learned-variance output, T5 encoder) with DDIM saved to ``folder``."""
    from diffusers import PixArtSigmaPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = t5_tokenizer()
        transformer = pixart_transformer()
        pipe = PixArtSigmaPipeline(
            tokenizer=tok,
            text_encoder=t5_encoder(len(tok)),
            vae=vae(latent_channels=4, blocks=2, scaling_factor=0.13025),
            transformer=transformer,
            scheduler=_ddim(),
        )
    pipe.save_pretrained(folder)
    return Path(folder)


def dit_transformer(*, out_channels: int = 8):
    """A 2-layer DiTTransformer2DModel on 4 x 8 x 8 latents, 1000 classes (+ the null class)."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=out_channels,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
    ).eval()


def save_dit(folder: Path, *, seed: int = 0) -> Path:
    """A tiny DiT pipeline (learned-variance output, DDIM with DiT's linear betas) saved to ``folder``."""
    from diffusers import DDIMScheduler, DiTPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        scheduler = DDIMScheduler(
            beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True
        )
        pipe = DiTPipeline(
            transformer=dit_transformer(),
            scheduler=scheduler,
            vae=vae(latent_channels=4, blocks=2, scaling_factor=0.18215),
        )
    pipe.save_pretrained(folder)
    return Path(folder)


def save_sit(folder: Path, *, seed: int = 0) -> dict:
    """A tiny SiT checkpoint in the original DiT key layout plus a VAE folder, saved under ``folder``.

    The per-block timestep/label embedders of diffusers' DiT are tied to block 0's first (the original
    layout has one of each). Returns ``{"checkpoint", "vae", "config", "net", "state"}``: the files, the
    transformer config, the diffusers network and the original-layout state dict that was saved.
    """
    from safetensors.torch import save_file

    from noisesearch.models.dit import to_original

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = dit_transformer()
        for block in net.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(net.transformer_blocks[0].norm1.emb.state_dict())
        autoencoder = vae(latent_channels=4, blocks=2, scaling_factor=0.18215)
    state = to_original(net.state_dict(), net.config.num_layers)
    state["pos_embed"] = net.pos_embed.pos_embed.clone()  # (1, T, D), as the original checkpoints carry it
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(folder / "sit.safetensors"))
    autoencoder.save_pretrained(folder / "vae")
    config = {k: v for k, v in net.config.items() if not k.startswith("_")}
    return {
        "checkpoint": folder / "sit.safetensors",
        "vae": folder / "vae",
        "config": dict(config),
        "net": net,
        "state": state,
    }
