"""``zero-order`` against a transcription of the paper's author's code (tt-scale-flux).

Ma et al. 2025 describe zero-order search with a neighbourhood ``{y : d(y, n) = lambda}`` for "some distance
metric"; the paper's first author wrote the neighbour generator of sayakpaul/tt-scale-flux (``utils.py``
``generate_neighbors``, "Courtesy: Willis Ma"), whose zero-order loop is ``main.py`` ``main`` (rounds, restart)
and ``sample`` (scoring, the improvement test). Both are written out below as plain code over one search, with
this package's seeded draws in place of ``get_noises``'s random seeds and ``generate_neighbors``' numpy draws,
and held against what the algorithm asks for.
"""

from __future__ import annotations

import math

import pytest
import torch
from _algo import drive, run_of
from typer.testing import CliRunner

from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import derive_seed, gaussian
from noisesearch.algorithms.zero_order import ZeroOrderSearch, make_neighbours
from noisesearch.cli import app
from noisesearch.driver import run_search
from noisesearch.errors import UserError

# Neighbours are computed in float64 and stored in float32, by the package for a batch of rows and here one row
# at a time: the float64 sums may round differently, which can move a float32 result of size ~3 by one ULP (2.4e-7).
TOL = dict(rtol=0, atol=1e-6)

SHAPE = (2, 4)  # a small noise, so that a neighbour at cosine 0.95 often fails to improve (restarts happen)


# --- the transcription -----------------------------------------------------------------------------------


def reference_neighbour(x: torch.Tensor, v: torch.Tensor, threshold: float) -> torch.Tensor:
    """``generate_neighbors`` for one neighbour of the noise ``x`` made from the standard normal draw ``v``:
    ``x_norm * (threshold * u + sqrt(1 - threshold**2) * w)``, ``u = x / |x|`` and ``w`` the normalised part of
    ``v`` orthogonal to ``u``, in float64, cast back to ``x``'s dtype."""
    flat = x.flatten().double()
    norm = flat.norm()
    u = flat / norm.clamp_min(1e-12)
    w = v.flatten().double()
    w = w - (w @ u) * u
    w = w / w.norm().clamp_min(1e-12)  # F.normalize(dim=-1)
    return (norm * (threshold * u + math.sqrt(1 - threshold**2) * w)).reshape(x.shape).to(x.dtype)


def reference_rounds(seed: int, rounds: int, num_neighbors: int, threshold: float, score) -> list[list[torch.Tensor]]:
    """``main.py``'s zero-order loop for one prompt: the noises each round renders and scores, in order.

    Round r scores its base noise and ``num_neighbors`` neighbours of it (``torch.cat([base_noise, neighbors])``).
    ``sample`` sets ``neighbors_improvement = any(score > first_score)``; if so, the next base noise is the best
    of the round (a stable descending sort: the first best), else a freshly drawn noise ("Regenerating base
    noise because the previous round was rejected"). Draws: the first base noise is ``(0,)``, the one drawn after
    round r fails is ``(r,)``, and the neighbours of round r come from ``(r, j)``.
    """
    base = gaussian(SHAPE, derive_seed(seed, 0))
    evaluated = []
    for r in range(1, rounds + 1):
        neighbours = [
            reference_neighbour(base, gaussian(SHAPE, derive_seed(seed, r, j)), threshold) for j in range(num_neighbors)
        ]
        noises = [base, *neighbours]
        scores = [score(x) for x in noises]
        evaluated.append(noises)
        if any(s > scores[0] for s in scores[1:]):
            ranked = sorted(range(len(noises)), key=lambda k: scores[k], reverse=True)
            base = noises[ranked[0]]
        else:
            base = gaussian(SHAPE, derive_seed(seed, r))
    return evaluated


def toward(point: torch.Tensor):
    """A verifier of the noise alone: its cosine to ``point`` (continuous, so no ties decide a round)."""

    def score(x: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(x.flatten().double(), point.flatten().double(), dim=0))

    return score


POINTS = [torch.linspace(-1.0, 1.0, 8).reshape(SHAPE), torch.tensor([[3.0, -1, 0, 2], [0, 1, -2, 1]])]


