"""``compare``: every search algorithm against "more denoising steps" at matched NFE budgets.

Each budget B (NFEs per sample) is spent three ways over a class-balanced target set and several
seeds: on B Euler steps with no search, and on each registered algorithm (default parameters,
``SEARCH_STEPS`` steps per full candidate) with one verifier. Held-out quality comes from the
evaluation network, which no verifier shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from noisesearch.checks import check_budget, check_guidance, check_positive_int
from noisesearch.demo import SEARCH_STEPS, nfe_per_step
from noisesearch.errors import UserError

if TYPE_CHECKING:
    from noisesearch.study import Config

QUICK = {"per_class": 20, "budgets": (64, 128, 256)}
FULL = {"per_class": 50, "budgets": (64, 128, 256, 512, 1024)}
SEEDS_MAX = 1000  # each seed is a whole study; more would run for weeks


def parse_list(text: str, flag: str, example: str) -> list[str]:
    """'a,b,c' -> ['a', 'b', 'c']; a clear error for an empty item or one given twice."""
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise UserError(f"{flag} is empty; give a comma-separated list, e.g. {example}")
    for n, item in enumerate(items, start=1):
        if not item:
            raise UserError(f"{flag} {text!r}: item {n} is empty; give a comma-separated list, e.g. {example}")
        if item in items[: n - 1]:
            raise UserError(f"{flag} {text!r}: {item!r} is given twice")
    return items


def parse_budgets(text: str) -> list[int]:
    """'64,128,256' -> [64, 128, 256]; a clear error for anything else."""
    budgets = []
    for item in parse_list(text, "--budgets", "64,128,256"):
        try:
            budgets.append(int(item))
        except ValueError:
            raise UserError(
                f"--budgets {text!r} is not a comma-separated list of integers ({item!r}), e.g. 64,128,256"
            ) from None
        if budgets[-1] < 1:
            raise UserError(f"--budgets {text!r} must list positive NFE budgets, e.g. 64,128,256")
        if budgets[-1] in budgets[:-1]:
            raise UserError(f"--budgets {text!r}: {budgets[-1]} is given twice")
        check_budget(budgets[-1], what="--budgets item")
    return sorted(budgets)


def compare_configs(
    *,
    model: str = "digits",
    budgets: list[int] | None = None,
    seeds: int = 3,
    verifier: str = "classifier",
    algorithms: list[str] | None = None,
    quick: bool = False,
    guidance: float | None = None,
) -> list[Config]:
    """Configurations of the matched-budget study (``quick``: fewer samples, budgets up to 256).

    ``budgets`` None: 64 to 1024 (``quick``: 64 to 256). With ``guidance`` other than 1 a step costs
    2 NFEs, so the step baseline at budget B runs B/2 steps (and every budget must be even).
    """
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.generate import pick
    from noisesearch.study import Config
    from noisesearch.verifiers import VERIFIERS

    if model not in ("digits", "digits-large"):
        raise UserError(
            f"compare runs on the built-in digits models; got --model {model!r}, accepted: digits, digits-large"
        )
    pick(VERIFIERS, verifier, "verifier")
    if algorithms is not None and not algorithms:
        raise UserError("--algorithms is empty; give a comma-separated subset, e.g. random,zero-order")
    names = list(ALGORITHMS) if algorithms is None else list(algorithms)
    for n, name in enumerate(names):
        pick(ALGORITHMS, name, "algorithm")
        if name in names[:n]:
            raise UserError(f"--algorithms: {name!r} is given twice")
    check_positive_int(seeds, what="--seeds", most=SEEDS_MAX)
    guidance = check_guidance(guidance, what="--guidance")
    plan = QUICK if quick else FULL
    budgets = list(plan["budgets"]) if budgets is None else list(budgets)
    if not budgets:
        raise UserError("--budgets is empty; give a comma-separated list, e.g. 64,128,256")
    for b in budgets:
        check_budget(b, what="--budgets item")
    if len(set(budgets)) != len(budgets):
        raise UserError(f"--budgets {budgets}: a budget is given twice")
    if quick and max(budgets) > max(QUICK["budgets"]):
        raise UserError(
            f"--quick runs budgets up to {max(QUICK['budgets'])}; got {max(budgets)}: drop --quick or give smaller budgets"
        )
    per_step = nfe_per_step(guidance)
    odd = [b for b in budgets if b % per_step]
    if odd:
        raise UserError(
            f"--budgets {odd[0]} cannot be spent exactly with --guidance {guidance:g}: every step costs "
            f"{per_step} NFEs, so budgets must be even"
        )
    configs = []
    for seed in range(seeds):
        common = {"model": model, "per_class": plan["per_class"], "seed": seed, "guidance": guidance}
        configs += [Config("none", b // per_step, b, **common) for b in sorted(budgets)]
        configs += [Config(name, SEARCH_STEPS, b, verifier, **common) for name in names for b in sorted(budgets)]
    return configs
