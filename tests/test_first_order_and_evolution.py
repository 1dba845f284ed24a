"""First-order search (gradient ascent on the noise) and evolution search (CEM on previews)."""

import copy
import math

import pytest
import torch

from noisesearch.algorithms.base import Problem
from noisesearch.algorithms.evolution import EvolutionSearch
from noisesearch.algorithms.first_order import FirstOrderSearch
from noisesearch.digits import nets
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.models.toy import ToyDistanceVerifier, ToyModel
from noisesearch.samplers import sample_euler, schedule


def problem(shape=(1, 8, 8), steps=8, budget=10**6, sampler="euler"):
    return Problem(0, 0, budget, shape, schedule(steps), sampler, 1)


def roles(result):
    return [c["info"]["role"] for c in result.candidates]


class OneGradJob:
    """Asks for one gradient job on the draw (0,) in float64 and keeps its outcome."""

    name = "one-grad-job"

    def params(self):
        return {}

    def init(self, p):
        self.state = {"p": p, "outcome": None}
        return self.state

    def ask(self, state):
        from noisesearch.algorithms.base import Jobs

        if state["outcome"] is not None:
            return []
        p = state["p"]
        return [Jobs(torch.tensor([0]), p.noise([0], [(0,)])[1].double(), p.sigmas, grad=True, backward_cost=3.0)]

    def tell(self, state, outcomes):
        (state["outcome"],) = outcomes


# ---- first-order ---------------------------------------------------------------------------------


def test_driver_gradient_matches_central_differences_in_float64(digits, classifier, monkeypatch):
    """The gradient of a grad job is d score / d noise through 8 Euler steps and the classifier.

    Float64 copies of both networks: central differences with h = 1e-4 have truncation error
    ~h^2 |f'''| and rounding error ~1e-16 / h, both far below the 1e-6 relative tolerance; a wrong
    gradient (another row's, a missing step, the x0-prediction's) is off by order one.
    """
    timestep_features = nets.timestep_features
    monkeypatch.setattr(nets, "timestep_features", lambda s, d: timestep_features(s, d).double())
    model, verifier = copy.deepcopy(digits), copy.deepcopy(classifier)
    model.net.double(), verifier.net.double()
    algorithm = OneGradJob()
    (r,) = run_search(model, verifier, algorithm, [7], seeds=[3], budget=32, steps=8)
    o = algorithm.state["outcome"]
    assert o.grad.dtype == torch.float64 and o.grad.shape == (1, 1, 8, 8)  # one row
    assert r.nfe_used == o.nfe == 8 + 24  # forward + ceil(3 * forward)

    cond = model.encode([7])

    def score(x):
        with torch.no_grad():
            x_end = sample_euler(lambda y, s: model.denoise(y, s, cond, guidance=1.0), x[None], schedule(8))
            return float(verifier.score(model.decode(x_end), [7])[0])

    x, grad = o.jobs.x[0], o.grad[0]
    assert score(x) == pytest.approx(float(o.score[0]), rel=1e-6)
    gen, h = torch.Generator().manual_seed(0), 1e-4
    for _ in range(4):
        u = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        u /= u.norm()
        fd = (score(x + h * u) - score(x - h * u)) / (2 * h)
        assert float((grad * u).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    "budget,starts,guidance", [(32, 1, 1.0), (40, 1, 1.0), (100, 2, 1.0), (257, 1, 1.0), (300, 3, 2.0)]
)
def test_first_order_budget_is_exact_with_backward_charges(digits, classifier, budget, starts, guidance):
    results = run_search(
        digits,
        classifier,
        FirstOrderSearch(starts=starts),
        [1, 2],
        seeds=[5, 6],
        budget=budget,
        steps=8,
        guidance=guidance,
    )
    forward = 8 * (1 if guidance == 1.0 else 2)
    for r in results:
        assert r.nfe_used <= budget and budget - r.nfe_used < forward  # within one plain candidate
        assert r.nfe_used == sum(c["nfe"] for c in r.candidates)
        for c in r.candidates:
            assert c["nfe"] == (forward + 3 * forward if c["info"]["role"] == "gradient" else forward)
        assert roles(r)[:starts] == ["gradient"] * starts
        assert r.best_score == max(c["score"] for c in r.candidates)


