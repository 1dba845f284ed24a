"""``smc`` held to its source: the ``FKD`` class of github.com/zacharyhorvitz/Fk-Diffusion-Steering
(text_to_image/fkd_diffusers/fkd_class.py) with FK steering's options (issue 23, brief H7).

``ReferenceFKD`` below writes ``FKD.resample`` out as plain code (its weights, the final-step
correction, the clamp at 1e10, the ESS rule and the resampling grid), with systematic resampling on
the package's seeded uniform in place of ``torch.multinomial``. The algorithm is driven by hand in
lock step with it on hand-built rewards, and every resampling point is compared.
"""

from __future__ import annotations

import math

import pytest
import torch
from _algo import outcomes_of, run_of
from typer.testing import CliRunner

from noisesearch.algorithms.smc import SMCSearch, fk_log_weights, normalise
from noisesearch.cli import app
from noisesearch.errors import UserError

CLAMP = 1e10  # fkd_class.py: torch.clamp(w, 0, 1e10)
NAMES = {"difference": "diff", "max": "max", "sum": "add"}  # noisesearch's potential -> the reference's


def reference_grid(steps: int, every: int, t_start: int, t_end: int | None) -> list[int]:
    """``np.append(np.arange(t_start, t_end + 1, every), time_steps - 1)`` (fkd_class.py), as the step
    indices that occur (launch_eval_runs.py sets ``t_end`` to the step count when it is not given)."""
    end = steps if t_end is None else t_end
    points = []
    value = t_start
    while value < end + 1:
        points.append(value)
        value += every
    points.append(steps - 1)
    return sorted({p for p in points if 0 <= p < steps})


def systematic(w: list[float], u: float) -> list[int]:
    """Systematic resampling of unnormalised weights ``w`` with the uniform ``u`` (the package's draw)."""
    k, total = len(w), sum(w)
    cdf, acc = [], 0.0
    for v in w:
        acc += v / total
        cdf.append(acc)
    out = []
    for m in range(k):
        position = (u + m) / k
        margin = min(abs(position - c) for c in cdf)
        assert margin > 1e-9, "a position on a slice boundary: the hand rewards are ill-posed for the comparison"
        out.append(min(sum(1 for c in cdf if c <= position), k - 1))
    return out


class ReferenceFKD:
    """``FKD`` of fkd_class.py written out: ``population_rs`` starts at ``reward_min_value``,
    ``product_of_potentials`` at 1; ``resample`` returns what one call decides (None off the grid)."""

    def __init__(self, *, potential, lmbda, k, adaptive, every, t_start, t_end, steps, reward_min):
        self.kind, self.lmbda, self.k, self.adaptive, self.steps = NAMES[potential], lmbda, k, adaptive, steps
        self.grid = reference_grid(steps, every, t_start, t_end)
        self.population_rs = [reward_min] * k
        self.product_of_potentials = [1.0] * k

    def resample(self, i: int, rewards: list[float], u: float) -> dict | None:
        if i not in self.grid:
            return None
        rs = list(rewards)
        if self.kind == "max":
            rs = [max(r, c) for r, c in zip(rs, self.population_rs)]
            w = [math.exp(self.lmbda * r) for r in rs]
        elif self.kind == "add":
            rs = [r + c for r, c in zip(rs, self.population_rs)]
            w = [math.exp(self.lmbda * r) for r in rs]
        else:
            w = [math.exp(self.lmbda * (r - c)) for r, c in zip(rs, self.population_rs)]
        final = i == self.steps - 1
        if final and self.kind in ("max", "add"):
            w = [math.exp(self.lmbda * r) / p for r, p in zip(rs, self.product_of_potentials)]
        clamped = any(v > CLAMP for v in w)
        w = [min(max(v, 0.0), CLAMP) for v in w]
        normalised = [v / sum(w) for v in w]
        ess = None
        if self.adaptive or final:
            ess = 1.0 / sum(v * v for v in normalised)
            resample = ess < 0.5 * self.k
        else:
            resample = True
        indices = None
        if resample:
            indices = systematic(w, u)
            self.product_of_potentials = [self.product_of_potentials[j] * w[j] for j in indices]
            self.population_rs = [rs[j] for j in indices]
        else:
            self.population_rs = rs
        return {"weights": normalised, "ess": ess, "indices": indices, "clamped": clamped}


