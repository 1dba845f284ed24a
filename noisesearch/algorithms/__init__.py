"""Search-algorithm registry: name -> factory ``(**keyword hyperparameters) -> SearchAlgorithm``.

The paper's set first (Ma et al. 2025: random, zero-order, paths, first-order), then published
alternatives (SMC / FK steering, epsilon-greedy noise-trajectory search, evolution / CEM, EvoSearch), then
noisesearch's own: successive halving over noises and step-greedy (per-step best of fresh injected noises).
"""

from __future__ import annotations

from collections.abc import Callable

from noisesearch.algorithms.base import (
    Jobs,
    Outcomes,
    Problem,
    Problems,
    SearchAlgorithm,
    derive_seed,
    gaussian,
    noise_hash,
)
from noisesearch.algorithms.epsilon_greedy import EpsilonGreedySearch
from noisesearch.algorithms.evolution import EvolutionSearch
from noisesearch.algorithms.evosearch import EvoSearch
from noisesearch.algorithms.first_order import FirstOrderSearch
from noisesearch.algorithms.halving import HalvingSearch
from noisesearch.algorithms.paths import PathsSearch
from noisesearch.algorithms.random import RandomSearch
from noisesearch.algorithms.smc import IncrementalSMCSearch, SMCSearch
from noisesearch.algorithms.step_greedy import StepGreedySearch
from noisesearch.algorithms.zero_order import ZeroOrderSearch

ALGORITHMS: dict[str, Callable[..., SearchAlgorithm]] = {
    "random": RandomSearch,
    "zero-order": ZeroOrderSearch,
    "paths": PathsSearch,
    "first-order": FirstOrderSearch,
    "smc": SMCSearch,
    "smc-incremental": IncrementalSMCSearch,
    "epsilon-greedy": EpsilonGreedySearch,
    "evolution": EvolutionSearch,
    "evosearch": EvoSearch,
    "halving": HalvingSearch,
    "step-greedy": StepGreedySearch,
}

__all__ = [
    "ALGORITHMS",
    "Jobs",
    "Outcomes",
    "Problem",
    "Problems",
    "SearchAlgorithm",
    "derive_seed",
    "gaussian",
    "noise_hash",
]
