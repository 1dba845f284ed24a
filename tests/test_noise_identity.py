"""Issue 24: the run's problem description is frozen (its draw timer held apart), its costs are pure functions, and a
noise has one identity, computed once for its record and its replay-cache key."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from noisesearch.algorithms import _cost
from noisesearch.algorithms.base import Jobs, Outcomes, Problems
from noisesearch.cache import cacheable, job_keys
from noisesearch.engine.table import CandidateTable
from noisesearch.errors import UserError
from noisesearch.noise_identity import noise_identity
from noisesearch.sweep.costs import cannot_spend

SIGMAS = (1.0, 0.5, 0.0)


def _problems() -> Problems:
    return Problems([3, 4], [7, 8], 64, (1, 8, 8), SIGMAS, "euler", 1)


def _derived(dtype: torch.dtype) -> Jobs:
    """Two rows (one per search) starting at the first sigma from noises that are not seeded draws."""
    x = (torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.7).to(dtype)
    return Jobs(torch.tensor([0, 1]), x, SIGMAS)


def _recorded_hashes(problems: Problems, jobs: Jobs, hash_later: int) -> list[str]:
    table = CandidateTable(problems, (1, 8, 8), hash_later)
    n = len(jobs)
    out = Outcomes(jobs, jobs.x, jobs.x, torch.zeros(n, 1, 2, 2), torch.zeros(n), 2, torch.zeros(n, dtype=torch.int64))
    table.add(jobs, out)
    return [table.rows(i)[0]["noise_sha256"] for i in range(n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hash_later", [0, 2**20])  # hashed at once, or kept and hashed when read
def test_a_record_s_noise_hash_and_the_cache_key_of_the_same_noise_agree(dtype, hash_later):
    problems, jobs = _problems(), _derived(dtype)
    keys = job_keys("m", jobs, problems, 1.0)
    recorded = _recorded_hashes(problems, jobs, hash_later)
    for key, record_hash, row in zip(keys, recorded, jobs.x):
        ident = key[32:]  # after the 32-digit head: h<digest>
        assert ident == noise_identity(None, row)
        assert ident.startswith("h") and ident[1:].startswith(record_hash) and len(record_hash) == 16


def test_the_identity_is_the_sha256_of_the_float32_bytes_or_the_seed():
    row = torch.randn(1, 8, 8)
    assert noise_identity(None, row) == "h" + hashlib.sha256(row.numpy().tobytes()).hexdigest()[:32]
    assert noise_identity(None, row.half()) == noise_identity(None, row.half().float())
    assert noise_identity(12, row) == "s12"


def test_a_noise_wider_than_float32_is_not_cached():
    # two float64 noises may share their float32 bytes, so such a noise has no exact identity: never replayed
    problems, jobs = _problems(), _derived(torch.float64)
    assert not cacheable(jobs, problems)
    assert cacheable(_derived(torch.float32), problems)


def test_the_problem_description_is_frozen_and_its_draws_are_timed_apart():
    problems = _problems()
    with pytest.raises(dataclasses.FrozenInstanceError):
        problems.budget = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        problems.draw_seconds = 1.0  # type: ignore[misc]
    assert problems.seeds == (7, 8) and problems.targets == (3, 4)  # held as tuples: nothing to edit in place
    assert problems.draw_seconds == 0.0
    problems.fresh(3)
    assert problems.draw_seconds > 0 and problems.draw_seconds == problems.clock.seconds
    assert problems == _problems()  # the clock is not part of what the run is


def test_costs_are_pure_functions_of_the_schedule_sampler_and_nfe_per_call():
    problems = Problems([0], [0], 5, (1,), SIGMAS, "heun", 2)
    jobs = Jobs(torch.tensor([0]), torch.zeros(1, 1), SIGMAS, score_end=True)
    assert _cost.cost(SIGMAS, "heun", 2) == problems.cost() == 6  # Heun: 3 evaluations, 2 NFEs each
    assert _cost.job_cost(jobs, "heun", 2) == problems.job_cost(jobs)
    assert _cost.grid(2, 3) == ([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2])
    with pytest.raises(UserError, match=r"give --budget >= 6 or fewer --steps"):
        _cost.require_budget(5, 6, "one candidate", _cost.steps(SIGMAS), 2)
    assert "give --budget >= 8" in (cannot_spend("random", {}, 7, 4, "euler", 2) or "")
    assert cannot_spend("random", {}, 8, 4, "euler", 2) is None
