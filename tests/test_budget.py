"""Exact NFE accounting and hard budgets: counted at the one accounting point, checked with hooks."""

import pytest
import torch
from _algo import build
from _tiny_verifiers import FailingVerifier

from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.random import RandomSearch
from noisesearch.driver import run_search
from noisesearch.errors import BudgetExceeded, UserError


class RowCounter:
    """Counts rows that really pass through a network's forward (a hook, not arithmetic)."""

    def __init__(self, net):
        self.rows = 0
        self.handle = net.register_forward_pre_hook(lambda mod, args: self._add(args[0]))

    def _add(self, x):
        self.rows += x.shape[0]

    def close(self):
        self.handle.remove()


@pytest.mark.parametrize(
    "sampler,guidance,per_candidate",
    [
        ("euler", 1.0, 6),
        ("euler", 3.0, 12),
        ("heun", 1.0, 11),
        ("heun", 2.0, 22),
    ],
)
def test_nfe_counted_equals_real_forward_rows(digits, classifier, sampler, guidance, per_candidate):
    """CFG costs 2 per step; Heun 2 per step but the last; the accountant agrees with a hook."""
    counter = RowCounter(digits.net)
    try:
        results = run_search(
            digits,
            classifier,
            RandomSearch(),
            [3, 5, 8],
            seeds=[0, 1, 2],
            budget=40,
            steps=6,
            sampler=sampler,
            guidance=guidance,
        )
    finally:
        counter.close()
    k = 40 // per_candidate
    for r in results:
        assert r.nfe_used == k * per_candidate
        assert [c["nfe"] for c in r.candidates] == [per_candidate] * k
        assert r.verifier_calls == k
    assert counter.rows == sum(r.nfe_used for r in results)


# Exact NFEs of the algorithms whose plan is a closed formula (8 Euler steps, 1 NFE per step, at
# these budgets): random search runs budget // 8 candidates; zero-order a pivot and neighbours, 8 each.
EXACT = {"random": lambda b: b // 8 * 8, "zero-order": lambda b: b // 8 * 8}


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize("budget", [40, 100, 257])
def test_budget_used_exactly_as_counted_by_the_network(digits, classifier, name, budget):
    """The accountant's count = real network rows (+ backward passes) = the records, to within one candidate.

    ``nfe_used <= budget`` is not asserted: it cannot fail, the accountant raises first.
    """
    counter = RowCounter(digits.net)
    try:
        results = run_search(digits, classifier, build(name), [1, 2], seeds=[5, 6], budget=budget, steps=8)
    finally:
        counter.close()
    for r in results:
        assert budget - 8 < r.nfe_used == sum(c["nfe"] for c in r.candidates)
        if name in EXACT:
            assert r.nfe_used == EXACT[name](budget)
    if name == "first-order":  # forward rows plus the backward passes' NFE-equivalents
        assert counter.rows < sum(r.nfe_used for r in results)
    else:
        assert counter.rows == sum(r.nfe_used for r in results)


class Greedy:
    """A broken algorithm that asks for more than the budget allows."""

    name = "greedy"

    def params(self):
        return {}

    def init(self, problems):
        return {"problems": problems, "done": False}

    def ask(self, state):
        if state["done"]:
            return []
        p = state["problems"]
        return [p.fresh(p.budget // p.cost() + 1)]

    def tell(self, state, outcomes):
        state["done"] = True


def test_overspending_algorithm_raises_instead_of_truncating(digits, classifier):
    with pytest.raises(BudgetExceeded, match="asked for 40 NFEs in search 0 with 32 of 32 left"):
        run_search(digits, classifier, Greedy(), [1], seeds=[0], budget=32, steps=8)


def test_accountant_backstop_catches_a_wrong_cost_formula(digits, classifier, monkeypatch):
    """If a declared cost under-counts, the real calls still cannot pass the budget."""
    from noisesearch.samplers import SAMPLERS, Sampler

    lying = Sampler(SAMPLERS["euler"].fn, lambda s: 1, "claims 1 NFE whatever the steps")
    monkeypatch.setitem(SAMPLERS, "euler", lying)
    with pytest.raises(BudgetExceeded, match="over its budget of 16"):
        run_search(digits, classifier, RandomSearch(), [1], seeds=[0], budget=16, steps=8)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_budget_below_one_round_is_a_clear_error(digits, classifier, name):
    with pytest.raises(UserError, match=r"budget 7 is smaller than .* give --budget >= \d+ or fewer --steps"):
        run_search(digits, classifier, build(name), [1], seeds=[0], budget=7, steps=8)


def test_candidates_are_batched_across_targets(digits, classifier):
    """One denoiser call per step for all targets and candidates together (max_batch permitting)."""
    from noisesearch import accounting

    calls = []
    original = accounting.Accountant.denoiser

    def spy(self, *args, **kwargs):
        fn = original(self, *args, **kwargs)

        def wrapped(x, sigma):
            calls.append(x.shape[0])
            return fn(x, sigma)

        return wrapped

    accounting.Accountant.denoiser = spy
    try:
        run_search(digits, classifier, RandomSearch(), list(range(10)), seeds=list(range(10)), budget=32, steps=4)
        assert calls == [80] * 4
        calls.clear()
        run_search(
            digits, classifier, RandomSearch(), list(range(10)), seeds=list(range(10)), budget=32, steps=4, max_batch=32
        )
        assert calls == [32] * 4 + [32] * 4 + [16] * 4
    finally:
        accounting.Accountant.denoiser = original


def test_nan_scores_are_recorded_and_never_ranked(digits):
    def even_rows(images, targets):
        return torch.arange(len(images)) % 2 == 0

    half_nan = FailingVerifier(fails=even_rows, name="half-nan")  # brightness, NaN on rows 0, 2, 4...
    (r,) = run_search(digits, half_nan, RandomSearch(), [4], seeds=[0], budget=32, steps=4)
    assert r.nan_scores == 4
    assert [c["score"] is None for c in r.candidates] == [True, False] * 4
    assert r.best_index % 2 == 1
    assert r.best_score == max(c["score"] for c in r.candidates if c["score"] is not None)


def test_stats_time_the_model_and_verifier_at_the_accountant(digits, classifier):
    stats = run_search(digits, classifier, RandomSearch(), [1, 2], seeds=[0, 1], budget=32, steps=4).stats
    assert stats.denoise_calls == 4 and stats.rounds == 1 and stats.candidates == 16
    assert 0 < stats.denoise_seconds + stats.verify_seconds <= stats.wall_seconds
    assert stats.backward_seconds == 0
    assert 0 < stats.draw_seconds < stats.wall_seconds - stats.denoise_seconds  # 16 seeded draws, outside the calls


def test_stats_time_the_decoder_apart(digits, classifier, monkeypatch):
    """Decoding (a VAE on latent models) is timed at the accountant too, apart from model and verifier calls."""
    import time

    decode = digits.decode

    def slow(x0):
        time.sleep(0.01)
        return decode(x0)

    monkeypatch.setattr(digits, "decode", slow)
    stats = run_search(digits, classifier, RandomSearch(), [1, 2], seeds=[0, 1], budget=32, steps=4).stats
    assert 0.01 <= stats.decode_seconds < stats.wall_seconds - stats.denoise_seconds - stats.verify_seconds
