"""Search over paths and successive halving: plans, exact costs, reuse of paid work, the selection
rules by hand, searches run together as alone, bad input."""

import math

import pytest
import torch
from _algo import outcomes_of, records_at_stream_cap, run_of, single
from _records import best_agrees, same_records, with_noises

from noisesearch.algorithms import ALGORITHMS, Problem
from noisesearch.algorithms.base import STEP_NOISES, derive_seed, gaussian
from noisesearch.algorithms.halving import HalvingSearch
from noisesearch.algorithms.paths import PathsSearch
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.samplers import renoise, schedule


def problem(budget, steps=8, sampler="euler"):
    """The run of one search on a digits-shaped noise, at one NFE per evaluation."""
    return single(Problem(0, 0, budget, (1, 8, 8), schedule(steps), sampler, 1))


def test_paths_rounds_follow_table_6_parameters():
    """start 0.75, +0.125 re-noise, -0.25 ODE: 0.875->0.625->0.75->0.5->...->0 in six rounds."""
    state = PathsSearch().init(problem(64))
    assert state.head == (1.0, 0.875, 0.75)
    assert state.rounds == [(0.875, 0.625), (0.75, 0.5), (0.625, 0.375), (0.5, 0.25), (0.375, 0.125), (0.25, 0.0)]
    # per path: 2 head steps + 6 rounds x width 2 x (2 steps + 1 end-state evaluation, but none on the last
    # round, which ends at sigma 0) = 2 + 5 x 2 x 3 + 2 x 2 = 36 NFEs; 1 path + 3 extra candidates = 60
    assert state.initial == 1 and state.extra == 3


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


NAN = math.nan
TOL = dict(atol=1e-6, rtol=1e-5)  # the same float32 formula recomputed here on one row instead of a batch


def stream(seed, path, n_steps):
    """A path's per-step noise stream, by hand (the ``Streams`` contract): ``n_steps`` successive draws of
    shape (2,) from one generator seeded with the path's stream seed, (n_steps, 2)."""
    g = torch.Generator().manual_seed(derive_seed(seed, *path, STEP_NOISES))
    return torch.stack([torch.randn(2, generator=g) for _ in range(n_steps)])


@pytest.mark.parametrize("sampler", ["euler", "euler-sde"])
def test_paths_keeps_each_searchs_best_branches_ties_first_nan_last(sampler):
    """Per search, the N best of its N x M branches are kept, best first (equal scores in asked order, NaN
    last), and branch m of kept state j is that state re-noised with the draw (round, j, m)."""
    seeds = (3, 4)
    problems = run_of((1, 2), seeds, shape=(2,), steps=8, sampler=sampler)
    algorithm = PathsSearch(initial=2, width=2)
    state = algorithm.init(problems)
    (head,) = algorithm.ask(state)
    assert head.owner.tolist() == [0, 0, 1, 1] and head.sigmas == (1.0, 0.875, 0.75)
    assert head.noise_seed == [derive_seed(s, 0, j) for s in seeds for j in range(2)]
    assert head.info["round"].tolist() == [0] * 4 and head.info["path"].tolist() == [0, 1, 0, 1]
    if sampler == "euler-sde":  # the head's 2 steps of each path's full-schedule stream (copied: exact)
        assert torch.equal(head.noises, torch.stack([stream(s, (0, j), 8)[:2] for s in seeds for j in range(2)]))
    else:
        assert head.noises is None
    end = torch.arange(8.0).view(4, 2)  # distinct end states, to see which were kept
    algorithm.tell(state, [outcomes_of(head, [NAN, 1.0, 2.0, 2.0], x=end)])
    kept = [[1, 0], [2, 3]]  # rows of `end` kept by search 0 (NaN last) and search 1 (a tie: asked order)

    (branches,) = algorithm.ask(state)
    assert torch.equal(algorithm.ask(state)[0].x, branches.x)  # ask does not advance the state (same process)
    assert branches.owner.tolist() == [0] * 4 + [1] * 4 and branches.sigmas == (0.875, 0.75, 0.625)
    assert branches.noise_seed is None
    assert branches.info["round"].tolist() == [1] * 8 and branches.info["sigma"].tolist() == [0.875] * 8
    assert branches.info["parent"].tolist() == [0, 0, 1, 1] * 2 and branches.info["branch"].tolist() == [0, 1] * 4
    for row in range(8):
        i, j, m = row // 4, row // 2 % 2, row % 2
        z = gaussian((2,), derive_seed(seeds[i], 1, j, m))
        torch.testing.assert_close(branches.x[row], renoise(end[kept[i][j]], 0.75, 0.875, z), **TOL)
        if sampler == "euler-sde":  # each branch's own 2-step stream
            assert torch.equal(branches.noises[row], stream(seeds[i], (1, j, m), 2))
    end = 100 + torch.arange(16.0).view(8, 2)
    algorithm.tell(state, [outcomes_of(branches, [1.0, 3.0, 1.0, NAN, NAN, NAN, 0.0, 0.0], x=end)])
    kept = [[1, 0], [6, 7]]  # search 0: the 3, then the first of two 1s; search 1: the real scores before NaN

    (nxt,) = algorithm.ask(state)
    assert nxt.sigmas == (0.75, 0.625, 0.5) and nxt.info["round"].tolist() == [2] * 8
    for row in range(8):
        i, j, m = row // 4, row // 2 % 2, row % 2
        z = gaussian((2,), derive_seed(seeds[i], 2, j, m))
        torch.testing.assert_close(nxt.x[row], renoise(end[kept[i][j]], 0.625, 0.75, z), **TOL)


