"""SMC (FK steering) and step-greedy search: hand-computed maths, exact budgets, seeds, known answers.

step-greedy is noisesearch's own per-step search (registered as epsilon-greedy before that name went to the
source's method, which tests/test_epsilon_greedy_source.py holds to its reference)."""

import json
import math

import pytest
import torch
from _algo import drive, outcomes_of, run_of
from _records import same_records, with_noises

from noisesearch.algorithms import ALGORITHMS, base
from noisesearch.algorithms.base import Outcomes, derive_seed, gaussian
from noisesearch.algorithms.random import RandomSearch
from noisesearch.algorithms.smc import (
    IncrementalSMCSearch,
    SMCSearch,
    effective_sample_size,
    log_potentials,
    resampling_weights,
    systematic_resample,
)
from noisesearch.algorithms.step_greedy import StepGreedySearch
from noisesearch.driver import run_search
from noisesearch.errors import UserError

NAMES = ["smc", "smc-incremental", "step-greedy"]


# --- the pure maths of SMC, against numbers computed by hand ---------------------------------------


def test_log_potentials_by_hand():
    r = torch.tensor([[0.1, 0.3, 0.2]])
    expected = {"difference": [0.2, 0.4, -0.2], "max": [0.2, 0.6, 0.6], "sum": [0.2, 0.8, 1.2]}
    for kind, values in expected.items():
        # float64 vs hand values: default tolerance
        torch.testing.assert_close(log_potentials(r, kind, 2.0), torch.tensor([values], dtype=torch.float64))


def test_resampling_weights_by_hand():
    r = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # particle 0 looked good at step 0, then as good as particle 1
    lam = math.log(2.0)

    def w(since, kind):
        return resampling_weights(r, since, kind, lam).tolist()

    # from the start: difference telescopes to exp(lam r_1) = (1, 1); max and sum weigh particle 0 by 2
    assert w(-1, "difference") == pytest.approx([1 / 2, 1 / 2])  # float64 softmax vs fractions: default rel 1e-6
    assert w(-1, "max") == pytest.approx([2 / 3, 1 / 3])
    assert w(-1, "sum") == pytest.approx([2 / 3, 1 / 3])
    # since a resampling after step 0: difference exp(lam (r_1 - r_0)) = (1/2, 1); G_1 / G_0 = (1, 1)
    assert w(0, "difference") == pytest.approx([1 / 3, 2 / 3])
    assert w(0, "max") == pytest.approx([1 / 2, 1 / 2])
    assert w(0, "sum") == pytest.approx([1 / 2, 1 / 2])


def test_nan_rewards_get_zero_weight():
    for kind in ("difference", "max", "sum"):
        r = torch.tensor([[float("nan")], [0.0], [0.5]])
        w = resampling_weights(r, -1, kind, 1.0)
        assert w[0] == 0 and float(w.sum()) == pytest.approx(1.0)  # float64 normalisation
        all_nan = resampling_weights(torch.full((4, 1), float("nan")), -1, kind, 1.0)
        assert all_nan.tolist() == [0.25] * 4


def test_effective_sample_size_by_hand():
    assert float(effective_sample_size(torch.tensor([0.1, 0.2, 0.3, 0.4]))) == pytest.approx(1 / 0.3)  # float64
    assert float(effective_sample_size(torch.tensor([1.0, 0.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert float(effective_sample_size(torch.full((5,), 0.2))) == pytest.approx(5.0)
    assert float(effective_sample_size(torch.tensor([3.0, 3.0]))) == pytest.approx(2.0)  # unnormalised is fine
    # per search: weights (S, k) give one ESS per search
    both = effective_sample_size(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]))
    assert both.tolist() == pytest.approx([1.0, 4.0])


def test_systematic_resample_by_hand():
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])  # cumulative 0.1, 0.3, 0.6, 1.0
    # u = 0.5: positions 0.125, 0.375, 0.625, 0.875
    assert systematic_resample(w, 0.5).tolist() == [1, 2, 3, 3]
    # u = 0: positions 0, 0.25, 0.5, 0.75
    assert systematic_resample(w, 0.0).tolist() == [0, 1, 2, 3]
    # zero weights are never picked, even when a position falls on their (empty) slice's edge
    gaps = torch.tensor([0.5, 0.0, 0.5, 0.0])
    assert systematic_resample(gaps, 0.0).tolist() == [0, 0, 2, 2]
    assert systematic_resample(gaps, 0.999).tolist() == [0, 0, 2, 2]
    assert systematic_resample(torch.full((4,), 0.25), 0.3).tolist() == [0, 1, 2, 3]
    # a batch of searches, each with its own uniform: the rows above, at once
    batch = torch.stack([w, w, gaps, gaps])
    got = systematic_resample(batch, torch.tensor([0.5, 0.0, 0.0, 0.999], dtype=torch.float64))
    assert got.tolist() == [[1, 2, 3, 3], [0, 1, 2, 3], [0, 0, 2, 2], [0, 0, 2, 2]]


