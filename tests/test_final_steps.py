"""Search cheap, render once (``final_steps``) and the guidance NFE convention (``nfe_convention``).

The winner's noise is denoised again with ``final_steps`` steps: the render is the best image, its NFEs
are charged in the ledger but not against the budget, and records carry ``nfe_search`` / ``nfe_final``.
Under ``nfe_convention: steps`` a guided step costs 1 NFE (the paper's grid), FLOPs stay exact.
"""

from __future__ import annotations

import json

import pytest
import torch
from _configs import tiny_sweep, write_config
from typer.testing import CliRunner

from noisesearch.algorithms import ALGORITHMS, RandomSearch
from noisesearch.cli import app
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.samplers import get_sampler

runner = CliRunner()
# A render computed alone vs. in a batch of searches: the same operations, but a batch of another size may take
# other matmul kernels and move the last bits of float32 pixels; 1e-5 is far below any visible change.
ATOL = 1e-5


def plain_render(model, noise: torch.Tensor, target, steps: int, guidance: float) -> torch.Tensor:
    """The image of ``noise`` after ``steps`` Euler steps, computed without the driver (one row)."""
    cond = model.encode([target])
    sigmas = model.schedule(steps)
    scale = getattr(model, "start_scale", None)
    x = noise[None] * (scale(sigmas[0]) if scale is not None else 1.0)
    with torch.no_grad():
        x0 = get_sampler("euler").fn(lambda x, s: model.denoise(x, s, cond, guidance=guidance), x, sigmas)
        return model.decode(x0)[0]


@pytest.mark.numerics
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_final_steps_renders_the_best_noise_again_outside_the_budget(digits, classifier, guidance):
    budget, steps, final = 32, 4, 12
    run = run_search(
        digits,
        classifier,
        RandomSearch(),
        [3, 7],
        seeds=[0, 1],
        budget=budget,
        steps=steps,
        guidance=guidance,
        final_steps=final,
    )
    per_call = digits.nfe_per_call(guidance)
    for target, r in zip([3, 7], run):
        assert r.nfe_used <= budget  # the budget bounds the search only
        assert r.nfe_final == final * per_call
        assert r.ledger["denoise_nfe"] == r.nfe_used + r.nfe_final
        best = r.candidates[r.best_index]
        torch.testing.assert_close(
            r.best_noise, torch.randn(digits.noise_shape, generator=torch.Generator().manual_seed(best["noise_seed"]))
        )
        expected = plain_render(digits, r.best_noise, target, final, guidance)
        torch.testing.assert_close(r.best_image, expected, atol=ATOL, rtol=0)
        # the final score is the verifier's score of the final image (tolerance: a batch of one vs. of two)
        assert r.final_score == pytest.approx(float(classifier(expected[None], [target])[0]), abs=1e-4)
        assert r.best_score == best["score"]  # the search's own best stays what it was
        assert r.ledger["verify_calls"] == len(r.candidates) + 1 and r.ledger["decode_count"] == len(r.candidates) + 1


def test_without_final_steps_nothing_is_rendered_again(digits, classifier):
    (r,) = run_search(digits, classifier, RandomSearch(), [3], seeds=[0], budget=16, steps=4)
    assert (r.nfe_final, r.final_score) == (0, None)
    assert r.ledger["denoise_nfe"] == r.nfe_used


def test_final_steps_goes_through_the_python_entrance(digits):
    import noisesearch as ns

    (r,) = ns.search(digits, 5, verifier="classifier", budget=16, steps=4, final_steps=8)
    rec = r.record
    assert (rec["nfe_search"], rec["nfe_used"], rec["nfe_final"], rec["final_steps"]) == (16, 16, 8, 8)
    assert rec["final_score"] == r.final_score and rec["nfe_convention"] == "rows"
    assert rec["denoise_nfe"] == 24


