"""``epsilon-greedy`` against a transcription of its source (Ramesh and Mardani 2025, rvignav/diffusion-tts).

The reference's per-step loop (``edm/main.py``, the EPS_GREEDY branch; its SD pipeline does the same)
is written out below as plain loops over one trajectory, with this package's sampler step and seeded
draws in place of ``torch.randn``/``torch.rand``, and held against what ``run_search`` records.
"""

from __future__ import annotations

import math

import pytest
import torch
from _algo import drive, outcomes_of, run_of

from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import derive_seed, gaussian
from noisesearch.algorithms.epsilon_greedy import (
    CHOICE,
    DIRECTION,
    FRESH,
    PIVOT,
    RADIUS,
    EpsilonGreedySearch,
    local_moves,
)
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.samplers import sample_euler_sde

# Recomputed along another path (one row at a time instead of a batch of proposals): float32 networks
# round differently by batch size, so values agree to a few ULPs of O(1) numbers, not bit for bit.
TOL = 1e-4


def uniform(seed: int, size: int, *path: int) -> float:
    """The package's seeded uniform for noises of ``size`` elements: the normal CDF of the first element of the
    draw ``path`` (of at most 16 elements: ``Problems.uniforms``)."""
    z = float(gaussian((min(size, 16),), derive_seed(seed, *path))[0].double())
    return min(0.5 * (1.0 + math.erf(z / math.sqrt(2.0))), 1.0 - 2.0**-53)


def test_the_defaults_are_the_sources():
    """``edm/main.py`` SamplingParams and ``main.py``'s argparse defaults: N 4, K 20, lambda 0.15, eps 0.4."""
    algorithm = ALGORITHMS["epsilon-greedy"]()
    assert algorithm.params() == {
        "epsilon": 0.4,
        "iterations": 20,
        "proposals": 4,
        "step_size": 0.15,
        "sampler": None,
    }


