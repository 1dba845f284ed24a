"""EvoSearch against its source (github.com/tinnerhrhe/EvoSearch-codes, ``SD2.1/evo_pipe.py``): the
reference's intermediate mutation ``x + std * eps`` ("add-noise"), our level-keeping mutation ("keep-level"),
and the noise level each leaves a state at where it is run from.

The runs here use a point-mass data distribution at a known ``X0``: its exact denoiser returns ``X0`` for
every state, so each state the sampler reaches is exactly (1 - sigma) X0 + sigma * (unit noise) and a
mutated state's noise level is measured directly, as the std of x - (1 - sigma) X0 over sigma.
"""

from __future__ import annotations

import math

import pytest
import torch
from _algo import run_of
from typer.testing import CliRunner

from noisesearch.algorithms.base import Outcomes, derive_seed
from noisesearch.algorithms.evosearch import (
    ETA,
    MUTATION,
    TOURNAMENT,
    EvoSearch,
    add_noise,
    injected_std,
    keep_level,
)
from noisesearch.errors import UserError
from noisesearch.samplers import SAMPLERS, schedule

SIZE = 50_000  # elements per state: a row's noise std is then measured to ~0.3% (1 / sqrt(2 SIZE))
X0 = (
    2 * torch.rand(SIZE, generator=torch.Generator().manual_seed(7)) - 1
)  # the point mass of target 1 (a non-zero signal)


def point_mass_run(algorithm: EvoSearch, problems) -> list:
    """Drive ``algorithm`` on point masses: search i's at ``target_i * X0`` (cut to the state's size). Each row
    runs its sampler with its step noises under the exact denoiser (its x0-prediction is always the point) and
    scores the mean of its start state (every end state is the point: the start tells the rows apart).
    Returns every batch asked, with its outcomes: [(jobs, outcomes)]."""
    state, asked = algorithm.init(problems), []
    while batches := algorithm.ask(state):
        outs = []
        for jobs in batches:
            x0 = torch.tensor([float(problems.targets[i]) for i in jobs.owner])[:, None] * X0[: jobs.x.shape[1]]
            sampler = SAMPLERS[jobs.sampler or problems.sampler].fn
            end = sampler(lambda x, s, point=x0: point, jobs.x, jobs.sigmas, noises=jobs.noises.transpose(0, 1))
            outs.append(Outcomes(jobs, end, x0, end, jobs.x.mean(1), 1, torch.arange(len(jobs))))
        asked += zip(batches, outs)
        algorithm.tell(state, outs)
    return asked


def births(asked) -> dict[int, torch.Tensor]:
    """Each generation k >= 1's states at its birth (its first batch), by k."""
    found: dict[int, torch.Tensor] = {}
    for jobs, _ in asked:
        k = jobs.info["generation"][0]
        if k >= 1 and k not in found:
            found[k] = jobs.x
    return found


def noise_level(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each row's noise std around the point mass, in units of ``sigma``: std(x - (1 - sigma) X0) / sigma."""
    return (x - (1 - sigma) * X0).pow(2).mean(1).sqrt() / sigma


# --- the reference's mutation scale and formula ------------------------------------------------------


def ddim_std_in_flow_units(sigma: float, sigma_next: float, eta: float) -> float:
    """The reference scheduler's ``std_dev_t`` (``SD2.1/scheduling_ddim.py``: ``_get_variance`` and
    ``eta * variance ** 0.5``) for the step between the flow levels ``sigma -> sigma_next``, transcribed in its
    variance-preserving variables and brought to this package's convention.

    A flow state at sigma is the VP state of alphas_cumprod (1 - sigma)^2 / ((1 - sigma)^2 + sigma^2) divided
    by sqrt(alpha) + sqrt(1 - alpha); a std added at the new level is divided likewise."""

    def alpha(s: float) -> float:
        return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)

    alpha_prod_t, alpha_prod_t_prev = alpha(sigma), alpha(sigma_next)
    beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance**0.5
    return std_dev_t / (alpha_prod_t_prev**0.5 + beta_prod_t_prev**0.5)


@pytest.mark.numerics
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_the_mutation_scale_is_the_reference_schedulers_std(eta):
    for steps in (8, 50):
        sigmas = schedule(steps)
        for sigma, sigma_next in zip(sigmas[:-2], sigmas[1:-1]):
            # two float64 formulas for the same quantity: rounding only
            assert injected_std(sigma, sigma_next, eta) == pytest.approx(
                ddim_std_in_flow_units(sigma, sigma_next, eta), rel=1e-9
            )


