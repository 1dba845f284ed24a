"""Exact values of the core (accountant, driver, Problems/Jobs, random and zero-order search, samplers).

Each expected value is computed here independently of the code under test (by hand, or by re-running
the sampler on the toy model's exact denoiser), so these tests fail when a formula changes. They are
fast (the toy model) and run first in the mutation tests (tools/mutate.py, docs/TESTING.md).
"""

import hashlib
import math
import time

import pytest
import torch
from _algo import build

from noisesearch.accounting import Accountant
from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import (
    STEP_NOISES,
    Jobs,
    Problem,
    Problems,
    derive_seed,
    first_best,
    gaussian,
    gaussians,
    noise_hash,
    noise_hashes,
    rank_order,
    rank_values,
)
from noisesearch.algorithms.random import RandomSearch
from noisesearch.algorithms.zero_order import ZeroOrderSearch
from noisesearch.driver import run_search
from noisesearch.engine.executors import preview_step as _preview_step
from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models.toy import ToyDistanceVerifier, ToyModel
from noisesearch.samplers import SAMPLERS, sample_euler, schedule

# Same process, same arithmetic on the same inputs: results are reproducible bit for bit, but values
# recomputed here along another code path (another batch size, another order of operations) get this
# tolerance: float32 rounding of a few operations on O(1) values.
TOL = dict(atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def toy():
    return ToyModel()


@pytest.fixture(scope="module")
def dist():
    return ToyDistanceVerifier()


def by_hand_seed(seed, *path):
    """derive_seed written out again from its docstring: BLAKE2b-64 of the 8-byte forms, shifted to 63 bits."""
    data = b"".join(int(v).to_bytes(8, "little", signed=True) for v in (seed, *path))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def final_state(toy, noise, steps, target=0):
    """Euler along the toy's schedule from ``noise`` (*shape), one row, outside the driver."""
    cond = toy.encode([target])
    return sample_euler(lambda x, s: toy.denoise(x, s, cond, guidance=1.0), noise[None], schedule(steps))[0]


# --- accountant --------------------------------------------------------------------------------


class Counting:
    """A model whose denoise returns sigma everywhere and takes a little time; cost 2 per row."""

    name = "counting"

    def __init__(self, with_grad=True):
        self.calls, self.grad_calls = 0, 0
        if not with_grad:
            self.denoise_grad = None

    def nfe_per_call(self, guidance):
        return 2 if guidance != 1.0 else 1

    def denoise(self, x, sigma, cond, *, guidance):
        self.calls += 1
        time.sleep(0.002)
        return torch.full_like(x, sigma)

    def denoise_grad(self, x, sigma, cond, *, guidance):
        self.grad_calls += 1
        return x * sigma


def test_accountant_charges_every_row_its_cost_and_raises_just_past_the_budget():
    acct = Accountant([8, 4, 5])
    model = Counting()
    denoise = acct.denoiser(model, None, torch.tensor([0, 0, 1]), guidance=3.0)  # 2 NFEs per row
    out = denoise(torch.zeros(3, 2), 0.25)
    assert torch.equal(out, torch.full((3, 2), 0.25)) and model.calls == 1 and model.grad_calls == 0
    assert acct.nfe.tolist() == [4, 2, 0] and [acct.left(i) for i in range(3)] == [4, 2, 5]
    assert acct.denoise_calls == 1 and acct.denoise_seconds >= 0.002  # time.sleep(0.002) inside
    denoise(torch.zeros(3, 2), 0.25)  # search 0 at exactly its budget of 8: allowed
    assert acct.nfe.tolist() == [8, 4, 0] and acct.left(0) == 0 and acct.left(1) == 0
    with pytest.raises(BudgetExceeded, match=r"^search 0 spent 12 NFEs, over its budget of 8$"):
        denoise(torch.zeros(3, 2), 0.25)
    assert model.calls == 2, "the over-budget call must not reach the model"


def test_accountant_names_the_first_search_over_budget_and_charges_backward_passes():
    acct = Accountant([10, 3])
    acct.charge_backward(torch.tensor([0, 1, 1]), 1)
    assert acct.nfe.tolist() == [1, 2]
    with pytest.raises(BudgetExceeded, match=r"^search 1 spent 4 NFEs, over its budget of 3$"):
        acct.charge_backward(torch.tensor([1]), 2)


def test_accountant_uses_denoise_grad_for_gradients_and_refuses_a_model_without_it():
    acct = Accountant([10])
    model = Counting()
    denoise = acct.denoiser(model, None, torch.tensor([0]), guidance=1.0, grad=True)
    assert torch.equal(denoise(torch.ones(1, 2), 0.5), torch.full((1, 2), 0.5)) and model.grad_calls == 1
    assert model.calls == 0 and acct.nfe.tolist() == [1]
    with pytest.raises(UserError, match="model 'counting' cannot be differentiated"):
        acct.denoiser(Counting(with_grad=False), None, torch.tensor([0]), guidance=1.0, grad=True)


class Scores:
    name, preview_sigma = "scores", None

    def __init__(self, values, with_score=True):
        self.values = torch.tensor(values, dtype=torch.float64)
        self.seen = []
        if not with_score:
            self.score = None

    def __call__(self, images, targets, *, previews=None):
        self.seen.append(("call", list(targets), previews))
        time.sleep(0.002)
        return self.values[: len(images)]

    def score(self, images, targets, *, previews=None):
        self.seen.append(("score", list(targets), previews))
        return self.values[: len(images)] * images.sum()


def test_accountant_verify_counts_images_per_owner_and_returns_float32():
    acct = Accountant([5, 5])
    v = Scores([0.5, 1.5, 2.5])
    out = acct.verify(v, torch.zeros(3, 1, 1, 1), [7, 8, 9], torch.tensor([1, 0, 1]), previews="p")
    assert out.dtype == torch.float32 and out.tolist() == [0.5, 1.5, 2.5] and not out.requires_grad
    assert acct.verifier_calls.tolist() == [1, 2] and acct.nfe.tolist() == [0, 0]
    assert v.seen == [("call", [7, 8, 9], "p")] and acct.verify_seconds >= 0.002  # time.sleep(0.002) inside
    images = torch.ones(2, 1, 1, 1, requires_grad=True)
    g = acct.verify(v, images, [1, 2], torch.tensor([0, 0]), grad=True)
    assert g.requires_grad and g.tolist() == [1.0, 3.0] and v.seen[-1][0] == "score"
    assert acct.verifier_calls.tolist() == [3, 2]
    wrong = Scores([1.0, 2.0, 3.0, 4.0])
    wrong.__class__ = type("Wrong", (Scores,), {"__call__": lambda self, i, t, previews=None: self.values})
    with pytest.raises(RuntimeError, match=r"returned shape \(4,\), expected \(3,\)"):
        acct.verify(wrong, torch.zeros(3, 1, 1, 1), [0, 0, 0], torch.tensor([0, 0, 0]))
    with pytest.raises(UserError, match="verifier 'scores' is not differentiable"):
        acct.verify(Scores([1.0], with_score=False), torch.zeros(1, 1, 1, 1), [0], torch.tensor([0]), grad=True)


# --- Problems, Jobs, seeds -------------------------------------------------------------------------


def test_seeds_noises_and_hashes_by_hand():
    for seed, path in ((0, ()), (3, (1,)), (-2, (5, STEP_NOISES, 7))):
        assert derive_seed(seed, *path) == by_hand_seed(seed, *path) < 2**63
    assert derive_seed(3, 1) != derive_seed(3, 2) != derive_seed(4, 2)
    want = torch.randn((2, 3), generator=torch.Generator().manual_seed(11))
    assert torch.equal(gaussian((2, 3), 11), want)  # same generator, same process: bit for bit
    x = torch.arange(6.0).reshape(2, 3)
    assert noise_hash(x) == hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
    assert noise_hash(x.double()) == noise_hash(x) and len(noise_hash(x)) == 16
    assert noise_hashes(torch.stack([x, -x])) == [noise_hash(x), noise_hash(-x)]
    scores = torch.tensor([0.5, float("nan"), 2.0, -1.0, 2.0, float("nan")])
    assert rank_values(scores).tolist() == [0.5, -math.inf, 2.0, -1.0, 2.0, -math.inf]
    assert int(first_best(scores)) == 2  # the first of the tied best; NaN never wins
    assert rank_order(scores).tolist() == [2, 4, 0, 3, 1, 5]  # best first, ties in order, NaN last
    assert rank_order(scores.reshape(2, 3), dim=1).tolist() == [[2, 0, 1], [1, 0, 2]]  # per row


def problem(sampler="euler", nfe_per_call=2, budget=40, steps=4, shape=(2,)):
    """A run of two searches (targets 3 and 4, seeds 9 and 10)."""
    return Problems([3, 4], [9, 10], budget, shape, schedule(steps), sampler, nfe_per_call)


def jobs(x, sigmas, **options):
    """A batch of one row of search 0."""
    return Jobs(torch.tensor([0]), x[None], sigmas, **options)


def test_problem_costs_every_job_option_exactly():
    p = problem()
    sig = schedule(4)
    assert p.cost() == 4 * 2 and p.cost(sig[:3]) == 2 * 2
    assert problem("heun").cost() == (2 * 4 - 1) * 2 and problem("heun").cost(sig[:3]) == 4 * 2
    assert p.cost(sig[:3], "heun", denoised=True, score_end=True) == (4 - 1 + 1) * 2
    x = torch.zeros(2)
    assert p.job_costs(jobs(x, sig)) == (8, 0)
    assert p.job_costs(jobs(x, sig, denoised=x[None])) == (6, 0)  # the first evaluation is known
    assert p.job_costs(jobs(x, sig[:3], score_end=True)) == (6, 0)  # +1 evaluation at sigma 0.5
    assert p.job_costs(jobs(x, sig, score_end=True)) == (8, 0)  # ends at 0: nothing more to evaluate
    assert p.job_costs(jobs(x, sig, grad=True, backward_cost=1.3)) == (8, math.ceil(1.3 * 8))
    assert p.job_costs(jobs(x, sig, backward_cost=1.3)) == (8, 0)
    assert p.job_costs(jobs(x, sig, grad=True)) == (8, 0)  # backward_cost defaults to 0: nothing extra
    assert p.job_cost(jobs(x, sig[:3], sampler="heun", denoised=x[None], score_end=True)) == (4 - 1 + 1) * 2


def test_problem_noises_fresh_jobs_and_budget_message():
    p = problem()
    seeds, noise = p.noise([0, 1, 1], [(4, 1), (4, 1), (2,)])
    assert seeds == [by_hand_seed(9, 4, 1), by_hand_seed(10, 4, 1), by_hand_seed(10, 2)]
    for row, seed in zip(noise, seeds):  # each row its own generator: the diffusers user's draw
        assert torch.equal(row, torch.randn((2,), generator=torch.Generator("cpu").manual_seed(seed)))
    assert torch.equal(gaussians((2,), seeds), noise) and gaussians((2,), []).shape == (0, 2)
    assert p[1] == Problem(4, 10, 40, (2,), p.sigmas, "euler", 2) and p[1].noise(4, 1)[0] == seeds[1]
    assert torch.equal(p[1].noise(4, 1)[1], noise[1])
    stream_seeds, steps = p.step_noises([1, 0], [(5,), (6, 2)], 3)
    assert steps.shape == (2, 3, 2) and STEP_NOISES == 2**40  # the marker is part of every recorded stream seed
    assert stream_seeds == [by_hand_seed(10, 5, STEP_NOISES), by_hand_seed(9, 6, 2, STEP_NOISES)]
    for row, seed in zip(steps, stream_seeds):  # one generator per stream: step i is its (i+1)-th draw
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(row, torch.stack([torch.randn((2,), generator=g) for _ in range(3)]))
    u = p.uniforms([0, 1], [(7,), (7,)])
    z = [float(gaussian((2,), by_hand_seed(s, 7))[0]) for s in (9, 10)]
    assert u.dtype == torch.float64 and u.tolist() == pytest.approx(
        [0.5 * (1 + math.erf(v / 2**0.5)) for v in z], abs=1e-15
    )
    fresh = p.fresh(3, 6, info={"a": [1] * 6})
    assert fresh.owner.tolist() == [0, 0, 0, 1, 1, 1] and fresh.sigmas == p.sigmas and fresh.final
    assert fresh.noise_seed == [by_hand_seed(s, 6, k) for s in (9, 10) for k in range(3)]
    assert torch.equal(fresh.x, gaussians((2,), fresh.noise_seed)) and fresh.noises is None
    assert not p.stochastic and problem("euler-sde").stochastic
    sde = problem("euler-sde").fresh(2)
    assert sde.info == {} and torch.equal(
        sde.noises, problem("euler-sde").step_noises([0, 0, 1, 1], [(0,), (1,)] * 2, 4)[1]
    )
    assert not jobs(fresh.x[0], p.sigmas[:2]).final
    cut = fresh.rows([4, 0])
    assert cut.owner.tolist() == [1, 0] and cut.noise_seed == [fresh.noise_seed[4], fresh.noise_seed[0]]
    assert torch.equal(cut.x, fresh.x[[4, 0]]) and cut.info == {"a": [1, 1]} and len(fresh.rows(slice(1, 3))) == 2
    x = fresh.x[0]
    options = {
        jobs(x, p.sigmas).options(),
        jobs(x, p.sigmas[:3]).options(),
        jobs(x, p.sigmas, sampler="heun").options(),
        jobs(x, p.sigmas, noises=x[None, None]).options(),
        jobs(x, p.sigmas, denoised=x[None]).options(),
        jobs(x, p.sigmas, score_end=True).options(),
        jobs(x, p.sigmas, grad=True).options(),
        jobs(x, p.sigmas, backward_cost=2.0).options(),
    }
    assert len(options) == 8
    assert jobs(x, p.sigmas, noise_seed=[1]).options() == jobs(torch.ones(2), p.sigmas).options()
    p.require_budget(40, "anything")  # exactly the budget: fine
    message = "budget 40 is smaller than 5 candidate(s) (41 NFEs with 4 steps at 2 NFE(s) per evaluation); "
    with pytest.raises(UserError) as e:
        p.require_budget(41, "5 candidate(s)")
    assert str(e.value) == message + "give --budget >= 41 or fewer --steps"


# --- driver + random search: every record re-derived outside the driver ---------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("budget,candidates,expected", [(20, None, 5), (23, None, 5), (20, 3, 3), (4, None, 1)])
def test_random_search_records_exactly_what_was_run(toy, dist, budget, candidates, expected):
    (r,) = run_search(toy, dist, RandomSearch(candidates=candidates), [1], seeds=[5], budget=budget, steps=4)
    assert r.nfe_used == expected * 4 and r.verifier_calls == expected and r.nan_scores == 0
    assert len(r.candidates) == expected
    scores = []
    for k, c in enumerate(r.candidates):
        seed = by_hand_seed(5, k)
        noise = torch.randn((1,), generator=torch.Generator().manual_seed(seed))
        image = toy.decode(final_state(toy, noise, 4, target=1)[None])
        want = float(-(((image.reshape(-1) * 2 - 1) - 1.0) ** 2).sum())  # minus squared distance to point 1
        assert c == {
            "index": k,
            "noise_seed": seed,
            "noise_sha256": None,
            "sigma_start": 1.0,
            "sigma_end": 0.0,
            "nfe": 4,
            "score": pytest.approx(want, abs=1e-6),  # another batch size: float32 rounding only
        }
        scores.append(c["score"])
    best = max(range(expected), key=lambda k: scores[k])
    assert r.best_index == best and r.best_score == scores[best]
    torch.testing.assert_close(r.best_noise, gaussian((1,), by_hand_seed(5, best)), atol=0, rtol=0)
    rebuilt = toy.decode(final_state(toy, r.best_noise, 4, target=1)[None])[0]
    torch.testing.assert_close(r.best_image, rebuilt, **TOL)
    assert r.target == 1 and r.seed == 5 and r.budget == budget and r.images == {}


def test_driver_batches_progress_and_keeps_images(toy, dist):
    seen = []
    results = run_search(
        toy,
        dist,
        RandomSearch(candidates=3),
        [0, 1],
        seeds=[1, 2],
        budget=12,
        steps=2,
        max_batch=4,
        progress=lambda used, total, best: seen.append((used, total, best)),
        keep_images=True,
    )
    # 6 rows in one batch, run in chunks of 4 and 2 rows, 2 steps each; the best so far after each chunk
    a, b = ([c["score"] for c in r.candidates] for r in results)
    assert seen == [(12, 24, max(a + b))]  # progress is reported per batch (rows of both searches)
    for r in results:
        assert sorted(r.images) == [0, 1, 2]
        assert torch.equal(r.images[r.best_index], r.best_image)


def test_driver_checks_its_arguments(toy, dist):
    with pytest.raises(ValueError, match="2 targets but 1 seeds"):
        run_search(toy, dist, RandomSearch(), [0, 1], seeds=[0], budget=8, steps=2)
    for bad in (0, 1.5):
        with pytest.raises(UserError, match="budget must be a positive integer"):
            run_search(toy, dist, RandomSearch(), [0], seeds=[0], budget=bad, steps=2)
    with pytest.raises(UserError, match="max batch must be a positive integer, got 0"):
        run_search(toy, dist, RandomSearch(), [0], seeds=[0], budget=8, steps=2, max_batch=0)
    with pytest.raises(UserError, match="unknown sampler 'rk4'"):
        run_search(toy, dist, RandomSearch(), [0], seeds=[0], budget=8, steps=2, sampler="rk4")
    (r,) = run_search(toy, dist, RandomSearch(), [0], seeds=[0], budget=8, steps=2, max_batch=1)
    assert r.nfe_used == 8 and len(r.candidates) == 4


def test_preview_step_is_the_first_at_or_below_the_preview_sigma():
    sig = (1.0, 0.75, 0.5, 0.25, 0.0)
    assert _preview_step(sig, None) is None
    assert [_preview_step(sig, s) for s in (1.0, 0.9, 0.75, 0.5, 0.3, 0.25, 0.1, 0.0)] == [0, 1, 1, 2, 3, 3, 3, 3]


class Previewing:
    """Records the previews it gets; scores the image mean."""

    name = "previewing"

    def __init__(self, preview_sigma):
        self.preview_sigma = preview_sigma
        self.previews = []

    def __call__(self, images, targets, *, previews=None):
        self.previews.append(previews)
        return images.reshape(len(images), -1).mean(1)


@pytest.mark.parametrize("preview_sigma,step", [(0.5, 2), (0.6, 2), (0.1, 3), (None, None)])
def test_verifier_gets_the_x0_preview_of_the_right_step(toy, preview_sigma, step):
    v = Previewing(preview_sigma)
    (r,) = run_search(toy, v, RandomSearch(candidates=2), [0], seeds=[3], budget=8, steps=4)
    if step is None:
        assert v.previews == [None]
        return
    cond = toy.encode([0, 0])
    seen = {}
    noise = torch.stack([gaussian((1,), by_hand_seed(3, k)) for k in range(2)])
    sample_euler(
        lambda x, s: toy.denoise(x, s, cond, guidance=1.0),
        noise,
        schedule(4),
        callback=lambda i, s, x, d: seen.setdefault(i, d),
    )
    torch.testing.assert_close(v.previews[0], toy.decode(seen[step]), **TOL)


class OneJob:
    """Runs the given jobs once (for checking what the driver does with each job option)."""

    name = "one-job"

    def __init__(self, make):
        self.make, self.outcomes = make, []

    def params(self):
        return {}

    def init(self, problems):
        return {"problems": problems, "done": False}

    def ask(self, state):
        return [] if state["done"] else self.make(state["problems"])

    def tell(self, state, outcomes):
        state["done"] = True
        self.outcomes.extend(outcomes)


def test_score_end_and_known_denoised_are_charged_and_used_exactly(toy, dist):
    x = torch.tensor([0.3])
    cond = toy.encode([0])
    sig = schedule(4)

    def den(v, s):
        return toy.denoise(v[None], s, cond, guidance=1.0)[0]

    algo = OneJob(
        lambda p: [jobs(x, sig[:3], score_end=True), jobs(x, sig[:3]), jobs(x, sig[:3], denoised=x[None] * 0 + 5)]
    )
    (r,) = run_search(toy, dist, algo, [0], seeds=[0], budget=20, steps=4)
    ends, plain, known = algo.outcomes
    assert [c["nfe"] for c in r.candidates] == [3, 2, 1] and r.nfe_used == 6
    x_end = sample_euler(lambda v, s: toy.denoise(v, s, cond, guidance=1.0), x[None], sig[:3])[0]
    assert [o.index.tolist() for o in algo.outcomes] == [[0], [1], [2]]  # numbered in asked order
    torch.testing.assert_close(ends.x[0], x_end, **TOL)
    torch.testing.assert_close(ends.denoised[0], den(x_end, sig[2]), **TOL)  # the end state's x0-prediction
    torch.testing.assert_close(plain.denoised[0], den(_after_one(toy, x), 0.75), **TOL)  # its last evaluated step
    first = x + (sig[1] - sig[0]) * (x - 5) / sig[0]  # the first step used the known x0-prediction 5
    torch.testing.assert_close(known.x[0], first + (sig[2] - sig[1]) * (first - den(first, sig[1])) / sig[1], **TOL)
    # jobs from a noise at the schedule's start without a seed are identified by a hash of it
    assert all(c["noise_seed"] is None and c["sigma_end"] == 0.5 for c in r.candidates)
    assert [c["noise_sha256"] for c in r.candidates] == [noise_hash(x)] * 3
    assert r.best_index == -1 and r.best_image is None and r.best_score == -math.inf


def _after_one(toy, x):
    cond = toy.encode([0])
    d = toy.denoise(x[None], 1.0, cond, guidance=1.0)[0]
    return x + (0.75 - 1.0) * (x - d) / 1.0


class Scaled(ToyModel):
    def start_scale(self, sigma):
        return 0.5


def test_start_scale_applies_only_at_the_schedule_start(dist):
    toy = Scaled()
    noise = torch.tensor([0.8])
    algo = OneJob(lambda p: [jobs(noise, p.sigmas), jobs(noise, p.sigmas[1:])])
    run_search(toy, dist, algo, [1], seeds=[0], budget=20, steps=4)
    cond = toy.encode([1])

    def run(x0, sig):
        return sample_euler(lambda v, s: toy.denoise(v, s, cond, guidance=1.0), x0[None], sig)[0]

    torch.testing.assert_close(algo.outcomes[0].x[0], run(0.5 * noise, schedule(4)), **TOL)
    torch.testing.assert_close(algo.outcomes[1].x[0], run(noise, schedule(4)[1:]), **TOL)


def test_stochastic_sampler_mismatch_is_refused(toy, dist):
    algo = OneJob(lambda p: [jobs(torch.zeros(1), p.sigmas, noises=torch.zeros(1, 4, 1))])
    with pytest.raises(ValueError, match="is deterministic and takes no noises"):
        run_search(toy, dist, algo, [0], seeds=[0], budget=20, steps=4)
    algo = OneJob(lambda p: [jobs(torch.zeros(1), p.sigmas)])
    with pytest.raises(ValueError, match="needs per-step noises"):
        run_search(toy, dist, algo, [0], seeds=[0], budget=20, steps=4, sampler="euler-sde")


# --- zero-order search: the whole trajectory by hand -------------------------------------------------


class Spy:
    """Wraps an algorithm and keeps every round's batches (``jobs``: one list of ``Jobs`` per ``ask``)."""

    def __init__(self, inner):
        self.inner, self.name, self.jobs, self.ended = inner, inner.name, [], False

    def params(self):
        return self.inner.params()

    def init(self, problems):
        return self.inner.init(problems)

    def ask(self, state):
        batches = self.inner.ask(state)
        if batches:
            self.jobs.append(batches)
        else:
            self.ended = True  # the search ended by asking for nothing
        return batches

    def tell(self, state, outcomes):
        self.inner.tell(state, outcomes)


@pytest.mark.numerics
@pytest.mark.parametrize(
    "budget,neighbours,iterations,rounds",
    [
        (20, 2, None, [1, 2, 2]),
        (16, 2, None, [1, 2, 1]),
        (40, 3, 2, [1, 3, 3]),
        (40, 3, 1, [1, 3]),
        (8, 4, None, [1, 1]),
    ],
)
def test_zero_order_trajectory_by_hand(toy, dist, budget, neighbours, iterations, rounds):
    step = 0.5
    spy = Spy(
        ZeroOrderSearch(
            neighbours=neighbours, step_size=step, iterations=iterations, neighbourhood="mix", restart=False
        )
    )
    (r,) = run_search(toy, dist, spy, [0], seeds=[4], budget=budget, steps=4)  # a bad pivot: neighbours win
    assert [len(batches) for batches in spy.jobs] == [1] * len(rounds)  # one batch per round
    asked = [batches[0] for batches in spy.jobs]
    assert [len(jobs) for jobs in asked] == rounds
    assert r.nfe_used == 4 * sum(rounds) and [c["nfe"] for c in r.candidates] == [4] * sum(rounds)
    scores = [c["score"] for c in r.candidates]
    pivot, pivot_index = gaussian((1,), by_hand_seed(4, 0)), 0
    assert torch.equal(asked[0].x[0], pivot) and r.candidates[0]["noise_seed"] == by_hand_seed(4, 0)
    assert r.candidates[0]["info"] == {"role": "pivot", "iteration": 0}
    index = 1
    for it, jobs in enumerate(asked[1:], start=1):
        best_round = pivot_index
        for j, x in enumerate(jobs.x):
            eps = gaussian((1,), by_hand_seed(4, it, j))
            torch.testing.assert_close(x, (pivot + step * eps) / math.sqrt(1 + step**2), **TOL)
            c = r.candidates[index]
            assert c["info"] == {
                "role": "neighbour",
                "iteration": it,
                "pivot": pivot_index,
                "eps_seed": eps_seed(4, it, j),
            }
            assert c["noise_seed"] is None and c["noise_sha256"] == noise_hash(x)
            if scores[index] > scores[best_round]:  # strictly better moves the pivot
                best_round = index
            index += 1
        pivot_index = best_round
        pivot = _row_at(asked, pivot_index)
    assert r.best_index == max(range(len(scores)), key=lambda k: (scores[k], -k))
    if budget >= 20:
        assert pivot_index != 0, "the pivot must move in this case, else its update rule is untested"


def eps_seed(seed, it, j):
    return by_hand_seed(seed, it, j)


def _row_at(asked, index):
    """The start state of candidate ``index`` of a one-search run whose rounds are one batch each."""
    return torch.cat([jobs.x for jobs in asked])[index]


def test_zero_order_keeps_the_pivot_on_ties_and_checks_its_parameters(toy):
    class Flat:
        name, preview_sigma = "flat", None

        def __call__(self, images, targets, *, previews=None):
            return torch.zeros(len(images))

    spy = Spy(ZeroOrderSearch(neighbours=2, neighbourhood="mix", restart=False))
    (r,) = run_search(toy, Flat(), spy, [0], seeds=[1], budget=20, steps=4)
    assert {c["info"].get("pivot") for c in r.candidates[1:]} == {0}
    torch.testing.assert_close(
        spy.jobs[2][0].x[0], (spy.jobs[0][0].x[0] + gaussian((1,), by_hand_seed(1, 2, 0))) / 2**0.5, **TOL
    )
    assert r.best_index == 0
    with pytest.raises(UserError, match=r"budget 7 is smaller than a pivot and one neighbour \(8 NFEs"):
        run_search(toy, Flat(), ZeroOrderSearch(neighbourhood="mix"), [0], seeds=[1], budget=7, steps=4)
    for kwargs, message in (
        ({"neighbours": 0}, "neighbours must be a positive integer, got 0"),
        ({"step_size": 0.0}, "step size must be a positive number, got 0.0"),
        ({"step_size": math.inf}, "step size must be a positive number, got inf"),
        ({"iterations": 0}, "iterations must be a positive integer, got 0"),
    ):
        with pytest.raises(UserError, match=message):
            ZeroOrderSearch(**kwargs)
    assert ZeroOrderSearch(neighbours=3, step_size=2, iterations=5).params() == {
        "neighbours": 3,
        "step_size": 2.0,
        "iterations": 5,
        "neighbourhood": "cosine",
        "cosine": 0.95,
        "restart": True,
        "rescore_pivot": False,
    }


def test_random_search_parameters(toy, dist):
    message = r"^budget 3 is smaller than 1 candidate\(s\) \(4 NFEs with 4 steps at 1 NFE\(s\) per evaluation\)"
    with pytest.raises(UserError, match=message):
        run_search(toy, dist, RandomSearch(), [0], seeds=[0], budget=3, steps=4)
    assert RandomSearch(candidates=7).params() == {"candidates": 7} and RandomSearch().params() == {"candidates": None}
    for bad in (0, -1, 2.5):
        with pytest.raises(UserError, match=f"candidates must be a positive integer, got {bad!r}"):
            RandomSearch(candidates=bad)


# --- samplers: exact costs and one step by hand ----------------------------------------------------


def test_sampler_costs_and_one_step_by_hand():
    s4, part = schedule(4), (1.0, 0.5, 0.25)
    assert [SAMPLERS[n].nfe(s4) for n in ("euler", "heun", "euler-sde", "euler-ancestral")] == [4, 7, 4, 4]
    assert SAMPLERS["heun"].nfe(part) == 4 and SAMPLERS["euler"].nfe(part) == 2
    assert [n for n, s in SAMPLERS.items() if s.stochastic] == ["euler-sde", "euler-ancestral"]
    x = torch.tensor([[0.8]])
    # denoised = 0.5 x: one Euler step from 1 to 0.5 is x + (0.5 - 1) (x - 0.5 x) / 1 = 0.75 x
    out = SAMPLERS["euler"].fn(lambda v, s: 0.5 * v, x, (1.0, 0.5))
    torch.testing.assert_close(out, 0.75 * x, **TOL)
    # Heun from 1 to 0.5 with denoised = 0: d = x, x_euler = 0.5 x, d_next = 1 -> x + (-0.5) (x + x) / 2 = 0.5 x
    out = SAMPLERS["heun"].fn(lambda v, s: torch.zeros_like(v), x, (1.0, 0.5))
    torch.testing.assert_close(out, 0.5 * x, **TOL)


def test_every_registered_algorithm_spends_exactly_what_its_records_say(toy, dist):
    """Sum of per-candidate NFEs = the accountant's count = real denoiser rows (counted by a wrapper)."""
    rows = []

    class Counted(ToyModel):
        def denoise(self, x, sigma, cond, *, guidance):
            rows.append(len(x))
            return super().denoise(x, sigma, cond, guidance=guidance)

    model = Counted()
    for name in ALGORITHMS:
        if name == "first-order":
            continue  # its backward passes are NFE-equivalents, not denoiser rows (test_first_order_and_evolution)
        rows.clear()
        spy = Spy(build(name, model))
        (r,) = run_search(model, dist, spy, [1], seeds=[0], budget=40, steps=4)
        assert spy.ended and all(type(b) is list and b for b in spy.jobs), f"{name}: ends with an empty list"
        assert r.nfe_used == sum(rows) == sum(c["nfe"] for c in r.candidates), name
        assert 40 - 4 < r.nfe_used, name  # uses the budget to within one full candidate


def test_smc_resamples_at_every_point_and_at_the_final_step_by_ess(toy, dist):
    """Not adaptive, SMC resamples at every resampling point; the final step is resampled by the ESS rule.

    On the toy with seed 24 the three particles share one lineage (equal applied potentials) after
    resampling at step 2 and all reach the target point, so the final weights are uniform to rounding
    (ESS = k) and the final step passes; with ``resample_every=2`` the particles differ at the final
    step, which is resampled. (Seed 24 since step noises are streams: seed 2 did this before.)
    """
    from noisesearch.algorithms.smc import SMCSearch

    spy, states = Spy(SMCSearch(particles=3, ess_threshold=1.0, adaptive=False, t_start=0, sampler="euler-sde")), []
    spy.init = lambda p: states.append(spy.inner.init(p)) or states[-1]
    (r,) = run_search(toy, dist, spy, [1], seeds=[24], budget=12, steps=4)
    assert [x["step"] for x in states[0].resamplings[0]] == [0, 1, 2] and r.nfe_used == 12
    every_other = Spy(
        SMCSearch(particles=3, ess_threshold=1.0, adaptive=False, resample_every=2, t_start=1, sampler="euler-sde")
    )
    states.clear()
    every_other.init = lambda p: states.append(every_other.inner.init(p)) or states[-1]
    run_search(toy, dist, every_other, [1], seeds=[24], budget=12, steps=4)
    assert [x["step"] for x in states[0].resamplings[0]] == [1, 3]


@pytest.mark.parametrize("shape", [(1,), (3, 5), (1, 8, 8), (4, 16, 16), (16,), (17,)])
def test_uniforms_use_the_first_element_of_the_whole_draw(shape):
    """``Problems.uniforms`` draws 16 elements where the noise has more; the first is that of the whole draw."""
    p = Problems([0, 1], [7, 8], 10, shape, schedule(2), "euler", 1)
    owners, paths = [0, 1] * 50, [(k, 2**41) for k in range(100)]
    z = torch.stack([gaussian(shape, by_hand_seed(7 + o, *path)).flatten()[0] for o, path in zip(owners, paths)])
    want = 0.5 * (1 + torch.erf(z.double() / math.sqrt(2.0)))
    assert torch.equal(p.uniforms(owners, paths), want.clamp(max=1.0 - 2.0**-53))


@pytest.mark.parametrize("shape", [(1,), (2,), (3, 5), (1, 8, 8), (17,), (4, 4, 4)])
def test_streams_are_successive_draws_held_whole_or_drawn_step_by_step(shape):
    """Row t of a stream is the (t+1)-th randn(shape) on a generator seeded with the stream seed, whether the
    streams are held whole or drawn step by step (read in order, a block asked twice given twice, rows
    skipped, streams selected with repeats)."""
    p = Problems([0, 1], [7, 8], 10, shape, schedule(6), "euler-sde", 1)
    owners, paths = [0, 1, 1], [(0,), (0,), (3, 1)]

    def by_hand(seed, steps):
        g = torch.Generator().manual_seed(seed)
        return torch.stack([torch.randn(shape, generator=g) for _ in range(steps)])

    whole, lazy = p.streams(owners, paths, 6), p.streams(owners, paths, 6, cap_bytes=0)
    assert whole.whole is not None and lazy.whole is None
    assert whole.seeds == lazy.seeds == [by_hand_seed(s, *q, STEP_NOISES) for s, q in zip([7, 8, 8], paths)]
    want = torch.stack([by_hand(seed, 6) for seed in whole.seeds])  # (3, 6, *shape)
    assert torch.equal(whole.rows(0, 6), want) and torch.equal(p.step_noises(owners, paths, 6)[1], want)
    assert torch.equal(lazy.rows(1, 3), want[:, 1:3]) and torch.equal(lazy.rows(1, 3), want[:, 1:3])  # skip, again
    with pytest.raises(ValueError, match="read in order"):
        lazy.rows(0, 1)
    picked, picked_whole = lazy.select([2, 0, 2]), whole.select(torch.tensor([2, 0, 2]))
    assert picked.seeds == picked_whole.seeds == [whole.seeds[i] for i in (2, 0, 2)]
    assert torch.equal(picked.rows(3, 4), want[[2, 0, 2], 3:4]) and torch.equal(picked.rows(4, 6), want[[2, 0, 2], 4:6])
    assert torch.equal(picked_whole.rows(3, 6), want[[2, 0, 2], 3:6])
    with pytest.raises(ValueError, match="rows 5:7 of streams of 6 steps"):
        whole.rows(5, 7)


@pytest.mark.numerics
def test_deferred_draws_are_drawn_only_for_the_rows_computed(tmp_path, toy, dist):
    """Random search asks with its noises undrawn; the driver draws the rows it computes (here, every row
    once), and a rerun replayed from the cache draws none but the best candidate's, with the same results."""
    from noisesearch.cache import CandidateCache

    jobs = problem().fresh(2, deferred=True)
    assert jobs.x is None and jobs.noise_seed == problem().fresh(2).noise_seed
    assert torch.equal(problem().start_states(jobs), problem().fresh(2).x) and jobs.x is not None  # kept
    with pytest.raises(ValueError, match="seeded draw on every row"):
        problem().start_states(Jobs(torch.tensor([0]), None, schedule(4), noise_seed=[None]))
    cache = CandidateCache(tmp_path / "c")
    first = run_search(toy, dist, RandomSearch(candidates=6), [1, 0], seeds=[5, 6], budget=24, steps=4, cache=cache)
    again = run_search(toy, dist, RandomSearch(candidates=6), [1, 0], seeds=[5, 6], budget=24, steps=4, cache=cache)
    assert [list(r.candidates) for r in first] == [list(r.candidates) for r in again]  # replayed: the stored bits
    for a, b in zip(first, again):
        assert torch.equal(a.best_noise, b.best_noise) and torch.equal(
            a.best_noise, gaussian((1,), by_hand_seed(a.seed, a.best_index))
        )
        assert b.ledger["replayed"] == 6
    assert first.stats.draw_seconds > 0 and again.stats.draw_seconds > 0  # seeds, and the two winners' noises


def test_records_keep_no_states_or_images(toy, dist):
    """The run's records are columns of numbers: after the search, no end state or image is held for them (a
    diffusers run of thousands of candidates would otherwise keep every image), and start states only as the
    bounded copies of derived noises still to be hashed, which reading the records releases."""
    run = run_search(
        toy, dist, ZeroOrderSearch(neighbours=3, neighbourhood="mix"), [0, 1], seeds=[1, 2], budget=40, steps=4
    )
    table = run[0].candidates._table

    def held():
        kept = [chunk._replace(hashes=None) for chunk in table.chunks]
        columns = [t for chunk in kept for t in chunk if isinstance(t, torch.Tensor)]
        columns += [v for chunk in kept for v in chunk.info.values() if isinstance(v, torch.Tensor)]
        assert columns and all(t.dim() == 1 for t in columns)  # owners, indices, scores, info columns
        return [chunk.hashes for chunk in table.chunks if isinstance(chunk.hashes, torch.Tensor)]

    to_hash = held()  # the neighbours' noises (1 float each): 2 searches x 3 neighbours x 3 rounds
    assert [tuple(t.shape) for t in to_hash] == [(6, 1)] * 3 and table.held_bytes == 18 * 4
    assert len(run[0].candidates) == run[0].verifier_calls and run[0].candidates[0]["index"] == 0
    assert held() == [] and table.held_bytes == 0


class InPlace:
    """Two rounds from one noise tensor that the algorithm edits in place between them (derived, unseeded noises)."""

    name = "in-place"

    def params(self):
        return {}

    def init(self, problems):
        return {"problems": problems, "x": torch.full((2, 1), 0.25), "round": 0}

    def ask(self, state):
        if state["round"] == 2:
            return []
        p = state["problems"]
        return [Jobs(torch.tensor([0, 0]), state["x"], p.sigmas, noise_seed=[None, 7] if state["round"] else None)]

    def tell(self, state, outcomes):
        state["x"].mul_(-2)  # the tensor the first round's jobs held changes after the driver recorded it
        state["round"] += 1


@pytest.mark.parametrize("held", [0, 4, 64 * 2**20])  # hash at once / the first batch later / every batch later
def test_noise_hashes_are_the_same_whenever_they_are_taken(toy, dist, monkeypatch, held):
    import noisesearch.driver as driver

    monkeypatch.setattr(driver, "HASH_LATER_BYTES", held)
    (r,) = run_search(toy, dist, InPlace(), [0], seeds=[0], budget=16, steps=4)
    first, second = torch.tensor([0.25]), torch.tensor([-0.5])  # as asked, not as later edited
    assert [(c["noise_seed"], c["noise_sha256"]) for c in r.candidates] == [
        (None, noise_hash(first)),
        (None, noise_hash(first)),
        (None, noise_hash(second)),
        (7, None),
    ]


def test_the_best_of_each_search_over_batches_by_hand():
    """Strictly better replaces, a tie keeps the earlier, NaN never ranks (but is counted), unfinished rows never win."""
    from types import SimpleNamespace

    from noisesearch.engine.table import Best as _Best

    best, nan = _Best(3), float("nan")

    def batch(owners, scores, first_index, sigmas=(1.0, 0.0)):
        n = len(owners)
        x = torch.arange(n, dtype=torch.float32)[:, None] + 10 * first_index  # (n, 1): each row's noise
        jobs = Jobs(torch.tensor(owners), x, sigmas)
        out = SimpleNamespace(
            score=torch.tensor(scores, dtype=torch.float64),
            index=torch.arange(first_index, first_index + n),
            image=-x,
        )
        best.update(jobs, out, None)

    batch([0, 0, 0, 1, 2], [1.0, 3.0, 3.0, nan, 2.0], 0)  # search 0: rows 1 and 2 tie, row 1 (index 1) wins
    batch([0, 1, 2], [3.0, nan, 1.0], 5)  # a tie and a worse score change nothing
    batch([0, 2, 2], [9.0, 7.0, 7.0], 8, sigmas=(1.0, 0.5))  # unfinished: never a best, NaNs still counted
    batch([2, 0, 2], [nan, 4.0, 5.0], 11)  # search 2's NaN is counted; its 5.0 (index 13) wins
    assert best.index.tolist() == [12, -1, 13]
    assert best.score.tolist()[0] == 4.0 and best.score.tolist()[1] == -math.inf and best.score.tolist()[2] == 5.0
    assert best.nans.tolist() == [0, 2, 1]
    assert best.noise is not None and best.image is not None
    assert best.noise[:, 0].tolist() == [111.0, 0.0, 112.0] and torch.equal(best.image[[0, 2]], -best.noise[[0, 2]])