@pytest.mark.parametrize("sampler", ["euler", "euler-sde"])
def test_halving_keeps_each_searchs_best_ties_first_nan_last(sampler):
    """Per search, the survivors are its best candidates (equal scores in asked order, NaN last); they
    continue from their end states with their x0-predictions (paid once) and their own later step noises."""
    seeds = (3, 4)
    # 19 NFEs of halving (4 x 3 + 2 x 2 + 1 x 3) and one extra full candidate (8)
    problems = run_of((1, 2), seeds, budget=27, shape=(2,), steps=8, sampler=sampler)
    algorithm = HalvingSearch(eta=2, final=1, initial=4)
    state = algorithm.init(problems)
    assert state.sizes == [4, 2, 1] and state.extra == 1
    assert state.segments == [(1.0, 0.875, 0.75), (0.75, 0.625, 0.5), (0.5, 0.375, 0.25, 0.125, 0.0)]
    streams = {(s, k): stream(s, (k,), 8) for s in seeds for k in range(4)}  # random search's candidate k's

    (first,) = algorithm.ask(state)
    assert first.owner.tolist() == [0] * 4 + [1] * 4 and first.sigmas == state.segments[0] and first.score_end
    assert first.noise_seed == [derive_seed(s, k) for s in seeds for k in range(4)] and first.denoised is None
    assert first.info["round"].tolist() == [0] * 8 and first.info["candidate"].tolist() == [0, 1, 2, 3] * 2
    if sampler == "euler-sde":  # copied rows of each candidate's stream: exact
        assert torch.equal(first.noises, torch.stack([streams[s, k][0:2] for s in seeds for k in range(4)]))
    else:
        assert first.noises is None
    end = torch.arange(16.0).view(8, 2)
    algorithm.tell(state, [outcomes_of(first, [NAN, 1.0, 5.0, 1.0, 0.0, 0.0, 0.0, 0.0], x=end)])

    (second,) = algorithm.ask(state)
    assert torch.equal(algorithm.ask(state)[0].x, second.x)  # ask does not advance the state (same process)
    assert second.owner.tolist() == [0, 0, 1, 1] and second.sigmas == state.segments[1] and second.score_end
    assert second.info["candidate"].tolist() == [2, 1, 0, 1] and second.info["round"].tolist() == [1] * 4
    assert second.noise_seed is None
    assert torch.equal(second.x, end[[2, 1, 4, 5]]) and torch.equal(second.denoised, end[[2, 1, 4, 5]])  # copied
    if sampler == "euler-sde":
        assert torch.equal(second.noises, torch.stack([streams[s, k][2:4] for s, k in zip((3, 3, 4, 4), (2, 1, 0, 1))]))
    end = 100 + torch.arange(8.0).view(4, 2)
    algorithm.tell(state, [outcomes_of(second, [NAN, NAN, 1.0, 2.0], x=end)])

    (third,) = algorithm.ask(state)
    assert third.info["candidate"].tolist() == [2, 1] and third.info["round"].tolist() == [2, 2]
    assert third.sigmas == state.segments[2] and not third.score_end
    assert torch.equal(third.x, end[[0, 3]]) and torch.equal(third.denoised, end[[0, 3]])  # copied
    if sampler == "euler-sde":
        assert torch.equal(third.noises, torch.stack([streams[3, 2][4:8], streams[4, 1][4:8]]))
    algorithm.tell(state, [outcomes_of(third, [0.0, 0.0])])

    (extras,) = algorithm.ask(state)
    assert extras.noise_seed == [derive_seed(s, 2**20, 0) for s in seeds] and extras.info == {"role": ["extra"] * 2}
    algorithm.tell(state, [outcomes_of(extras, [0.0, 0.0])])
    assert algorithm.ask(state) == []


