"""Oracle verifiers for ImageNet models: the Inception network behind FID and IS, one sample at a time.

Ma et al. 2025 (arXiv 2501.09732, Sec. 3, "oracle verifiers") search with the evaluation metric
itself: for IS they keep the candidate to which InceptionV3 gives the highest probability of the
conditioning class; for FID they compare candidates' Inception features with precomputed ImageNet
statistics (mean, covariance) and greedily keep the candidate that brings the samples closest to
them. FID is a statistic of a set, and our verifiers score each image on its own (the contract in
``base.py``), so ``oracle-fid`` scores a candidate by the FID of the set made of it alone:

- ``oracle-is-imagenet``: ``log p(target class | image)`` under the Inception classifier;
- ``oracle-fid`` (``metric="fid1"``): ``-(|f - mu|^2 + tr(sigma))``, minus the Frechet distance
  between the one-point set {f} (mean f, covariance 0) and the reference N(mu, sigma); its
  ranking is that of the squared distance of the pool features f to the reference mean.
  ``metric="mahalanobis"`` uses ``-(f - mu)^T (sigma + eps I)^-1 (f - mu)`` instead (minus twice
  the reference Gaussian's log-density, up to a constant).

The network is torchvision's ``inception_v3`` architecture (Szegedy et al. 2016) with weights from
a local file (``.safetensors``, or ``.pth`` read with ``weights_only=True``; e.g. torchvision's
``inception_v3_google-0cc3c7bd.pth``); images are resized to 299x299 (bilinear) and scaled to
[-1, 1], the input those weights expect (``size`` changes the resolution, e.g. for fast tests). ``reference`` is an ``.npz`` with ``mu`` (2048,) and
``sigma`` (2048, 2048) computed **with the same network** (ADM's ``VIRTUAL_imagenet256_labeled.npz``
comes from the TensorFlow Inception graph, whose features differ from torchvision's).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from noisesearch.errors import UserError
from noisesearch.verifiers._hf import Scorer, require, resolve_device
from noisesearch.verifiers._state import load_strict, read_state_dict
from noisesearch.verifiers.base import check_images
from noisesearch.verifiers.clip import _labels

SIZE = 299
BLOCKS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)  # torchvision's forward, without the aux head
METRICS = ("fid1", "mahalanobis")


def load_inception(path, *, what: str, device="cpu") -> torch.nn.Module:
    """torchvision's InceptionV3 with the weights in ``path`` (classes and aux head read from the file), eval mode."""
    if path is None:
        raise UserError(
            f"{what} needs weights: pass --verifier-path, an InceptionV3 weights file "
            "(.safetensors or .pth), e.g. torchvision's inception_v3_google-0cc3c7bd.pth"
        )
    dev = resolve_device(device)
    tensors = read_state_dict(path, what=what)
    models = require("torchvision.models", what)
    if "fc.weight" not in tensors or tensors["fc.weight"].dim() != 2:
        raise UserError(f"{what}: {path} has no classifier fc.weight: not torchvision InceptionV3 weights")
    classes, aux = int(tensors["fc.weight"].shape[0]), any(k.startswith("AuxLogits.") for k in tensors)
    with torch.random.fork_rng():  # default layer initialisation, overwritten below; the global RNG is left alone
        net = models.inception_v3(weights=None, aux_logits=aux, init_weights=False, num_classes=classes)
    load_strict(net, tensors, what=what, source=path)
    return net.to(dev).eval().requires_grad_(False)


def pool_and_logits(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool features (B, 2048) and class logits (B, K) of network inputs x (B, 3, S, S), S >= 75."""
    for name in BLOCKS:
        x = getattr(net, name)(x)  # ... -> (B, 2048, 8, 8) at S = 299
    pool = net.avgpool(x).flatten(1)  # (B, 2048)
    return pool, net.fc(pool)  # (B, 2048), (B, K)


class _Inception(Scorer):
    """Shared preprocessing: images (B, C, H, W) in [0, 1] -> size x size in [-1, 1] through the network."""

    def __init__(self, *, path, device, name, size):
        self.name = name
        if not isinstance(size, int) or size < 75:
            raise UserError(f"{name}: size must be an integer >= 75 (InceptionV3's smallest input), got {size!r}")
        self.size = size
        self.net = load_inception(path, what=name, device=device)
        self.device = next(self.net.parameters()).device

    def pool_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool features (B, 2048) and logits (B, K) in float32; keeps autograd."""
        check_images(images)
        if images.shape[1] not in (1, 3):
            raise UserError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}")
        x = images.to(self.device).float().expand(-1, 3, -1, -1)  # (B, 3, H, W)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )  # (B, 3, size, size)
        return pool_and_logits(self.net, x * 2 - 1)


