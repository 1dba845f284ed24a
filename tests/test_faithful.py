"""Algorithms and metrics faithful to their sources: hand-worked numbers from each source's formulas.

FK steering (Singhal et al. 2025; the reference's ``FKD.resample``), zero-order search's
neighbourhoods (Ma et al. 2025; tt-scale-flux), the Inception Score protocol (torch-fidelity's
default), EvoSearch (He et al. 2025).
"""

import math

import pytest
import torch
from _algo import outcomes_of, run_of

from noisesearch.algorithms.base import Outcomes, Problem
from noisesearch.algorithms.smc import SMCSearch, effective_sample_size, fk_log_weights, normalise
from noisesearch.driver import run_search
from noisesearch.samplers import schedule

ISSUE_REWARDS = torch.tensor([[0.0, 0.5], [0.4, 0.4], [0.1, 0.2]], dtype=torch.float64)  # 3 particles x 2 steps


def softmax(values):
    e = [math.exp(v) for v in values]
    return [v / sum(e) for v in e]


# --- smc: FK steering's potentials, by hand ------------------------------------------------------


def test_fk_max_weighs_by_the_potential_itself():
    """lambda = 10, reward_min = 0: step 0 carries max(r_0, 0) = (0, .4, .1); step 1 weighs by
    exp(10 max(r_0, r_1)) = exp(10 (.5, .4, .2)): the issue's reference figure (0.705, 0.260, 0.035)."""
    zero = torch.zeros(3, dtype=torch.float64)
    log_w0, carried = fk_log_weights(ISSUE_REWARDS[:, 0], zero, zero, "max", 10.0, final=False)
    assert carried.tolist() == pytest.approx([0.0, 0.4, 0.1])
    log_w1, carried = fk_log_weights(ISSUE_REWARDS[:, 1], carried, zero, "max", 10.0, final=False)
    assert carried.tolist() == pytest.approx([0.5, 0.4, 0.2])
    w = normalise(log_w1).tolist()
    assert w == pytest.approx([math.exp(5) / 210.40, math.exp(4) / 210.40, math.exp(2) / 210.40], abs=1e-4)
    assert w == pytest.approx([0.705, 0.260, 0.035], abs=1e-3)  # the issue's figures, rounded (0.2595 -> 0.260)
    # at the final step, after a resampling at step 0 that kept every slot (P = exp(10 (0, .4, .1))),
    # the correction divides out the applied potential: exp(10 (.5, .4, .2)) / exp(10 (0, .4, .1))
    final, _ = fk_log_weights(
        ISSUE_REWARDS[:, 1], torch.tensor([0, 0.4, 0.1], dtype=torch.float64), log_w0, "max", 10.0, True
    )
    assert normalise(final).tolist() == pytest.approx(softmax([5.0, 0.0, 1.0]), abs=1e-12)


def test_fk_sum_and_difference_by_hand():
    c0 = torch.tensor([0.0, 0.4, 0.1], dtype=torch.float64)  # the values carried from step 0 (reward_min 0)
    zero = torch.zeros(3, dtype=torch.float64)
    log_w, carried = fk_log_weights(ISSUE_REWARDS[:, 1], c0, zero, "sum", 10.0, final=False)
    assert carried.tolist() == pytest.approx([0.5, 0.8, 0.3])  # running totals
    assert normalise(log_w).tolist() == pytest.approx(softmax([5.0, 8.0, 3.0]), abs=1e-12)
    log_w, carried = fk_log_weights(ISSUE_REWARDS[:, 1], c0, zero, "difference", 10.0, final=False)
    assert carried.tolist() == pytest.approx([0.5, 0.4, 0.2])  # the raw reward moves on
    assert normalise(log_w).tolist() == pytest.approx(softmax([5.0, 0.0, 1.0]), abs=1e-12)
    # difference needs no final correction: the applied product is ignored
    final, _ = fk_log_weights(ISSUE_REWARDS[:, 1], c0, torch.tensor([3.0, 2.0, 1.0]).double(), "difference", 10.0, True)
    assert torch.equal(final, log_w)


def test_fk_nan_reward_gets_zero_weight():
    zero = torch.zeros(3, dtype=torch.float64)
    for kind in ("difference", "max", "sum"):
        log_w, _ = fk_log_weights(torch.tensor([float("nan"), 0.0, 1.0]), zero, zero, kind, 1.0, final=False)
        w = normalise(log_w)
        assert w[0] == 0 and float(w.sum()) == pytest.approx(1.0)