def test_resampling_weights_per_search_since():
    """Each search's window starts after its own last resampling (``since`` per search)."""
    r = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    lam = math.log(2.0)
    for kind in ("difference", "max", "sum"):
        batch = resampling_weights(torch.stack([r, r]), torch.tensor([-1, 0]), kind, lam)  # (2, 2)
        assert torch.equal(batch[0], resampling_weights(r, -1, kind, lam))
        assert torch.equal(batch[1], resampling_weights(r, 0, kind, lam))


# --- budgets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "budget,sampler,guidance",
    [
        (16, "euler", 1.0),
        (40, "euler", 1.0),
        (100, "heun", 1.0),
        (100, "euler", 3.0),
        (53, "euler-ancestral", 1.0),
    ],
)
def test_budget_kept_and_used_to_within_one_trajectory(digits, classifier, name, budget, sampler, guidance):
    steps = 8
    per_eval = digits.nfe_per_call(guidance)
    rows = []
    hook = digits.net.register_forward_pre_hook(lambda mod, args: rows.append(len(args[0])))
    try:
        results = run_search(
            digits,
            classifier,
            ALGORITHMS[name](),
            [1, 2],
            seeds=[5, 6],
            budget=budget,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
        )
    finally:
        hook.remove()
    assert sum(rows) == sum(r.nfe_used for r in results)  # real network rows (CFG: 2 per sample)
    for r in results:
        # (nfe_used <= budget is not asserted: it cannot fail, the accountant raises first)
        assert budget - r.nfe_used < steps * per_eval  # one trajectory with one candidate per step
        if name == "smc":  # particles = what the budget pays for, at one evaluation per step each
            assert r.nfe_used == max(budget // (steps * per_eval), 2) * steps * per_eval
        assert r.nfe_used == sum(c["nfe"] for c in r.candidates)  # the declared costs are the real calls
        for c in r.candidates:
            step = c["info"]["step"]
            if name == "smc":  # FK steering scores the x0-prediction its step makes: one evaluation per step
                assert c["nfe"] == per_eval
            else:  # the first step pays its own evaluation, later ones reuse the cached x0 of score_end
                assert c["nfe"] == per_eval * (2 if step == 0 else 0 if step == steps - 1 else 1)


def test_smc_particles_default_to_what_the_budget_pays_for(toy, toy_verifier):
    (r,) = run_search(toy, toy_verifier, SMCSearch(), [1], seeds=[0], budget=44, steps=4)
    finals = [c for c in r.candidates if c["sigma_end"] == 0]
    assert len(finals) == 11 and r.nfe_used == 44


def test_step_greedy_plans_paths_from_the_exact_cost():
    def widths(budget, **kw):
        return StepGreedySearch(**kw).init(run_of(budget=budget, steps=8)).widths

    # one trajectory with K candidates per step costs 2K + 6K + 0 = 8K
    assert widths(16) == [2]  # a narrower trajectory when the budget cannot pay K = 4
    assert widths(40) == [4, 1]  # 32 + 8
    assert widths(100) == [4, 4, 4]  # 96, 4 left: less than one more candidate per step
    assert widths(100, paths=2) == [4, 4]
    assert widths(100, candidates=3) == [3, 3, 3, 3]


# --- seeds ---------------------------------------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_other_seed_other_result(toy, toy_verifier, name):
    def run(seed):
        return with_noises(
            lambda: run_search(
                toy, toy_verifier, ALGORITHMS[name](), [1, 1], seeds=[seed, seed + 1], budget=48, steps=6
            )
        )

    (first, noises), (again, _), (other, other_noises) = run(3), run(3), run(4)
    for a, b in zip(first, again):
        assert a.candidates == b.candidates and a.best_score == b.best_score  # same run, same process: bit for bit
    assert [c["score"] for c in first[0].candidates] != [c["score"] for c in other[0].candidates]
    # a search depends on its own seed only: seed 4 is row 1 of one run and row 0 of the other, whose rows may
    # round differently (vectorised loops finish a batch's last elements in scalar code): within rounding, up to
    # the first candidate at the optimum 0 (see tests/_records.py)
    same_records(first[1].candidates, other[0].candidates, noises, other_noises, search=(1, 0), optimum=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_every_draw_has_its_own_path(toy, toy_verifier, name):
    """A step noise is row ``step`` of its stream (seed ``step_noise_seed``): no two candidates share one."""
    (r,) = run_search(toy, toy_verifier, ALGORITHMS[name](), [1], seeds=[0], budget=96, steps=6)
    step_noises = [(c["info"]["step_noise_seed"], c["info"]["step"]) for c in r.candidates]
    start_seeds = {c["noise_seed"] for c in r.candidates} - {None}
    assert len(set(step_noises)) == len(step_noises)
    assert not start_seeds & {seed for seed, _ in step_noises}


STEPWISE = {  # settings that resample / explore on these runs
    "smc": lambda: SMCSearch(particles=4, lmbda=30.0, t_start=0),
    "smc-incremental": lambda: IncrementalSMCSearch(particles=4, lmbda=30.0, ess_threshold=1.0),
    "step-greedy": lambda: StepGreedySearch(candidates=3, epsilon=0.5, paths=2),
}


@pytest.mark.parametrize("name", NAMES)
def test_streams_drawn_step_by_step_give_the_same_records(digits, classifier, monkeypatch, name):
    """The step-noise streams held whole (the default cap) or drawn step by step (cap 0) give the same
    records on digits, and the same batches on a ragged toy shape (3, 5) whose successive draws are not one
    draw of (steps, 3, 5); ``ask`` asked twice gives the same noises in either mode."""
    made = []
    streams = base.Problems.streams

    def spy(self, *args, **kwargs):
        made.append(streams(self, *args, **kwargs))
        return made[-1]

    monkeypatch.setattr(base.Problems, "streams", spy)

    def records():
        runs = run_search(
            digits, classifier, STEPWISE[name](), [1, 7, 3], seeds=[5, 6, 7], budget=48, steps=6, sampler="euler-sde"
        )
        return [r.candidates for r in runs]

    def batches():
        algorithm, asked = STEPWISE[name](), []
        state = algorithm.init(run_of([0, 1], [3, 4], shape=(3, 5), steps=5, sampler="euler-sde"))
        while jobs := algorithm.ask(state):
            (again,) = algorithm.ask(state)
            assert torch.equal(again.noises, jobs[0].noises)  # ask does not advance the streams
            asked.append(jobs[0])
            score = jobs[0].noises.flatten(1).sum(1) + jobs[0].x.flatten(1).sum(1)  # choices follow the noises
            algorithm.tell(state, [outcomes_of(jobs[0], score)])
        return asked

    whole_records, whole_batches = records(), batches()
    assert made and all(s.whole is not None for s in made)
    made.clear()
    monkeypatch.setattr(base, "STREAM_CAP_BYTES", 0)
    lazy_records, lazy_batches = records(), batches()
    assert made and all(s.whole is None for s in made)  # every stream drawn step by step
    assert lazy_records == whole_records
    if name != "step-greedy":  # particles were resampled: the noises decided something
        assert any(c["info"]["parent"] != c["info"]["particle"] for r in whole_records for c in r)
    assert len(lazy_batches) == len(whole_batches) == 5
    for lazy, whole in zip(lazy_batches, whole_batches):
        assert torch.equal(lazy.noises, whole.noises) and torch.equal(lazy.x, whole.x)
        assert lazy.info.keys() == whole.info.keys()
        assert all(torch.equal(torch.as_tensor(lazy.info[k]), torch.as_tensor(whole.info[k])) for k in lazy.info)


def test_smc_without_resampling_is_random_search_with_the_same_stochastic_sampler(toy, toy_verifier):
    """Particle j follows candidate j's trajectory (the draw (j,) and the step-noise stream (j,))."""
    kw = dict(seeds=[7], budget=40, steps=5, sampler="euler-sde")
    (smc,) = run_search(toy, toy_verifier, SMCSearch(ess_threshold=1e-9), [1], **kw)
    (rnd,) = run_search(toy, toy_verifier, RandomSearch(), [1], **kw)
    finals = [c["score"] for c in smc.candidates if c["sigma_end"] == 0]
    assert finals == pytest.approx([c["score"] for c in rnd.candidates], abs=1e-5)
    assert len(set(finals)) > 1


# --- known answers on the analytic toy -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_toy_best_score_improves_with_budget_and_reaches_the_optimum(toy, toy_verifier, name):
    n = 100
    means = []
    for budget in (16, 128):
        results = run_search(
            toy, toy_verifier, ALGORITHMS[name](), [1] * n, seeds=list(range(n)), budget=budget, steps=8
        )
        means.append(sum(r.best_score for r in results) / n)
    assert means[0] < means[1]
    assert means[1] > -0.1  # a miss scores -4: at least 97.5% of the searches reach the target point


def test_smc_always_resampling_concentrates_particles_on_the_preferred_point(toy, toy_verifier):
    """Target point +1; without steering half of the particles end at -1."""
    n, k = 60, 8

    def share_at_target(ess_threshold):
        results = run_search(
            toy,
            toy_verifier,
            SMCSearch(particles=k, ess_threshold=ess_threshold),
            [1] * n,
            seeds=list(range(n)),
            budget=8 * k,
            steps=8,
        )
        finals = [c["score"] for r in results for c in r.candidates if c["sigma_end"] == 0]
        assert len(finals) == n * k
        return sum(s > -1e-2 for s in finals) / len(finals)

    assert share_at_target(1.0) > 0.95
    assert 0.35 < share_at_target(1e-9) < 0.65


# --- step-greedy choices, with made-up scores --------------------------------------------------


def choices_made(epsilon, seeds, score=float):
    """Drive step-greedy by hand; candidate c scores ``score(c)``.

    Returns (choices before the last one, whether each explored, the last choices), over every search."""
    algorithm = StepGreedySearch(candidates=4, epsilon=epsilon, paths=2)
    seeds = list(seeds)
    state, _ = drive(
        algorithm,
        run_of([1] * len(seeds), seeds, steps=8),
        lambda jobs: [score(c) for c in jobs.info["candidate"].tolist()],
    )
    assert state.choices.shape == (len(seeds), 2, 7)  # 8 steps: 7 choices, then one free final job
    choices = state.choices[:, :, :-1].flatten().tolist()
    explored = state.explored[:, :, :-1].flatten().tolist()
    last = state.choices[:, :, -1].flatten().tolist()
    assert not state.explored[:, :, -1].any()  # the last choice is always greedy
    return choices, explored, last


def test_epsilon_zero_is_greedy_and_nan_never_wins():
    choices, explored, last = choices_made(0.0, range(5))
    assert set(choices) == set(last) == {3} and not any(explored)
    choices, _, last = choices_made(0.0, range(5), score=lambda c: float("nan") if c in (0, 3) else float(c))
    assert set(choices) == set(last) == {2}


def test_epsilon_explores_at_its_rate_and_uniformly():
    choices, explored, last = choices_made(1.0, range(40))  # 40 searches x 2 paths x 6 choices = 480
    assert all(explored) and set(last) == {3}
    for c in range(4):
        assert 0.18 < choices.count(c) / len(choices) < 0.32
    choices, explored, _ = choices_made(0.3, range(40))
    assert abs(sum(explored) / len(explored) - 0.3) < 4 * (0.3 * 0.7 / len(explored)) ** 0.5
    assert sum(c != 3 for c in choices) > 0


def test_step_greedy_paths_of_different_widths_choose_among_their_own_candidates():
    """Widths [3, 3, 2] (5 NFEs per candidate on 5 euler-sde steps, budget 40): candidate c scores c, so each
    path keeps its own last candidate, and exploring picks floor(width u / epsilon) within the path."""
    algorithm = StepGreedySearch(candidates=3, epsilon=0.5)
    state, asked = drive(
        algorithm, run_of([1, 1], [0, 1], budget=40, steps=5, sampler="euler-sde"), lambda jobs: jobs.info["candidate"]
    )
    assert state.widths == [3, 3, 2]
    assert [len(batches[0]) for batches in asked] == [16, 16, 16, 16, 6]  # 2 searches x 8 candidates, then 2 x 3
    assert asked[0][0].info["path"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2] * 2
    greedy = torch.tensor([2, 2, 1])  # (P,) the last candidate of each path
    width = torch.tensor([3.0, 3.0, 2.0], dtype=torch.float64)
    u = state.uniforms[:, :, :3]  # (S, P, 3): the explorable choices (steps 0..2)
    explored = torch.minimum(torch.floor(width[:, None] * u / 0.5), width[:, None] - 1).long()
    expected = torch.where(u < 0.5, explored, greedy[:, None])
    assert torch.equal(state.choices[:, :, :3], expected) and torch.equal(state.explored[:, :, :3], u < 0.5)
    assert (state.choices[:, :, 3] == greedy).all() and not state.explored[:, :, 3].any()  # the last choice
    for i, seed in enumerate([0, 1]):  # u of path p at step t is the old seeded uniform of the draw (p, EXPLORE, t)
        for p in range(3):
            for t in range(3):
                z = float(gaussian((1,), derive_seed(seed, p, 2**41, t))[0])
                assert float(u[i, p, t]) == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))), abs=1e-15)


