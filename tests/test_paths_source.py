"""``paths`` against a transcription of its source: Ma et al. 2025, Sec. 3.2 "Search over Paths".

The paper's four steps are written out below as plain loops over one search, one row at a time, with this
package's sampler functions and seeded draws in place of the paper's noises, and held against what
``run_search`` records. The paper scores a branch on "the clean x-prediction" after "one additional
denoising step" (``score="end"``, +1 NFE per branch that ends above sigma 0); ``score="last-step"`` is
this package's cheaper variant (the x0-prediction of the segment's last evaluated step).
"""

from __future__ import annotations

import pytest
import torch
from _algo import run_of

from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import Outcomes, derive_seed, gaussian
from noisesearch.algorithms.paths import PathsSearch
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.samplers import sample_euler, sample_heun, schedule

# The package integrates all branches of a round as one batch, the transcription one row at a time: the
# float32 networks round differently by batch size, so scores (log-probabilities of O(1)) agree to a few
# ULPs, not bit for bit.
TOL = 1e-4
SOLVERS = {"euler": sample_euler, "heun": sample_heun}


def paper_paths(model, verifier, target, seed, *, sampler, score, n, m=2, start=0.75, back=0.25, fwd=0.125, length=2):
    """Sec. 3.2's steps 1-4 for one search on an 8-step schedule; the scores of each batch, as recorded."""
    solve = SOLVERS[sampler]
    cond = model.encode([target])

    def denoise(x, sigma):
        return model.denoise(x, sigma, cond, guidance=1.0)

    def verify(x0):
        return float(verifier(model.decode(x0), [target])[0])

    def integrate(x, sigmas):
        """(end state, x0-prediction of the last evaluated step)."""
        seen = []
        end = solve(denoise, x, sigmas, callback=lambda i, sigma, x, d: seen.append(d))
        return end, seen[-1]

    def top(states, scores):  # the best n, best first, equal scores in asked order
        order = sorted(range(len(scores)), key=lambda k: -scores[k])
        return [states[k] for k in order[:n]]

    # 1. N noises (the draw (0, j)) integrated by the ODE solver to sigma = start
    head = [s for s in schedule(8) if s > start] + [start]
    states, scores = [], []
    for j in range(n):
        end, last = integrate(gaussian(model.noise_shape, derive_seed(seed, 0, j))[None], head)
        states.append(end)
        # the paper scores nothing here; the package's free preview only orders the N states (which draws they get)
        scores.append(verify(denoise(end, start)) if score == "end" and fwd == 0 else verify(last))
    recorded = [scores]
    states = top(states, scores)
    sigma, r = start, 1
    while sigma > 0:
        up, down = min(sigma + fwd, 1.0), max(sigma + fwd - back, 0.0)
        segment = [up + (down - up) * i / length for i in range(length + 1)]
        branches, scores = [], []
        for j, x in enumerate(states):
            for b in range(m):
                # 2. the forward process from sigma to up with fresh noise (the draw (r, j, b)): the law of x_up given
                # x_sigma under x_s = (1 - s) x0 + s eps
                a = (1 - up) / (1 - sigma)
                z = gaussian(model.noise_shape, derive_seed(seed, r, j, b))[None]
                # 3. the ODE solver down to `down` in L steps, then the verifier
                end, last = integrate(a * x + (up**2 - (a * sigma) ** 2) ** 0.5 * z, segment)
                if down == 0:
                    scores.append(verify(end))  # a finished sample
                elif score == "end":
                    scores.append(verify(denoise(end, down)))  # "one additional denoising step": clean x-prediction
                else:
                    scores.append(verify(last))
                branches.append(end)
        recorded.append(scores)
        states = top(branches, scores)  # keep the top N; repeat 2-3 until sigma = 0
        sigma, r = down, r + 1
    return recorded  # 4. the best finished sample is the answer (the driver keeps it)


@pytest.mark.numerics
@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("score", ["end", "last-step"])
@pytest.mark.parametrize("forward", [0.125, 0.0])
def test_recorded_scores_are_the_papers_procedure(digits, classifier, sampler, score, forward):
    target, seed, n = 3, 11, 3
    algorithm = PathsSearch(initial=n, score=score, forward=forward)
    (result,) = run_search(digits, classifier, algorithm, [target], seeds=[seed], budget=400, steps=8, sampler=sampler)
    expected = paper_paths(digits, classifier, target, seed, sampler=sampler, score=score, n=n, fwd=forward)
    rounds = [c["info"]["round"] for c in result.candidates if "round" in c["info"]]
    assert max(rounds) + 1 == len(expected)
    for r, scores in enumerate(expected):
        got = [c["score"] for c in result.candidates if c["info"].get("round") == r]
        assert got == pytest.approx(scores, abs=TOL), f"round {r}"