def test_backward_cost_is_rounded_up_per_candidate(digits, classifier):
    (r,) = run_search(digits, classifier, FirstOrderSearch(backward_cost=2.5), [4], seeds=[0], budget=60, steps=5)
    assert [c["nfe"] for c in r.candidates] == [5 + 13, 5 + 13, 5 + 13, 5]  # 5 + ceil(12.5); then one plain run
    assert r.nfe_used == 59


def test_first_order_improves_on_its_start_and_is_reproducible(digits, classifier):
    targets, seeds = list(range(10)), list(range(10))

    def run(s):
        return run_search(digits, classifier, FirstOrderSearch(), targets, seeds=s, budget=128, steps=8)

    first, again, other = run(seeds), run(seeds), run([s + 100 for s in seeds])
    for a, b in zip(first, again):
        assert a.candidates == b.candidates and torch.equal(a.best_noise, b.best_noise)  # same seed, same process
    assert [c["score"] for c in first[0].candidates] != [c["score"] for c in other[0].candidates]
    start = sum(r.candidates[0]["score"] for r in first) / 10  # the unsearched draw (0,) of each seed
    best = sum(r.best_score for r in first) / 10
    assert best > start + 0.05  # gradient steps raise log p(target | image) well above the start


def graded(jobs, scores, grad):
    """Outcomes of a gradient batch with the given scores and gradients (n, *noise_shape)."""
    from _algo import outcomes_of

    out = outcomes_of(jobs, scores)
    out.grad = grad
    return out


def test_update_turns_the_noise_by_atan_of_the_learning_rate_on_the_shell():
    from _algo import run_of

    p = run_of((0,), (0,), shape=(1, 8, 8), steps=4)
    algorithm = FirstOrderSearch(learning_rate=0.4)
    state = algorithm.init(p)
    (jobs,) = algorithm.ask(state)
    grad = torch.randn(p.noise_shape, generator=torch.Generator().manual_seed(1))
    algorithm.tell(state, [graded(jobs, [-1.0], grad[None])])
    (jobs,) = algorithm.ask(state)  # now on the shell
    assert float(jobs.x[0].norm()) == pytest.approx(8.0, rel=1e-5)  # sqrt(64)
    grad = torch.randn(p.noise_shape, generator=torch.Generator().manual_seed(2))
    algorithm.tell(state, [graded(jobs, [-1.0], grad[None])])
    (nxt,) = algorithm.ask(state)
    x, y, g = jobs.x[0].flatten(), nxt.x[0].flatten(), grad.flatten()
    assert float(y.norm()) == pytest.approx(8.0, rel=1e-5)
    angle = math.acos(float(x @ y / (x.norm() * y.norm())))
    assert angle == pytest.approx(math.atan(0.4), rel=1e-4)
    tangent = g - (g @ x) / (x @ x) * x
    move = y - (y @ x) / (x @ x) * x  # the move is all along the tangential gradient
    assert float(move @ tangent) == pytest.approx(float(move.norm() * tangent.norm()), rel=1e-5)
    assert nxt.noise_seed == [None] and int(state.seed[0, 0]) == -1  # -1: no longer a draw


def test_step_noises_stay_fixed_and_a_vanishing_gradient_restarts():
    from _algo import run_of

    p = run_of((0,), (0,), shape=(1, 8, 8), steps=4, sampler="euler-sde")
    algorithm = FirstOrderSearch(starts=2)
    state = algorithm.init(p)
    (jobs,) = algorithm.ask(state)
    grads = torch.stack([torch.ones(p.noise_shape), torch.zeros(p.noise_shape)])  # start 1 sits on a plateau
    algorithm.tell(state, [graded(jobs, [-1.0, -1.0], grads)])
    (nxt,) = algorithm.ask(state)
    assert nxt.info["start"] == [0, 1]
    assert torch.equal(nxt.noises[0], jobs.noises[0]) and not torch.equal(nxt.x[0], jobs.x[0])  # moved
    assert nxt.noise_seed[1] == p.noise([0], [(1, 1)])[0][0]  # restarted from the draw (1, 1)
    assert torch.equal(nxt.noises[1], p.step_noises([0], [(1, 1)], 4)[1][0])  # with that draw's stream