def rows_scorer(points):
    """``score(jobs)`` for ``drive``: each row scored toward its search's point (the search's target)."""

    def score(jobs):
        return [toward(points[int(o)])(x) for o, x in zip(jobs.owner, jobs.x)]

    return score


def per_round(asked) -> list[list[torch.Tensor]]:
    """The start states of each ``ask`` of a one-search run, its batches in order."""
    return [[x for jobs in batches for x in jobs.x] for batches in asked]


def moves_and_restarts(evaluated, score) -> tuple[int, int]:
    """How many rounds of a transcribed run moved the base noise and how many rejected it."""
    moved = sum(any(score(x) > score(r[0]) for x in r[1:]) for r in evaluated)
    return moved, len(evaluated) - moved


# --- the neighbourhood ------------------------------------------------------------------------------------


@pytest.mark.numerics
def test_cosine_neighbours_are_generate_neighbors():
    """Hand-built pivots (a batch of two, 2 x 3 each) and draws; the reference's formula row by row."""
    pivot = torch.tensor([[[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], [[0.5, 0.5, 0.5], [-2.0, 0.0, 1.0]]])
    eps = torch.tensor([[[0.3, -1.0, 2.0], [1.0, 0.0, -0.5]], [[-1.0, 2.0, 0.1], [0.0, 1.5, 0.2]]])
    for threshold in (0.95, 0.3):
        got = make_neighbours(pivot, eps, "cosine", 1.0, threshold)
        for row in range(2):
            torch.testing.assert_close(got[row], reference_neighbour(pivot[row], eps[row], threshold), **TOL)


def test_euclidean_is_the_new_name_of_the_fixed_distance_neighbourhood():
    pivot, eps = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]])
    # the neighbour n + lambda * eps / |eps| = (3, 4) + 2.5 * (0, 1), exactly
    assert make_neighbours(pivot, eps, "euclidean", 2.5, 0.95).tolist() == [[3.0, 6.5]]
    assert ZeroOrderSearch(neighbourhood="euclidean").params() == ZeroOrderSearch(neighbourhood="distance").params()


# --- the loop ---------------------------------------------------------------------------------------------


@pytest.mark.numerics
def test_restart_and_rescore_run_the_references_rounds():
    """With ``restart`` and ``rescore_pivot`` every round is the reference's: the same noises, in order."""
    seed, rounds, n = 5, 12, 3
    score = toward(POINTS[0])
    want = reference_rounds(seed, rounds, n, 0.95, score)
    moved, restarted = moves_and_restarts(want, score)
    assert moved >= 2 and restarted >= 2, "both the move and the restart must happen, else a rule is untested"
    algorithm = ZeroOrderSearch(
        neighbours=n, neighbourhood="cosine", restart=True, rescore_pivot=True, iterations=rounds
    )
    _, asked = drive(algorithm, run_of([0], [seed], steps=1, shape=SHAPE), rows_scorer(POINTS))
    got = per_round(asked)
    assert [len(r) for r in got] == [len(r) for r in want] == [n + 1] * rounds  # N + 1 runs a round, no round 0
    for got_round, want_round in zip(got, want):
        for x, y in zip(got_round, want_round):
            torch.testing.assert_close(x, y, **TOL)


@pytest.mark.numerics
def test_restart_without_rescoring_runs_the_same_noises_less_the_repeated_pivots():
    """Without ``rescore_pivot`` a pivot runs once: the reference's noises, less each round's carried base noise
    (the best of the round before, already scored), in the same order."""
    seed, rounds, n = 4, 10, 4
    score = toward(POINTS[1])
    want = reference_rounds(seed, rounds, n, 0.9, score)
    assert min(moves_and_restarts(want, score)) >= 2, "both the move and the restart must happen"
    carried = [False] + [any(score(x) > score(r[0]) for x in r[1:]) for r in want[:-1]]
    once = [x for r, c in zip(want, carried) for x in (r[1:] if c else r)]
    algorithm = ZeroOrderSearch(
        neighbours=n, neighbourhood="cosine", cosine=0.9, restart=True, rescore_pivot=False, iterations=rounds
    )
    _, asked = drive(algorithm, run_of([1], [seed], steps=1, shape=SHAPE), rows_scorer([POINTS[1]]))
    got = [x for r in per_round(asked) for x in r]
    assert len(got) == len(once)
    for x, y in zip(got, once):
        torch.testing.assert_close(x, y, **TOL)