@pytest.mark.parametrize(
    "sampler,score,forward,per_path",
    [
        # initial path: 2 steps to 0.75; six rounds of 2 branches of 2 steps, the last one ending at sigma 0
        ("euler", "last-step", 0.125, 2 + 6 * 2 * 2),
        ("euler", "end", 0.125, 2 + 5 * 2 * (2 + 1) + 2 * 2),  # +1 per branch that ends above sigma 0
        ("heun", "last-step", 0.125, 4 + 5 * 2 * 4 + 2 * 3),  # Heun: 2 per step, 1 for the step to sigma 0
        ("heun", "end", 0.125, 4 + 5 * 2 * (4 + 1) + 2 * 3),
        # forward 0: three rounds, each starting where the last ended; the end-state evaluation is paid once
        ("euler", "end", 0.0, (2 + 1) + 2 * 2 * (2 + 1 - 1) + 2 * (2 - 1)),
        ("euler", "last-step", 0.0, 2 + 3 * 2 * 2),
        ("heun", "end", 0.0, (4 + 1) + 2 * 2 * (4 + 1 - 1) + 2 * (3 - 1)),
        ("euler-sde", "end", 0.0, (2 + 1) + 2 * 2 * (2 + 1 - 1) + 2 * (2 - 1)),  # branches differ by their step noises
        ("euler-sde", "end", 0.125, 2 + 5 * 2 * (2 + 1) + 2 * 2),
    ],
)
def test_nfe_is_exact_and_the_plan_uses_it(digits, classifier, sampler, score, forward, per_path):
    algorithm = PathsSearch(score=score, forward=forward)
    full = 15 if sampler == "heun" else 8  # one full extra candidate
    budget = 2 * per_path + full + 1
    state = algorithm.init(run_of(budget=budget, shape=(1, 8, 8), steps=8, sampler=sampler))
    assert (state.initial, state.extra) == (2, 1)
    rows = []
    hook = digits.net.register_forward_pre_hook(lambda mod, args: rows.append(len(args[0])))
    try:
        (r,) = run_search(digits, classifier, algorithm, [5], seeds=[0], budget=budget, steps=8, sampler=sampler)
    finally:
        hook.remove()
    assert sum(rows) == r.nfe_used == sum(c["nfe"] for c in r.candidates) == 2 * per_path + full
    with pytest.raises(UserError, match=rf"give --budget >= {per_path} "):
        algorithm.init(run_of(budget=per_path - 1, shape=(1, 8, 8), steps=8, sampler=sampler))


def outcomes(jobs, scores, x, denoised) -> Outcomes:
    return Outcomes(jobs, x, denoised, x, torch.as_tensor(scores), 1, torch.arange(len(jobs)))


def test_end_scoring_asks_the_end_state_and_passes_it_on_only_where_the_state_is_unchanged():
    """``score_end`` on every branch batch that ends above 0; with forward 0 also on the initial paths, and the
    kept states' end-state x0-predictions (not their states) go on as ``denoised``, best first."""
    for forward, head_end in ((0.125, False), (0.0, True)):
        algorithm = PathsSearch(initial=2, width=2, score="end", forward=forward)
        state = algorithm.init(run_of((1, 2), (3, 4), shape=(2,), steps=8))
        (head,) = algorithm.ask(state)
        assert head.score_end is head_end and head.denoised is None
        x = torch.arange(8.0).view(4, 2)
        algorithm.tell(state, [outcomes(head, [0.0, 1.0, 2.0, 2.0], x, -x)])
        kept = x[[1, 1, 0, 0, 2, 2, 3, 3]]  # search 0: rows 1, 0; search 1 (a tie): rows 2, 3; 2 branches each
        asked = []
        while (batch := algorithm.ask(state)) and "round" in batch[0].info:
            (jobs,) = batch
            asked.append(jobs)
            assert jobs.score_end is (jobs.sigmas[-1] > 0)
            if forward:
                assert jobs.denoised is None
            else:  # re-noising to the same sigma leaves the states as they were; their x0-predictions go on
                assert torch.equal(jobs.x, kept) and torch.equal(jobs.denoised, -kept)
            x = 10 * len(asked) + torch.arange(16.0).view(8, 2)
            algorithm.tell(state, [outcomes(jobs, torch.arange(8.0), x, -x)])
            kept = x[[3, 3, 2, 2, 7, 7, 6, 6]]  # the best two of each search, best first
        assert len(asked) == (3 if forward == 0 else 6)


def test_last_step_scoring_asks_no_end_state():
    algorithm = PathsSearch(initial=2, forward=0.0, score="last-step")
    state = algorithm.init(run_of(shape=(2,), steps=8))
    while batch := algorithm.ask(state):
        (jobs,) = batch
        assert not jobs.score_end and jobs.denoised is None
        algorithm.tell(state, [outcomes(jobs, torch.zeros(len(jobs)), jobs.x, jobs.x)])


def test_an_off_grid_start_sigma_with_forward_zero_runs(digits, classifier):
    """The start sigma is put on the rounds' grid: a round with forward 0 re-noises from exactly where the initial
    paths ended (else the forward process would be asked to go down in sigma, a crash)."""
    algorithm = PathsSearch(initial=1, start_sigma=0.6000000001234, forward=0.0, score="end")
    (r,) = run_search(digits, classifier, algorithm, [5], seeds=[0], budget=64, steps=8)
    assert r.candidates[1]["sigma_start"] == 0.6 and r.best_image is not None
    assert algorithm.params()["start_sigma"] == 0.6 and PathsSearch(**algorithm.params()).params() == algorithm.params()


def test_score_option():
    """The paper's end-state score is the default; today's free preview is the option "last-step"."""
    assert ALGORITHMS["paths"]().params()["score"] == "end"
    assert PathsSearch(score="end").params()["score"] == "end"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"score": "final"}, r"score must be 'end' \(the paper's\) or 'last-step', got 'final'"),
        ({"start_sigma": "0.5"}, "start sigma must lie strictly between 0 and 1 .*, got '0.5'"),
        ({"start_sigma": 0.9999999999}, "start sigma must lie strictly between 0 and 1"),
        ({"backward": True}, r"backward step must lie in \(0, 1\], got True"),
        ({"forward": "0"}, "forward step must be >= 0 and smaller than the backward step 0.25, got '0'"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(UserError, match=message):
        PathsSearch(**kwargs)
