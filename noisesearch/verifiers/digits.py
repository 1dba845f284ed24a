"""The digits world's verifiers, analogues of the paper's ImageNet verifiers (Ma et al. 2025, Sec. 4).

- ``classifier``: log p(target | image) from a pixel MLP trained with labels on 80% of the digits
  (the supervised verifier; the paper uses CLIP / DINO classification logits);
- ``feature-similarity``: cosine similarity between a label-free encoder's features of the
  x0-prediction at ``preview_sigma`` (0.4, the paper's: late in sampling, 60% of the way from
  noise at sigma 1 to data at 0) and of the final sample (the self-supervised verifier; it ignores
  the target);
- ``oracle-is``: log p(target | image) from the evaluation network itself, the network behind
  FID and IS (the paper's oracle Inception Score verifier);
- ``oracle-fid-digits``: minus the FID of the one-image set {image} against the evaluation
  network's feature statistics (mean, covariance) of the real digits of the target class,
  ``-(|f - mu_c|^2 + tr(sigma_c))`` (the paper's oracle FID verifier, scored one image at a time
  as ``oracle-fid`` does on ImageNet; per class because the digits model is class-conditional).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from noisesearch.digits import nets
from noisesearch.digits.train import WEIGHTS_DIR
from noisesearch.verifiers.base import check_images, check_preview_sigma


def _load(path, default: str, kind: str):
    from noisesearch.models.digits import load_net

    return load_net(Path(path) if path else WEIGHTS_DIR / default, kind)


def _targets(targets: list, device: torch.device) -> torch.Tensor:
    return torch.tensor([int(t) for t in targets], dtype=torch.int64, device=device)


def _follow(net: torch.nn.Module, images: torch.Tensor) -> None:
    """Move ``net`` to the device of the images it is given (once: a model on a GPU gives GPU images)."""
    weight = next(net.parameters())
    if weight.device != images.device:
        net.to(images.device)


class ClassifierVerifier:
    """Log-probability of the target class under a classifier (supervised verifier).

    Range: (-inf, 0] (a log-probability; clamped at 0 against rounding).
    """

    preview_sigma = None
    value_range = (-math.inf, 0.0)

    def __init__(self, *, path: Path | str | None = None, kind: str = "classifier", name: str = "classifier"):
        self.name = name
        default = "classifier.safetensors" if kind == "classifier" else "evalnet.safetensors"
        self.net = _load(path, default, kind)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        return self.score(images, targets, previews=previews)

    def flops_per_row(self, key: tuple) -> float | None:
        """Exact FLOPs of scoring one image with the MLP classifier (``ledger.counted``); None: measure them."""
        return float(nets.linear_flops(self.net)) if isinstance(self.net, nets.Classifier) else None

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """``__call__`` with autograd (for first-order search)."""
        check_images(images, channels=1)
        _follow(self.net, images)
        logp = self.net(images * 2 - 1).log_softmax(dim=1)  # (B, 10)
        target_logp = logp.gather(1, _targets(targets, images.device)[:, None])[:, 0]  # (B,)
        return target_logp.clamp(max=0.0)  # a log-probability is <= 0


class FeatureSimilarityVerifier:
    """Cosine similarity of label-free features: x0-preview at sigma 0.4 vs final sample (self-supervised).

    Range: [-1, 1] (a cosine; clamped, since rounding can carry near-parallel features past 1).
    """

    value_range = (-1.0, 1.0)

    def __init__(self, *, path: Path | str | None = None, preview_sigma: float = 0.4):
        self.name = "feature-similarity"
        self.preview_sigma = check_preview_sigma(preview_sigma)
        self.encoder = _load(path, "encoder.safetensors", "encoder")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        return self.score(images, targets, previews=previews)

    def flops_per_row(self, key: tuple) -> float | None:
        """Exact FLOPs of scoring one image (``ledger.counted``): the encoder on the image and on its preview."""
        return float(2 * nets.linear_flops(self.encoder.net))

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """``__call__`` with autograd (for first-order search)."""
        check_images(images, channels=1)
        if previews is None:
            raise ValueError("feature-similarity needs the x0-previews of the candidates (previews=...)")
        check_images(previews, channels=1)
        _follow(self.encoder, images)
        final, early = self.encoder(images * 2 - 1), self.encoder(previews * 2 - 1)  # (B, latent) each
        return torch.nn.functional.cosine_similarity(final, early, dim=1).clamp(-1.0, 1.0)  # rounding can pass 1


class OracleFIDVerifier:
    """Minus the one-image FID against the target class's real-digit statistics in evaluation-network features.

    Range: (-inf, -tr(sigma_c)] per class, within (-inf, 0] (a Frechet distance is never negative).
    """

    preview_sigma = None
    value_range = (-math.inf, 0.0)

    def __init__(self, *, path: Path | str | None = None):
        from noisesearch.digits.train import load_data

        self.name = "oracle-fid-digits"
        self.net = _load(path, "evalnet.safetensors", "evalnet")
        data = load_data()
        with torch.no_grad():
            feats = self.net.features(data.images).double()  # (N, 64): real digits are already in [-1, 1]
        self.mu = torch.stack([feats[data.labels == c].mean(0) for c in range(10)])  # (10, 64)
        self.trace = torch.stack([feats[data.labels == c].var(0).sum() for c in range(10)])  # (10,) tr(cov)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        return self.score(images, targets, previews=previews)

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """``__call__`` with autograd (for first-order search)."""
        check_images(images, channels=1)
        _follow(self.net, images)
        self.mu, self.trace = self.mu.to(images.device), self.trace.to(images.device)
        c = _targets(targets, images.device)
        d = self.net.features(images * 2 - 1).double() - self.mu[c]  # (B, 64)
        return (-((d * d).sum(dim=1) + self.trace[c])).float().clamp(max=0.0)