def test_without_restart_a_rejected_round_keeps_the_pivot():
    """The option off (the current default): the next round's neighbours are around the same pivot."""
    seed, n = 5, 3
    algorithm = ZeroOrderSearch(neighbours=n, neighbourhood="cosine", restart=False, rescore_pivot=False, iterations=8)
    _, asked = drive(algorithm, run_of([0], [seed], steps=1, shape=SHAPE), rows_scorer(POINTS))
    rounds = per_round(asked)
    assert all(len(r) == n for r in rounds[1:])  # never a fresh pivot
    score, pivot, stayed = toward(POINTS[0]), rounds[0][0], 0
    for it, noises in enumerate(rounds[1:], start=1):
        for j, x in enumerate(noises):
            eps = gaussian(SHAPE, derive_seed(seed, it, j))
            torch.testing.assert_close(x, reference_neighbour(pivot, eps, 0.95), **TOL)
        best = max(noises, key=score)  # max keeps the first best
        stayed += score(best) <= score(pivot)
        pivot = best if score(best) > score(pivot) else pivot
    assert stayed >= 1, "a rejected round must happen, else the rule is untested"


def flat(jobs):
    """A verifier that scores every row alike: every round is a tie, so every round restarts."""
    return [0.0] * len(jobs)


@pytest.mark.parametrize("scorer", ["toward", "flat"])
def test_searches_restart_on_their_own_and_run_together_as_alone(scorer):
    """Two searches restart in different rounds (``toward``: a restart round has one more row) or in the same
    rounds (``flat``): run together, each gets the noises it gets alone, and each spends the whole budget (a
    fresh pivot alone at the end is a candidate)."""
    seeds, budget = [5, 11], 23
    algorithm = ZeroOrderSearch(neighbours=3, neighbourhood="cosine", restart=True, rescore_pivot=False)
    score = rows_scorer(POINTS) if scorer == "toward" else flat
    state, asked = drive(algorithm, run_of([0, 1], seeds, steps=1, shape=SHAPE, budget=budget), score)
    assert state.spent.tolist() == [budget, budget]
    together = [
        [x for batches in asked for jobs in batches for o, x in zip(jobs.owner, jobs.x) if o == i] for i in (0, 1)
    ]
    rows_per_round = {tuple(int((jobs.owner == i).sum()) for i in (0, 1)) for b in asked for jobs in b}
    if scorer == "toward":
        assert any(a != b for a, b in rows_per_round), "the searches must differ in some round"
    for i, seed in enumerate(seeds):
        one = rows_scorer([POINTS[i]]) if scorer == "toward" else flat
        _, alone = drive(algorithm, run_of([i], [seed], steps=1, shape=SHAPE, budget=budget), one)
        xs = [x for batches in alone for jobs in batches for x in jobs.x]
        assert len(xs) == len(together[i]) == budget
        for x, y in zip(together[i], xs):
            torch.testing.assert_close(x, y, **TOL)


def test_a_restarted_search_answers_with_the_best_candidate_ever_scored(digits, classifier):
    """Through the driver: records of fresh pivots and of the neighbours scored with them, and the answer is
    the best of every candidate (a restart drops the chain, not its best)."""
    algorithm = ZeroOrderSearch(neighbours=2, neighbourhood="cosine", cosine=0.99, restart=True, rescore_pivot=False)
    runs = run_search(digits, classifier, algorithm, [3, 8], seeds=[0, 1], budget=8 * 30, steps=8)
    restarts = 0
    for r in runs:
        records = list(r.candidates)
        assert r.nfe_used == 240 and len(records) == 30
        scores = [c["score"] for c in records]
        assert r.best_score == max(scores) and r.best_index == scores.index(max(scores))
        for c in records:
            if c["info"]["role"] == "pivot" and c["info"]["iteration"] > 0:  # drawn after round t - 1 failed
                restarts += 1
                assert c["noise_seed"] == derive_seed(r.seed, c["info"]["iteration"] - 1)
                same_round = [d for d in records if d["info"]["iteration"] == c["info"]["iteration"]]
                assert all(d["info"]["pivot"] is None for d in same_round if d["info"]["role"] == "neighbour")
    assert restarts >= 1, "a restart must happen, else the records are untested"


