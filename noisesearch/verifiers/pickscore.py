"""PickScore: a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences, scored as CLIP logits.

Kirstain et al. 2023, "Pick-a-Pic: An Open Dataset of User Preferences for Text-to-Image
Generation" (NeurIPS 2023, arXiv 2305.01569). The score is the CLIP logit
``logit_scale.exp() * cos(image embedding, prompt embedding)``: the cosine times the model's
learned temperature (100 for CLIP models trained to the usual clamp), as in the release's example. ``path`` is a transformers
CLIPModel folder with its image processor and tokenizer (the release takes both from
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``: copy them into the folder).
"""

from __future__ import annotations

import torch

from noisesearch.verifiers._hf import Scorer, check_prompts, load
from noisesearch.verifiers.clip import _TextEncoder, cosine, image_embeddings

PICKSCORE_EXAMPLE = "yuvalkirstain/PickScore_v1"


class PickScoreVerifier(Scorer):
    """CLIP logit ``exp(logit_scale) * cos(image, prompt)`` of the PickScore model (Kirstain et al. 2023)."""

    scale = "CLIP logit: exp(logit_scale) * raw cosine of the image and prompt embeddings"

    def __init__(self, *, path=None, device="cpu", dtype="float32"):
        self.name = "pickscore"
        self.loaded = load(path, what=self.name, example=PICKSCORE_EXAMPLE, device=device, dtype=dtype, tokenizer=True)
        self.text = _TextEncoder(self.loaded)
        self.logit_scale = float(self.loaded.model.logit_scale.float().exp())
        self._cache: dict[str, torch.Tensor] = {}

    def text_embedding(self, prompt: str) -> torch.Tensor:
        """The (D,) text embedding of ``prompt``, computed once."""
        if prompt not in self._cache:
            self._cache[prompt] = self.text([prompt])[0]
        return self._cache[prompt]

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """PickScores (B,) with autograd in the image (for first-order search)."""
        prompts = check_prompts(targets, len(images), what=self.name)
        img = image_embeddings(self.loaded, images)  # (B, D)
        txt = torch.stack([self.text_embedding(p) for p in prompts])  # (B, D)
        return self.logit_scale * cosine(img, txt)  # (B,)
