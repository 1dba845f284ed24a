"""Sample-set metrics from the digits evaluation network: FID, IS, precision/recall, accuracy, diversity.

The maths is torch-fidelity's (FID from feature statistics, IS from logits, precision/recall of
Kynkaenniemi et al. 2019 with k = 3), computed here with the same numpy and torch operations in
the same order, so the values are equal; tests hold them equal to torch-fidelity's own functions.
They are not imported from it because importing torch-fidelity imports torchvision, which imports
``torch._dynamo``: 2.7 s in every process that evaluates a sample set, 6% of ``make demo``. Only
the feature extractor is ours: the penultimate layer of ``EvalNet``, a CNN that no verifier
shares. The reference set is all 1797 digits, whose statistics and k-NN radii are computed once.

IS follows the standard protocol (Salimans et al. 2016; torch-fidelity's default): the samples are
shuffled with a seeded permutation (``numpy.random.RandomState(2020)``), cut into 10 splits, and
``is`` is the mean over the splits of ``exp(mean KL(p(y|x) || p(y)))`` with ``p(y)`` the split's
marginal; ``is_std`` is their standard deviation. ``is_single_split`` is the same score over the
whole set at once (one split, no shuffle), which is what noisesearch reported as ``is`` before.
With fewer than 10 samples there are ``N`` splits of one sample each (each scores exactly 1).

Under this protocol IS is capped by the labels, not only by the number of classes: a split of 20
samples of 10 classes scores at most ``exp(entropy of its labels)``, so a perfect set of 200 balanced
digits scores about 8.235 on ``is`` (9.148 for 500) and exactly 10 on ``is_single_split``. The
evaluator therefore also returns ``is_ceiling`` and ``is_single_split_ceiling``: the score of a
perfect set under the same protocol (``inception_score_ceiling``: every sample certainly of its own
target class, the same splits and shuffle), the line a curve of the metric is read against.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch


class DigitsEvaluator:
    """Scores sets of generated digits (B, 1, 8, 8) in [0, 1] against the real digits."""

    def __init__(self, path: Path | str | None = None):
        from noisesearch.digits.train import WEIGHTS_DIR
        from noisesearch.models.digits import load_net

        self.net = load_net(Path(path) if path else WEIGHTS_DIR / "evalnet.safetensors", "evalnet")

    @torch.no_grad()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net.features(images * 2 - 1)  # (N, 64)
        return feats.double(), self.net.head(feats).double()

    @cached_property
    def reference(self):
        from noisesearch.digits.train import load_data

        data = load_data()
        feats, _ = self.features_and_logits((data.images + 1) / 2)
        return feats, gaussian_statistics(feats)

    def __call__(self, images: torch.Tensor, labels) -> dict[str, float]:
        """FID, IS, precision, recall and class accuracy of ``images`` generated for ``labels``."""
        feats, logits = self.features_and_logits(images)
        fid = frechet_distance(gaussian_statistics(feats), self.reference[1])
        inception, inception_std = inception_score(logits)
        single, _ = inception_score(logits, splits=1, shuffle=False)
        labels = torch.as_tensor(labels)
        classes = logits.shape[1]
        precision, recall = self.precision_recall(feats)
        accuracy = float((logits.argmax(1) == labels).double().mean())
        diversity = within_class_spread(feats, labels) / self.reference_spread
        return {
            "fid": float(fid),
            "is": inception,
            "is_std": inception_std,
            "is_single_split": single,
            "is_ceiling": inception_score_ceiling(labels, classes),
            "is_single_split_ceiling": inception_score_ceiling(labels, classes, splits=1, shuffle=False),
            "precision": float(precision),
            "recall": float(recall),
            "accuracy": accuracy,
            "diversity": diversity,
        }

    def precision_recall(self, feats: torch.Tensor) -> tuple[float, float]:
        """Precision and recall (k = 3) of features ``feats`` (N, d) against the reference set.

        The same computation as torch-fidelity's ``calculate_precision_recall_full`` (float32
        Euclidean distances, each point's distance to its k-th neighbour other than itself as its
        radius, ``<=`` as "inside"; a test holds the two equal), except that the reference set's
        radii, which do not change between calls, are computed once: they were three quarters of an
        evaluation's time (a 1797 x 1797 distance matrix per call).
        """
        feats = feats.float()
        ref_feats, ref_radii = self.reference_radii
        radii = torch.cdist(feats, feats).kthvalue(PRC_NEIGHBOURHOOD + 1).values  # (N,)
        ref_to_feats = torch.cdist(ref_feats, feats)  # (R, N)
        recall = (ref_to_feats <= radii).any(dim=1).float().mean().item()
        precision = (ref_to_feats.T <= ref_radii).any(dim=1).float().mean().item()
        return precision, recall

    @cached_property
    def reference_radii(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference features as float32 (R, d) and each one's distance to its k-th neighbour (R,)."""
        ref_feats = self.reference[0].float()
        return ref_feats, torch.cdist(ref_feats, ref_feats).kthvalue(PRC_NEIGHBOURHOOD + 1).values

    @cached_property
    def reference_spread(self) -> float:
        from noisesearch.digits.train import load_data

        return within_class_spread(self.reference[0], load_data().labels)