def test_a_schedule_that_starts_elsewhere_is_refused_before_any_work(digits, classifier, monkeypatch):
    calls = []
    real = digits.schedule

    def shifted(steps):  # a model whose first sigma depends on the step count (as DDIM's leading spacing)
        sigmas = real(steps)
        return sigmas if steps == 4 else (0.99, *sigmas[1:])

    monkeypatch.setattr(digits, "schedule", shifted)
    monkeypatch.setattr(digits, "denoise", lambda *a, **k: calls.append(1))
    with pytest.raises(UserError, match=r"final steps 8: .* starts at sigma 0\.99"):
        run_search(digits, classifier, RandomSearch(), [3], seeds=[0], budget=16, steps=4, final_steps=8)
    assert calls == []


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--algorithm", "paths"], "algorithm 'paths' does not end in a full trajectory"),
        (["--algorithm", "smc", "--sampler", "euler-ancestral"], "algorithm 'smc' does not end in a full trajectory"),
        (["--sampler", "euler-sde"], "sampler 'euler-sde' is stochastic"),
        (["--nfe-convention", "model"], "--nfe-convention 'model' is not accepted; accepted: rows, steps"),
    ],
)
def test_refused_final_steps_get_one_line_and_write_nothing(tmp_path, extra, words):
    argv = ["generate", "--target", "3", "--budget", "16", "--steps", "4", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*argv, "--final-steps", "8", *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_every_registered_algorithm_declares_renders_from_noise():
    for name, factory in ALGORITHMS.items():
        assert type(getattr(factory, "renders_from_noise", None)) is bool, name
    accepted = {name for name, factory in ALGORITHMS.items() if factory.renders_from_noise}
    assert accepted == {"random", "zero-order", "first-order", "evolution"}


def test_sweep_config_keys_round_trip_and_refusals(tmp_path):
    from noisesearch.sweep.config import guided_nfe_per_call, load_config

    config = load_config(write_config(tmp_path, tiny_sweep(final_steps=8, nfe_convention="steps", guidance=2.0)))
    assert (config.final_steps, config.nfe_convention) == (8, "steps")
    assert config.canonical()["final_steps"] == 8 and config.canonical()["nfe_convention"] == "steps"
    assert guided_nfe_per_call(config) == 1  # a guided step is one NFE under "steps"
    plain = load_config(write_config(tmp_path, tiny_sweep(), "plain.yaml")).canonical()
    assert "final_steps" not in plain and "nfe_convention" not in plain  # an older folder resumes unchanged
    bad = tiny_sweep(final_steps=8, algorithms=[{"name": "random"}, {"name": "paths"}])
    with pytest.raises(UserError, match=r"final_steps \(algorithms\.1\): .*'paths'"):
        load_config(write_config(tmp_path, bad, "bad.yaml"))
    with pytest.raises(UserError, match=r"final_steps \(sampler\): .*'euler-sde' is stochastic"):
        load_config(write_config(tmp_path, tiny_sweep(final_steps=8, sampler="euler-sde"), "sde.yaml"))
    with pytest.raises(UserError, match="nfe_convention"):
        load_config(write_config(tmp_path, tiny_sweep(nfe_convention="model"), "bad2.yaml"))
    with pytest.raises(UserError, match="final_steps: final steps must be a positive integer"):
        load_config(write_config(tmp_path, tiny_sweep(final_steps=0), "bad3.yaml"))


def test_sweep_rows_carry_the_final_render_and_the_report_plots_budget_plus_final(tmp_path):
    from noisesearch.sweep.report import curves, sets_as_rows
    from noisesearch.sweep.run import read_rows

    config = tiny_sweep(budgets=[8], final_steps=6, keep_images=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", str(write_config(tmp_path, config)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "results.jsonl")
    searched = [r for r in rows if r["algorithm"] == "random"]
    baseline = [r for r in rows if r["algorithm"] == "none"]
    assert searched and baseline
    for r in searched:
        assert r["nfe_search"] == r["nfe_used"] == 8 and r["nfe_final"] == 6 and r["final_steps"] == 6
        assert r["final_score"] is not None and r["nfe_convention"] == "rows"
        assert r["denoise_nfe"] == 14
    for r in baseline:  # the more-steps baseline is its own render
        assert (r["nfe_final"], r["final_steps"], r["final_score"]) == (0, None, None)
    points = curves(rows, "best_score", "nfe")
    assert [p[0] for p in points["more denoising steps (no search)"]] == [8]
    (random_label,) = [k for k in points if k.startswith("random")]
    assert [p[0] for p in points[random_label]] == [8 + 6]  # the paper's axis: search + final render
    sets = [json.loads(line) for line in (out / "sets.jsonl").read_text().splitlines()]
    as_rows = sets_as_rows(rows, sets)
    assert {s["algorithm"] for s in as_rows} == {"none", "random"}
    for s in as_rows:  # a sample set's cost: its budget plus its cell's mean final render
        want = 8 + (6 if s["algorithm"] == "random" else 0)
        assert [p[0] for pts in curves([s], "fid", "nfe").values() for p in pts] == [want]


@pytest.mark.numerics
def test_steps_convention_counts_a_guided_step_once_and_keeps_flops_exact(digits, classifier):
    def run(budget: int, convention: str):
        (r,) = run_search(
            digits,
            classifier,
            RandomSearch(),
            [4],
            seeds=[0],
            budget=budget,
            steps=4,
            guidance=2.0,
            nfe_convention=convention,
        )
        return r

    rows, steps = run(32, "rows"), run(32, "steps")
    assert len(steps.candidates) == 2 * len(rows.candidates) == 8  # twice as many candidates at one budget
    assert steps.ledger["flops_per_nfe"] == pytest.approx(2 * rows.ledger["flops_per_nfe"], rel=1e-12)
    same = run(16, "steps")  # the same 4 candidates as "rows" at 32: the same work, half the NFEs
    assert [c["score"] for c in same.candidates] == [c["score"] for c in rows.candidates]
    assert same.nfe_used == 16 and rows.nfe_used == 32
    # FLOPs = flops_per_nfe x NFEs, two products of different factors: equal up to float rounding
    assert same.ledger["denoise_flops"] == pytest.approx(rows.ledger["denoise_flops"], rel=1e-12)
