"""Exact tests of the accountant and driver paths that diffusers tests reach only slowly.

A whole-trajectory model (the generic adapter's contract, ``models/generic.py``) built on the toy,
an API grader's usage deltas, the smallest budget and the backward pass's seconds: each checked
against a value computed here, without diffusers, so the mutation tool's fast selection covers them.
"""

from __future__ import annotations

import pytest
import torch

from noisesearch.accounting import Accountant
from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import gaussian
from noisesearch.algorithms.random import RandomSearch
from noisesearch.driver import run_search
from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models.toy import ToyDistanceVerifier, ToyModel
from noisesearch.samplers import sample_euler

TOL = 1e-6  # a few float32 operations on O(1) values, run in another batch composition


class WholeToy(ToyModel):
    """The toy run whole, as a pipeline's ``__call__`` runs: Euler over its own schedule, rows counted."""

    whole_trajectory = True

    def __init__(self, *, extra_rows: int = 0):
        super().__init__()
        self.name = "whole-toy"
        self.extra_rows = extra_rows
        self.calls: list[int] = []

    def trajectories(self, x, prompts, *, steps, guidance, rows):
        cond = self.encode(prompts)
        counted = [0]

        def denoise(xs, sigma):
            counted[0] += len(xs)
            return self.denoise(xs, sigma, cond, guidance=guidance)

        final = sample_euler(denoise, x, self.schedule(steps))
        self.calls.append(counted[0])
        return self.decode(final), counted[0] + self.extra_rows


def test_a_whole_trajectory_model_is_charged_counted_and_equals_its_own_run():
    model, verifier = WholeToy(), ToyDistanceVerifier()
    run = run_search(model, verifier, RandomSearch(candidates=3), [1], seeds=[5], budget=12, steps=4)
    (r,), stats = run, run.stats
    assert r.nfe_used == 12 and model.calls == [12]  # 3 candidates x 4 steps, one pipeline call
    ledger = r.ledger
    assert ledger["decode_count"] == 3 and ledger["decode_flops"] is None  # decoded inside the call: FLOPs unknown
    assert ledger["denoise_nfe"] == 12 and ledger["verify_calls"] == 3 and ledger["seconds_denoise"] > 0
    assert ledger["seconds_denoise"] < stats.wall_seconds + TOL
    cond = model.encode([1])
    for c in r.candidates:  # every candidate's image equals the toy sampled from its own seed, outside the driver
        noise = gaussian(model.noise_shape, c["noise_seed"])[None]
        image = model.decode(
            sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=1.0), noise, model.schedule(4))
        )
        score = float(verifier(image, [1])[0])
        assert abs(c["score"] - score) < TOL
    assert {c["index"] for c in r.candidates} == {0, 1, 2}
    (one,) = run_search(WholeToy(), verifier, RandomSearch(), [1], seeds=[5], budget=4, steps=4)
    assert one.nfe_used == 4 and len(one.candidates) == 1  # a batch of a single job


def test_a_whole_trajectory_model_refuses_step_level_work_and_a_call_that_ran_other_rows():
    with pytest.raises(UserError, match="needs step-level control"):
        run_search(WholeToy(), ToyDistanceVerifier(), ALGORITHMS["paths"](), [1], seeds=[0], budget=64, steps=4)
    with pytest.raises(UserError, match="cannot be chosen"):
        run_search(WholeToy(), ToyDistanceVerifier(), RandomSearch(), [1], seeds=[0], budget=8, steps=4, sampler="heun")
    with pytest.raises(BudgetExceeded, match="ran 9 denoiser rows where 8 were planned"):
        run_search(WholeToy(extra_rows=1), ToyDistanceVerifier(), RandomSearch(), [1], seeds=[0], budget=8, steps=4)


class Grader:
    """An API grader: scores come with token and dollar usage that grows with each call."""

    name, preview_sigma = "grader", None

    def __init__(self, usage, *, completion=True):
        self.usage = dict(usage)
        self.completion = completion  # some endpoints report prompt tokens only

    def __call__(self, images, targets, *, previews=None):
        self.usage["prompt_tokens"] = self.usage.get("prompt_tokens", 0) + 10 * len(images)
        if self.completion:
            self.usage["completion_tokens"] = self.usage.get("completion_tokens", 0) + 3 * len(images)
        if "cost" in self.usage:
            self.usage["cost"] += 0.25 * len(images)
        return torch.ones(len(images))


def test_api_usage_is_charged_as_the_change_of_each_call():
    acct = Accountant([100, 100])
    grader = Grader({"cost": 1.0})  # usage before the search: only its change counts; no token keys yet
    images = torch.zeros(2, 1, 1, 1)
    acct.verify(grader, images, [0, 0], torch.tensor([0, 1]))
    acct.verify(grader, images[:1], [0], torch.tensor([1]))
    # 2 images then 1 image: 26 then 13 tokens, $0.50 then $0.25, shared per row
    assert acct.api_tokens.tolist() == pytest.approx([13.0, 26.0])
    assert acct.api_cost.tolist() == pytest.approx([0.25, 0.5])
    ledger = acct.ledger(1, 0.0)
    assert (
        ledger["api_tokens"] == 26 and ledger["api_cost_usd"] == pytest.approx(0.5) and ledger["verify_flops"] is None
    )
    no_prices = Accountant([10])
    no_prices.verify(Grader({}), images[:1], [0], torch.tensor([0]))
    assert no_prices.ledger(0, 0.0)["api_cost_usd"] is None and no_prices.ledger(0, 0.0)["api_tokens"] == 13
    prompt_only = Accountant([10])
    prompt_only.verify(Grader({}, completion=False), images, [0, 0], torch.tensor([0, 0]))
    assert prompt_only.ledger(0, 0.0)["api_tokens"] == 20  # a missing count is none, not one


def test_the_smallest_budget_runs_one_one_step_candidate():
    (r,) = run_search(ToyModel(), ToyDistanceVerifier(), RandomSearch(), [0], seeds=[0], budget=1, steps=1)
    assert r.nfe_used == 1 and len(r.candidates) == 1
    with pytest.raises(UserError, match="budget must be a positive integer"):
        run_search(ToyModel(), ToyDistanceVerifier(), RandomSearch(), [0], seeds=[0], budget=0, steps=1)


def test_backward_seconds_are_a_part_of_the_wall_time():
    from noisesearch.models.digits import DigitsModel
    from noisesearch.verifiers import VERIFIERS

    run = run_search(
        DigitsModel(),
        VERIFIERS["classifier"](),
        ALGORITHMS["first-order"](),
        [3],
        seeds=[0],
        budget=64,
        steps=2,
    )
    assert 0 < run.stats.backward_seconds < run.stats.wall_seconds
