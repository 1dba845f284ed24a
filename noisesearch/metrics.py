"""Sample-set metrics from the digits evaluation network: FID, IS, precision/recall, accuracy, diversity.

The maths is torch-fidelity's (FID from feature statistics, IS from logits, precision/recall of
Kynkaenniemi et al. 2019 with k = 3); only the feature extractor is ours: the penultimate layer
of ``EvalNet``, a CNN that no verifier shares. The reference set is all 1797 digits.

IS follows the standard protocol (Salimans et al. 2016; torch-fidelity's default): the samples are
shuffled with a seeded permutation (``numpy.random.RandomState(2020)``), cut into 10 splits, and
``is`` is the mean over the splits of ``exp(mean KL(p(y|x) || p(y)))`` with ``p(y)`` the split's
marginal; ``is_std`` is their standard deviation. ``is_single_split`` is the same score over the
whole set at once (one split, no shuffle), which is what noisesearch reported as ``is`` before.
With fewer than 10 samples there are ``N`` splits of one sample each (each scores exactly 1).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

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
        from torch_fidelity.metric_fid import fid_features_to_statistics

        from noisesearch.digits.train import load_data

        data = load_data()
        feats, _ = self.features_and_logits((data.images + 1) / 2)
        return feats, fid_features_to_statistics(feats)

    def __call__(self, images: torch.Tensor, labels) -> dict[str, float]:
        """FID, IS, precision, recall and class accuracy of ``images`` generated for ``labels``."""
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

        feats, logits = self.features_and_logits(images)
        ref_feats, ref_stats = self.reference
        fid = fid_statistics_to_metric(fid_features_to_statistics(feats), ref_stats, verbose=False)[
            "frechet_inception_distance"
        ]
        inception, inception_std = inception_score(logits)
        single, _ = inception_score(logits, splits=1, shuffle=False)
        precision, recall = self.precision_recall(feats)
        labels = torch.as_tensor(labels)
        accuracy = float((logits.argmax(1) == labels).double().mean())
        diversity = within_class_spread(feats, labels) / self.reference_spread
        return {
            "fid": float(fid),
            "is": inception,
            "is_std": inception_std,
            "is_single_split": single,
            "precision": float(precision),
            "recall": float(recall),
            "accuracy": accuracy,
            "diversity": diversity,
        }

    def precision_recall(self, feats: torch.Tensor) -> tuple[float, float]:
        """Precision and recall (k = 3) of features ``feats`` (N, d) against the reference set.

        The same computation as torch-fidelity's ``calculate_precision_recall_full`` (its distance
        helper, its k-th-neighbour radii, its ``<=`` test; a test holds the two equal), except that the
        reference set's radii, which do not change between calls, are computed once: they were three
        quarters of an evaluation's time (a 1797 x 1797 distance matrix per call).
        """
        from torch_fidelity.metric_prc import calc_cdist_full

        feats = feats.float()
        ref_feats, ref_radii = self.reference_radii
        radii = calc_cdist_full(feats, feats).kthvalue(PRC_NEIGHBOURHOOD + 1).values  # (N,)
        ref_to_feats = calc_cdist_full(ref_feats, feats)  # (R, N)
        recall = (ref_to_feats <= radii).any(dim=1).float().mean().item()
        precision = (ref_to_feats.T <= ref_radii).any(dim=1).float().mean().item()
        return precision, recall

    @cached_property
    def reference_radii(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference features as float32 (R, d) and each one's distance to its k-th neighbour (R,)."""
        from torch_fidelity.metric_prc import calc_cdist_full

        ref_feats = self.reference[0].float()
        return ref_feats, calc_cdist_full(ref_feats, ref_feats).kthvalue(PRC_NEIGHBOURHOOD + 1).values

    @cached_property
    def reference_spread(self) -> float:
        from noisesearch.digits.train import load_data

        return within_class_spread(self.reference[0], load_data().labels)


PRC_NEIGHBOURHOOD = 3  # k of Kynkaenniemi et al. 2019 and torch-fidelity's default
IS_SPLITS, IS_SEED = 10, 2020  # torch-fidelity's defaults: the standard protocol


def inception_score(
    logits: torch.Tensor, *, splits: int = IS_SPLITS, shuffle: bool = True, seed: int = IS_SEED
) -> tuple[float, float]:
    """(mean, std) of the Inception Score over ``min(splits, N)`` splits of ``logits`` (N, classes),
    shuffled first with ``numpy.random.RandomState(seed)`` (see the module docstring); NaN for N = 0.

    Split ``i`` holds rows ``i * N // splits`` to ``(i + 1) * N // splits``, and the std is the
    population std over splits, as in torch-fidelity (computed here without importing it: it is slow to load).
    """
    import numpy as np

    n = len(logits)
    if n == 0:
        return float("nan"), float("nan")
    splits = min(splits, n)
    logits = logits.double()
    if shuffle:
        logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    log_p = logits.log_softmax(dim=1)  # (N, classes)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits : (i + 1) * n // splits]  # (n_i, classes)
        log_marginal = chunk.exp().mean(dim=0).log()  # (classes,)
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1)  # (n_i,)
        scores.append(float(kl.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


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