def test_first_order_climbs_a_smooth_toy_to_its_optimum():
    """Ideal denoiser over 21 points in [-1, 1]: after 8 Euler steps the sample is a smooth increasing
    function of the noise, so minus the squared distance to 0.5 has a useful gradient (optimum 0)."""
    model, verifier = ToyModel(torch.linspace(-1, 1, 21)[:, None]), ToyDistanceVerifier(torch.tensor([[0.5]]))
    means, worst = [], []
    for budget in (32, 96, 256):
        results = run_search(
            model,
            verifier,
            FirstOrderSearch(learning_rate=0.5, shell=False),
            [0] * 100,
            seeds=list(range(100)),
            budget=budget,
            steps=8,
        )
        means.append(sum(r.best_score for r in results) / len(results))
        worst.append(min(r.best_score for r in results))
    assert means[0] < means[1] < means[2]
    assert worst[2] > -0.01  # every search within 0.1 of the target


# ---- evolution -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget,sampler,guidance",
    [(20, "euler", 1.0), (40, "euler", 1.0), (257, "euler", 1.0), (300, "heun", 2.0), (100, "euler-ancestral", 1.0)],
)
def test_evolution_budget_generations_and_finals(digits, classifier, budget, sampler, guidance):
    results = run_search(
        digits,
        classifier,
        EvolutionSearch(),
        [3, 8],
        seeds=[0, 1],
        budget=budget,
        steps=8,
        sampler=sampler,
        guidance=guidance,
    )
    per_eval = 1 if guidance == 1.0 else 2
    preview = per_eval * (3 if sampler == "heun" else 2)  # one step to sigma 0.5, then its x0-prediction
    full = per_eval * (15 if sampler == "heun" else 8)
    for r in results:
        previews = [c for c in r.candidates if c["info"]["role"] == "preview"]
        finals = [c for c in r.candidates if c["info"]["role"] == "final"]
        assert len(finals) == 2 and r.candidates[-2:] == finals
        assert {c["sigma_end"] for c in previews} == {0.5} and {c["nfe"] for c in previews} == {preview}
        assert {c["nfe"] for c in finals} == {full}
        assert r.nfe_used <= budget and budget - r.nfe_used < preview  # within one preview
        assert r.nfe_used == sum(c["nfe"] for c in r.candidates) == len(previews) * preview + 2 * full
        generations = [c["info"]["generation"] for c in previews]
        sizes = [generations.count(g) for g in range(generations[-1] + 1)]
        assert all(s == 16 for s in sizes[:-1]) and 0 < sizes[-1] <= 16
        best_previews = sorted((c["score"] for c in previews), reverse=True)[:2]
        assert sorted(c["info"]["preview_score"] for c in finals) == sorted(best_previews)
        assert r.best_score == max(c["score"] for c in finals)  # the answer is the best final


def test_evolution_is_reproducible_and_seed_sensitive(digits, classifier):
    def run(s):
        return run_search(digits, classifier, EvolutionSearch(), [5], seeds=[s], budget=80, steps=8)[0]

    first, again, other = run(0), run(0), run(1)
    assert first.candidates == again.candidates and torch.equal(first.best_noise, again.best_noise)  # same process
    assert [c["noise_sha256"] for c in first.candidates] != [c["noise_sha256"] for c in other.candidates]


def test_evolution_reaches_the_toy_optimum(toy, toy_verifier):
    """On the +-1 toy a standardised 1-d noise is +-1; the preview tells the signs apart."""
    means = []
    for budget in (20, 24, 64):  # 2, 4 and 24 previews before 2 full runs
        results = run_search(
            toy, toy_verifier, EvolutionSearch(), [0] * 200, seeds=list(range(200)), budget=budget, steps=8
        )
        means.append(sum(r.best_score for r in results) / len(results))
    assert means[0] < means[1] < means[2]
    assert means[2] > -1e-3  # a miss scores -4


def evolution_run(shape=(1, 8, 8), steps=8, budget=10**6, sampler="euler", seeds=(0,)):
    """A run of searches with seeds ``seeds`` (target 0) for the evolution tests."""
    from _algo import run_of

    return run_of([0] * len(seeds), seeds, budget=budget, shape=shape, steps=steps, sampler=sampler)


