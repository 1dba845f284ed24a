"""Search over paths and successive halving: plans, exact costs, reuse of paid work, bad input."""

import pytest

from noisesearch.algorithms import ALGORITHMS, Problem
from noisesearch.algorithms.halving import HalvingSearch
from noisesearch.algorithms.paths import PathsSearch
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.samplers import schedule


def problem(budget, steps=8, sampler="euler"):
    return Problem(0, 0, budget, (1, 8, 8), schedule(steps), sampler, 1)


def test_paths_rounds_follow_table_6_parameters():
    """start 0.75, +0.125 re-noise, -0.25 ODE: 0.875->0.625->0.75->0.5->...->0 in six rounds."""
    state = PathsSearch().init(problem(64))
    assert state.head == (1.0, 0.875, 0.75)
    assert state.rounds == [(0.875, 0.625), (0.75, 0.5), (0.625, 0.375), (0.5, 0.25), (0.375, 0.125), (0.25, 0.0)]
    # per path: 2 head steps + 6 rounds x width 2 x 2 steps = 26 NFEs; 2 paths + 1 extra candidate = 60
    assert state.initial == 2 and state.extra == 1


def test_paths_branches_are_renoised_copies_of_kept_states(digits, classifier):
    (r,) = run_search(digits, classifier, PathsSearch(initial=2, width=3), [5], seeds=[0], budget=200, steps=8)
    rounds = [c["info"].get("round") for c in r.candidates]
    assert rounds[:2] == [0, 0] and rounds[2:8] == [1] * 6
    assert {c["info"]["parent"] for c in r.candidates[2:8]} == {0, 1}
    assert r.candidates[2]["sigma_start"] == 0.875 and r.candidates[2]["sigma_end"] == 0.625
    finals = [c for c in r.candidates if c["sigma_end"] == 0.0]
    assert r.best_score == max(c["score"] for c in finals)


def test_halving_plan_and_exact_costs():
    state = HalvingSearch().init(problem(64))
    assert [len(s) - 1 for s in state.segments] == [2, 2, 4]
    assert state.sizes == [16, 4, 2]
    # round 0: 16 x (2 steps + 1 checkpoint evaluation); round 1: 4 x 2 (first step reused);
    # round 2: 2 x (4 - 1) = 48 + 8 + 6 = 62 <= 64
    assert HalvingSearch()._cost(problem(64), state.segments, state.sizes) == 62


def test_halving_survivors_reuse_the_checkpoint_evaluation_and_match_random_search(digits, classifier):
    """A survivor pays each evaluation once and ends exactly where random search's same noise ends."""
    calls = []
    original = type(digits).denoise

    def counting(self, x, sigma, cond, *, guidance):
        calls.append(x.shape[0])
        return original(self, x, sigma, cond, guidance=guidance)

    type(digits).denoise = counting
    try:
        (h,) = run_search(digits, classifier, HalvingSearch(), [2], seeds=[7], budget=64, steps=8)
    finally:
        type(digits).denoise = original
    assert sum(calls) == h.nfe_used == 62
    (r,) = run_search(digits, classifier, ALGORITHMS["random"](candidates=16), [2], seeds=[7], budget=128, steps=8)
    winner = h.candidates[h.best_index]["info"]["candidate"]
    assert h.best_score == pytest.approx(r.candidates[winner]["score"], abs=1e-5)


@pytest.mark.parametrize("name", ["paths", "halving"])
@pytest.mark.parametrize("sampler", ["heun", "euler-sde"])
def test_other_samplers_keep_exact_budgets(digits, classifier, name, sampler):
    rows = []
    hook = digits.net.register_forward_pre_hook(lambda mod, args: rows.append(len(args[0])))
    try:
        results = run_search(
            digits, classifier, ALGORITHMS[name](), [1, 4], seeds=[0, 1], budget=150, steps=8, sampler=sampler
        )
    finally:
        hook.remove()
    full = 15 if sampler == "heun" else 8  # one full candidate: Heun pays 2 per step but the last
    assert sum(rows) == sum(r.nfe_used for r in results)  # the declared costs are the real network rows
    for r in results:
        # exact: every NFE on a record, the budget used to within one full candidate (never over: the
        # accountant raises first, so that is not asserted)
        assert 150 - full < r.nfe_used == sum(c["nfe"] for c in r.candidates)
        assert r.best_image is not None


def test_halving_beats_random_search_on_the_verifier_at_equal_budget(digits, classifier):
    targets = [c for c in range(10) for _ in range(10)]
    seeds = list(range(100))

    def mean_best(name):
        rs = run_search(digits, classifier, ALGORITHMS[name](), targets, seeds=seeds, budget=64, steps=8)
        return sum(r.best_score for r in rs) / len(rs)

    assert mean_best("halving") > mean_best("random")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"start_sigma": 1.0}, "start sigma must lie strictly between 0 and 1"),
        ({"start_sigma": -0.1}, "start sigma must lie strictly between 0 and 1"),
        ({"forward": 0.3, "backward": 0.25}, "forward step must be >= 0 and smaller than the backward step"),
        ({"path_length": 0}, "path length must be a positive integer"),
        ({"initial": 0}, "initial paths must be a positive integer"),
    ],
)
def test_paths_bad_parameters(kwargs, message):
    with pytest.raises(UserError, match=message):
        PathsSearch(**kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"eta": 1}, "eta .* must be an integer >= 2, got 1"),
        ({"final": 0}, "final must be a positive integer"),
        ({"final": 4, "initial": 2}, r"initial must be an integer >= final \(4\), got 2"),
        ({"checkpoints": (0.5, 0.75)}, "checkpoints must be decreasing sigmas strictly between 0 and 1"),
        ({"checkpoints": (1.0,)}, "checkpoints must be decreasing sigmas"),
    ],
)
def test_halving_bad_parameters(kwargs, message):
    with pytest.raises(UserError, match=message):
        HalvingSearch(**kwargs)


def test_halving_checkpoints_that_collapse_on_a_short_schedule():
    with pytest.raises(UserError, match="snap to the same step of a 2-step schedule"):
        HalvingSearch().init(problem(64, steps=2))


@pytest.mark.parametrize("name,needed", [("paths", 26), ("halving", 16)])
def test_budget_too_small_names_the_smallest_that_works(name, needed):
    with pytest.raises(UserError, match=rf"give --budget >= {needed} "):
        ALGORITHMS[name]().init(problem(needed - 1))
    ALGORITHMS[name]().init(problem(needed))