def drive(algorithm, rewards, steps):
    """Run ``algorithm`` by hand on one search of a 1-d problem; particle j's reward at step t is
    ``rewards[t][slot]`` (one row per slot)."""
    state = algorithm.init(run_of(steps=steps, sampler="euler-sde"))
    while batches := algorithm.ask(state):
        (jobs,) = batches
        score = torch.tensor(rewards[jobs.info["step"][0]], dtype=torch.float64)  # the hand values, unrounded
        algorithm.tell(state, [Outcomes(jobs, jobs.x, jobs.x, jobs.x, score, 1, torch.arange(len(jobs)))])
    return state


def test_fk_adaptive_passes_reset_the_weights():
    """difference, lambda 20: step 0 (rewards 0, .01, .02) has ESS 2.92 >= 1.5 and is passed; at step 1
    the weights are exp(20 (r_1 - r_0)) alone, not accumulated since the start (exp(20 r_1))."""
    r0, r1 = [0.0, 0.01, 0.02], [0.5, 0.41, 0.22]
    state = drive(SMCSearch(particles=3, potential="difference", lmbda=20.0, t_start=0), [r0, r1, [0.0] * 3], 3)
    w = softmax([20 * (b - a) for a, b in zip(r0, r1)])  # exp(20 (.5, .4, .2))
    (resamplings,) = state.resamplings  # one search
    assert resamplings[0]["step"] == 1
    assert resamplings[0]["ess"] == pytest.approx(1 / sum(v * v for v in w), rel=1e-9)
    assert resamplings[0]["ess"] == pytest.approx(1.2714, abs=1e-4)  # 1 / (.8789^2 + .1189^2 + .0022^2)


def test_fk_final_step_corrects_max_by_the_applied_potentials_and_resamples():
    """Not adaptive: step 0 always resamples; at the final step w = exp(10 max) / P[lineage]."""
    r0, r1 = [0.0, 0.4, 0.1], [0.5, 0.4, 0.2]
    state = drive(SMCSearch(particles=3, potential="max", adaptive=False, reward_min=0.0, t_start=0), [r0, r1], 2)
    (resamplings,) = state.resamplings  # one search
    idx = resamplings[0]["indices"]
    assert resamplings[0]["step"] == 0
    carried = [r0[i] for i in idx]  # max(r_0, 0) of each slot's parent
    log_p = [10 * c for c in carried]
    expected = softmax([10 * max(r, c) - lp for r, c, lp in zip(r1, carried, log_p)])
    assert state.weights[0].tolist() == pytest.approx(expected, abs=1e-12)
    ess = 1 / sum(v * v for v in expected)
    assert (len(resamplings) == 2) == (ess < 1.5)  # the final step resamples by the ESS rule
    assert state.population[0].tolist() == (resamplings[-1]["indices"] if ess < 1.5 else [0, 1, 2])


def test_fk_high_temperature_final_population_is_the_best_particle():
    state = drive(SMCSearch(particles=4, lmbda=100.0, max_weight=None), [[0.0] * 4, [0.0, 0.3, 0.9, 0.1]], 2)
    assert state.population[0].tolist() == [2, 2, 2, 2] and state.resamplings[0][-1]["step"] == 1
    assert float(effective_sample_size(state.weights[0])) == pytest.approx(1.0, abs=1e-9)  # exp(-30) and less elsewhere


def test_fk_scores_the_x0_prediction_made_before_the_step(toy, toy_verifier):
    """No score_end and no cached x0: each step's reward is its own evaluation's x0-prediction, so a
    particle costs exactly one plain trajectory (steps NFEs with euler-sde)."""
    state = SMCSearch(particles=2).init(run_of(budget=100, steps=4, sampler="euler-sde"))
    (jobs,) = SMCSearch(particles=2).ask(state)
    assert len(jobs) == 2 and not jobs.score_end and jobs.denoised is None
    (r,) = run_search(toy, toy_verifier, SMCSearch(particles=3), [1], seeds=[0], budget=12, steps=4)
    assert r.nfe_used == 12 and [c["nfe"] for c in r.candidates] == [1] * 12


# --- zero-order: the three neighbourhoods ---------------------------------------------------------