@pytest.mark.numerics
def test_halving_records_are_the_same_with_streams_drawn_step_by_step(digits, classifier, monkeypatch):
    """With the stream cap at 0 every candidate's step noises are drawn round by round, and the survivors'
    generators selected after each checkpoint: the records equal those of streams held whole."""

    def run(algorithm):
        return run_search(
            digits, classifier, algorithm, [1, 4, 7], seeds=[0, 1, 2], budget=128, steps=8, sampler="euler-sde"
        )

    whole, held_reads = records_at_stream_cap(monkeypatch, None, HalvingSearch(), run)
    stepwise, stepwise_reads = records_at_stream_cap(monkeypatch, 0, HalvingSearch(), run)
    # 33, 9 and 3 candidates per search (no extra one): three rounds read their streams, each asked twice
    assert held_reads == [False] * 6 and stepwise_reads == [True] * 6
    assert [len(c) for c in whole] == [45] * 3 and stepwise == whole  # bit for bit: the same batches, the same draws


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["paths", "halving"])
@pytest.mark.parametrize("sampler", ["euler", "euler-sde"])
def test_searches_run_together_get_the_records_they_get_alone(digits, classifier, name, sampler):
    """Several searches in one state: each gets the records (draws, plan, choices) it gets alone."""
    targets, seeds = [1, 4, 7], [0, 1, 2]

    def run(ts, ss):
        return with_noises(
            lambda: run_search(
                digits, classifier, ALGORITHMS[name](), ts, seeds=ss, budget=150, steps=8, sampler=sampler
            )
        )

    together, noises = run(targets, seeds)
    for i, (t, s) in enumerate(zip(targets, seeds)):
        (alone,), alone_noises = run([t], [s])
        joint = together[i]
        assert joint.nfe_used == alone.nfe_used
        # the network ran these rows in another batch: scores agree to float32 rounding of a small CNN
        same_records(joint.candidates, alone.candidates, noises, alone_noises, search=(i, 0), atol=1e-5)
        best_agrees(joint, alone, atol=1e-5)


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


@pytest.mark.parametrize("name,needed", [("paths", 36), ("halving", 16)])
def test_budget_too_small_names_the_smallest_that_works(name, needed):
    with pytest.raises(UserError, match=rf"give --budget >= {needed} "):
        ALGORITHMS[name]().init(problem(needed - 1))
    ALGORITHMS[name]().init(problem(needed))
