"""ImageReward: a BLIP text encoder reading the image through cross-attention, and an MLP head.

Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image
Generation" (NeurIPS 2023, arXiv 2304.05977; github.com/THUDM/ImageReward). The release scores an
image by: BLIP ViT-L/16 image tokens (224 px: bicubic resize of the short side, centre crop, CLIP
normalisation) -> BLIP's BERT-base text encoder over the prompt (BERT tokens, padded to 35) with
cross-attention to those image tokens -> the [CLS] state (768) -> linear layers 768 -> 1024 -> 128
-> 64 -> 16 -> 1 (dropout, no activations) -> ``(r - 0.16717362830052426) / 1.0333394966054072``
(the release's normalisation constants). Higher is better; about 0 on average, roughly -2..2.

Here the model is built from transformers' BLIP pieces (``BlipVisionModel`` and ``BlipTextModel``
with cross-attention layers, run bidirectionally) and the released ``ImageReward.pt`` (a plain state
dict) is copied in through an explicit key mapping (``release_key``). ``path`` is a folder holding
``ImageReward.pt`` and a BERT tokenizer (bert-base-uncased's ``vocab.txt``), or the ``.pt`` file
itself with the tokenizer beside it; an optional ``config.json`` there (``{"vision": {...},
"text": {...}}``, BlipVisionConfig / BlipTextConfig fields) overrides the release architecture.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from noisesearch.errors import UserError
from noisesearch.verifiers._hf import Preprocess, Scorer, check_prompts, require, resolve_device, resolve_dtype
from noisesearch.verifiers._state import load_strict, read_state_dict

CHECKPOINT = "ImageReward.pt"
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # the release's reward normalisation
MAX_LENGTH = 35  # prompts are padded / truncated to 35 BERT tokens in the release
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=16,
    layer_norm_eps=1e-6,
    hidden_act="gelu",
)  # BLIP ViT-L/16
TEXT = dict(
    vocab_size=30524,
    hidden_size=768,
    encoder_hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=512,
    layer_norm_eps=1e-12,
    hidden_act="gelu",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)  # BLIP's med_config
HEAD = ((1024, 0.2), (128, 0.2), (64, 0.1), (16, None), (1, None))  # (width, dropout after it)

_VISION_KEYS = [  # BLIP's ViT (timm names) -> transformers' BlipVisionModel
    (r"cls_token$", "embeddings.class_embedding"),
    (r"pos_embed$", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.", r"encoder.layers.\1.mlp.\2."),
    (r"norm\.", "post_layernorm."),
]


def release_key(key: str) -> str | None:
    """Our module's name for a key of the released state dict; None for tensors the score never uses.

    ``blip.visual_encoder.*`` -> ``vision.*`` (renamed, see ``_VISION_KEYS``), ``blip.text_encoder.*``
    -> ``text.*`` (same names in transformers' BLIP text model), ``mlp.layers.N.*`` -> ``head.N.*``;
    BLIP's contrastive projections (``blip.vision_proj``, ``blip.text_proj``) and position-id buffers
    are skipped. Keys that fit no rule come back unchanged, so that loading reports them.
    """
    if key.endswith("position_ids"):
        return None
    if key.startswith("blip.visual_encoder."):
        rest = key[len("blip.visual_encoder.") :]
        for pattern, ours in _VISION_KEYS:
            m = re.match(pattern, rest)
            if m:
                return "vision." + m.expand(ours) + rest[m.end() :]
        return key
    if key.startswith("blip.text_encoder."):
        return "text." + key[len("blip.text_encoder.") :]
    if key.startswith("mlp.layers."):
        return "head." + key[len("mlp.layers.") :]
    if key.startswith("blip."):
        return None  # vision_proj, text_proj, ...: parts of BLIP that ImageReward's score does not use
    return key


_RELEASE_VISION_KEYS = [  # the inverse of _VISION_KEYS, for naming missing tensors in errors
    (r"embeddings\.class_embedding$", "cls_token"),
    (r"embeddings\.position_embedding$", "pos_embed"),
    (r"embeddings\.patch_embedding\.", "patch_embed.proj."),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
    (r"encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"post_layernorm\.", "norm."),
]


def release_name(ours: str) -> str:
    """The released state dict's key for our module's key ``ours`` (the inverse of ``release_key``)."""
    part, rest = ours.split(".", 1)
    if part == "head":
        return "mlp.layers." + rest
    if part == "text":
        return "blip.text_encoder." + rest
    for pattern, release in _RELEASE_VISION_KEYS if part == "vision" else []:
        m = re.match(pattern, rest)
        if m:
            return "blip.visual_encoder." + m.expand(release) + rest[m.end() :]
    return ours


class ImageRewardModel(torch.nn.Module):
    """BLIP image encoder + cross-attending BLIP text encoder + ImageReward's MLP head (Xu et al. 2023)."""

    def __init__(self, *, vision: dict, text: dict):
        super().__init__()
        transformers = require("transformers", "imagereward")
        text = {**text, "is_decoder": True}  # builds the cross-attention layers; run with is_decoder=False below
        self.vision = transformers.BlipVisionModel(transformers.BlipVisionConfig(**vision))
        self.text = transformers.BlipTextModel(transformers.BlipTextConfig(**text), add_pooling_layer=False)
        layers, width = [], int(text["hidden_size"])
        for out, dropout in HEAD:
            layers.append(torch.nn.Linear(width, out))
            if dropout is not None:
                layers.append(torch.nn.Dropout(dropout))
            width = out
        self.head = torch.nn.Sequential(*layers)  # indices 0, 2, 4, 6, 7 are linear, like mlp.layers.* in the release

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised rewards (B,) for pixels (B, 3, S, S) and token ids / mask (B, L)."""
        image = self.vision(pixel_values=pixels).last_hidden_state  # (B, 1 + P, Dv)
        image_mask = torch.ones(image.shape[:2], dtype=torch.long, device=image.device)  # (B, 1 + P)
        out = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image,
            encoder_attention_mask=image_mask,
            is_decoder=False,
        )
        cls = out.last_hidden_state[:, 0]  # (B, Dt): the [CLS] state
        return (self.head(cls)[:, 0] - MEAN) / STD  # (B,)


def _locate(path) -> tuple[Path, Path]:
    """(folder, checkpoint file) for ``path``: a folder with ImageReward.pt, or the .pt file itself."""
    if path is None:
        raise UserError(
            f"imagereward needs weights: pass --verifier-path, a folder with {CHECKPOINT} "
            "and bert-base-uncased's vocab.txt (from THUDM/ImageReward and google-bert/bert-base-uncased)"
        )
    p = Path(path).expanduser()
    if p.is_file():
        return p.parent, p
    if p.is_dir():
        if not (p / CHECKPOINT).is_file():
            raise UserError(f"imagereward: no {CHECKPOINT} in {p}")
        return p, p / CHECKPOINT
    raise UserError(f"imagereward: no file or folder {p}")


def _architecture(folder: Path) -> tuple[dict, dict]:
    """(vision, text) config fields: the release's, updated from an optional config.json."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        return dict(VISION), dict(TEXT)
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"imagereward: {cfg_file} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or not set(cfg) <= {"vision", "text"}:
        raise UserError(f"imagereward: {cfg_file} must be an object with keys 'vision' and/or 'text'")
    return {**VISION, **cfg.get("vision", {})}, {**TEXT, **cfg.get("text", {})}


def _tokenizer(folder: Path, vocab_size: int):
    transformers = require("transformers", "imagereward")
    if not any((folder / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
        raise UserError(f"imagereward: no BERT tokenizer in {folder}: copy bert-base-uncased's vocab.txt there")
    try:
        tok = transformers.BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"imagereward: no BERT tokenizer in {folder} (copy bert-base-uncased's vocab.txt there): "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from None
    if len(tok) > vocab_size:
        raise UserError(f"imagereward: the tokenizer in {folder} has {len(tok)} tokens, the text encoder {vocab_size}")
    return tok


class ImageRewardVerifier(Scorer):
    """ImageReward's normalised human-preference reward of an image for its prompt (Xu et al. 2023).

    Range: any real number (an MLP head's output, normalised; not bounded, so not clamped).
    """

    value_range = (-math.inf, math.inf)
    scale = "normalised reward: (r - 0.167) / 1.033 as released; about 0 on average, higher is better"

    def __init__(self, *, path=None, device="cpu", dtype="float32"):
        self.name = "imagereward"
        folder, checkpoint = _locate(path)
        dev, dt = resolve_device(device), resolve_dtype(dtype)
        vision, text = _architecture(folder)
        tensors = read_state_dict(checkpoint, what=self.name)
        self.tokenizer = _tokenizer(folder, int(text["vocab_size"]))
        with torch.random.fork_rng():  # the random initialisation is overwritten; leave the global RNG alone
            model = ImageRewardModel(vision=vision, text=text)
        mapped, names = {}, {}
        for key, value in tensors.items():
            ours = release_key(key)
            if ours is not None:
                mapped[ours], names[ours] = value, key
        load_strict(
            model, mapped, what=self.name, source=checkpoint, names=lambda ours: names.get(ours) or release_name(ours)
        )
        self.model = model.to(dev, dt).eval().requires_grad_(False)
        size = int(vision["image_size"])
        self.preprocess = Preprocess(
            shortest_edge=size, crop_to=(size, size), mean=CLIP_MEAN, std=CLIP_STD, mode="bicubic", device=dev, dtype=dt
        )
        self.device = dev

    def tokens(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (B, 35), each prompt padded on its own to the release's length."""
        tok = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Rewards (B,) with autograd in the image (for first-order search)."""
        prompts = check_prompts(targets, len(images), what=self.name)
        pixels = self.preprocess(images)  # (B, 3, S, S)
        ids, mask = self.tokens(prompts)  # (B, 35), (B, 35)
        return self.model(pixels, ids, mask).float()  # (B,)