def test_rescore_pivot_charges_the_pivot_every_round():
    n, budget = 3, 4 * 5  # rounds of N + 1 = 4 runs
    algorithm = ZeroOrderSearch(neighbours=n, neighbourhood="cosine", restart=False, rescore_pivot=True)
    state, asked = drive(algorithm, run_of([0], [2], steps=1, shape=SHAPE, budget=budget), rows_scorer(POINTS))
    assert [[len(jobs) for jobs in batches] for batches in asked] == [[1, n]] * 5  # the first pivot with its neighbours
    assert int(state.spent[0]) == budget
    score, pivot = toward(POINTS[0]), asked[0][0].x[0]
    for before, now in zip(asked, asked[1:]):  # the pivot re-run is the one kept: the best so far or the same
        best = max(before[1].x, key=score)
        pivot = best if score(best) > score(pivot) else pivot
        assert torch.equal(now[0].x[0], pivot) and now[0].info["role"] == ["pivot"]
        # recorded by its seed while it is the first draw, by its hash once a neighbour took its place
        first = torch.equal(pivot, asked[0][0].x[0])
        assert now[0].noise_seed == [derive_seed(2, 0) if first else None]
    assert not torch.equal(pivot, asked[0][0].x[0]), "the pivot must move, else the records are untested"


def test_a_flat_verifier_restarts_every_round_and_the_last_fresh_pivot_runs_alone():
    """A tie is no improvement (``>`` in ``sample``): every round restarts. Budget 1 + 3 + 4 + 1: round 0's
    pivot, 3 neighbours, a fresh pivot with 3 neighbours, and a last fresh pivot that the budget pays for alone."""
    algorithm = ZeroOrderSearch(neighbours=3, neighbourhood="cosine", restart=True, rescore_pivot=False)
    state, asked = drive(algorithm, run_of([0], [7], steps=1, shape=SHAPE, budget=9), flat)
    assert [[(jobs.info["role"][0], len(jobs)) for jobs in batches] for batches in asked] == [
        [("pivot", 1)],
        [("neighbour", 3)],
        [("pivot", 1), ("neighbour", 3)],
        [("pivot", 1)],
    ]
    assert [b[0].noise_seed for b in (asked[0], asked[2], asked[3])] == [[derive_seed(7, t)] for t in (0, 1, 2)]
    assert int(state.spent[0]) == 9
    # without restart and with rescore_pivot, the first draw stays the pivot and is re-run, recorded by its seed
    algorithm = ZeroOrderSearch(neighbours=3, neighbourhood="cosine", restart=False, rescore_pivot=True)
    _, asked = drive(algorithm, run_of([0], [7], steps=1, shape=SHAPE, budget=12), flat)
    assert [b[0].noise_seed for b in asked] == [[derive_seed(7, 0)]] * 3
    # one run left after three rounds of 4: a neighbour takes it (a re-run of the kept pivot alone learns nothing)
    state, asked = drive(algorithm, run_of([0], [7], steps=1, shape=SHAPE, budget=13), flat)
    assert [[(jobs.info["role"][0], len(jobs)) for jobs in b] for b in asked][3:] == [[("neighbour", 1)]]
    assert int(state.spent[0]) == 13


def test_with_a_stochastic_sampler_a_fresh_pivot_brings_its_own_step_noises():
    """Every candidate runs with its pivot's per-step noises: after a restart, those of the new draw ``(t,)``."""
    problems = run_of([0], [7], steps=3, shape=SHAPE, budget=10**6, sampler="euler-sde")
    algorithm = ZeroOrderSearch(neighbours=2, neighbourhood="cosine", restart=True, rescore_pivot=False, iterations=3)
    _, asked = drive(algorithm, problems, flat)
    for t, batches in enumerate(asked):
        stream = problems.step_noises([0], [(t - 1 if t else 0,)], 3)[1][0]  # the pivot of round t: (0,), then (t - 1,)
        for jobs in batches:
            assert jobs.noises is not None
            for row in jobs.noises:
                assert torch.equal(row, stream)


