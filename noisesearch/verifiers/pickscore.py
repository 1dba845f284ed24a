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

from noisesearch.verifiers.clip import ClipScoreVerifier

PICKSCORE_EXAMPLE = "yuvalkirstain/PickScore_v1"


class PickScoreVerifier(ClipScoreVerifier):
    """CLIP logit ``exp(logit_scale) * cos(image, prompt)`` of the PickScore model (Kirstain et al. 2023).

    Range: [-exp(logit_scale), exp(logit_scale)] (``value_range``; the cosine is clamped to [-1, 1]).
    """

    scale = "CLIP logit: exp(logit_scale) * raw cosine of the image and prompt embeddings"
    name, example = "pickscore", PICKSCORE_EXAMPLE

    def __init__(self, *, path=None, device="cpu", dtype="float32"):
        super().__init__(path=path, device=device, dtype=dtype)
        self.logit_scale = float(self.loaded.model.logit_scale.float().exp())
        self.value_range = (-self.logit_scale, self.logit_scale)

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """PickScores (B,) with autograd in the image (for first-order search)."""
        return self.logit_scale * super().score(images, targets, previews=previews)  # (B,)