@pytest.mark.numerics
def test_add_noise_is_the_reference_formula_on_hand_built_tensors():
    """``children = parents + mean_std * torch.randn_like(parents)``, the reference's intermediate mutation."""
    g = torch.Generator().manual_seed(3)
    parents, eps = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    mean_std = ddim_std_in_flow_units(0.625, 0.5, 1.0)
    expected = parents + mean_std * eps
    got = add_noise(parents, eps, injected_std(0.625, 0.5, 1.0))
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)  # float32 values of size ~1: rounding only


@pytest.mark.numerics
def test_a_generation_born_at_an_intermediate_step_is_the_reference_loop():
    """The reference's selection and mutation (``EvolStableDiffusion.evosearch``), written out over the archive
    of e_1 collected from the asked batches, with the package's draws in place of torch's: ``randperm`` permutes
    the archive's ranks (the package draws its tournaments that way), and ``randn_like`` is the member's
    MUTATION draw. The std is that of the step that reached the archived states (sigma_{e-1} -> sigma_e)."""
    seed, elite_size, sizes = 11, 2, [4, 5, 6]
    problems = run_of(seeds=(seed,), shape=(SIZE,), steps=8, sampler="euler-ancestral")
    algorithm = EvoSearch(schedule=(0.0, 0.5), populations=sizes, elites=elite_size, intermediate_mutation="add-noise")
    asked = point_mass_run(algorithm, problems)
    e = 4  # round(0.5 * 8)
    population, rewards = [], []  # the reference's population_list[1], rewards_list[1]
    for jobs, _ in asked:
        if jobs.info["from_step"][0] == e and jobs.info["generation"][0] <= 1:
            population.append(jobs.x)
            finished = next(o for j, o in asked if j.info["generation"] == jobs.info["generation"] and j.final)
            rewards.append(finished.score)
    population, rewards = torch.cat(population), torch.cat(rewards).double()
    assert len(population) == sizes[0] + sizes[1]
    # the reference, transcribed
    elite_rew, elite_indices = torch.topk(rewards, elite_size)
    elites = population[elite_indices]
    order = torch.sort(rewards, descending=True, stable=True).indices  # rank -> archive index
    g = torch.Generator().manual_seed(derive_seed(seed, TOURNAMENT, 1))
    parents = []
    for _ in range(sizes[2] - elite_size):
        candidates = order[torch.randperm(population.shape[0], generator=g)][: int(population.shape[0] * 0.9)]
        winner = candidates[torch.argmax(rewards[candidates])]
        parents.append(population[winner])
    parents = torch.stack(parents)
    mean_std = ddim_std_in_flow_units(problems.sigmas[e - 1], problems.sigmas[e], 1.0)
    noise = torch.stack([problems[0].noise(2, j, MUTATION)[1] for j in range(elite_size, sizes[2])])
    children = torch.cat([elites, parents + mean_std * noise])
    # float32 states of size ~1 built by the same arithmetic in another order: rounding only
    assert torch.allclose(births(asked)[2], children, rtol=0, atol=1e-5)


# --- our level-keeping mutation ----------------------------------------------------------------------


@pytest.mark.numerics
def test_keep_level_is_its_derivation_on_hand_built_tensors():
    """x' = s + sigma (sqrt(1 - b^2) n + b eps) with s = (1 - sigma) d, n = (x - s) / sigma, b = c / sigma."""
    g = torch.Generator().manual_seed(4)
    x, d, eps = (torch.randn(3, 5, generator=g) for _ in range(3))
    for sigma, c in ((0.5, 0.3), (0.25, 0.2), (0.6, 0.0), (0.8, 0.8)):
        s = (1 - sigma) * d
        n = (x - s) / sigma
        b = c / sigma
        expected = s + sigma * (math.sqrt(1 - b**2) * n + b * eps)
        assert torch.allclose(keep_level(x, d, eps, sigma, c), expected, rtol=0, atol=1e-6)  # float32 rounding


def test_keep_level_refuses_a_scale_above_the_level():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="0 <= c <= sigma"):
        keep_level(x, x, x, 0.3, 0.4)


def excess(steps: int, mode: str) -> list[tuple[float, float]]:
    """(expected std ratio under add-noise, measured mean std ratio of the mutated children) at each intermediate
    step of the default schedule, on the point mass: one run per step, evolving at 0 and there, so that every
    parent (of generation 0 or 1, never mutated at an intermediate step) is at its level."""
    result = []
    for f in EvoSearch().schedule[1:]:
        problems = run_of(seeds=(5,), shape=(SIZE,), steps=steps, sampler="euler-ancestral")
        algorithm = EvoSearch(schedule=(0.0, f), populations=(4, 4, 4), elites=1, intermediate_mutation=mode)
        children = births(point_mass_run(algorithm, problems))[2][1:]  # generation 2, its elite left out
        e = round(f * steps)
        sigma = problems.sigmas[e]
        c = injected_std(problems.sigmas[e - 1], sigma, ETA["euler-ancestral"])
        result.append((math.sqrt(1 + (c / sigma) ** 2), noise_level(children, sigma).mean().item()))
    return result