def gaussian_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and sample covariance (d, d) of ``features`` (N, d), in numpy, as FID uses them."""
    x = features.numpy()
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def frechet_distance(stats_1: tuple[np.ndarray, np.ndarray], stats_2: tuple[np.ndarray, np.ndarray]) -> float:
    """Frechet distance between two Gaussians given as (mean, covariance): FID (Heusel et al. 2017).

    ``|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))``, where the last trace is the sum
    of the square roots of the eigenvalues of ``S_1 S_2`` (taken as complex numbers, real part
    kept), as torch-fidelity computes it.
    """
    (mu_1, sigma_1), (mu_2, sigma_2) = stats_1, stats_2
    diff = mu_1 - mu_2
    eigenvalues = np.linalg.eigvals(sigma_1.dot(sigma_2)).astype("complex128")
    trace_sqrt = np.sum(np.sqrt(eigenvalues).real)
    return float(diff.dot(diff) + np.trace(sigma_1) + np.trace(sigma_2) - 2 * trace_sqrt)


PRC_NEIGHBOURHOOD = 3  # k of Kynkaenniemi et al. 2019 and torch-fidelity's default
IS_SPLITS, IS_SEED = 10, 2020  # torch-fidelity's defaults: the standard protocol


def _split_rows(n: int, splits: int, shuffle: bool, seed: int) -> list[torch.Tensor]:
    """The row indices of each of the ``min(splits, n)`` IS splits of ``n`` samples (see ``inception_score``)."""
    splits = min(splits, n)
    order = torch.from_numpy(np.random.RandomState(seed).permutation(n)) if shuffle else torch.arange(n)
    return [order[i * n // splits : (i + 1) * n // splits] for i in range(splits)]


def inception_score(
    logits: torch.Tensor, *, splits: int = IS_SPLITS, shuffle: bool = True, seed: int = IS_SEED
) -> tuple[float, float]:
    """(mean, std) of the Inception Score over ``min(splits, N)`` splits of ``logits`` (N, classes),
    shuffled first with ``numpy.random.RandomState(seed)`` (see the module docstring); NaN for N = 0.

    Split ``i`` holds rows ``i * N // splits`` to ``(i + 1) * N // splits``, and the std is the
    population std over splits, as in torch-fidelity.
    """
    if len(logits) == 0:
        return float("nan"), float("nan")
    log_p = logits.double().log_softmax(dim=1)  # (N, classes)
    scores = []
    for rows in _split_rows(len(logits), splits, shuffle, seed):
        chunk = log_p[rows]  # (n_i, classes)
        log_marginal = chunk.exp().mean(dim=0).log()  # (classes,)
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1)  # (n_i,)
        scores.append(float(kl.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_ceiling(
    labels, classes: int, *, splits: int = IS_SPLITS, shuffle: bool = True, seed: int = IS_SEED
) -> float:
    """The mean IS that a perfect set with these ``labels`` gets under the same protocol; NaN for no labels.

    A perfect sample is certainly its own class (p(y|x) one-hot at its label), so a split's mean KL
    to its marginal is the entropy of the split's label counts and its score ``exp`` of that:
    ``inception_score`` of one-hot-confident logits, computed exactly (one-hot logits would need
    infinities). Balanced ``k`` classes in one split score exactly ``k``.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).flatten()
    if len(labels) == 0:
        return float("nan")
    scores = []
    for rows in _split_rows(len(labels), splits, shuffle, seed):
        share = torch.bincount(labels[rows], minlength=classes).double() / len(rows)  # (classes,)
        share = share[share > 0]
        scores.append(float((-(share * share.log()).sum()).exp()))
    return float(np.mean(scores))


def within_class_spread(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise feature distance between samples of the same class, averaged over classes.

    Divided by the real digits' value it is the ``diversity`` metric: 1.0 is as varied as the data,
    lower means the samples of a class look alike (a search collapsing onto its verifier's favourite).
    """
    spreads = []
    for c in labels.unique():
        f = features[labels == c]  # (n_c, d)
        if len(f) > 1:
            d = torch.cdist(f, f)  # (n_c, n_c)
            spreads.append(float(d.sum() / (len(f) * (len(f) - 1))))
    return sum(spreads) / len(spreads) if spreads else float("nan")  # no class with two samples
