"""Zero-order and first-order search on the columnar contract: searches run together in one state as
they run alone, and first-order's last round splits its rows into batches without reordering them."""

import pytest
import torch
from _algo import outcomes_of, run_of
from _records import BatchRoundedToy, best_agrees, same_records, with_noises
from _tiny_verifiers import FailingVerifier

from noisesearch.algorithms.base import derive_seed, gaussian
from noisesearch.algorithms.first_order import FirstOrderSearch
from noisesearch.algorithms.zero_order import ZeroOrderSearch
from noisesearch.driver import run_search
from noisesearch.models.toy import ToyDistanceVerifier

POINTS = torch.tensor([[-1.0, 0.5, 0.0], [1.0, -0.5, 0.5], [0.2, 0.9, -0.7]])  # 3 points in 3 dimensions


def bright_first(images, targets):
    """Images whose first coordinate is above 0.7: their scores fail (NaN)."""
    return images.reshape(len(images), -1)[:, 0] > 0.7


@pytest.mark.numerics
@pytest.mark.parametrize(
    "algorithm,sampler,budget",
    [
        (ZeroOrderSearch(neighbours=3, step_size=0.7), "euler", 70),
        (ZeroOrderSearch(neighbours=2, neighbourhood="cosine", cosine=0.8), "euler-sde", 48),
        (ZeroOrderSearch(neighbours=4, neighbourhood="distance", iterations=2), "euler", 200),
        (FirstOrderSearch(starts=2, learning_rate=0.4), "euler", 200),
        (FirstOrderSearch(starts=3, shell=False), "euler-sde", 300),
    ],
)
def test_searches_run_together_give_the_records_they_get_alone(algorithm, sampler, budget):
    model = BatchRoundedToy(POINTS)  # rounds by the batch size everywhere
    verifier = FailingVerifier(ToyDistanceVerifier(POINTS), bright_first, name="toy-distance")
    targets, seeds = [0, 2, 1, 2, 0], [3, 14, 15, 92, 65]

    def run(ts, ss):
        return with_noises(
            lambda: run_search(model, verifier, algorithm, ts, seeds=ss, budget=budget, steps=4, sampler=sampler)
        )

    together, noises = run(targets, seeds)
    assert sum(c["score"] is None for r in together for c in r.candidates) > 0  # NaN scores are exercised
    for i, (t, s) in enumerate(zip(targets, seeds)):
        (alone,), alone_noises = run([t], [s])
        joint = together[i]
        assert len(joint.candidates) > 3 and joint.nfe_used == alone.nfe_used
        # another batch size: scores, gradients and so the derived noises may differ in their last bits
        # (the tolerance and its reason: tests/_records.py); noises are compared as tensors, not by hash,
        # up to the first candidate at the optimum 0 (the reason: PLATEAU in tests/_records.py)
        upto = same_records(joint.candidates, alone.candidates, noises, alone_noises, search=(i, 0), optimum=0.0)
        best_agrees(joint, alone, upto=upto)
    assert sum(r.best_noise is not None for r in together) >= 3


def test_first_order_last_round_keeps_each_searchs_order_across_its_batches():
    """Two searches, two starts, then 6 plain runs each: run k is start order[k % 2] at k // 2 halvings.

    Search 0's start 1 had a vanishing gradient (restarted from the draw (1, 1), then the draws (1, 2)
    and (1, 3) instead of line points) and scored better than start 0; search 1's starts both moved
    and tie (start 0 first). Rows with a step length and rows without one go to separate batches, in
    an order that keeps each search's runs in run order.
    """
    p = run_of((0, 0), (7, 8), shape=(1, 4, 4), steps=4, budget=32 + 6 * 4)
    rate = 0.2
    algorithm = FirstOrderSearch(starts=2, learning_rate=rate)
    state = algorithm.init(p)
    (grad_jobs,) = algorithm.ask(state)
    assert grad_jobs.owner.tolist() == [0, 0, 1, 1] and grad_jobs.info["start"] == [0, 1, 0, 1]
    grad = torch.randn((4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    grad[1] = 0.0  # search 0, start 1: a plateau
    out = outcomes_of(grad_jobs, [-1.0, -0.5, -2.0, -2.0], nfe=4 + 12)  # forward + backward
    out.grad = grad
    algorithm.tell(state, [out])
    batches = algorithm.ask(state)
    assert algorithm.ask(state)[0].x.equal(batches[0].x)  # asking again changes nothing
    assert [len(b) for b in batches] == [5, 5, 1, 1]
    assert [sorted(b.info) for b in batches] == [["role", "start"], ["role", "start", "step"]] * 2
    rows = {0: [], 1: []}  # each search's rows, in the order the driver numbers them
    for b in batches:
        for r, owner in enumerate(b.owner.tolist()):
            info = {k: v[r] for k, v in b.info.items()}
            rows[owner].append((info, b.noise_seed[r] if b.noise_seed else None, b.x[r]))
    seed = {i: p.seeds[i] for i in (0, 1)}
    assert [(info, s) for info, s, _ in rows[0]] == [
        ({"role": "restart", "start": 1}, derive_seed(seed[0], 1, 1)),
        ({"role": "update", "start": 0}, None),
        ({"role": "restart", "start": 1}, derive_seed(seed[0], 1, 2)),
        ({"role": "line", "start": 0, "step": rate / 2}, None),
        ({"role": "restart", "start": 1}, derive_seed(seed[0], 1, 3)),
        ({"role": "line", "start": 0, "step": rate / 4}, None),
    ]
    assert [(info, s) for info, s, _ in rows[1]] == [
        ({"role": "update", "start": 0}, None),
        ({"role": "update", "start": 1}, None),
        ({"role": "line", "start": 0, "step": rate / 2}, None),
        ({"role": "line", "start": 1, "step": rate / 2}, None),
        ({"role": "line", "start": 0, "step": rate / 4}, None),
        ({"role": "line", "start": 1, "step": rate / 4}, None),
    ]
    for k, draw in ((0, 1), (2, 2), (4, 3)):
        assert torch.equal(rows[0][k][2], gaussian((1, 4, 4), derive_seed(seed[0], 1, draw)))
    # a line point: the last iterate moved by rate * 2**-j * sqrt(D) along its unit tangential gradient,
    # then put back on the shell of radius sqrt(D) = 4
    for i, start, k, j in ((0, 0, 3, 1), (0, 0, 5, 2), (1, 1, 3, 1), (1, 0, 4, 2)):
        x, g = grad_jobs.x[2 * i + start].flatten().double(), grad[2 * i + start].flatten().double()
        tangent = g - (g @ x) / (x @ x) * x
        y = x + rate * 0.5**j * 4 * tangent / tangent.norm()
        torch.testing.assert_close(rows[i][k][2].flatten().double(), 4 * y / y.norm(), rtol=1e-5, atol=1e-5)
    algorithm.tell(state, [outcomes_of(b, [0.0] * len(b), nfe=4) for b in batches])
    assert algorithm.ask(state) == [] and state.draws.tolist() == [[1, 4], [1, 1]]
