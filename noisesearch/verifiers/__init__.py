"""Verifier registry: name -> factory ``(*, path=None) -> Verifier`` (see ``noisesearch.verifiers.base``).

Each factory carries ``domain``: the model family whose images it understands (``"digits"``), or
None for any.
"""

from __future__ import annotations

from collections.abc import Callable

from noisesearch.verifiers.base import Verifier, check_images


def classifier(*, path=None) -> Verifier:
    """Supervised: log p(target | image) from a digits classifier trained with labels."""
    from noisesearch.verifiers.digits import ClassifierVerifier

    return ClassifierVerifier(path=path)


def feature_similarity(*, path=None) -> Verifier:
    """Self-supervised: cosine similarity of label-free features, early x0-preview vs final sample."""
    from noisesearch.verifiers.digits import FeatureSimilarityVerifier

    return FeatureSimilarityVerifier(path=path)


def oracle_is(*, path=None) -> Verifier:
    """Oracle: log p(target | image) from the evaluation network behind FID and IS."""
    from noisesearch.verifiers.digits import ClassifierVerifier

    return ClassifierVerifier(path=path, kind="evalnet", name="oracle-is")


def toy_distance(*, path=None) -> Verifier:
    """Analytic toy: minus the squared distance to the target point (optimum 0)."""
    from noisesearch.models.toy import ToyDistanceVerifier

    return ToyDistanceVerifier(path=path)


for _factory in (classifier, feature_similarity, oracle_is):
    _factory.domain = "digits"
toy_distance.domain = "toy"

VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "classifier": classifier,
    "feature-similarity": feature_similarity,
    "oracle-is": oracle_is,
    "toy-distance": toy_distance,
}

__all__ = ["VERIFIERS", "Verifier", "check_images"]