def test_step_greedy_continues_from_the_kept_candidate_and_its_cached_x0():
    algorithm = StepGreedySearch(candidates=3, epsilon=0.0, paths=1)
    state = algorithm.init(run_of(shape=(2,), steps=4))
    (jobs,) = algorithm.ask(state)
    assert len(jobs) == 3 and jobs.denoised is None
    kept = 1
    c = jobs.info["candidate"].float()[:, None]  # (3, 1)
    score = (c[:, 0] == kept).float()
    outcome = Outcomes(jobs, jobs.x + c, jobs.x - 10 * c, jobs.x, score, 2, torch.arange(3))
    algorithm.tell(state, [outcome])
    (after,) = algorithm.ask(state)
    assert len(after) == 3
    for row in range(3):  # data copied, not computed: bit for bit
        assert torch.equal(after.x[row], outcome.x[kept]) and torch.equal(after.denoised[row], outcome.denoised[kept])


def test_smc_resampling_copies_state_cached_x0_and_reward_history_together():
    """With a high temperature every slot becomes a copy of the best particle."""
    algorithm = IncrementalSMCSearch(particles=4, lmbda=50.0, potential="max", ess_threshold=1.0)
    state = algorithm.init(run_of(shape=(2,), steps=4))
    (jobs,) = algorithm.ask(state)
    outcome = Outcomes(jobs, jobs.x + 1, jobs.x - 1, jobs.x, jobs.info["particle"].float(), 2, torch.arange(4))
    algorithm.tell(state, [outcome])
    (search,) = state.resamplings
    assert search[0]["indices"] == [3, 3, 3, 3]
    assert state.rewards[0, :, 0].tolist() == [3.0] * 4 and state.ancestors[0].tolist() == [3] * 4
    (after,) = algorithm.ask(state)
    for row in range(4):  # data copied, not computed: bit for bit
        assert torch.equal(after.x[row], outcome.x[3]) and torch.equal(after.denoised[row], outcome.denoised[3])
    assert after.info["parent"].tolist() == after.info["ancestor"].tolist() == [3] * 4
    # the copies then diverge: each slot keeps its own step-noise stream
    assert len(set(after.info["step_noise_seed"].tolist())) == 4
    assert len({tuple(row.flatten().tolist()) for row in after.noises}) == 4


