"""``noisesearch paper``: shipped configs, a tiny full run with every figure, bad input, resuming."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.errors import UserError
from noisesearch.paper import FIGURES, SWEEPS, configs, correlation, pick_figures, run_paper

runner = CliRunner()


def test_shipped_configs_load_validate_and_quick_cuts_them():
    full, quick = configs(), configs(quick=True)
    assert list(full) == list(SWEEPS) == list(quick)
    assert sorted({s for used in FIGURES.values() for s in used}) == sorted(SWEEPS)  # every sweep feeds a figure
    assert full["main"].budgets == [8, 16, 32, 64, 128, 256, 512] and full["main"].seeds == [0, 1, 2]
    assert full["main"].benchmark.per_class == 20
    assert quick["main"].budgets == [8, 16, 32, 64, 128] and quick["main"].seeds == [0]
    assert quick["main"].benchmark.per_class == 2
    assert quick["paths"].budgets == [256, 512]  # none is <= 128: the two smallest are kept
    assert [a.budgets for a in quick["paths"].algorithms][:2] == [[64, 128], [128, 256]]  # an algorithm's own, alike
    assert quick["table2-ensemble"].algorithms[0].budgets == [16, 32, 64, 128]
    assert quick["fig7"] == full["fig7"]  # four named targets, one seed: never cut
    assert quick["steps-16"].budgets == [32, 64, 128]
    assert [full[f"guidance-{g}"].guidance for g in ("135", "15")] == [1.35, 1.5]
    # Fig. 4's guided sweeps count one NFE per denoising step, as the paper plots every scale on one grid
    assert {full[n].nfe_convention for n in full if full[n].guidance not in (None, 1.0)} == {"steps"}
    # Fig. 10 as the paper: NFEs per search iteration vary, the final denoising (16 steps) is fixed
    assert [full[f"steps-{n}"].steps for n in (2, 4, 8, 16)] == [2, 4, 8, 16]
    assert {full[f"steps-{n}"].final_steps for n in (2, 4, 8, 16)} == {16}
    assert full["large"].model == "digits-large" and full["selfsup"].verifier.name == "feature-similarity"


def test_unknown_figure_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match=r"^--figures: unknown figure 'fig2'; accepted: fig1, fig3, fig4, "):
        pick_figures("fig1,fig2")
    assert pick_figures("fig5, fig1") == ["fig1", "fig5"]  # paper order
    result = runner.invoke(app, ["paper", "--out", str(tmp_path / "out"), "--figures", "fig99"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --figures: unknown figure 'fig99'; accepted: " + ", ".join(FIGURES)
    ]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_unwritable_out_is_one_clear_line_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["paper", "--out", str(blocker / "out"), "--quick"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert f"--out {str(blocker / 'out')!r} is under {str(blocker)!r}, which is a file" in result.output


def test_correlation_by_hand():
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx((1.0, 1.0))
    assert correlation([1, 2, 3], [3, 2, 1]) == pytest.approx((-1.0, -1.0))
    pearson, spearman = correlation([1, 2, 3, 4], [1, 4, 9, 100])  # monotone, not linear
    assert spearman == pytest.approx(1.0) and pearson == pytest.approx(151 / (5 * 6849) ** 0.5)
    assert all(np.isnan(correlation([1, 2], [1, 2])))


def test_oracle_fid_digits_is_minus_the_one_image_fid_against_the_class_statistics():
    from noisesearch.digits.train import load_data
    from noisesearch.verifiers import VERIFIERS

    verifier = VERIFIERS["oracle-fid-digits"]()
    data = load_data()
    with torch.no_grad():
        feats = verifier.net.features(data.images).double().numpy()
    images, labels = (data.images[:3] + 1) / 2, data.labels[:3].tolist()
    with torch.no_grad():
        f = verifier.net.features(images * 2 - 1).double().numpy()
    for k, c in enumerate(labels):
        real = feats[data.labels.numpy() == c]
        expected = -(((f[k] - real.mean(0)) ** 2).sum() + np.trace(np.cov(real, rowvar=False)))
        assert float(verifier(images[k : k + 1], [c])[0]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_tiny_run_draws_every_figure_and_resumes_without_work(tmp_path):
    sizes = {"per_class": 1, "seeds": 1, "max_budget": 16}
    first = run_paper(tmp_path, sizes=sizes, note=lambda m: None)
    assert set(first["written"]) == set(SWEEPS) and all(n > 0 for n in first["written"].values())
    assert first["drawn"] == list(FIGURES)
    assert first["tables"] == [tmp_path / "table2.md"] and len(first["figures"]) == len(FIGURES) - 1
    for fig in (f for f in FIGURES if f.startswith("fig")):
        assert (tmp_path / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        points = [json.loads(line) for line in (tmp_path / f"{fig}.jsonl").read_text().splitlines()]
        assert points and all(p.get("figure") == fig for p in points)
        is_panels = {p["panel"] for p in points if p["metric"] == "is_single_split"}
        ceilings = {p["panel"]: p["mean"] for p in points if p["metric"] == "is_ceiling"}
        assert set(ceilings) == is_panels  # every IS axis draws its ceiling
        assert all(v == pytest.approx(10.0, rel=1e-9) for v in ceilings.values())  # 10 balanced classes, one split
    fig12 = [json.loads(line) for line in (tmp_path / "fig12.jsonl").read_text().splitlines()]
    assert len({p["series"] for p in fig12 if p["panel"] == 0}) == 3  # lambda 2, 4, 8 (Euclidean neighbourhood)
    fig10 = [json.loads(line) for line in (tmp_path / "fig10.jsonl").read_text().splitlines()]
    budgets = configs(**sizes)["steps-2"].budgets
    # the paper's x-axis: search NFEs plus the fixed final denoising (16 steps, one NFE each without guidance)
    assert sorted({p["x"] for p in fig10 if p["metric"] == "fid"}) == [b + 16 for b in budgets]
    fig1 = [json.loads(line) for line in (tmp_path / "fig1.jsonl").read_text().splitlines()]
    assert {(p["series"], p["x"]) for p in fig1 if p["metric"] == "fid"} == {
        (name, x) for name in ("more denoising steps (no search)", "random, classifier") for x in (8, 16)
    }
    assert sum(p["peak"] for p in fig1 if p["metric"] == "fid") == 2  # one star per curve
    rows = (tmp_path / "sweeps" / "main" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 10 * 2 * 2  # 10 targets x (baseline + random) x 2 budgets, one seed
    again = run_paper(tmp_path, sizes=sizes, note=lambda m: None)
    assert again["written"] == {name: 0 for name in SWEEPS} and again["drawn"] == []
    assert (tmp_path / "sweeps" / "main" / "results.jsonl").read_text().splitlines() == rows
