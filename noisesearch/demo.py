"""``demo``: the paper's central finding in miniature on the built-in digits model.

Ma et al. 2025, Fig. 1/3: spending NFEs on more denoising steps stops paying after a few steps,
while spending them on searching for better noises (random search, zero-order search) keeps
improving FID and IS for a while, until the search over-fits its verifier (FID turns up while IS
keeps rising). Every configuration uses the same per-target seeds, so the first candidate of
every search is the no-search sample at ``SEARCH_STEPS`` steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from noisesearch.checks import check_guidance

if TYPE_CHECKING:
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


def nfe_per_step(guidance: float | None) -> int:
    """NFEs of one digits step: 2 with classifier-free guidance (conditional and unconditional rows), else 1."""
    return 1 if guidance is None or guidance == 1.0 else 2


def demo_configs(
    *, quick: bool = False, seed: int = 0, model: str = "digits", guidance: float | None = None
) -> list[Config]:
    """The configurations of the demo (``quick``: fewer samples and budgets, under a minute).

    With ``guidance`` other than 1 each baseline step costs 2 NFEs: ``steps`` steps are budgeted
    ``2 * steps`` NFEs, so every point sits at the NFEs it really spends.
    """
    from noisesearch.study import Config  # torch is imported only once the arguments are checked

    plan = PLANS["quick" if quick else "full"]
    guidance = check_guidance(guidance, what="--guidance")
    per_step = nfe_per_step(guidance)
    common = {"model": model, "per_class": plan["per_class"], "seed": seed, "guidance": guidance}
    configs = [Config("none", steps, steps * per_step, **common) for steps in plan["baseline_steps"]]
    for algorithm, verifier in plan["searches"]:
        configs += [Config(algorithm, SEARCH_STEPS, budget, verifier, **common) for budget in plan["budgets"]]
    return configs