def zero_order_neighbours(toy_problem_shape=(64,), **kw):
    """The pivot (*shape) of a one-search run and its 8 neighbours (rows of one batch)."""
    from _algo import outcomes_of

    from noisesearch.algorithms.base import Problems
    from noisesearch.algorithms.zero_order import ZeroOrderSearch

    algorithm = ZeroOrderSearch(neighbours=8, **kw)
    state = algorithm.init(Problems.of(Problem(1, 3, 10**6, toy_problem_shape, schedule(2), "euler", 1)))
    (pivot_jobs,) = algorithm.ask(state)
    algorithm.tell(state, [outcomes_of(pivot_jobs, [0.0], nfe=2)])
    (jobs,) = algorithm.ask(state)
    return pivot_jobs.x[0], list(jobs.x)


def test_distance_neighbours_are_exactly_lambda_from_the_pivot():
    pivot, ys = zero_order_neighbours(neighbourhood="distance", step_size=2.5)
    for y in ys:
        # float32 sums over 64 elements of size ~1: relative error ~1e-6
        assert float((y - pivot).norm()) == pytest.approx(2.5, rel=1e-5)
    assert len({float(y.sum()) for y in ys}) == 8  # different directions


def test_cosine_neighbours_keep_the_pivot_norm_at_the_stated_cosine():
    for cosine in (0.95, 0.5):
        pivot, ys = zero_order_neighbours(neighbourhood="cosine", cosine=cosine)
        for y in ys:
            # float32 inputs, computed in float64 and stored in float32: relative error ~1e-7
            assert float(y.norm()) == pytest.approx(float(pivot.norm()), rel=1e-6)
            assert float(torch.nn.functional.cosine_similarity(y, pivot, dim=0)) == pytest.approx(cosine, abs=1e-6)


def test_mix_neighbours_keep_the_gaussian_marginal():
    """Pivot N(0, I) -> neighbours N(0, I) for any step size (mean 0, variance 1 per element)."""
    from noisesearch.algorithms.zero_order import neighbour

    g = torch.Generator().manual_seed(0)
    n = 200_000
    pivot, eps = torch.randn(n, generator=g), torch.randn(n, generator=g)
    for step in (0.3, 1.0, 4.0):
        y = neighbour(pivot, eps, "mix", step, 0.95)
        # standard errors with n = 2e5: mean 0.0022, variance 0.0032; 5 of them as tolerance
        assert abs(float(y.mean())) < 0.012 and abs(float(y.var()) - 1.0) < 0.016
        expected_cos = 1 / math.sqrt(1 + step**2)  # the mix's expected cosine to the pivot (0.71 at 1.0)
        assert float(torch.nn.functional.cosine_similarity(y, pivot, dim=0)) == pytest.approx(expected_cos, abs=0.01)


def test_zero_order_neighbourhood_parameters_are_checked():
    from noisesearch.algorithms.zero_order import ZeroOrderSearch
    from noisesearch.errors import UserError

    with pytest.raises(
        UserError, match=r"unknown neighbourhood 'ball'; accepted: mix, euclidean, cosine, distance \(= euclidean\)"
    ):
        ZeroOrderSearch(neighbourhood="ball")
    with pytest.raises(UserError, match=r"cosine must be a number in \(-1, 1\), got 1.0"):
        ZeroOrderSearch(neighbourhood="cosine", cosine=1.0)
    with pytest.raises(UserError, match="at least 2 elements"):
        zero_order_neighbours((1,), neighbourhood="cosine")
    assert ZeroOrderSearch().params()["neighbourhood"] == "cosine"  # the default: the author's (tt-scale-flux)


# --- IS: the standard protocol ---------------------------------------------------------------------