def test_a_rescored_pivot_is_beaten_on_its_new_score():
    """``sample`` compares the neighbours with the pivot's score of this round (``first_score = f(results[0])``):
    with a verifier whose scores vary between calls, a neighbour below the pivot's first score but above its new
    one moves the pivot. Without ``rescore_pivot`` the kept score decides, and the pivot stays."""
    from _algo import outcomes_of

    def second_round_pivot(rescore: bool) -> tuple[torch.Tensor, torch.Tensor]:
        algorithm = ZeroOrderSearch(
            neighbours=2, neighbourhood="cosine", restart=False, rescore_pivot=rescore, iterations=2
        )
        state = algorithm.init(run_of([0], [3], steps=1, shape=SHAPE))
        rounds = [[0.5, 0.1, 0.2], [0.0, 0.3, 0.1]]  # the pivot scores 0.5, then 0.0 (if it is run again)
        if not rescore:
            rounds = [[0.5], [0.1, 0.2], [0.3, 0.1]]
        for scores in rounds:
            batches = algorithm.ask(state)
            taken = iter(scores)
            algorithm.tell(state, [outcomes_of(jobs, [next(taken) for _ in range(len(jobs))]) for jobs in batches])
            last = batches
        assert state.pivot is not None
        return state.pivot[0], last[-1].x[0]

    pivot, first_neighbour = second_round_pivot(rescore=True)
    assert torch.equal(pivot, first_neighbour)  # 0.3 beats the pivot's new 0.0
    pivot, first_neighbour = second_round_pivot(rescore=False)
    assert not torch.equal(pivot, first_neighbour)  # 0.3 does not beat the kept 0.5


# --- parameters -------------------------------------------------------------------------------------------


def test_the_new_options_are_checked_and_recorded():
    for kwargs, message in (
        ({"restart": "yes"}, "restart must be true or false, got 'yes'"),
        ({"rescore_pivot": 1}, "rescore_pivot must be true or false, got 1"),
    ):
        with pytest.raises(UserError, match=message):
            ZeroOrderSearch(**kwargs)
    with pytest.raises(UserError, match="^unknown neighbourhood 'ball'; accepted: ") as refused:
        ZeroOrderSearch(neighbourhood="ball")
    assert all(name in str(refused.value) for name in ("mix", "cosine", "euclidean", "distance"))
    with pytest.raises(
        UserError, match=r"needs noises of at least 2 elements, got \(1,\); use the neighbourhood 'mix'"
    ):
        ZeroOrderSearch(neighbourhood="cosine").init(run_of(shape=(1,)))
    on = ZeroOrderSearch(restart=True, rescore_pivot=True, neighbourhood="euclidean")
    assert on.params()["restart"] is True and on.params()["rescore_pivot"] is True
    assert ALGORITHMS["zero-order"](**on.params()).params() == on.params()


def test_a_bad_restart_value_on_the_command_line_is_one_error_line(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["generate", "--target", "7", "--budget", "64", "--steps", "8", "--algorithm", "zero-order"]
        + ["--param", "restart=maybe", "--out", str(out)],
    )
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "restart must be true or false, got 'maybe'" in line
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


def test_the_defaults_are_the_authors():
    """tt-scale-flux's README configuration: threshold 0.95; ``main.py`` restarts on a rejected round."""
    params = ZeroOrderSearch().params()
    assert params["neighbourhood"] == "cosine" and params["cosine"] == 0.95 and params["restart"] is True
    assert params["rescore_pivot"] is False  # documented departure: a deterministic re-run only spends NFEs


def test_the_euclidean_neighbourhood_is_recorded_by_its_name_and_distance_still_accepted():
    """Records name the neighbourhood for what it is (``euclidean``); ``distance``, the older name, means the same."""
    old, new = ZeroOrderSearch(neighbourhood="distance"), ZeroOrderSearch(neighbourhood="euclidean")
    assert old.params()["neighbourhood"] == new.params()["neighbourhood"] == "euclidean"
