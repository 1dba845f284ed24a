"""Search-algorithm registry: name -> factory ``(**keyword hyperparameters) -> SearchAlgorithm``."""

from __future__ import annotations

from collections.abc import Callable

from noisesearch.search.base import Job, Outcome, Problem, SearchAlgorithm, derive_seed, gaussian, noise_hash
from noisesearch.search.halving import HalvingSearch
from noisesearch.search.paths import PathsSearch
from noisesearch.search.random import RandomSearch
from noisesearch.search.zero_order import ZeroOrderSearch

ALGORITHMS: dict[str, Callable[..., SearchAlgorithm]] = {
    "random": RandomSearch,
    "zero-order": ZeroOrderSearch,
    "paths": PathsSearch,
    "halving": HalvingSearch,
}

__all__ = ["ALGORITHMS", "Job", "Outcome", "Problem", "SearchAlgorithm", "derive_seed", "gaussian", "noise_hash"]
