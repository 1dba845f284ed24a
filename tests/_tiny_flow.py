"""Tiny random-weight rectified-flow pipelines (SD3, Z-Image, SANA, Qwen-Image) built in memory, nothing downloaded.

Each builder returns a pipeline of a few thousand parameters, built in a forked RNG seeded with ``seed``
(the global RNG is untouched), every module in ``eval()``. Tokenizers are built from in-code vocabularies:
CLIP and T5 as in ``_tiny_pipelines``, a byte-level Qwen2 BPE without merges (Z-Image's chat template
set by hand) and a character-level Gemma BPE (SANA).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402


def _flow_scheduler(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def sd3(seed: int = 0, *, t5: bool = True, dynamic: bool = False):
    """A tiny StableDiffusion3Pipeline: two CLIPs (+ T5 unless ``t5=False``), 4 latent channels, VAE factor 2."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t5_tok = tiny.t5_tokenizer()
        transformer = SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
        ).eval()
        shift = dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15) if dynamic else dict(shift=3.0)
        pipe = StableDiffusion3Pipeline(
            scheduler=_flow_scheduler(**shift),
            vae=tiny.vae(latent_channels=4, blocks=2, scaling_factor=1.5305, shift_factor=0.0609),
            text_encoder=tiny.clip_text_model(projection=True),
            tokenizer=tiny.clip_tokenizer(),
            text_encoder_2=tiny.clip_text_model(projection=True),
            tokenizer_2=tiny.clip_tokenizer(),
            text_encoder_3=tiny.t5_encoder(len(t5_tok)) if t5 else None,
            tokenizer_3=t5_tok if t5 else None,
            transformer=transformer,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def qwen2_tokenizer():
    """A byte-level Qwen2 BPE tokenizer without merges (every byte a token) and a minimal chat template."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok


def qwen3_encoder(vocab_size: int):
    """A 2-layer Qwen3 decoder (hidden 32) used as a text encoder."""
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
    )
    return Qwen3Model(config).eval()


def z_image(seed: int = 0):
    """A tiny ZImagePipeline: Qwen3 text encoder, 4 latent channels, VAE factor 2 (images a multiple of 4)."""
    from diffusers import ZImagePipeline, ZImageTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = qwen2_tokenizer()
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=4,
            dim=32,
            n_layers=1,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            cap_feat_dim=32,
            axes_dims=[4, 6, 6],
            axes_lens=[256, 32, 32],
        ).eval()
        pipe = ZImagePipeline(
            scheduler=_flow_scheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
            vae=tiny.vae(latent_channels=4, blocks=2, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=qwen3_encoder(len(tok)),
            tokenizer=tok,
            transformer=transformer,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gemma_tokenizer():
    """A character-level Gemma BPE tokenizer without merges (lowercase letters, digits, space, newline)."""
    from transformers import GemmaTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789 \u2581\n.,:'-"
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({c: i + len(vocab) for i, c in enumerate(chars)})
    return GemmaTokenizer(vocab=vocab, merges=[])


def sana(seed: int = 0):
    """A tiny SanaPipeline: Gemma-2 text encoder, DC-AE with factor 2, patch 2 (images a multiple of 4)."""
    from diffusers import AutoencoderDC, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = gemma_tokenizer()
        text_encoder = Gemma2Model(
            Gemma2Config(
                vocab_size=len(tok),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=8,
                max_position_embeddings=1024,
            )
        ).eval()
        transformer = SanaTransformer2DModel(
            patch_size=2,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=16,
            sample_size=16,
        ).eval()
        vae = AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1),
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        ).eval()
        pipe = SanaPipeline(
            tokenizer=tok,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            scheduler=_flow_scheduler(shift=3.0),
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def qwen_image(seed: int = 0):
    """A tiny QwenImagePipeline: Qwen2.5-VL text encoder (hidden 16), a 2x Qwen-Image VAE, 4 latent channels."""
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = qwen2_tokenizer()
        special = len(tok) - 1
        config = Qwen2_5_VLConfig(
            text_config=dict(
                vocab_size=len(tok),
                hidden_size=16,
                intermediate_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                rope_theta=1000000.0,
                max_position_embeddings=512,
                bos_token_id=special,
                eos_token_id=special,
            ),
            vision_config=dict(
                depth=1,
                hidden_size=16,
                intermediate_size=16,
                num_heads=2,
                out_hidden_size=16,
                in_chans=3,
                patch_size=2,
                spatial_merge_size=1,
                temporal_patch_size=1,
            ),
            vision_start_token_id=special,
            image_token_id=special,
            video_token_id=special,
        )
        pipe = QwenImagePipeline(
            scheduler=_flow_scheduler(
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=0.9,
                base_image_seq_len=256,
                max_image_seq_len=8192,
                shift_terminal=0.02,
            ),
            vae=AutoencoderKLQwenImage(
                base_dim=8,
                z_dim=4,
                dim_mult=[1, 2],
                num_res_blocks=1,
                temperal_downsample=[False],
                latents_mean=[0.1, -0.2, 0.0, 0.3],
                latents_std=[1.5, 0.8, 1.0, 2.0],
            ).eval(),
            text_encoder=Qwen2_5_VLForConditionalGeneration(config).eval(),
            tokenizer=tok,
            transformer=QwenImageTransformer2DModel(
                patch_size=2,
                in_channels=16,
                out_channels=4,
                num_layers=1,
                attention_head_dim=16,
                num_attention_heads=2,
                joint_attention_dim=16,
                guidance_embeds=False,
                axes_dims_rope=(8, 4, 4),
            ).eval(),
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixtral_processor(extra_words: str = "a red cube blue cat on the photo of dog"):
    """A PixtralProcessor over a word-level tokenizer whose vocabulary is the words of FLUX.2's system message and
    ``extra_words`` (others are ``<unk>``), with a minimal Mistral-style chat template set by hand."""
    import re

    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PixtralImageProcessor, PixtralProcessor, PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<pad>", "[IMG]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[INST]", "[/INST]"]
    words = sorted(set(re.findall(r"\w+|[^\w\s]", f"{SYSTEM_MESSAGE} {extra_words}")))
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(special + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(special)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    template = (
        "{{ bos_token }}{% for m in messages %}{% set sys = m['role'] == 'system' %}"
        "{{ '[SYSTEM_PROMPT]' if sys else '[INST]' }}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}"
        "{{ '[/SYSTEM_PROMPT]' if sys else '[/INST]' }}{% endfor %}"
    )
    return PixtralProcessor(
        image_processor=PixtralImageProcessor(), tokenizer=tok, chat_template=template, patch_size=16
    )


def flux2(seed: int = 0, *, joint_attention_dim: int = 48):
    """A tiny Flux2Pipeline: a 30-layer Mistral-3 text encoder of hidden size 16 (the pipeline's default
    ``text_encoder_out_layers`` (10, 20, 30) need 30), a 2x Flux2 VAE with 2 latent channels and random batch-norm
    statistics, a transformer on the 8 patchified channels (``joint_attention_dim``: 16 per text-encoder layer used).
    Images are a multiple of 4 pixels."""
    from diffusers import AutoencoderKLFlux2, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        proc = pixtral_processor()
        ids = {
            k: proc.tokenizer.convert_tokens_to_ids(t) for k, t in (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>"))
        }
        config = Mistral3Config(
            text_config=dict(
                model_type="mistral",
                vocab_size=len(proc.tokenizer),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=30,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
                sliding_window=None,
                bos_token_id=ids["bos"],
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
            ),
            vision_config=dict(
                model_type="pixtral",
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=4,
                intermediate_size=32,
                image_size=32,
                patch_size=16,
            ),
            image_token_index=proc.tokenizer.convert_tokens_to_ids("[IMG]"),
            vision_feature_layer=-1,
        )
        vae = AutoencoderKLFlux2(
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 8),
            layers_per_block=1,
            latent_channels=2,
            norm_num_groups=4,
            sample_size=32,
        ).eval()
        vae.bn.running_mean.copy_(0.3 * torch.randn(8))
        vae.bn.running_var.copy_(torch.rand(8) + 0.5)
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=8,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=joint_attention_dim,  # the default's three text-encoder layers of hidden 16
            timestep_guidance_channels=256,
            axes_dims_rope=(4, 4, 4, 4),
        ).eval()
        pipe = Flux2Pipeline(
            scheduler=_flow_scheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
            vae=vae,
            text_encoder=Mistral3ForConditionalGeneration(config).eval(),
            tokenizer=proc,
            transformer=transformer,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