def test_evolution_refits_mean_and_floored_std_on_the_elites():
    from _algo import outcomes_of

    p = evolution_run()
    algorithm = EvolutionSearch(population=8, elites=3, std_floor=0.2)
    state = algorithm.init(p)
    (jobs,) = algorithm.ask(state)
    scores = [0.5, -1.0, 3.0, float("nan"), 2.0, -2.0, 1.0, 0.0]
    algorithm.tell(state, [outcomes_of(jobs, scores)])
    elites = jobs.x[[2, 4, 6]]
    # default float32 tolerance: the same mean/std in another order
    torch.testing.assert_close(state.mean[0], elites.mean(0))
    # default float32 tolerance: reduction order
    torch.testing.assert_close(state.std[0], elites.std(0, unbiased=False).clamp_min(0.2))
    assert state.std.min() == 0.2
    assert state.top_generation.tolist() == [[0, 0]] and state.top_member.tolist() == [[2, 4]]
    (nxt,) = algorithm.ask(state)
    (again,) = algorithm.ask(state)  # ask reads the state, never advances it
    assert torch.equal(again.x, nxt.x) and again.info == nxt.info
    for x in torch.cat([jobs.x, nxt.x]):
        assert abs(float(x.mean())) < 1e-5 and float(x.pow(2).mean()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("fraction", [None, 0.3, 0.6])
def test_low_frequency_mode_moves_only_the_low_band(fraction):
    from _algo import outcomes_of

    shape = (2, 8, 12)
    p = evolution_run(shape)
    algorithm = EvolutionSearch(population=6, elites=2, low_frequency=fraction)
    state = algorithm.init(p)
    (first,) = algorithm.ask(state)
    algorithm.tell(state, [outcomes_of(first, [float(k) for k in range(6)])])
    (second,) = algorithm.ask(state)
    xs = torch.cat([first.x, second.x])  # generation 0 and, after a refit, generation 1
    fy, fx = torch.fft.fftfreq(8), torch.fft.rfftfreq(12)
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()  # (8, 7)
    band = radius <= (fraction or 0.3) * radius.max() + 1e-6
    for x in xs[1:]:
        change = torch.fft.rfft2(x - xs[0]).abs()  # (2, 8, 7)
        assert change[:, band].max() > 0.1
        if fraction is None:
            assert change[:, ~band].max() > 0.1  # the check can fail: here the whole noise moves
        else:
            assert change[:, ~band].max() < 1e-4
        assert abs(float(x.mean())) < 1e-5 and float(x.pow(2).mean()) == pytest.approx(1.0, rel=1e-5)
    if fraction is not None:
        draw = p[0].noise(0, 0)[1]
        standardised = draw - draw.mean()
        torch.testing.assert_close(xs[0], standardised / standardised.pow(2).mean().sqrt())  # the first sample


def test_evolution_finals_use_their_members_step_noises():
    """A member's step noises are its stream (generation, member, STEP_NOISES) of 4 rows (the run's steps):
    its preview takes the first 2 rows, its final run all 4."""
    from _algo import outcomes_of

    from noisesearch.algorithms.base import STEP_NOISES, derive_seed, gaussian

    p = evolution_run(steps=4, sampler="euler-sde", budget=2 * 4 + 8 * 3)  # 8 previews of 3 NFEs: two generations
    algorithm = EvolutionSearch(population=4, elites=2, preview_steps=3)
    state = algorithm.init(p)
    (jobs,) = algorithm.ask(state)
    # a coarse subsample of the run's own 4-step schedule: steps 0, round(4/3), round(8/3)
    assert jobs.sigmas == tuple(p.sigmas[i] for i in (0, 1, 3)) and jobs.score_end
    stream = gaussian((4, 1, 8, 8), derive_seed(0, 0, 1, STEP_NOISES))  # member (0, 1)'s stream, by hand
    assert torch.equal(jobs.noises[1], stream[:2])  # the member's own step noises
    algorithm.tell(state, [outcomes_of(jobs, [float(k == 1) for k in range(4)])])
    while (jobs := algorithm.ask(state)[0]).info["role"][0] == "preview":
        algorithm.tell(state, [outcomes_of(jobs, [-5.0] * len(jobs))])
    assert jobs.info["generation"][0] == 0 and jobs.info["member"][0] == 1
    assert jobs.sigmas == p.sigmas and torch.equal(jobs.noises[0], stream)


@pytest.mark.numerics
def test_evolution_records_are_the_same_with_streams_drawn_step_by_step(digits, classifier, monkeypatch):
    """With the stream cap at 0 a preview draws only the first row of each member's stream: the records
    equal those of streams drawn whole (the finals' streams are one-shot, drawn whole either way)."""
    from _algo import records_at_stream_cap

    def run(algorithm):
        return run_search(
            digits, classifier, algorithm, [2, 5, 8], seeds=[0, 1, 2], budget=128, steps=8, sampler="euler-sde"
        )

    whole, held_reads = records_at_stream_cap(monkeypatch, None, EvolutionSearch(), run)
    stepwise, stepwise_reads = records_at_stream_cap(monkeypatch, 0, EvolutionSearch(), run)
    # (128 - 2 finals x 8) // 2 = 56 previews: generations of 16, 16, 16, 8, then the finals; each asked twice
    assert held_reads == [False] * 10 and stepwise_reads == [True] * 8 + [False] * 2
    assert [len(c) for c in whole] == [58] * 3 and stepwise == whole  # bit for bit: the same batches, the same draws


def test_evolution_records_a_failed_preview_score_as_none():
    """Every preview fails (NaN): the finals are the first members in order, their preview_score None (JSON null)."""
    from _algo import outcomes_of

    p = evolution_run(seeds=(0, 1), budget=2 * 8 + 3 * 2)  # 3 previews of 2 NFEs, then 2 full runs
    algorithm = EvolutionSearch(population=3, elites=1)
    state = algorithm.init(p)
    (jobs,) = algorithm.ask(state)
    assert len(jobs) == 6 and jobs.owner.tolist() == [0, 0, 0, 1, 1, 1]
    algorithm.tell(state, [outcomes_of(jobs, [float("nan")] * 6)])
    (finals,) = algorithm.ask(state)
    assert finals.owner.tolist() == [0, 0, 1, 1] and finals.info["role"] == ["final"] * 4
    assert finals.info["generation"].tolist() == [0] * 4 and finals.info["member"].tolist() == [0, 1, 0, 1]
    assert finals.info["preview_score"] == [None] * 4
    assert torch.equal(finals.x, jobs.x[[0, 1, 3, 4]])
    algorithm.tell(state, [outcomes_of(finals, [0.0] * 4)])
    assert algorithm.ask(state) == []


def search_rows(asked, search):
    """Every batch's rows of search ``search`` in a hand-driven run (``_algo.drive``), as comparable values."""
    rows = []
    for batches in asked:
        for jobs in batches:
            part = jobs.rows((jobs.owner == search).nonzero().flatten())
            info = {k: v.tolist() if isinstance(v, torch.Tensor) else list(v) for k, v in part.info.items()}
            rows.append((part.sigmas, part.sampler, part.score_end, part.noise_seed, info, part.x, part.noises))
    return rows


def same_rows(a, b):
    """The same rows whichever other searches share the batch: plans, seeds and notes equal, step noises (draws
    of each row's own stream) bit for bit, start states (mutations computed over the whole batch, whose
    vectorised loops may round a row by its place in it) within float32 rounding of O(1) values."""
    assert len(a) == len(b)
    for (*plain_a, x_a, noises_a), (*plain_b, x_b, noises_b) in zip(a, b):
        assert plain_a == plain_b
        torch.testing.assert_close(x_a, x_b, rtol=1e-6, atol=1e-6)
        assert (noises_a is None) == (noises_b is None) and (noises_a is None or torch.equal(noises_a, noises_b))


def row_score(jobs):
    """A score from each row alone: its first element rounded to halves (ties), NaN where its second is > 1."""
    flat = jobs.x.flatten(1)
    return torch.where(flat[:, 1] > 1, float("nan"), (2 * flat[:, 0]).round() / 2)


@pytest.mark.numerics
@pytest.mark.parametrize(
    "name,kwargs,sampler",
    [
        ("evolution", {}, "euler"),
        ("evolution", {"low_frequency": 0.5, "final": 3}, "euler"),
        ("evolution", {"population": 5, "elites": 2}, "euler-sde"),
        ("evosearch", {}, "euler"),
        ("evosearch", {"schedule": (0.25, 0.5), "elites": 1}, "euler-sde"),
    ],
)
def test_evolution_searches_in_one_run_get_the_rows_they_get_alone(name, kwargs, sampler):
    """Evolution and EvoSearch: each search of a run of three is asked exactly what it is asked alone."""
    from _algo import drive

    from noisesearch.algorithms import ALGORITHMS

    seeds = (3, 8, 21)
    algorithm = ALGORITHMS[name](**kwargs)
    together = drive(algorithm, evolution_run(budget=120, sampler=sampler, seeds=seeds), row_score)[1]
    scores = torch.cat([row_score(jobs) for batches in together for jobs in batches])
    assert scores.isnan().any() and len(scores.unique()) < len(scores)  # NaN and ties were ranked
    for i, seed in enumerate(seeds):
        alone = drive(algorithm, evolution_run(budget=120, sampler=sampler, seeds=(seed,)), row_score)[1]
        same_rows(search_rows(together, i), search_rows(alone, 0))


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,kwargs,message",
    [
        (FirstOrderSearch, {"learning_rate": 0}, "learning rate must be a positive number, got 0"),
        (FirstOrderSearch, {"learning_rate": float("nan")}, "learning rate must be a positive number, got nan"),
        (FirstOrderSearch, {"starts": 0}, "starts must be a positive integer, got 0"),
        (FirstOrderSearch, {"backward_cost": -1}, "backward cost must be a non-negative number .* got -1"),
        (FirstOrderSearch, {"shell": "yes"}, "shell must be true or false, got 'yes'"),
        (EvolutionSearch, {"elites": 5, "population": 4}, r"elites must be at most the population \(4\), got 5"),
        (EvolutionSearch, {"preview_steps": 0}, "preview steps must be a positive integer, got 0"),
        (EvolutionSearch, {"low_frequency": 1.5}, r"low frequency must be a fraction in \(0, 1\] or unset, got 1.5"),
        (EvolutionSearch, {"low_frequency": 0}, r"low frequency must be a fraction in \(0, 1\] or unset, got 0"),
        (EvolutionSearch, {"std_floor": 0}, "std floor must be a positive number, got 0"),
        (EvolutionSearch, {"final": 0}, "final must be a positive integer, got 0"),
    ],
)
def test_bad_parameters_give_one_line_errors(factory, kwargs, message):
    with pytest.raises(UserError, match=f"^{message}$"):
        factory(**kwargs)