class OracleISVerifier(_Inception):
    """Log-probability of the target class under the Inception classifier (Ma et al. 2025, IS oracle).

    Range: (-inf, 0] (a log-probability; clamped at 0 against rounding).
    """

    value_range = (-math.inf, 0.0)

    def __init__(self, *, path=None, device="cpu", size=SIZE):
        super().__init__(path=path, device=device, name="oracle-is-imagenet", size=size)
        self.classes = int(self.net.fc.out_features)

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Log p(target | image) (B,) with autograd in the image."""
        labels = _labels(targets, len(images), self.classes, what=self.name)
        _, logits = self.pool_and_logits(images)  # (B, K)
        return logits.log_softmax(dim=-1).gather(1, labels.to(logits.device)[:, None])[:, 0].clamp(max=0.0)  # (B,)


def load_reference(path, *, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D, D)) float64 from an ``.npz`` with arrays ``mu`` and ``sigma``."""
    if path is None:
        raise UserError("oracle-fid needs reference=<file.npz> with the reference mu and sigma of the pool features")
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"oracle-fid: reference statistics {p} not found")
    try:
        with np.load(p) as data:
            if not {"mu", "sigma"} <= set(data.files):
                raise UserError(f"oracle-fid: {p} must hold arrays 'mu' and 'sigma', it holds {sorted(data.files)}")
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except (OSError, ValueError) as e:
        raise UserError(f"oracle-fid: cannot read {p}: {e}") from None
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise UserError(
            f"oracle-fid: {p} has mu {mu.shape} and sigma {sigma.shape}; the network's pool "
            f"features need ({dim},) and ({dim}, {dim})"
        )
    return mu, sigma


class OracleFIDVerifier(_Inception):
    """Minus the FID of the one-sample set {image} against reference statistics (Ma et al. 2025, FID oracle).

    Args:
        reference: ``.npz`` with ``mu`` and ``sigma`` of the same network's pool features;
        metric: "fid1" (default, see the module docstring) or "mahalanobis";
        eps: ridge added to sigma's diagonal for "mahalanobis";
        size: input resolution (299 for the released weights and statistics; smaller only to save time).

    Range: (-inf, -tr(sigma)] for "fid1" (a squared distance is never negative), (-inf, 0] for
    "mahalanobis"; both hold exactly in floating point, so nothing is clamped.
    """

    value_range = (-math.inf, 0.0)

    def __init__(self, *, path=None, device="cpu", reference=None, metric="fid1", eps=1e-6, size=SIZE):
        super().__init__(path=path, device=device, name="oracle-fid", size=size)
        if metric not in METRICS:
            raise UserError(f"oracle-fid: unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
        dim = int(self.net.fc.in_features)
        mu, sigma = load_reference(reference, dim=dim)
        self.metric = metric
        self.mu = torch.from_numpy(mu).to(self.device)  # (D,) float64
        self.trace = float(np.trace(sigma))
        if metric == "mahalanobis":
            try:
                self.chol = torch.linalg.cholesky(torch.from_numpy(sigma + eps * np.eye(dim)).to(self.device))  # (D, D)
            except RuntimeError:
                raise UserError(f"oracle-fid: sigma + {eps} I is not positive definite; raise eps") from None

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Scores (B,) (higher = closer to the reference) with autograd in the image."""
        if len(targets) != len(images):
            raise UserError(f"{self.name}: got {len(targets)} targets for {len(images)} images")
        pool, _ = self.pool_and_logits(images)  # (B, D)
        d = pool.double() - self.mu  # (B, D)
        if self.metric == "fid1":
            return -((d * d).sum(dim=-1) + self.trace)  # (B,)
        z = torch.linalg.solve_triangular(self.chol, d.T, upper=False)  # (D, B): L^-1 d
        return -(z * z).sum(dim=0)  # (B,)