def test_a_local_move_is_the_pivot_plus_a_scaled_unit_direction():
    """``base_noise + scale * random_direction``, ``scale = U(0,1) * lambda * sqrt(D)``, direction of norm 1."""
    pivot = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    direction = torch.tensor([[3.0, 0.0, 4.0, 0.0], [0.0, -2.0, 0.0, 0.0]])
    radius = torch.tensor([0.5, 0.25])
    moved = local_moves(pivot, direction, radius, 0.15)
    # by hand: |d| = 5 and 2, sqrt(D) = 2
    expected = torch.tensor(
        [
            [1.0 + 0.5 * 0.15 * 2 * 3 / 5, 2.0, 3.0 + 0.5 * 0.15 * 2 * 4 / 5, 4.0],
            [0.0, -0.25 * 0.15 * 2, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(moved, expected, atol=1e-7, rtol=0)  # a few float32 operations


def test_the_pivot_follows_each_iterations_best_proposal_even_when_it_is_worse():
    """The reference sets ``pivot = argmax`` of each iteration's proposals without comparing with the pivot."""
    algorithm = EpsilonGreedySearch(epsilon=0.0, iterations=3, proposals=4)
    problems = run_of([1], [5], budget=36, shape=(6,), steps=3, sampler="euler-sde")  # one trajectory
    state = algorithm.init(problems)
    pivots = [state.pivot.clone()]
    scores_by_iteration = [[0.0, 9.0, 1.0, 2.0], [0.0, 0.0, 0.0, 1.0], [float("nan"), 3.0, 3.0, -1.0]]
    for scores in scores_by_iteration:  # the second iteration's best (1.0) is worse than the first's (9.0)
        (jobs,) = algorithm.ask(state)
        best = max(range(4), key=lambda j: (scores[j] == scores[j], scores[j], -j))  # first best, NaN lowest
        algorithm.tell(state, [outcomes_of(jobs, scores)])
        if state.step == 0:
            torch.testing.assert_close(state.pivot[0, 0], jobs.noises[best, 0], rtol=0, atol=0)  # copied, not computed
        pivots.append(jobs.noises[best, 0])
    # after K iterations the step advanced with the last pivot's end state, and a fresh pivot was drawn
    assert state.step == 1 and state.iteration == 0
    _, fresh_pivot = problems.noise([0], [(0, PIVOT, 1)])
    assert torch.equal(state.pivot[0, 0], fresh_pivot[0])  # a seeded draw, copied: the same bits


def test_proposals_are_fresh_with_probability_epsilon_else_local_moves_of_the_pivot():
    """Each proposal's own uniform decides: ``u < eps`` a fresh draw, else a local move (the reference's
    ``torch.rand(1) < (1 - eps)`` with the branches swapped, the same law)."""
    algorithm = EpsilonGreedySearch(epsilon=0.4, iterations=2, proposals=4)
    seeds = [11, 12, 13]
    problems = run_of([1, 1, 1], seeds, budget=24, shape=(8,), steps=3, sampler="euler-sde")
    state = algorithm.init(problems)
    (jobs,) = algorithm.ask(state)
    fresh = jobs.info["fresh"].tolist()
    for r, (search, j) in enumerate((i, j) for i in range(3) for j in range(4)):
        seed = seeds[search]
        u = uniform(seed, 8, 0, CHOICE, 0, 0, j)
        assert bool(fresh[r]) == (u < 0.4)
        if u < 0.4:
            expected = gaussian((8,), derive_seed(seed, 0, FRESH, 0, 0, j))
        else:
            pivot = gaussian((8,), derive_seed(seed, 0, PIVOT, 0))
            d = gaussian((8,), derive_seed(seed, 0, DIRECTION, 0, 0, j))
            r_ = uniform(seed, 8, 0, RADIUS, 0, 0, j)
            expected = pivot + r_ * 0.15 * math.sqrt(8) * d / d.norm()
        torch.testing.assert_close(jobs.noises[r, 0], expected, atol=1e-6, rtol=0)  # float32 arithmetic
    # over many draws the rate of fresh proposals is epsilon
    flags = []
    state, asked = drive(
        EpsilonGreedySearch(epsilon=0.4, iterations=5, proposals=4),
        run_of([1] * 20, range(20), budget=120, shape=(4,), steps=6, sampler="euler-sde"),
        lambda jobs: torch.zeros(len(jobs)),
    )
    for (batch,) in asked:
        if "fresh" in batch.info:
            flags += batch.info["fresh"].tolist()
    rate = sum(flags) / len(flags)  # 2,000 Bernoulli(0.4) draws: sd 0.011
    assert abs(rate - 0.4) < 0.05


def reference_trajectory(model, verifier, target, seed, *, steps, iterations, proposals, eps, lam):
    """The reference's EPS_GREEDY loop for one trajectory, step by step (see the module docstring).

    Returns (the scores of every proposal in order, the finished sample's score)."""
    sigmas = model.schedule(steps)
    cond = model.encode([target])
    guidance = model.default_guidance

    def denoise(x, sigma):
        return model.denoise(x, sigma, cond, guidance=guidance)

    def score(x0):
        return float(verifier(model.decode(x0), [target])[0])

    shape = model.noise_shape
    size = math.prod(shape)
    x = gaussian(shape, derive_seed(seed, 0))[None]
    scores = []
    for t in range(steps - 1):
        pivot = gaussian(shape, derive_seed(seed, 0, PIVOT, t))[None]
        kept = None
        for k in range(iterations):
            candidates = []
            for j in range(proposals):
                if uniform(seed, size, 0, CHOICE, t, k, j) < eps:
                    noise = gaussian(shape, derive_seed(seed, 0, FRESH, t, k, j))[None]
                else:
                    d = gaussian(shape, derive_seed(seed, 0, DIRECTION, t, k, j))[None]
                    noise = pivot + uniform(seed, size, 0, RADIUS, t, k, j) * lam * math.sqrt(d.numel()) * d / d.norm()
                x_next = sample_euler_sde(denoise, x, sigmas[t : t + 2], noises=noise[None])
                s = score(denoise(x_next, sigmas[t + 1]))  # scored on the end state's x0-prediction
                scores.append(s)
                candidates.append((s, noise, x_next))
            best = max(candidates, key=lambda c: c[0])  # ties: the first (Python's max keeps the first)
            pivot, kept = best[1], best[2]
        x = kept  # the step run with the last pivot
    final = sample_euler_sde(denoise, x, sigmas[steps - 1 :], noises=torch.zeros(1, *x.shape))
    return scores, score(final)


@pytest.mark.numerics
def test_a_search_records_what_the_transcribed_reference_computes(digits, classifier):
    steps, K, N = 4, 3, 4
    algorithm = EpsilonGreedySearch(iterations=K, proposals=N, sampler="euler-sde")
    per_trajectory = N * K * (2 + 1 + 1)  # step 0 pays the start evaluation; steps 1 and 2 only the end one
    targets, seeds = [3, 8], [0, 1]
    (first, second) = run_search(
        digits, classifier, algorithm, targets, seeds=seeds, budget=per_trajectory, steps=steps, sampler="euler-sde"
    )
    for result, target, seed in zip((first, second), targets, seeds):
        assert result.nfe_used == per_trajectory  # every proposal charged; the final step reuses a known x0
        scores, final = reference_trajectory(
            digits, classifier, target, seed, steps=steps, iterations=K, proposals=N, eps=0.4, lam=0.15
        )
        recorded = [c["score"] for c in result.candidates]
        assert len(recorded) == len(scores) + 1  # every proposal, then the finished sample
        torch.testing.assert_close(torch.tensor(recorded[:-1]), torch.tensor(scores), atol=TOL, rtol=0)
        assert recorded[-1] == pytest.approx(final, abs=TOL)
        assert result.best_score == pytest.approx(final, abs=TOL)  # the only finished sample


def test_budgets_buy_whole_trajectories_or_iterations():
    problems = run_of([1], [0], budget=100, shape=(4,), steps=4, sampler="euler-sde")
    # per proposal: 2 NFEs on step 0, 1 on steps 1-2; the final step reuses the known x0 (0 NFEs); what is
    # left goes to full candidates of the run's sampler (4 NFEs each)
    assert EpsilonGreedySearch(iterations=2, proposals=4).plan(problems, "euler-sde") == (3, 2, (100 - 96) // 4)
    assert EpsilonGreedySearch(iterations=None, proposals=4).plan(problems, "euler-sde") == (1, 6, (100 - 96) // 4)
    problems = run_of([1], [0], budget=103, shape=(4,), steps=4, sampler="euler-sde")
    assert EpsilonGreedySearch(iterations=2, proposals=4).plan(problems, "euler-sde") == (3, 2, 1)  # 7 left: one
    with pytest.raises(UserError, match=r"give --budget >= 320"):
        EpsilonGreedySearch().plan(problems, "euler-sde")  # 20 iterations x 4 proposals x 4 NFEs


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"epsilon": 1.5}, r"epsilon must be a number in \[0, 1\], got 1.5"),
        ({"iterations": 0}, "iterations must be a positive integer or null"),
        ({"proposals": True}, "proposals must be a positive integer, got True"),
        ({"step_size": -1}, "step_size must be a finite number >= 0, got -1"),
        ({"sampler": "euler"}, "sampler must be a stochastic sampler"),
    ],
)
def test_bad_hyperparameters_get_one_line(kwargs, message):
    with pytest.raises(UserError, match=message):
        EpsilonGreedySearch(**kwargs)


def test_the_leftover_budget_buys_random_candidates_and_is_used_to_within_one(digits, classifier):
    budget = 2 * 32 + 13  # two trajectories of 32 NFEs at 4 steps (euler-sde), then 13: three 4-NFE candidates
    (r,) = run_search(digits, classifier, build_small(), [5], seeds=[3], budget=budget, steps=4, sampler="euler-sde")
    extras = [c for c in r.candidates if c["info"].get("role") == "extra"]
    assert len(extras) == 3 and all(c["nfe"] == 4 and c["noise_seed"] is not None for c in extras)
    assert r.nfe_used == budget - 1 == sum(c["nfe"] for c in r.candidates)


def build_small():
    return EpsilonGreedySearch(iterations=2, proposals=4)
