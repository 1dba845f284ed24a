"""Model registry: name -> factory ``(*, path=None) -> Model`` (see ``noisesearch.models.base``)."""

from __future__ import annotations

from collections.abc import Callable

from noisesearch.models.base import Model, index_cond


def digits(*, path=None) -> Model:
    """Built-in class-conditional rectified flow on 8x8 digits (~55k parameters, shipped weights)."""
    from noisesearch.models.digits import DigitsModel

    return DigitsModel("digits", path=path)


def digits_large(*, path=None) -> Model:
    """Built-in digits flow model, ~600k parameters (for model-size studies)."""
    from noisesearch.models.digits import DigitsModel

    return DigitsModel("digits-large", path=path)


def toy(*, path=None) -> Model:
    """Analytic toy: the exact denoiser over the points -1 and +1 (known optimum, for tests)."""
    from noisesearch.models.toy import ToyModel

    return ToyModel(path=path)


MODELS: dict[str, Callable[..., Model]] = {"digits": digits, "digits-large": digits_large, "toy": toy}

__all__ = ["MODELS", "Model", "index_cond"]