def numpy_inception_score(logits, splits, seed):
    """Independent IS: seeded shuffle, ``splits`` chunks, exp(mean KL(p(y|x) || p(y))) per chunk."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    x = x[np.random.RandomState(seed).permutation(len(x))]
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    scores = []
    for i in range(splits):
        chunk = p[i * len(p) // splits : (i + 1) * len(p) // splits]
        marginal = chunk.mean(axis=0)
        scores.append(np.exp((chunk * (np.log(chunk) - np.log(marginal))).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_uses_ten_seeded_shuffled_splits():
    from noisesearch.metrics import inception_score

    logits = 3 * torch.randn(500, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, std = inception_score(logits)
    expected_mean, expected_std = numpy_inception_score(logits.numpy(), 10, 2020)
    assert mean == pytest.approx(expected_mean, rel=1e-12) and std == pytest.approx(expected_std, rel=1e-9)
    assert std > 0  # ten different splits
    single, single_std = inception_score(logits, splits=1, shuffle=False)
    assert single == pytest.approx(numpy_inception_score(logits.numpy(), 1, 2020)[0], rel=1e-12) and single_std == 0
    assert single > mean  # the marginal of the whole set is wider than a split's: single-split IS is higher
    assert inception_score(logits, seed=1)[0] != mean  # the seed is used


def test_inception_score_by_hand():
    from noisesearch.metrics import inception_score

    two = torch.tensor([[50.0, -50.0], [-50.0, 50.0]], dtype=torch.float64)  # confident, different classes
    assert inception_score(two, splits=1, shuffle=False)[0] == pytest.approx(2.0, abs=1e-12)  # exp(log 2)
    assert inception_score(two) == pytest.approx((1.0, 0.0), abs=1e-12)  # 2 samples: 2 splits of one, each 1
    assert all(math.isnan(v) for v in inception_score(torch.empty(0, 10)))


# --- EvoSearch ---------------------------------------------------------------------------------------


def test_evosearch_noise_mutation_keeps_the_gaussian_marginal():
    """sqrt(1 - beta^2) x + beta eps with x, eps independent N(0, I) is N(0, I), for every beta."""
    from noisesearch.algorithms.evosearch import mutate_noise

    g = torch.Generator().manual_seed(1)
    n = 200_000
    x, eps = torch.randn(n, generator=g), torch.randn(n, generator=g)
    for beta in (0.2, 0.5, 0.9):
        y = mutate_noise(x, eps, beta)
        # standard errors with n = 2e5: mean 0.0022, variance 0.0032, fourth moment 0.011; 5 of them as tolerance
        assert abs(float(y.mean())) < 0.012 and abs(float(y.var()) - 1.0) < 0.016
        assert abs(float((y**4).mean()) - 3.0) < 0.06  # Gaussian kurtosis
        assert float((x * y).mean()) == pytest.approx(math.sqrt(1 - beta**2), abs=0.012)  # correlation to the parent


def test_evosearch_defaults_reproduce_the_reference_plan_and_its_exact_cost():
    """50 steps, budget 100 trajectories: evolution at 0, 20, 30, 40 with populations 42, 26, 26, 26, 30,
    costing 42 * 50 + 26 * 50 + 26 * 30 + 26 * 20 + 30 * 10 = 5000 NFEs (the reference's SD2.1 example)."""
    from _algo import run_of

    from noisesearch.algorithms.evosearch import EvoSearch

    state = EvoSearch().init(run_of(budget=5000, shape=(2,), steps=50))
    assert state.steps == [0, 20, 30, 40] and state.populations == [42, 26, 26, 26, 30]
    assert state.sampler == "euler-ancestral"  # DDIM with eta = 1, as the reference
    # 8 steps, budget 96: steps round(8 * (0, .4, .6, .8)) = 0, 3, 5, 6; sizes 5, 3, 3, 3, 4 cost
    # 5 * 8 + 3 * 8 + 3 * 5 + 3 * 3 + 4 * 2 = 96
    state = EvoSearch().init(run_of(budget=96, shape=(2,), steps=8))
    assert state.steps == [0, 3, 5, 6] and state.populations == [5, 3, 3, 3, 4]


def test_evosearch_spends_exactly_its_plan(toy, toy_verifier):
    from noisesearch.algorithms.evosearch import EvoSearch

    (r,) = run_search(toy, toy_verifier, EvoSearch(), [1], seeds=[0], budget=96, steps=8)
    assert r.nfe_used == 96 == sum(c["nfe"] for c in r.candidates)
    finals = [c for c in r.candidates if c["sigma_end"] == 0]
    assert [sum(c["info"]["generation"] == k for c in finals) for k in range(5)] == [5, 3, 3, 3, 4]
    # generation 3 is born at e_2 = 5 and runs 5 -> 6 (e_3), then 6 -> 8: its finished jobs start at step 6
    assert {c["info"]["from_step"] for c in finals if c["info"]["generation"] == 3} == {6}


def test_evosearch_keeps_elites_and_mutates_tournament_winners():
    """One evolution at step 0, populations 4 then 3, 1 elite: generation 0 member j scores j. The elite
    is member 3's noise unchanged; each child is sqrt(1 - 0.04) w + 0.2 eps for a tournament winner w,
    the fittest of 3 (90% of 4) random entrants: member 3 or member 2."""
    from _algo import outcomes_of, run_of

    from noisesearch.algorithms.evosearch import MUTATION, EvoSearch

    algorithm = EvoSearch(schedule=(0.0,), populations=(4, 3), elites=1)
    problems = run_of(seeds=(5,), shape=(3,), steps=2)
    state = algorithm.init(problems)
    (first,) = algorithm.ask(state)
    algorithm.tell(state, [outcomes_of(first, [float(i) for i in range(4)])])
    (children,) = algorithm.ask(state)
    (again,) = algorithm.ask(state)  # ask reads the state, never advances it
    assert torch.equal(again.x, children.x) and torch.equal(again.noises, children.noises)
    assert len(children) == 3 and children.sigmas == problems.sigmas
    assert torch.equal(children.x[0], first.x[3])
    for j, child in enumerate(children.x[1:], start=1):
        eps = problems[0].noise(1, j, MUTATION)[1]
        parent = (child - 0.2 * eps) / math.sqrt(1 - 0.04)
        # float32 arithmetic on values of size ~1: 1e-5
        assert any(torch.allclose(parent, first.x[w], atol=1e-5) for w in (2, 3))
    algorithm.tell(state, [outcomes_of(children, [0.0] * 3)])
    assert algorithm.ask(state) == []


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"schedule": (0.5, 0.2)}, r"schedule must be increasing fractions of the steps in \[0, 1\)"),
        ({"schedule": (1.0,)}, r"schedule must be increasing fractions"),
        ({"populations": (4, 1, 3, 3, 3)}, "populations must be 5 integers >= 2"),
        ({"populations": (4, 3)}, "populations must be 5 integers >= 2"),
        ({"mutation_rate": 1.0}, r"mutation_rate must be a number in \(0, 1\), got 1.0"),
        ({"elites": -1}, "elites must be an integer >= 0, got -1"),
        ({"tournament": 0}, r"tournament must be a fraction in \(0, 1\], got 0"),
        ({"sampler": "heun"}, "sampler must be a stochastic sampler"),
    ],
)
def test_evosearch_bad_parameters_are_one_line_user_errors(kwargs, message):
    from noisesearch.algorithms.evosearch import EvoSearch
    from noisesearch.errors import UserError

    with pytest.raises(UserError, match=message) as info:
        EvoSearch(**kwargs)
    assert "\n" not in str(info.value)


