"""Sweeps: config validation with places, resumable rows, sets, the report page, and Ray."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _configs import tiny_sweep, write_config
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.ledger import drop_computed, drop_seconds

runner = CliRunner()
BASE = tiny_sweep(
    benchmark={"name": "digits", "per_class": 2},
    eval_verifiers=[{"name": "oracle-is"}],
    algorithms=[{"name": "random"}, {"name": "zero-order", "params": {"neighbours": 3}}],
    budgets=[16, 32],
    seeds=[0, 1],
    steps=8,
    chunk=8,
)


def sweep(*args):
    return runner.invoke(app, ["sweep", *map(str, args)])


def rows_of(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["cell"], r["target_index"]))


def same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = dict(x), dict(y)
        for r in (x, y):
            drop_seconds(r)  # wall_time_s and the ledger's seconds_*
            drop_computed(r)  # nfe_computed, replayed, ...: a resumed chunk replays what the cache kept
        for key in [k for k in x if isinstance(x[k], float)]:
            assert x.pop(key) == pytest.approx(y.pop(key), abs=1e-5), key  # batch composition moves the last bits
        assert x == y


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    result = sweep(write_config(tmp, BASE), "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_one_row_per_target_configuration_and_seed(finished):
    rows = rows_of(finished)
    cells = {r["cell"] for r in rows}
    assert len(cells) == (1 + 2) * 2 * 2  # (baseline + 2 algorithms) x 2 budgets x 2 seeds
    assert len(rows) == len(cells) * 20 and len({(r["cell"], r["target_index"]) for r in rows}) == len(rows)
    for r in rows:
        # exact: 8-step candidates fill budgets of 16 and 32 (random: 2 or 4 candidates; zero-order: a pivot and
        # 1 or 3 neighbours) and the baseline runs budget-many steps
        assert r["nfe_used"] == r["budget"] and r["category"] == str(r["target"])
        assert math.isfinite(r["eval_oracle-is"]) and (finished / r["image"]).is_file()
    baseline = [r for r in rows if r["algorithm"] == "none"]
    assert {r["steps"] for r in baseline} == {16, 32} and all(r["candidates_count"] == 1 for r in baseline)


def test_class_conditional_sets_export_npz_and_metrics(finished):
    sets = [json.loads(line) for line in (finished / "sets.jsonl").read_text().splitlines()]
    assert len(sets) == 12
    for s in sets:
        assert s["fid"] > 0 and 0 <= s["accuracy"] <= 1
        with np.load(finished / s["samples"]) as npz:
            assert npz["arr_0"].shape == (20, 8, 8, 1) and npz["arr_0"].dtype == np.uint8
            assert npz["arr_1"].tolist() == [c for c in range(10) for _ in range(2)]


def test_rerun_resumes_and_repairs_a_crash(tmp_path, finished):
    out = tmp_path / "out"
    config = write_config(tmp_path, BASE)
    assert sweep(config, "--out", out).exit_code == 0
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    # a crash: the last 50 rows never written and the 51st from the end cut in the middle
    (out / "results.jsonl").write_text("".join(lines[:-51]) + lines[-51][:40])
    result = sweep(config, "--out", out)
    assert result.exit_code == 0, result.output
    assert "already there" in result.output
    same_rows(rows_of(out), rows_of(finished))
    again = sweep(config, "--out", out)
    assert "nothing to do: all 240 rows are in" in again.output
    assert len(rows_of(out)) == len(rows_of(finished))


def test_a_different_config_in_the_same_folder_is_refused(tmp_path, finished):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = (out / "results.jsonl").read_bytes()
    result = sweep(write_config(tmp_path, {**BASE, "budgets": [16, 64]}), "--out", out)
    assert result.exit_code == 2
    assert "holds results of a different config (budgets: [16, 32] -> [16, 64])" in result.output
    assert (out / "results.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    "change,message",
    [
        ({"budgets": ["many"]}, "budgets.0: Input should be a valid integer"),
        ({"steps": 0}, "steps: Input should be greater than or equal to 1"),
        ({"benchmark": {"name": "coco"}}, "benchmark.name: unknown benchmark 'coco'; accepted: digits, imagenet"),
        (
            {"algorithms": [{"name": "random", "params": {"width": 2}}]},
            "algorithms.0.params: algorithm 'random' takes no parameter 'width'",
        ),
        ({"budgets": [16, 8]}, "budgets.1: zero-order (algorithms.1): budget 8 is smaller than"),
        ({"benchmark": {"name": "file", "path": "/nonexistent/prompts.txt"}}, "benchmark: cannot read prompt file"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"baseline": False, "baseline_budgets": [1, 2]}, "baseline_budgets: given with baseline: false"),
        ({"guidance": 1.5, "baseline_budgets": [2, 3]}, "baseline_budgets.1: the step baseline cannot spend budget 3"),
        ({"baseline_budgets": [4, 4]}, "baseline_budgets.1: 4 is already baseline_budgets.0"),
    ],
)
def test_config_mistakes_name_their_place(tmp_path, change, message):
    config = write_config(tmp_path, {**BASE, **change})
    result = sweep(config, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"error: {config}: ") and any(message in line for line in lines), result.output
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_baseline_with_its_own_budgets_and_unscored(tmp_path):
    """``baseline_budgets`` give the step curve its own budgets; ``baseline_scored: false`` calls no verifier."""
    config = tiny_sweep(
        eval_verifiers=[{"name": "oracle-is"}],
        budgets=[16],
        steps=8,
        chunk=8,
        keep_images=False,
        baseline_budgets=[1, 2],
        baseline_scored=False,
    )
    out = tmp_path / "out"
    result = sweep(write_config(tmp_path, config), "--out", out)
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    baseline = [r for r in rows if r["algorithm"] == "none"]
    assert sorted({(r["budget"], r["steps"]) for r in baseline}) == [(1, 1), (2, 2)] and len(baseline) == 20
    for r in baseline:
        assert r["nfe_used"] == r["budget"] and r["best_score"] is None and r["verifier"] is None
        assert r["scored"] is False and math.isfinite(r["eval_oracle-is"])
    searched = [r for r in rows if r["algorithm"] == "random"]
    assert len(searched) == 10 and all(r["best_score"] is not None and "scored" not in r for r in searched)
    assert len((out / "sets.jsonl").read_text().splitlines()) == 3  # every set exported, the baseline's too
    assert runner.invoke(app, ["report", str(out), "--budget", "1"]).exit_code == 0
    assert "| more denoising steps (no search) | - |" in (out / "report" / "tables.md").read_text()
    assert "0 of 10 (0)" in (out / "report" / "tables.md").read_text()  # unscored is not a failed search
    # the default settings are not stored, so folders written before they existed still resume
    stored = json.loads((out / "sweep.json").read_text())
    assert stored["baseline_budgets"] == [1, 2] and stored["baseline_scored"] is False
    from noisesearch.sweep.config import validate_config

    plain = validate_config({**BASE}, "x").canonical()
    assert "baseline_budgets" not in plain and "baseline_scored" not in plain


def test_unreadable_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets: [16, 32\nmodel: digits\n")
    result = sweep(bad, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "not valid YAML" in result.output and "line" in result.output
    result = sweep(tmp_path / "missing.yaml", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "cannot read config" in result.output


def test_report_builds_from_rows_only(finished, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns("samples", "sets"))
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report" / "index.html").read_text()
    assert "Scaling curves" in page and "fid" in page and "eval_oracle-is per category" in page
    assert (out / "report" / "per_target.png").stat().st_size > 10_000
    assert "| zero-order (neighbours=3), classifier |" in (out / "report" / "tables.md").read_text()
    assert runner.invoke(app, ["report", str(tmp_path / "nothing")]).exit_code == 2


def test_keep_all_candidate_images_and_show_best_median_worst(tmp_path):
    config = tiny_sweep(
        eval_verifiers=[{"name": "oracle-is"}], budgets=[32], steps=8, chunk=8, baseline=False, keep_images="all"
    )
    out = tmp_path / "out"
    assert sweep(write_config(tmp_path, config), "--out", out).exit_code == 0
    rows = rows_of(out)
    assert len(rows) == 10
    for r in rows:
        kept = r["candidate_images"]
        assert [c["index"] for c in kept] == [0, 1, 2, 3] and all((out / c["image"]).is_file() for c in kept)
        assert r["best_score"] == max(c["score"] for c in kept)
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    page = (out / "report" / "index.html").read_text()
    assert page.count("<figcaption>best of 4: ") == 10 and page.count("<figcaption>worst of 4: ") == 10


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI") == "true":
        pytest.fail("CI must have chromium (.ci/run installs Debian's chromium)")
    return found


def test_report_page_renders_in_chromium_and_escapes_prompts(tmp_path, finished):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (CI installs it)")
    out = tmp_path / "r"
    out.mkdir()
    hostile = "<script>document.title='pwned'</script> a red cube"
    rows = rows_of(finished)[:40]
    for r in rows:
        r["target"], r["category"] = hostile, "<b>bold</b>"
        r["image"] = None
    rows[0]["image"] = "img.png"
    shutil.copy(finished / rows_of(finished)[0]["image"], out / "img.png")
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    page = (out / "report" / "index.html").as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert "noisesearch sweep report" in dom.stdout
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt; a red cube" in dom.stdout
    assert "<script>" not in dom.stdout and "pwned</title>" not in dom.stdout
    assert "&lt;b&gt;bold&lt;/b&gt;" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, "--window-size=1200,1600", f"--screenshot={shot}", page], capture_output=True, timeout=120
    )
    assert shot.stat().st_size > 20_000


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


RAY_CONFIG = tiny_sweep(
    benchmark={"name": "digits", "per_class": 2},
    eval_verifiers=[{"name": "oracle-is"}],
    budgets=[16, 32],
    steps=8,
    chunk=5,
    keep_images=False,
)


@pytest.mark.slow
def test_ray_backend_equals_local_row_for_row(tmp_path, local_ray):
    config = write_config(tmp_path, RAY_CONFIG)
    assert sweep(config, "--out", tmp_path / "local").exit_code == 0
    result = sweep(config, "--out", tmp_path / "ray", "--backend", "ray")
    assert result.exit_code == 0, result.output
    same_rows(rows_of(tmp_path / "ray"), rows_of(tmp_path / "local"))


@pytest.mark.slow
def test_an_actor_killed_mid_sweep_loses_and_duplicates_no_row(tmp_path, local_ray):
    from noisesearch.sweep.config import load_config
    from noisesearch.sweep.ray_backend import RayExecutor
    from noisesearch.sweep.run import run_sweep

    config = load_config(write_config(tmp_path, RAY_CONFIG))
    executor = RayExecutor(workers=2)
    killed = []

    def progress(done, total, note):
        assert "NFEs, best" in note
        if not killed:  # after the first chunk arrives, kill a worker that still has tasks
            local_ray.kill(executor.actors[0], no_restart=False)
            killed.append(note)

    counts = run_sweep(config, tmp_path / "ray", executor=executor, progress=progress)
    assert killed and counts["written"] == 4 * 20
    assert sweep(write_config(tmp_path, RAY_CONFIG, "local.yaml"), "--out", tmp_path / "local").exit_code == 0
    same_rows(rows_of(tmp_path / "ray"), rows_of(tmp_path / "local"))


def test_shipped_study_configs_validate_and_compare_covers_every_algorithm():
    """``demo`` and ``compare`` are sweep configs: valid at every size, the baseline unscored from 1 step."""
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.studies import compare_study, demo_study

    full = demo_study().sweeps
    assert [folder for _, folder in full] == [".", "feature-similarity"]
    main = full[0][0]
    assert main.step_budgets == [1, 2, 4, 8, 16, 32, 64, 128] and not main.baseline_scored
    assert [a.name for a in main.algorithms] == ["random", "zero-order"] and main.benchmark.per_class == 100
    assert not full[1][0].baseline and full[1][0].verifier.name == "feature-similarity"
    assert len(demo_study(quick=True).sweeps) == 1
    [(config, _)] = compare_study().sweeps
    assert [a.name for a in config.algorithms] == list(ALGORITHMS) and config.seeds == [0, 1, 2]
    assert config.budgets == [64, 128, 256, 512, 1024] and not config.baseline_scored
    [(quick, _)] = compare_study(quick=True, seeds=1).sweeps
    assert quick.budgets == [64, 128, 256] and quick.benchmark.per_class == 20 and quick.seeds == [0]
