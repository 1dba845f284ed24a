"""CLIP verifiers: CLIPScore (image/prompt agreement) and zero-shot ImageNet classification.

- ``clipscore``: the cosine of CLIP's image and text embeddings (Hessel et al. 2021, CLIPScore,
  arXiv 2104.08718), returned **raw**; ``scale`` names the published conventions;
- ``clip-zeroshot``: log p(target class | image) with one text embedding per class averaged over
  prompt templates (Radford et al. 2021, arXiv 2103.00020, Sec. 3.1.4); the paper's supervised
  verifier for ImageNet (Ma et al. 2025, Sec. 4.1).

Both work with any transformers model that has ``get_image_features`` and ``get_text_features``
(CLIP, SigLIP) and are differentiable in the image (``score``).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import torch

from noisesearch.errors import UserError
from noisesearch.verifiers._hf import Scorer, check_prompts, load, pooled

CLIP_EXAMPLE = "openai/clip-vit-large-patch14"
SCALE = (
    "raw cosine of CLIP image and text embeddings in [-1, 1]; CLIPScore (Hessel et al. 2021) "
    "= 2.5 * max(cos, 0); torchmetrics' CLIPScore = 100 * max(cos, 0)"
)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of (B, D) and (B, D) embeddings -> (B,), always in [-1, 1].

    Rounding can carry a computed cosine of (near-)parallel vectors just past 1 (by a few ULPs, more
    in float16/bfloat16, differently on every CPU); the maths bounds it, so it is clamped.
    """
    a = a / a.norm(dim=-1, keepdim=True)  # (B, D)
    b = b / b.norm(dim=-1, keepdim=True)  # (B, D)
    return (a * b).sum(dim=-1).clamp(-1.0, 1.0)  # (B,)


def clipscore(cos: torch.Tensor, *, weight: float = 2.5) -> torch.Tensor:
    """CLIPScore from raw cosines: ``weight * max(cos, 0)`` (Hessel et al. 2021, Eq. 1; 100 in torchmetrics)."""
    return weight * cos.clamp(min=0)


