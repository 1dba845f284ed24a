"""The compute ledger: NFEs, FLOPs, decodes, verifier calls, API tokens and seconds of every search.

FLOPs are checked against an independent analytic count: the digits networks are MLPs, and every
matrix product of a ``nn.Linear`` costs 2 * in * out FLOPs per row (what
``torch.utils.flop_counter`` counts; embeddings, norms and activations count 0).
"""

import json
import math
import time

import pytest
import torch
from _configs import DROP, tiny_sweep, write_config
from typer.testing import CliRunner

import noisesearch as ns
from noisesearch import ledger
from noisesearch.algorithms.random import RandomSearch
from noisesearch.cli import app
from noisesearch.driver import run_search
from noisesearch.models import MODELS

runner = CliRunner()


def linear_flops(net: torch.nn.Module) -> int:
    """FLOPs of one row through ``net``'s linear layers."""
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear))


def search(model, verifier, *, budget=40, steps=4, guidance=None, targets=(3, 5)):
    return run_search(
        model, verifier, RandomSearch(), list(targets), seeds=[0, 1][: len(targets)], budget=budget, steps=steps,
        guidance=guidance,
    )  # fmt: skip


@pytest.mark.parametrize("guidance", [1.0, 3.0])  # 1 and 2 NFEs per call: FLOPs per NFE are the same
def test_ledger_counts_equal_independent_counts(digits, classifier, guidance):
    ledger.clear()
    results = search(digits, classifier, guidance=guidance)
    per_nfe, per_image = linear_flops(digits.net), linear_flops(classifier.net)
    for r in results:
        n = len(r.candidates)
        assert n == 40 // (4 * digits.nfe_per_call(guidance))
        assert r.ledger["denoise_nfe"] == r.nfe_used == 40
        assert r.ledger["flops_per_nfe"] == per_nfe  # exact: integer counts, no approximation
        assert r.ledger["denoise_flops"] == per_nfe * 40
        assert r.ledger["decode_count"] == n and r.ledger["decode_flops"] == 0  # digits decode: a rescale and clamp
        assert r.ledger["verify_calls"] == r.verifier_calls == n
        assert r.ledger["verify_flops"] == per_image * n
        assert r.ledger["total_flops"] == per_nfe * 40 + per_image * n
        assert r.ledger["api_tokens"] == 0 and r.ledger["api_cost_usd"] == 0.0


def test_larger_model_costs_more_flops_per_nfe(digits, classifier):
    small = search(digits, classifier, targets=(3,))[0].ledger
    large = search(MODELS["digits-large"](), classifier, targets=(3,))[0].ledger
    assert large["denoise_nfe"] == small["denoise_nfe"] == 40
    assert large["flops_per_nfe"] > 5 * small["flops_per_nfe"]


class Unhooked:
    """A model or verifier without its analytic FLOP counts: the ledger measures it with FlopCounterMode."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name in ("flops_per_nfe", "flops_per_row"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __call__(self, *args, **kwargs):
        return self._inner(*args, **kwargs)


def test_measuring_flops_changes_no_result_and_charges_no_nfe(digits, classifier):
    ledger.clear()
    model, verifier = Unhooked(digits), Unhooked(classifier)
    measured = search(model, verifier)  # first call of each network counted under FlopCounterMode
    cached = search(model, verifier)  # counts read from the cache
    for a, b in zip(measured, cached):
        # bit for bit: the same batches in one process (FlopCounterMode only watches the ops it counts)
        assert a.candidates == b.candidates and a.nfe_used == b.nfe_used == 40
        assert torch.equal(a.best_image, b.best_image)
        assert (
            a.ledger["total_flops"]
            == b.ledger["total_flops"]
            == linear_flops(digits.net) * 40 + linear_flops(classifier.net) * len(a.candidates)
        )


@pytest.mark.parametrize("model_name", ["digits", "digits-large"])
@pytest.mark.parametrize("verifier_name", ["classifier", "feature-similarity"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_analytic_flops_of_the_digits_networks_equal_the_flop_counters(model_name, verifier_name, guidance):
    """The digits networks' own counts (no FlopCounterMode, no torch._dynamo import) are the counter's, exactly."""
    from noisesearch.verifiers import VERIFIERS

    model, verifier = MODELS[model_name](), VERIFIERS[verifier_name]()
    ledger.clear()
    counted = search(Unhooked(model), Unhooked(verifier), guidance=guidance)
    ledger.clear()
    analytic = search(model, verifier, guidance=guidance)
    keys = ("flops_per_nfe", "denoise_flops", "decode_flops", "verify_flops", "total_flops")
    for a, b in zip(counted, analytic):
        assert a.candidates == b.candidates  # bit for bit: the same batches in one process, counted or not
        assert {k: a.ledger[k] for k in keys} == {k: b.ledger[k] for k in keys}
        assert a.ledger["verify_flops"] > 0 and a.ledger["flops_per_nfe"] > 0


def test_seconds_add_up_to_the_wall_time(digits, classifier):
    started = time.perf_counter()
    results = search(digits, classifier)
    wall = time.perf_counter() - started
    parts = ("seconds_denoise", "seconds_decode", "seconds_verify", "seconds_other")
    for r in results:
        assert all(r.ledger[p] >= 0 for p in parts) and r.ledger["seconds_denoise"] > 0
        assert r.ledger["seconds_total"] == pytest.approx(sum(r.ledger[p] for p in parts), rel=1e-12)  # float sums
    total = sum(r.ledger["seconds_total"] for r in results)
    assert total <= wall and total == pytest.approx(wall, abs=0.05)  # only the call into run_search is outside


class Grader:
    """An API grader's shape: scores and a ``usage`` of tokens and dollars (10 + 2 tokens per image)."""

    name = "fake-api"

    def __init__(self):
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cached": 0, "cost": 0.0}

    def __call__(self, images, targets, previews=None):
        self.usage["prompt_tokens"] += 10 * len(images)
        self.usage["completion_tokens"] += 2 * len(images)
        self.usage["cost"] += 0.001 * len(images)
        return images.mean(dim=(1, 2, 3))