@pytest.mark.parametrize(
    "algorithm,budget,needed",
    [
        (FirstOrderSearch(), 31, 32),
        (FirstOrderSearch(starts=2), 63, 64),
        (EvolutionSearch(), 19, 20),
    ],
)
def test_budget_below_one_round_names_the_smallest_budget(digits, classifier, algorithm, budget, needed):
    with pytest.raises(UserError, match=rf"^budget {budget} is smaller than .* give --budget >= {needed} or fewer"):
        run_search(digits, classifier, algorithm, [1], seeds=[0], budget=budget, steps=8)
    run_search(digits, classifier, algorithm, [1], seeds=[0], budget=needed, steps=8)


@pytest.mark.parametrize(
    "kwargs,shape,steps,message",
    [
        ({"preview_steps": 4}, (1, 8, 8), 4, "preview steps must be fewer than the run's 4 steps, got 4"),
        ({"low_frequency": 0.5}, (1,), 8, r"low frequency needs a noise with 2 spatial dimensions, got .* \(1,\)"),
        ({"low_frequency": 0.05}, (1, 8, 8), 8, "low frequency 0.05 keeps only the mean"),
    ],
)
def test_evolution_refuses_settings_the_problem_cannot_take(kwargs, shape, steps, message):
    with pytest.raises(UserError, match=message):
        EvolutionSearch(**kwargs).init(evolution_run(shape, steps))


def test_evolution_previews_follow_the_run_schedule_of_vp_models():
    """A VP model's schedule starts below sigma = 1; previews start where it does (start_scale applies)."""
    from noisesearch.algorithms.base import Problems

    vp_sigmas = (0.93, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.02, 0.0)
    p = Problems([0], [0], 200, (1, 8, 8), vp_sigmas, "euler", 1)
    state = EvolutionSearch(preview_steps=2).init(p)
    assert state.preview_sigmas == (0.93, 0.2)
