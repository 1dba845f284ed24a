"""Issue 24: each algorithm's minimum-budget rule is one pure, declared method (``budget_needed``) that its ``init``
refuses through and a sweep's planning asks with the sweep's own schedule, sampler and cost, making no run."""

from __future__ import annotations

import ast
import inspect

import pytest

import noisesearch.sweep.costs as sweep_costs
from noisesearch.algorithms import ALGORITHMS, CostModel, Problems, budget_needed_by
from noisesearch.contracts import algorithm_info
from noisesearch.errors import UserError
from noisesearch.samplers import schedule
from noisesearch.sweep.costs import cannot_spend

BUDGETS = range(1, 201)
STEPS = (1, 2, 8)
SAMPLERS = ("euler", "heun")
NFE_PER_CALL = (1, 2)

# hyperparameters that take the other branches of some rules (fixed counts instead of "as many as the budget pays")
OTHER_BRANCHES = [
    ("random", {"candidates": 3}),
    ("paths", {"initial": 2}),
    ("halving", {"initial": 5}),
    ("smc", {"particles": 3}),
    ("smc-incremental", {"particles": 3}),
    ("epsilon-greedy", {"iterations": None}),
    ("evosearch", {"populations": [2, 3, 2, 2]}),
    ("step-greedy", {"paths": 2}),
]


def _init_refusal(name: str, params: dict, budget: int, steps: int, sampler: str, nfe_per_call: int) -> str | None:
    """What ``init`` on a real run (two searches, a noise shape of its own) says about this budget, or None."""
    problems = Problems([1, 2], [11, 12], budget, (4, 8, 8), schedule(steps), sampler, nfe_per_call)
    try:
        ALGORITHMS[name](**params).init(problems)
    except UserError as e:
        return str(e)
    return None


def _disagreements(name: str, params: dict, budgets) -> list[tuple]:
    found = []
    for steps in STEPS:
        for sampler in SAMPLERS:
            for nfe in NFE_PER_CALL:
                for budget in budgets:
                    planned = cannot_spend(name, params, budget, steps, sampler, nfe)
                    run = _init_refusal(name, params, budget, steps, sampler, nfe)
                    if planned != run:
                        found.append((budget, steps, sampler, nfe, planned, run))
    return found


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_sweep_planning_refuses_exactly_when_init_does(name):
    assert _disagreements(name, {}, BUDGETS)[:3] == []


@pytest.mark.parametrize("name,params", OTHER_BRANCHES)
def test_sweep_planning_agrees_on_the_other_branches(name, params):
    assert _disagreements(name, params, range(1, 201, 3))[:3] == []


def test_sweep_cost_planning_builds_no_run():
    source = inspect.getsource(sweep_costs)
    names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "Problems" not in names and "Problems" not in source
    assert ".init(" not in source


def test_every_registered_algorithm_declares_its_budget_rule():
    costs = CostModel(schedule(4), "euler", 1)
    for name, factory in ALGORITHMS.items():
        algorithm = factory()
        assert algorithm_info(algorithm).budget_needed is not None, name
        needed, what = budget_needed_by(algorithm, costs, 64)
        assert isinstance(needed, int) and needed >= 1 and isinstance(what, str) and what, name


def test_the_rule_is_pure_and_the_message_is_inits():
    costs = CostModel(schedule(4), "euler", 2)
    algorithm = ALGORITHMS["zero-order"]()
    before = dict(vars(algorithm))
    assert budget_needed_by(algorithm, costs, 10) == (16, "a pivot and one neighbour")
    assert vars(algorithm) == before and costs == CostModel(schedule(4), "euler", 2)  # it changed nothing
    message = costs.shortfall(10, 16, "a pivot and one neighbour")
    assert message == _init_refusal("zero-order", {}, 10, 4, "euler", 2)
    assert message.endswith("give --budget >= 16 or fewer --steps")
    assert costs.shortfall(16, 16, "a pivot and one neighbour") is None


class _OwnAlgorithm:
    """A user's algorithm that declares no budget rule."""

    name = "own"


def test_an_algorithm_without_a_rule_needs_one_full_candidate():
    costs = CostModel(schedule(3), "heun", 2)
    assert budget_needed_by(_OwnAlgorithm(), costs, 1) == (costs.cost(), "one candidate")
    assert costs.cost() == Problems([0], [0], 1, (1, 4, 4), schedule(3), "heun", 2).cost()


def test_planning_makes_up_no_noise_shape():
    # a low band that a 64 x 64 latent has but a made-up 8 x 8 noise has not: the sweep's check used to refuse it
    params = {"low_frequency": 0.1}
    assert cannot_spend("evolution", params, 200, 8, "euler", 1) is None
    assert _init_refusal("evolution", params, 200, 8, "euler", 1) is not None  # (4, 8, 8): only the mean
    problems = Problems([1], [11], 200, (4, 64, 64), schedule(8), "euler", 1)
    ALGORITHMS["evolution"](**params).init(problems)  # a real latent's run accepts it