class _TextEncoder:
    """Prompt -> text embedding with the loaded model's tokenizer; one prompt per forward (batch-independent)."""

    def __init__(self, loaded):
        self.loaded = loaded
        cfg = loaded.model.config
        text_cfg = getattr(cfg, "text_config", cfg)
        self.max_length = int(getattr(text_cfg, "max_position_embeddings", 77))
        self.pad_to_max = "siglip" in str(getattr(cfg, "model_type", ""))  # SigLIP was trained on padded text

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        """Embeddings (N, D) float32 of ``texts`` encoded together."""
        tok = self.loaded.tokenizer(
            texts,
            padding="max_length" if self.pad_to_max else True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        tok = {k: v.to(self.loaded.device) for k, v in tok.items()}
        return pooled(self.loaded.model.get_text_features(**tok)).float()  # (N, D)


def image_embeddings(loaded, images: torch.Tensor) -> torch.Tensor:
    """Image embeddings (B, D) float32 of images (B, C, H, W) in [0, 1]; keeps autograd."""
    pixels = loaded.preprocess(images)  # (B, 3, h, w)
    return pooled(loaded.model.get_image_features(pixel_values=pixels)).float()  # (B, D)


class ClipScoreVerifier(Scorer):
    """Raw cosine between CLIP embeddings of the image and of its prompt (Hessel et al. 2021).

    Range: [-1, 1] (``cosine`` clamps what rounding carries past the bound).
    """

    value_range = (-1.0, 1.0)

    scale = SCALE

    name, example = "clipscore", CLIP_EXAMPLE

    def __init__(self, *, path=None, device="cpu", dtype="float32"):
        self.loaded = load(path, what=self.name, example=self.example, device=device, dtype=dtype, tokenizer=True)
        self.text = _TextEncoder(self.loaded)
        self._cache: dict[str, torch.Tensor] = {}

    def text_embedding(self, prompt: str) -> torch.Tensor:
        """The (D,) text embedding of ``prompt``, computed once."""
        if prompt not in self._cache:
            self._cache[prompt] = self.text([prompt])[0]
        return self._cache[prompt]

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Raw cosines (B,) with autograd (for first-order search)."""
        prompts = check_prompts(targets, len(images), what=self.name)
        img = image_embeddings(self.loaded, images)  # (B, D)
        txt = torch.stack([self.text_embedding(p) for p in prompts])  # (B, D)
        return cosine(img, txt)


def _data(name: str):
    return json.loads(resources.files("noisesearch.data").joinpath(name).read_text(encoding="utf-8"))


def _names(value, *, what: str, default) -> list[str]:
    """A list of strings from ``value``: None (default), a JSON file path, or a list."""
    if value is None:
        return default()
    if isinstance(value, (str, Path)):
        p = Path(value).expanduser()
        if not p.is_file():
            raise UserError(f"clip-zeroshot: {what} file {p} not found (expected a JSON list of strings)")
        value = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"clip-zeroshot: {what} must be a non-empty JSON list of strings")
    return value


def imagenet_class_names() -> list[str]:
    """CLIP's 1000 ImageNet class names in class-index order (``noisesearch/data/README.md``)."""
    return [c["clip_name"] for c in sorted(_data("imagenet_classes.json"), key=lambda c: c["index"])]


TEMPLATE_SETS = {"imagenet80": "templates", "imagenet7": "selected_7"}


def _templates(value) -> list[str]:
    if value is None or value in TEMPLATE_SETS:
        return _data("clip_imagenet_templates.json")[TEMPLATE_SETS[value or "imagenet80"]]
    out = _names(value, what="templates", default=list)
    if not all("{}" in t for t in out):
        raise UserError("clip-zeroshot: every template must contain {} (the class name's place)")
    return out


class ClipZeroShotVerifier(Scorer):
    """Log-probability of the target class from CLIP zero-shot logits, templates averaged (Radford et al. 2021).

    Range: (-inf, 0] (a log-probability; clamped at 0 against rounding).

    Args:
        classes: class names in label order: None (ImageNet-1k, CLIP's names), a JSON file or a list;
        templates: "imagenet80" (default), "imagenet7", a JSON file or a list of strings with ``{}``.

    The class embeddings (classes x templates text forwards) are computed on the first call.
    """

    value_range = (-math.inf, 0.0)

    def __init__(self, *, path=None, device="cpu", dtype="float32", classes=None, templates=None):
        self.name = "clip-zeroshot"
        self.classes = _names(classes, what="classes", default=imagenet_class_names)
        self.templates = _templates(templates)
        self.loaded = load(path, what=self.name, example=CLIP_EXAMPLE, device=device, dtype=dtype, tokenizer=True)
        self.text = _TextEncoder(self.loaded)
        self._weights: torch.Tensor | None = None

    def class_embeddings(self) -> torch.Tensor:
        """(K, D) unit class embeddings: mean of the unit template embeddings, renormalised."""
        if self._weights is None:
            rows = []
            for name in self.classes:
                e = self.text([t.format(name) for t in self.templates])  # (T, D)
                e = (e / e.norm(dim=-1, keepdim=True)).mean(dim=0)  # (D,)
                rows.append(e / e.norm())
            self._weights = torch.stack(rows)  # (K, D)
        return self._weights

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Log p(target | image) (B,) with autograd (for first-order search)."""
        labels = _labels(targets, len(images), len(self.classes), what=self.name)
        img = image_embeddings(self.loaded, images)  # (B, D)
        img = img / img.norm(dim=-1, keepdim=True)
        scale = self.loaded.model.logit_scale.float().exp() if hasattr(self.loaded.model, "logit_scale") else 100.0
        logits = scale * img @ self.class_embeddings().T  # (B, K)
        return logits.log_softmax(dim=-1).gather(1, labels.to(logits.device)[:, None])[:, 0].clamp(max=0.0)


def _labels(targets: list, count: int, classes: int, *, what: str) -> torch.Tensor:
    """Integer class ids (B,) in [0, classes), or a ``UserError``."""
    if len(targets) != count:
        raise UserError(f"{what}: got {len(targets)} targets for {count} images")
    try:
        labels = [int(t) for t in targets]
    except (TypeError, ValueError):
        raise UserError(f"{what}: targets must be class ids in [0, {classes}), got {targets[:3]!r}") from None
    bad = [t for t in labels if not 0 <= t < classes]
    if bad:
        raise UserError(f"{what}: class id {bad[0]} out of range [0, {classes})")
    return torch.as_tensor(labels, dtype=torch.int64)