# --- searches run in one state do not couple --------------------------------------------------------


def _alone_and_together(algorithm, seeds, score, budget=10**6):
    """Drive ``algorithm`` on one run of searches ``seeds`` and on each search alone, same scoring rule."""
    kw = dict(budget=budget, shape=(2,), steps=5, sampler="euler-sde")
    together = drive(algorithm, run_of([1] * len(seeds), seeds, **kw), score)
    alone = [drive(algorithm, run_of([1], [s], **kw), score) for s in seeds]
    return together, alone


def _rows_of(batches, search):
    """Every column of search ``search``'s rows of one ask (a list of Jobs), as plain values."""
    got = []
    for jobs in batches:
        rows = (jobs.owner == search).nonzero().flatten()
        cut = jobs.rows(rows)
        got.append(
            {
                "sigmas": cut.sigmas,
                "x": cut.x.tolist(),
                "noise_seed": cut.noise_seed,
                "noises": None if cut.noises is None else cut.noises.tolist(),
                "denoised": None if cut.denoised is None else cut.denoised.tolist(),
                "score_end": cut.score_end,
                "info": {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in cut.info.items()},
            }
        )
    return got


@pytest.mark.numerics
@pytest.mark.parametrize(
    "algorithm,budget",
    [
        (SMCSearch(particles=4, lmbda=3.0), 10**6),
        (SMCSearch(particles=3, adaptive=False, potential="sum", resample_every=2), 10**6),
        (IncrementalSMCSearch(particles=4, lmbda=3.0), 10**6),
        (StepGreedySearch(candidates=3, epsilon=0.5, paths=2), 10**6),
        (StepGreedySearch(candidates=3, epsilon=0.5), 40),  # widths [3, 3, 2]: a narrower last path
    ],
    ids=["smc", "smc-every-other", "smc-incremental", "step-greedy", "step-greedy-narrow"],
)
def test_searches_in_one_state_equal_each_search_alone(algorithm, budget):
    """Vectorising across searches couples nothing: each search's rows, decisions and diagnostics are those of
    the search run alone (rewards depend on a row only: the first element of its start state)."""
    seeds = [3, 8, 11]
    (state, asked), alone = _alone_and_together(algorithm, seeds, lambda jobs: jobs.x.flatten(1)[:, 0], budget)
    for i, (single_state, single_asked) in enumerate(alone):
        assert len(asked) == len(single_asked)
        for batches, single in zip(asked, single_asked):  # copied and row-wise data: bit for bit
            assert _rows_of(batches, i) == _rows_of(single, 0)
        if isinstance(algorithm, StepGreedySearch):
            assert torch.equal(state.choices[i], single_state.choices[0])
            assert torch.equal(state.explored[i], single_state.explored[0])
        else:
            assert state.resamplings[i] == single_state.resamplings[0]
            assert torch.equal(state.ancestors[i], single_state.ancestors[0])
    if isinstance(algorithm, StepGreedySearch):
        assert state.explored.any() and not state.explored.all()  # both kinds of choice were made
    else:
        counts = [len(r) for r in state.resamplings]
        assert sum(counts) > 0  # some search resampled