# hand-built rewards: a trend per lineage (its initial particle a) and a wiggle per slot j and step t, which
# stands for the slot's own step noises (copies of one parent drift apart, as in a real run)
BASE = [0.1, 0.35, 0.3, 0.05, 0.2]
SLOPE = [2.4, 0.4, 1.3, 2.9, 0.0]


def hand_reward(t: int, ancestor: int, slot: int, steps: int, offset: float) -> float:
    return BASE[ancestor] + SLOPE[ancestor] * t / steps + 0.3 * math.sin(1.7 * t + 2.3 * slot) + offset


def run_in_lock_step(options: dict, *, steps: int, k: int, offset: float = 0.0, clamp: bool = True) -> dict:
    """Drive ``SMCSearch(**options)`` by hand on one search, calling ``ReferenceFKD`` with the same
    rewards and the package's uniform at every step; compare each point. Returns counts of what happened."""
    algorithm = SMCSearch(particles=k, max_weight=CLAMP if clamp else None, **options)
    reference = ReferenceFKD(
        potential=options["potential"],
        lmbda=options["lmbda"],
        k=k,
        adaptive=options["adaptive"],
        every=options["resample_every"],
        t_start=options["t_start"],
        t_end=options.get("t_end"),
        steps=steps,
        reward_min=options["reward_min"],
    )
    state = algorithm.init(run_of(steps=steps, sampler="euler-sde"))
    seen = {"points": [], "resampled": 0, "passed": 0, "clamped": 0}
    while batches := algorithm.ask(state):
        (jobs,) = batches
        t = int(jobs.info["step"][0])
        ancestors = jobs.info["ancestor"].tolist()
        scores = [hand_reward(t, a, j, steps, offset) for j, a in enumerate(ancestors)]
        algorithm.tell(state, [outcomes_of(jobs, scores)])  # float32 scores, as the reference's torch.tensor
        events = len(state.events)
        decided = reference.resample(t, torch.tensor(scores).double().tolist(), float(state.uniforms[0, t]))
        assert (decided is not None) == (events > 0 and state.events[-1][0] == t), t
        if decided is None:
            continue
        seen["points"].append(t)
        seen["clamped"] += decided["clamped"]
        _, resampled, ess, indices = state.events[-1]
        # float64 log-space softmax against exp / sum: rounding only (1e-12 is far above it, far below a change)
        assert state.weights[0].tolist() == pytest.approx(decided["weights"], abs=1e-12, rel=1e-9), t
        assert bool(resampled[0]) == (decided["indices"] is not None), t
        if decided["ess"] is not None:
            assert float(ess[0]) == pytest.approx(decided["ess"], rel=1e-9), t
        if decided["indices"] is not None:
            seen["resampled"] += 1
            assert indices[0].tolist() == decided["indices"], t
        else:
            seen["passed"] += 1
        assert state.carried[0].tolist() == pytest.approx(reference.population_rs, rel=1e-12, abs=1e-12), t
        logs = [math.log(p) for p in reference.product_of_potentials]
        assert state.log_product[0].tolist() == pytest.approx(logs, rel=1e-9, abs=1e-9), t  # log of exp: rounding
    assert seen["points"][-1] == steps - 1 and decided is not None  # the final step is a point of both
    expected = decided["indices"] if decided["indices"] is not None else list(range(k))
    assert state.population[0].tolist() == expected  # the final resampling decides the returned population
    return seen


SCENARIOS = {  # name: (options, steps, reward offset)
    # the paper's sample configuration scaled down: every 2 steps in a window, max, adaptive, reward floor 0
    "max-window-adaptive": (
        dict(potential="max", lmbda=10.0, resample_every=2, t_start=2, t_end=6, adaptive=True, reward_min=0.0),
        10,
        0.0,
    ),
    "sum-not-adaptive": (
        dict(potential="sum", lmbda=2.0, resample_every=3, t_start=1, t_end=None, adaptive=False, reward_min=0.0),
        9,
        0.0,
    ),
    "difference-every-step": (
        dict(potential="difference", lmbda=10.0, resample_every=1, t_start=0, adaptive=True, reward_min=0.0),
        7,
        0.0,
    ),
    # rewards lowered by 0.4: some fall below the floor -0.5, which the max then carries
    "max-negative-floor": (
        dict(potential="max", lmbda=6.0, resample_every=1, t_start=1, t_end=5, adaptive=True, reward_min=-0.5),
        8,
        -0.4,
    ),
    "sum-adaptive-late-start": (
        dict(potential="sum", lmbda=3.0, resample_every=2, t_start=3, adaptive=True, reward_min=0.0),
        9,
        0.0,
    ),
}


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_smc_computes_fkd_resample_step_by_step(name):
    options, steps, offset = SCENARIOS[name]
    seen = run_in_lock_step(options, steps=steps, k=5, offset=offset)
    assert seen["points"] == reference_grid(steps, options["resample_every"], options["t_start"], options.get("t_end"))
    assert seen["resampled"] >= 2  # the comparison covers resampling, not only passes


