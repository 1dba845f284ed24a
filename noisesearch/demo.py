"""``demo``: the paper's central finding in miniature on the built-in digits model.

Ma et al. 2025, Fig. 1/3: spending NFEs on more denoising steps stops paying after a few steps,
while spending them on searching for better noises (random search, zero-order search) keeps
improving FID and IS for a while, until the search over-fits its verifier (FID turns up while IS
keeps rising). Every configuration uses the same per-target seeds, so the first candidate of
every search is the no-search sample at ``SEARCH_STEPS`` steps.
"""

from __future__ import annotations

from noisesearch.study import Config

SEARCH_STEPS = 8  # Euler steps per search candidate (where the step curve has flattened)

PLANS = {
    "full": {
        "per_class": 100,
        "baseline_steps": [1, 2, 4, 8, 16, 32, 64, 128],
        "budgets": [16, 32, 64, 128, 256, 512, 1024],
        "searches": [("random", "classifier"), ("zero-order", "classifier"), ("random", "feature-similarity")],
    },
    "quick": {
        "per_class": 30,
        "baseline_steps": [1, 2, 4, 8, 16, 32],
        "budgets": [16, 32, 64, 128, 256],
        "searches": [("random", "classifier"), ("zero-order", "classifier")],
    },
}


def demo_configs(*, quick: bool = False, seed: int = 0, model: str = "digits") -> list[Config]:
    """The configurations of the demo (``quick``: fewer samples and budgets, under a minute)."""
    plan = PLANS["quick" if quick else "full"]
    common = {"model": model, "per_class": plan["per_class"], "seed": seed}
    configs = [Config("none", steps, steps, **common) for steps in plan["baseline_steps"]]
    for algorithm, verifier in plan["searches"]:
        configs += [Config(algorithm, SEARCH_STEPS, budget, verifier, **common) for budget in plan["budgets"]]
    return configs
