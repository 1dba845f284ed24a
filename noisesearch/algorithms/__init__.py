"""Search-algorithm registry: name -> ``Entry`` (a declared record, called as its factory, the algorithm class:
``(**keyword hyperparameters) -> SearchAlgorithm``).

The paper's set first (Ma et al. 2025: random, zero-order, paths, first-order), then published
alternatives (SMC / FK steering, epsilon-greedy noise-trajectory search, evolution / CEM, EvoSearch), then
noisesearch's own: successive halving over noises and step-greedy (per-step best of fresh injected noises).
"""

from __future__ import annotations

from noisesearch.algorithms.base import (
    CostModel,
    Jobs,
    Outcomes,
    Problem,
    Problems,
    SearchAlgorithm,
    budget_needed_by,
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
from noisesearch.registry import Entry, registry_of

# one declared record each; what an algorithm declares (``AlgorithmInfo``: ``renders_from_noise``, ...) is on its
# class, the factory, and read through the entry
ALGORITHMS: dict[str, Entry] = registry_of(
    Entry("random", RandomSearch),
    Entry("zero-order", ZeroOrderSearch),
    Entry("paths", PathsSearch),
    Entry("first-order", FirstOrderSearch),
    Entry("smc", SMCSearch),
    Entry("smc-incremental", IncrementalSMCSearch),
    Entry("epsilon-greedy", EpsilonGreedySearch),
    Entry("evolution", EvolutionSearch),
    Entry("evosearch", EvoSearch),
    Entry("halving", HalvingSearch),
    Entry("step-greedy", StepGreedySearch),
)

__all__ = [
    "ALGORITHMS",
    "CostModel",
    "Jobs",
    "Outcomes",
    "Problem",
    "Problems",
    "SearchAlgorithm",
    "budget_needed_by",
    "derive_seed",
    "gaussian",
    "noise_hash",
]