@pytest.mark.numerics
def test_smc_adaptive_comparison_covers_passed_points():
    """difference at lambda 6: points with an ESS above k / 2 are passed (carried values move on, the
    product does not), the others resample."""
    options = dict(potential="difference", lmbda=6.0, resample_every=1, t_start=0, adaptive=True, reward_min=0.0)
    seen = run_in_lock_step(options, steps=8, k=5)
    assert seen["passed"] >= 1 and seen["resampled"] >= 1


@pytest.mark.numerics
def test_smc_clamps_the_weights_where_the_reference_does():
    """Rewards raised by 1.5 and lambda 10 give weights above 1e10 (exp(23.03)): the reference's clamp
    flattens them, and ``max_weight=1e10`` computes the same; without the clamp the numbers differ."""
    options = dict(potential="max", lmbda=10.0, resample_every=2, t_start=2, adaptive=True, reward_min=0.0)
    seen = run_in_lock_step(options, steps=8, k=5, offset=1.5)
    assert seen["clamped"] >= 1 and seen["resampled"] >= 1
    with pytest.raises(AssertionError):
        run_in_lock_step(options, steps=8, k=5, offset=1.5, clamp=False)


def test_clamp_in_log_space_by_hand():
    """lambda 10, rewards (3, 2.5, 0, 0.1): exp(30) and exp(25) both exceed 1e10 and weigh the same."""
    r = torch.tensor([3.0, 2.5, 0.0, 0.1], dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    log_w, _ = fk_log_weights(r, zero, zero, "max", 10.0, final=False, log_max=math.log(1e10))
    w = [min(math.exp(10 * v), 1e10) for v in r.tolist()]
    assert normalise(log_w).tolist() == pytest.approx([v / sum(w) for v in w], rel=1e-12)
    unclamped, _ = fk_log_weights(r, zero, zero, "max", 10.0, final=False)
    assert float(normalise(unclamped)[0] / normalise(unclamped)[1]) == pytest.approx(math.exp(5), rel=1e-9)
    # below the cap the clamp changes nothing
    small, _ = fk_log_weights(r / 2, zero, zero, "max", 10.0, final=False, log_max=math.log(1e10))
    plain, _ = fk_log_weights(r / 2, zero, zero, "max", 10.0, final=False)
    assert torch.equal(small, plain)


@pytest.mark.parametrize(
    "steps,every,t_start,t_end",
    [(100, 20, 20, 80), (100, 5, 5, 30), (100, 1, 0, None), (50, 20, 20, 80), (8, 3, 0, None), (8, 3, 2, 5)]
    + [(10, 4, 9, None), (10, 4, 12, 20), (6, 2, 0, 0)],
)
def test_resampling_grid_is_the_references(steps, every, t_start, t_end):
    """The reference's step index i is noisesearch's step t (the scheduler step, then ``resample`` with
    that step's x0-prediction): the grids are equal index for index."""
    algorithm = SMCSearch(resample_every=every, t_start=t_start, t_end=t_end)
    assert algorithm._points(steps) == reference_grid(steps, every, t_start, t_end)


@pytest.mark.parametrize("steps,every", [(8, 1), (8, 3), (9, 4), (5, 7)])
def test_earlier_grid_and_the_reference_runs_grid(steps, every):
    """``t_start=resample_every - 1`` is noisesearch's earlier grid ((t + 1) % every == 0, and the last
    step); ``t_start=resample_every`` is the grid of the reference's runs (t_start == resample_frequency)."""
    earlier = [t for t in range(steps) if (t + 1) % every == 0 or t == steps - 1]
    assert SMCSearch(resample_every=every, t_start=every - 1)._points(steps) == earlier
    assert SMCSearch(resample_every=every, t_start=every)._points(steps) == reference_grid(steps, every, every, None)


def test_the_defaults_are_fk_steerings_but_reward_min():
    """FK's defaults: the grid starts at t_start = resample_frequency (every reference run), weights are clamped
    at 1e10 (fkd_class.py), the sampler is DDIM eta 1 (euler-ancestral). reward_min stays None (documented:
    with rewards <= 0 a floor of 0 makes ``max`` flat, so it would never resample)."""
    algorithm = SMCSearch(particles=2)
    params = algorithm.params()
    assert params["reward_min"] is None and params["t_start"] is None and params["t_end"] is None
    assert params["max_weight"] == 1e10 and params["default_sampler"] == "euler-ancestral"
    assert algorithm._points(8) == list(range(1, 8))  # t_start None: resample_every = 1
    assert SMCSearch(resample_every=3)._points(8) == [3, 6, 7]
    assert algorithm.init(run_of(sampler="euler")).sampler == "euler-ancestral"


def test_default_sampler_chooses_the_stochastic_sampler():
    """FK's runs sample with DDIM eta 1 (euler-ancestral here); the run's own stochastic sampler and an
    explicit ``sampler`` still come first."""
    fk = SMCSearch(particles=2, default_sampler="euler-ancestral")
    assert fk.init(run_of(sampler="euler")).sampler == "euler-ancestral"
    assert fk.init(run_of(sampler="euler-sde")).sampler == "euler-sde"
    explicit = SMCSearch(particles=2, sampler="euler-sde", default_sampler="euler-ancestral")
    assert explicit.init(run_of(sampler="euler")).sampler == "euler-sde"
    (jobs,) = fk.ask(fk.init(run_of(sampler="euler")))
    assert jobs.sampler == "euler-ancestral"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"t_start": -1}, "t_start must be an integer >= 0 or None, got -1"),
        ({"t_start": 1.5}, "t_start must be an integer >= 0 or None, got 1.5"),
        ({"t_start": True}, "t_start must be an integer >= 0 or None, got True"),
        ({"t_start": "2"}, "t_start must be an integer >= 0 or None, got '2'"),
        ({"t_start": 5, "t_end": 4}, r"t_end must be an integer >= t_start \(5\) or None, got 4"),
        ({"t_end": -1}, "t_end must be an integer >= 0 or None, got -1"),
        ({"t_start": 0, "t_end": 2.5}, r"t_end must be an integer >= t_start \(0\) or None, got 2.5"),
        ({"max_weight": 0}, "max_weight must be a finite number > 0 or None, got 0"),
        ({"max_weight": float("inf")}, "max_weight must be a finite number > 0 or None, got inf"),
        ({"max_weight": True}, "max_weight must be a finite number > 0 or None, got True"),
        ({"default_sampler": "euler"}, r"sampler must be a stochastic sampler \(euler-sde, euler-ancestral\)"),
        ({"default_sampler": None}, "default_sampler must be a stochastic sampler, got None"),
        ({"default_sampler": "rk4"}, "unknown sampler 'rk4'; accepted: "),
    ],
)
def test_new_options_are_refused_in_one_line(kwargs, message):
    with pytest.raises(UserError, match=message) as info:
        SMCSearch(**kwargs)
    assert "\n" not in str(info.value)


def test_new_options_round_trip_through_params():
    import json

    algorithm = SMCSearch(t_start=2, t_end=9, max_weight=1e10, default_sampler="euler-ancestral", reward_min=0.0)
    params = json.loads(json.dumps(algorithm.params()))
    assert SMCSearch(**params).params() == algorithm.params()
    assert params["t_start"] == 2 and params["t_end"] == 9 and params["max_weight"] == 1e10


def test_cli_refuses_a_window_ending_before_it_starts_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    argv = ["generate", "--target", "7", "--budget", "64", "--steps", "8", "--algorithm", "smc"]
    result = CliRunner().invoke(app, [*argv, "-p", "t_start=5", "-p", "t_end=2", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "t_end must be an integer >= t_start (5)" in lines[0]
    assert "Traceback" not in result.output and not out.exists() and list(tmp_path.iterdir()) == []