@pytest.mark.numerics
@pytest.mark.parametrize("steps,low,high", [(8, 1.27, 1.31), (50, 1.07, 1.11)])
def test_add_noise_leaves_states_noisier_than_the_level_they_are_run_from(steps, low, high):
    """The issue's numbers: 28-30% more noise std at 8 steps, 7-10% at 50 (default schedule, euler-ancestral)."""
    for expected, measured in excess(steps, "add-noise"):
        assert low < expected < high
        # each row's std is measured to ~0.3%, its parent's too: 1% is far from both 1 and the least excess (7%)
        assert measured == pytest.approx(expected, abs=0.01)


@pytest.mark.numerics
@pytest.mark.parametrize("steps", [8, 50])
def test_keep_level_leaves_states_at_the_level_they_are_run_from(steps):
    for _, measured in excess(steps, "keep-level"):
        assert measured == pytest.approx(1.0, abs=0.01)  # the same sampling error as above; add-noise's excess is >= 7%


@pytest.mark.numerics
def test_keep_level_keeps_every_state_of_every_generation_at_its_level():
    """With the whole default schedule, where add-noise's excess lingers over the next steps and adds up when a
    mutated state is mutated again (to 1.31-1.32 at 8 steps), every row of every batch starts at its level."""
    problems = run_of(seeds=(5,), shape=(SIZE,), steps=8, sampler="euler-ancestral")
    algorithm = EvoSearch(populations=(4, 4, 4, 4, 4), elites=1, intermediate_mutation="keep-level")
    for jobs, _ in point_mass_run(algorithm, problems):
        sigma = jobs.sigmas[0]
        level = jobs.x.std(1) if sigma == 1 else noise_level(jobs.x, sigma)
        assert torch.allclose(level, torch.ones(len(jobs)), rtol=0, atol=0.015)  # ~0.3% sampling error per row


def test_keep_level_searches_in_one_run_get_the_rows_they_get_alone():
    """The archived x0-predictions carry the search dimension like the states: three searches run together
    are asked what each is asked alone."""
    algorithm = EvoSearch(schedule=(0.0, 0.5), populations=(4, 4, 4), elites=1, intermediate_mutation="keep-level")
    seeds, targets = (3, 8, 21), (1, -2, 3)  # each search its own point mass, so its own x0-predictions
    together = point_mass_run(algorithm, run_of(targets, seeds, shape=(64,), steps=8, sampler="euler-sde"))
    for i, (target, seed) in enumerate(zip(targets, seeds)):
        alone = point_mass_run(algorithm, run_of((target,), (seed,), shape=(64,), steps=8, sampler="euler-sde"))
        assert len(alone) == len(together)
        for (jobs, _), (mine, _) in zip(together, alone):
            rows = jobs.owner == i
            # float32 states of size ~1 built in batches of other sizes: rounding only
            assert torch.allclose(jobs.x[rows], mine.x, rtol=0, atol=1e-5)


def test_keep_level_runs_the_digits_model_within_its_plan(digits, classifier):
    from noisesearch.driver import run_search

    algorithm = EvoSearch(intermediate_mutation="keep-level")
    results = run_search(digits, classifier, algorithm, [0, 3], seeds=[0, 1], budget=96, steps=8, sampler="euler-sde")
    for r in results:
        assert r.nfe_used == 96 == sum(c["nfe"] for c in r.candidates)
        assert all(math.isfinite(c["score"]) for c in r.candidates)


# --- the option's values ---------------------------------------------------------------------------


def test_the_option_defaults_to_keeping_the_level_and_rebuilds_from_params():
    assert EvoSearch().params()["intermediate_mutation"] == "keep-level"
    params = EvoSearch(intermediate_mutation="keep-level").params()
    assert EvoSearch(**params).params() == params


def test_an_unknown_mutation_is_a_one_line_user_error():
    with pytest.raises(UserError, match=r"^unknown intermediate_mutation 'keep'; accepted: add-noise, keep-level$"):
        EvoSearch(intermediate_mutation="keep")


def test_an_unknown_mutation_on_the_command_line_exits_2_and_writes_nothing(tmp_path):
    from noisesearch.cli import app

    out = tmp_path / "out"
    argv = ["generate", "--target", "7", "--budget", "64", "--steps", "8", "--out", str(out)]
    argv += ["--algorithm", "evosearch", "--param", "intermediate_mutation=bogus"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "intermediate_mutation 'bogus'" in lines[0]
    assert "accepted: add-noise, keep-level" in lines[0] and list(tmp_path.iterdir()) == []
