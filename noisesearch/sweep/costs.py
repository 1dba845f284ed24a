"""Cost planning of a sweep config: how many cells and kept images it makes, whether every algorithm (and the
more-steps baseline) can spend every budget exactly, and the NFEs per denoiser call the checks assume."""

from __future__ import annotations

from noisesearch.errors import UserError
from noisesearch.sweep.schema import SweepConfig


def cell_count(config: SweepConfig) -> int:
    """Configurations x seeds: the cells of ``run.cells_of``, counted without listing them."""
    per_seed = len(config.step_budgets) + sum(
        len(config.budgets if spec.budgets is None else spec.budgets) for spec in config.algorithms
    )
    return per_seed * len(config.seeds)


def kept_images(config: SweepConfig, targets: int) -> int:
    """About how many PNG files ``keep_images`` writes: one per search, and with "all" one per candidate too.

    A search's candidates are estimated as its budget over the NFEs of one plain sample (``steps``).
    """
    if not config.keep_images:
        return 0
    every = config.keep_images == "all"
    per_seed = sum(2 if every else 1 for _ in config.step_budgets)  # the baseline has one candidate
    for spec in config.algorithms:
        for budget in config.budgets if spec.budgets is None else spec.budgets:
            per_seed += 1 + (max(1, budget // (config.steps * guided_nfe_per_call(config))) if every else 0)
    return per_seed * len(config.seeds) * targets


def budget_problems(config: SweepConfig, path) -> list[str]:
    """Every algorithm must be able to spend every budget (checked on the plain schedule of ``steps``)."""
    nfe_per_call = guided_nfe_per_call(config)
    problems = []
    if config.baseline:
        where = "budgets" if config.baseline_budgets is None else "baseline_budgets"
        for j, budget in enumerate(config.step_budgets):
            if baseline_steps(budget, config.sampler, nfe_per_call) is None:
                problems.append(
                    f"{path}: {where}.{j}: the step baseline cannot spend budget {budget} exactly with "
                    f"{config.sampler} at {nfe_per_call} NFEs per model call (guidance {config.guidance}); use budgets "
                    f"it can (multiples of {nfe_per_call} for Euler), or baseline: false"
                )
    for i, spec in enumerate(config.algorithms):
        where = "budgets" if spec.budgets is None else f"algorithms.{i}.budgets"
        for j, budget in enumerate(config.budgets if spec.budgets is None else spec.budgets):
            reason = cannot_spend(spec.name, spec.params, budget, config.steps, config.sampler, nfe_per_call)
            if reason is not None:
                problems.append(f"{path}: {where}.{j}: {spec.name} (algorithms.{i}): {reason}")
                break
    return problems


def cannot_spend(name: str, params: dict, budget: int, steps: int, sampler: str, nfe_per_call: int) -> str | None:
    """Why algorithm ``name`` cannot spend ``budget`` (planned on the plain schedule of ``steps``), or None.

    Asks the algorithm's own budget rule (``budget_needed``, the one its ``init`` refuses through) with the
    sweep's schedule, sampler and NFEs per call: no run, target, seed or noise shape is made up.
    """
    from noisesearch.algorithms import ALGORITHMS, CostModel, budget_needed_by
    from noisesearch.samplers import schedule

    costs = CostModel(schedule(steps), sampler, nfe_per_call)
    try:
        needed, what = budget_needed_by(ALGORITHMS[name](**params), costs, budget)
    except UserError as e:  # a bad hyperparameter, or no plan fits the schedule
        return str(e)
    return costs.shortfall(budget, needed, what)


def guided_nfe_per_call(config: SweepConfig) -> int:
    """NFEs per denoiser call as the config's check sees it, before anything loads: always 1 under
    ``nfe_convention: steps`` (one NFE per denoising step); under ``rows`` the model entry's declared cost
    (``models.nfe_per_call_of``: its CFG rule at this guidance, e.g. 1 for a guidance-distilled model), and where
    only a loaded model knows it (``diffusers``, a flow family at its pipeline's default guidance), 2 with a
    guidance other than 1 or None. The sweep checks the loaded model's real cost again when it runs
    (``baseline_steps``) and refuses a mismatch there.
    """
    from noisesearch.models import nfe_per_call_of

    if config.nfe_convention == "steps":
        return 1
    declared = nfe_per_call_of(config.model, config.guidance)
    if declared is not None:
        return declared
    return 1 if config.guidance in (None, 1.0) else 2


def baseline_steps(budget: int, sampler: str, nfe_per_call: int) -> int | None:
    """Steps of the more-steps baseline that spend exactly ``budget`` NFEs (None if no step count does).

    Euler without guidance: ``budget`` steps; with CFG (2 NFEs per call): ``budget / 2`` steps, and
    an odd budget has none. A sampler's cost is linear in its steps (``a * steps + b``).
    """
    from noisesearch.algorithms import _cost

    def cost(steps: int) -> int:
        return _cost.cost((1.0,) * steps + (0.0,), sampler, nfe_per_call)  # only length and end matter

    a, b = cost(2) - cost(1), 2 * cost(1) - cost(2)
    steps, rest = divmod(budget - b, a)
    if rest or steps < 1 or cost(steps) != budget:
        return None
    return steps
