"""HPS v2 / v2.1: an OpenCLIP ViT-H/14 fine-tuned on human preferences, scored as a raw cosine.

Wu et al. 2023, "Human Preference Score v2: A Solid Benchmark for Evaluating Human Preferences of
Text-to-Image Synthesis" (arXiv 2306.09341; github.com/tgxs002/HPSv2). The release's score is
``image_features @ text_features`` of the unit embeddings, i.e. the **raw cosine** (about 0.2-0.35
for typical images; the paper's tables print the same numbers, some later papers multiply by 100).
Images are preprocessed as the release's ``preprocess_val``: the longer side resized to 224
(bicubic), padded to a square with black, CLIP-normalised. Prompts use OpenCLIP's BPE tokenizer,
whose vocabulary ships inside the ``open_clip_torch`` package (no download).

``path`` is the checkpoint file (``HPS_v2_compressed.pt`` or ``HPS_v2.1_compressed.pt``: a
``{"state_dict": ...}`` dict, read with ``weights_only=True``); ``arch`` names the OpenCLIP
architecture, built with random weights offline and then overwritten by the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from noisesearch.errors import UserError
from noisesearch.verifiers._hf import Scorer, check_prompts, require, resolve_device, resolve_dtype
from noisesearch.verifiers._state import load_strict, read_state_dict
from noisesearch.verifiers.base import check_images
from noisesearch.verifiers.clip import cosine

OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def resize_longest_and_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (B, 3, H, W) -> (B, 3, size, size): longer side resized to ``size``, centred on black (HPS v2)."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        images = torch.nn.functional.interpolate(
            images, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False
        ).clamp(0, 1)  # (B, 3, nh, nw)
    ph, pw = size - nh, size - nw
    return torch.nn.functional.pad(images, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # (B, 3, size, size)


@contextlib.contextmanager
def _quiet_random_init():
    """Drop OpenCLIP's root-logger warning that the model is randomly initialised (the checkpoint follows)."""
    root = logging.getLogger()
    drop = lambda record: "initialized randomly" not in record.getMessage()  # noqa: E731
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class HPSv2Verifier(Scorer):
    """Raw cosine of HPS v2 image and prompt embeddings (Wu et al. 2023).

    Range: [-1, 1] (``cosine`` clamps what rounding carries past the bound).
    """

    value_range = (-1.0, 1.0)

    scale = "raw cosine of the unit image and prompt embeddings, as the release returns it (x 100 in some papers)"

    def __init__(self, *, path=None, device="cpu", dtype="float32", arch="ViT-H-14"):
        self.name = "hpsv2"
        if path is None:
            raise UserError(
                "hpsv2 needs weights: pass --verifier-path, the checkpoint file HPS_v2.1_compressed.pt "
                "(or HPS_v2_compressed.pt) from xswu/HPSv2"
            )
        dev, dt = resolve_device(device), resolve_dtype(dtype)
        tensors = read_state_dict(path, what=self.name)
        open_clip = require("open_clip", self.name)
        if arch not in open_clip.list_models():
            raise UserError(f"hpsv2: unknown OpenCLIP architecture {arch!r} (for HPS v2: ViT-H-14)")
        with torch.random.fork_rng(), _quiet_random_init():  # random weights, overwritten below
            model = open_clip.create_model(arch, pretrained=None, device="cpu")
        load_strict(model, tensors, what=self.name, source=path)
        self.model = model.to(dev, dt).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        size = model.visual.image_size
        self.size = int(max(size) if isinstance(size, (tuple, list)) else size)
        mean = getattr(model.visual, "image_mean", None) or OPENAI_MEAN
        std = getattr(model.visual, "image_std", None) or OPENAI_STD
        self.mean = torch.tensor(mean, device=dev).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        self.std = torch.tensor(std, device=dev).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        self.device, self.dtype = dev, dt
        self._cache: dict[str, torch.Tensor] = {}

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Model input (B, 3, S, S) for images (B, C, H, W) in [0, 1]; keeps autograd."""
        check_images(images)
        if images.shape[1] not in (1, 3):
            raise UserError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}")
        x = images.to(self.device).float().expand(-1, 3, -1, -1)  # (B, 3, H, W)
        x = resize_longest_and_pad(x, self.size)  # (B, 3, S, S)
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        """The (D,) text embedding of ``prompt``, computed once."""
        if prompt not in self._cache:
            tokens = self.tokenizer([prompt]).to(self.device)  # (1, 77)
            self._cache[prompt] = self.model.encode_text(tokens)[0].float()  # (D,)
        return self._cache[prompt]

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Raw cosines (B,) with autograd in the image (for first-order search)."""
        prompts = check_prompts(targets, len(images), what=self.name)
        img = self.model.encode_image(self.pixels(images)).float()  # (B, D)
        txt = torch.stack([self.text_embedding(p) for p in prompts])  # (B, D)
        return cosine(img, txt)  # (B,)