def test_new_params_are_json_and_rebuild_the_algorithm():
    import json

    from noisesearch.algorithms import ALGORITHMS

    for name in ("smc", "smc-incremental", "zero-order", "evosearch"):
        params = ALGORITHMS[name]().params()
        assert ALGORITHMS[name](**json.loads(json.dumps(params))).params() == params


@pytest.mark.slow
def test_inception_score_equals_torch_fidelity():
    """torch-fidelity's default protocol (slow to import, hence marked slow)."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    from noisesearch.metrics import inception_score

    logits = 3 * torch.randn(500, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    reference = isc_features_to_metric(logits)
    mean, std = inception_score(logits)
    assert mean == pytest.approx(reference["inception_score_mean"], rel=1e-12)
    assert std == pytest.approx(reference["inception_score_std"], rel=1e-9)


def test_evosearch_intermediate_mutation_scale_is_the_samplers_injected_std():
    """From x = 0 with an x0-prediction of 0 a stochastic step returns exactly c * noise."""
    from noisesearch.algorithms.evosearch import ETA, injected_std
    from noisesearch.samplers import SAMPLERS

    for name, eta in ETA.items():
        for sigma, sigma_next in ((1.0, 0.6), (0.6, 0.35), (0.35, 0.1)):
            out = SAMPLERS[name].fn(
                lambda x, s: torch.zeros_like(x), torch.zeros(1), (sigma, sigma_next), noises=torch.ones(1, 1)
            )
            assert float(out) == pytest.approx(injected_std(sigma, sigma_next, eta), rel=1e-6)  # float32 step
    assert injected_std(0.6, 0.35, 1.0) > injected_std(0.6, 0.35, 0.5) > 0


def test_evosearch_records_are_the_same_with_streams_drawn_step_by_step(digits, classifier, monkeypatch):
    """With the stream cap at 0 each generation's streams are drawn stretch by stretch from its birth step
    (the rows before it drawn and dropped): the records equal those of streams held whole."""
    from _algo import records_at_stream_cap

    from noisesearch.algorithms.evosearch import EvoSearch

    def run(algorithm):
        return run_search(
            digits, classifier, algorithm, [0, 3, 9], seeds=[0, 1, 2], budget=128, steps=8, sampler="euler-sde"
        )

    whole, held_reads = records_at_stream_cap(monkeypatch, None, EvoSearch(), run)
    stepwise, stepwise_reads = records_at_stream_cap(monkeypatch, 0, EvoSearch(), run)
    # evolution steps 0, 3, 5, 6: generations born at 0, 0, 3, 5, 6 run 4, 4, 3, 2, 1 stretches, each asked twice
    assert held_reads == [False] * 28 and stepwise_reads == [True] * 28
    assert [len(c) for c in whole] == [64] * 3 and stepwise == whole


# --- parameter boundaries (each pins one accepted or refused edge value) ------------------------


def test_zero_order_and_smc_parameter_edges():
    from noisesearch.algorithms.smc import IncrementalSMCSearch
    from noisesearch.algorithms.zero_order import ZeroOrderSearch
    from noisesearch.errors import UserError

    assert ZeroOrderSearch(neighbours=1).params()["neighbours"] == 1  # one neighbour is a valid search
    for bad in (-1.0, 1.0):  # the open interval (-1, 1): a cosine of +-1 is the pivot or its mirror
        with pytest.raises(UserError, match=r"cosine must be a number in \(-1, 1\)"):
            ZeroOrderSearch(neighbourhood="cosine", cosine=bad)
    pivot, ys = zero_order_neighbours((2,), neighbourhood="cosine", cosine=0.5)  # 2 elements: a circle, allowed
    for y in ys:
        cos = float(torch.dot(y, pivot) / (y.norm() * pivot.norm()))
        assert abs(cos - 0.5) < 1e-5  # float32 normalisation of 2-vectors
    assert SMCSearch().params()["lmbda"] == IncrementalSMCSearch().params()["lmbda"] == 10.0  # the default temperature
    for bad in ("0", float("inf"), True):
        with pytest.raises(UserError, match="reward_min"):
            SMCSearch(reward_min=bad)
    assert SMCSearch(reward_min=0.0).params()["reward_min"] == 0.0


def test_incremental_smc_with_threshold_one_resamples_even_uniform_weights():
    """ess_threshold 1.0 means "always resample", even when all weights are equal (ESS = k)."""
    from noisesearch.algorithms.smc import IncrementalSMCSearch

    algorithm = IncrementalSMCSearch(particles=3, ess_threshold=1.0)
    state = algorithm.init(run_of(seeds=(3,), shape=(2,), steps=4))
    (jobs,) = algorithm.ask(state)
    algorithm.tell(state, [outcomes_of(jobs, [0.5] * 3)])  # equal rewards
    (resamplings,) = state.resamplings  # one search
    assert [x["step"] for x in resamplings] == [0] and resamplings[0]["ess"] == pytest.approx(3.0)


# --- the self-supervised verifier: the paper's preview sigma ---------------------------------------


def test_feature_similarity_compares_the_x0_preview_at_the_papers_sigma():
    """Ma et al. 2025 compare the x-prediction at sigma 0.4 (late in sampling) with the final sample."""
    from noisesearch.engine.executors import preview_step as _preview_step
    from noisesearch.verifiers import VERIFIERS

    v = VERIFIERS["feature-similarity"]()
    assert v.preview_sigma == 0.4
    # 8 Euler steps: sigmas 1, 0.875, ..., 0.375 is the first at or below 0.4 (step 5), not 0.5 (step 4)
    assert _preview_step(tuple(schedule(8)), v.preview_sigma) == 5
    assert VERIFIERS["feature-similarity"](preview_sigma=0.7).preview_sigma == 0.7


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, "0.4", True, None])
def test_preview_sigma_outside_the_open_unit_interval_is_one_user_error(bad):
    from noisesearch.errors import UserError
    from noisesearch.verifiers import VERIFIERS

    with pytest.raises(UserError, match="preview_sigma must be a number strictly between 0 and 1"):
        VERIFIERS["feature-similarity"](preview_sigma=bad)