# --- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,kwargs,message",
    [
        (SMCSearch, {"particles": 1}, "particles must be an integer >= 2, got 1"),
        (SMCSearch, {"particles": 0}, "particles must be an integer >= 2, got 0"),
        (SMCSearch, {"potential": "mean"}, "unknown potential 'mean'; accepted: difference, max, sum"),
        (SMCSearch, {"ess_threshold": 0}, r"ess_threshold must be a number in \(0, 1\], got 0"),
        (SMCSearch, {"ess_threshold": 1.5}, r"ess_threshold must be a number in \(0, 1\], got 1.5"),
        (SMCSearch, {"lmbda": -1.0}, "lmbda must be a finite number >= 0, got -1.0"),
        (SMCSearch, {"resample_every": 0}, "resample_every must be a positive integer, got 0"),
        (
            SMCSearch,
            {"sampler": "euler"},
            r"sampler must be a stochastic sampler \(euler-sde, euler-ancestral\), got 'euler'",
        ),
        (SMCSearch, {"sampler": "rk4"}, "unknown sampler 'rk4'; accepted: "),
        (StepGreedySearch, {"epsilon": 1.5}, r"epsilon must be a number in \[0, 1\], got 1.5"),
        (StepGreedySearch, {"epsilon": -0.1}, r"epsilon must be a number in \[0, 1\], got -0.1"),
        (StepGreedySearch, {"candidates": 0}, "candidates must be a positive integer, got 0"),
        (StepGreedySearch, {"paths": 0}, "paths must be a positive integer, got 0"),
        (StepGreedySearch, {"sampler": "heun"}, "sampler must be a stochastic sampler"),
    ],
)
def test_bad_parameters_are_one_line_user_errors(factory, kwargs, message):
    with pytest.raises(UserError, match=message) as info:
        factory(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "algorithm,budget,needed",
    [
        (SMCSearch(), 15, 16),  # at least 2 particles of 8 NFEs
        (SMCSearch(particles=4), 31, 32),
        (StepGreedySearch(), 7, 8),  # one trajectory with one candidate per step
        (StepGreedySearch(paths=3), 95, 96),
    ],
)
def test_budget_too_small_for_one_round_is_a_clear_error(digits, classifier, algorithm, budget, needed):
    with pytest.raises(UserError, match=rf"budget {budget} is smaller than .*\({needed} NFEs.*--budget >= {needed}"):
        run_search(digits, classifier, algorithm, [1], seeds=[0], budget=budget, steps=8)


@pytest.mark.parametrize("name", NAMES)
def test_params_are_json_and_rebuild_the_algorithm(name):
    params = ALGORITHMS[name]().params()
    assert ALGORITHMS[name](**json.loads(json.dumps(params))).params() == params
