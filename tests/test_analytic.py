"""Known answers: the ideal denoiser over the points -1 and +1 (noisesearch.models.toy).

The probability-flow ODE sends a noise to the point of its sign, so one candidate reaches the
target point with probability 1/2 and best-of-K random search with probability 1 - 2**-K; the
best reachable verifier score is 0.
"""

import pytest
import torch
from _algo import build

from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.random import RandomSearch
from noisesearch.algorithms.zero_order import ZeroOrderSearch
from noisesearch.driver import run_search

N_SEARCHES = 2000


def test_ideal_denoiser_flow_lands_on_the_point_of_the_noise_sign(toy):
    noise = torch.linspace(-3, 3, 13)[:, None]
    noise = noise[noise[:, 0] != 0]
    from noisesearch.samplers import sample_euler

    out = sample_euler(lambda x, s: toy.denoise(x, s, None, guidance=1.0), noise, toy.schedule(64))
    torch.testing.assert_close(out, torch.sign(noise), atol=1e-3, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_random_search_success_rate_is_one_minus_two_to_minus_k(toy, toy_verifier, k):
    steps = 16
    results = run_search(
        toy,
        toy_verifier,
        RandomSearch(),
        [1] * N_SEARCHES,
        seeds=list(range(N_SEARCHES)),
        budget=k * steps,
        steps=steps,
    )
    hit = torch.tensor([r.best_score > -1e-3 for r in results], dtype=torch.float64).mean()
    expected = 1 - 2.0**-k
    sd = (expected * (1 - expected) / N_SEARCHES) ** 0.5
    assert abs(float(hit) - expected) < 4 * sd


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_best_score_improves_with_budget_and_reaches_the_optimum(toy, toy_verifier, name):
    means = []
    for budget in (36, 96, 256) if name == "paths" else (32, 96, 256):  # paths' smallest: one path, 36 NFEs
        results = run_search(
            toy, toy_verifier, build(name, toy), [0] * 200, seeds=list(range(200)), budget=budget, steps=8
        )
        means.append(sum(r.best_score for r in results) / len(results))
    assert means[0] < means[1] < means[2] + 1e-9
    assert means[2] > -0.2  # at least 95% of searches reach the target point (score 0; a miss is -4)


def test_zero_order_neighbours_stay_standard_normal():
    """The neighbourhood step is projected back to N(0, I) whatever lambda is."""
    from _algo import outcomes_of

    from noisesearch.algorithms.base import Problem, Problems

    problems = Problems.of(Problem(0, 0, 10**9, (20000,), (1.0, 0.0), "euler", 1))
    algorithm = ZeroOrderSearch(neighbours=2, step_size=0.7, neighbourhood="mix", restart=False)
    state = algorithm.init(problems)
    (pivot_jobs,) = algorithm.ask(state)
    algorithm.tell(state, [outcomes_of(pivot_jobs, [0.0])])
    (neighbours,) = algorithm.ask(state)
    assert len(neighbours) == 2
    for x in neighbours.x:
        assert abs(float(x.std()) - 1) < 0.02
        corr = float((x * pivot_jobs.x[0]).mean())
        assert abs(corr - 1 / (1 + 0.7**2) ** 0.5) < 0.02  # correlation with the pivot set by lambda
