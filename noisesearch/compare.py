"""``compare``: every search algorithm against "more denoising steps" at matched NFE budgets.

Each budget B (NFEs per sample) is spent three ways over a class-balanced target set and several
seeds: on B Euler steps with no search, and on each registered algorithm (default parameters,
``SEARCH_STEPS`` steps per full candidate) with one verifier. Held-out quality comes from the
evaluation network, which no verifier shares.
"""

from __future__ import annotations

from noisesearch.demo import SEARCH_STEPS
from noisesearch.errors import UserError
from noisesearch.study import Config

QUICK = {"per_class": 20, "budgets": (64, 128, 256)}
FULL = {"per_class": 50}


def parse_budgets(text: str) -> list[int]:
    """'64,128,256' -> [64, 128, 256]; a clear error for anything else."""
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--budgets {text!r} is not a comma-separated list of integers, e.g. 64,128,256") from None
    if not budgets or any(b < 1 for b in budgets):
        raise UserError(f"--budgets {text!r} must list positive NFE budgets, e.g. 64,128,256")
    return sorted(set(budgets))


def compare_configs(
    *,
    model: str = "digits",
    budgets: list[int],
    seeds: int = 3,
    verifier: str = "classifier",
    algorithms: list[str] | None = None,
    quick: bool = False,
) -> list[Config]:
    """Configurations of the matched-budget study (``quick``: fewer samples, budgets up to 256)."""
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.generate import pick
    from noisesearch.verifiers import VERIFIERS

    pick(VERIFIERS, verifier, "verifier")
    names = list(ALGORITHMS) if algorithms is None else algorithms
    for name in names:
        pick(ALGORITHMS, name, "algorithm")
    if not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds must be a positive integer, got {seeds!r}")
    if quick:
        budgets = [b for b in budgets if b <= max(QUICK["budgets"])] or list(QUICK["budgets"])
    per_class = (QUICK if quick else FULL)["per_class"]
    configs = []
    for seed in range(seeds):
        common = {"model": model, "per_class": per_class, "seed": seed}
        configs += [Config("none", b, b, **common) for b in budgets]
        configs += [Config(name, SEARCH_STEPS, b, verifier, **common) for name in names for b in budgets]
    return configs