def test_an_api_grader_has_tokens_and_cost_and_no_flops(digits):
    grader = Grader()
    grader.usage["prompt_tokens"] = 1000  # earlier use of the same grader is not charged to this search
    (r,) = search(digits, grader, targets=(3,))
    n = len(r.candidates)
    assert r.ledger["verify_flops"] is None and r.ledger["total_flops"] is None
    assert r.ledger["api_tokens"] == 12 * n
    assert r.ledger["api_cost_usd"] == pytest.approx(0.001 * n, rel=1e-9)  # a float sum
    assert r.ledger["denoise_flops"] == linear_flops(digits.net) * 40


def test_the_record_holds_the_ledger(digits):
    (r,) = ns.search(digits, [3], verifier=lambda images, prompts: images.mean(dim=(1, 2, 3)), budget=8, steps=4)
    assert r.record["denoise_nfe"] == r.record["nfe_used"] == 8
    assert r.record["denoise_flops"] == linear_flops(digits.net) * 8
    json.dumps(r.record)


SWEEP = tiny_sweep(benchmark={"name": "digits", "subset": 3}, steps=2, baseline=False, chunk=DROP, keep_images=DROP)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ledger")
    write_config(tmp, SWEEP)
    result = runner.invoke(app, ["sweep", str(tmp / "sweep.yaml"), "--out", str(tmp / "out")])
    assert result.exit_code == 0, result.output
    return tmp / "out"


@pytest.mark.slow  # a whole (tiny) sweep and a report with its plots
def test_sweep_rows_hold_the_ledger_and_report_draws_any_axis(swept, digits):
    rows = [json.loads(line) for line in (swept / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3  # budgets x targets
    for row in rows:
        assert row["denoise_nfe"] == row["nfe_used"] and row["denoise_flops"] == row["nfe_used"] * linear_flops(
            digits.net
        )
        assert row["seconds_total"] > 0 and row["api_cost_usd"] == 0.0
    result = runner.invoke(app, ["report", str(swept), "--x", "flops"])
    assert result.exit_code == 0, result.output
    assert (swept / "report" / "per_target.png").stat().st_size > 10_000


@pytest.mark.slow  # shares the sweep above
def test_an_axis_the_rows_lack_is_one_line(swept, tmp_path):
    result = runner.invoke(app, ["report", str(swept), "--x", "joules"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --x 'joules' is not an axis; accepted: nfe, flops, seconds, dollars"
    old = tmp_path / "old"
    old.mkdir()
    rows = [json.loads(line) for line in (swept / "results.jsonl").read_text().splitlines()]
    rows[0].pop("total_flops")  # a row from before the ledger
    (old / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["report", str(old), "--x", "flops"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: --x flops: 1 of {len(rows)} rows have no 'total_flops'")
    assert math.isfinite(rows[1]["total_flops"])


def test_a_models_analytic_count_is_used_as_is(toy_verifier):
    model = MODELS["toy"]()
    model.flops_per_nfe = lambda: 1000.0  # an analytic count wins over measuring
    (r,) = run_search(model, toy_verifier, RandomSearch(), [0], seeds=[0], budget=12, steps=3)
    assert r.ledger["flops_per_nfe"] == 1000.0 and r.ledger["denoise_flops"] == 1000.0 * r.nfe_used
