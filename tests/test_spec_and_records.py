"""A run has one home (``noisesearch.spec.RunSpec``) and one record (``noisesearch.records``).

``generate``, ``noisesearch.search`` and a sweep write one row schema: a ``record.json`` and a sweep row of the
same search agree on every field they share, both hold what regenerates the best sample, and old sweep rows
are still read. Every entrance refuses a bad run in the same words, through ``RunSpec.validate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from _configs import GOOD_ROW, tiny_sweep, write_config
from PIL import Image
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.errors import UserError

runner = CliRunner()
# Fields that differ between two runs of one search by nature: wall times, the seed each entrance was given
# (a sweep's cell seed; each target's search runs with ``search_seed``, derived from it) and where each writer
# put the best image (``image``: generate's ``best.png``, a sweep's ``images/<cell>/<target>.png``).
VARYING = {"wall_time_s", "seed", "image"}


def _sweep_rows(tmp_path: Path, **overrides) -> list[dict]:
    from noisesearch.sweep.config import load_config
    from noisesearch.sweep.run import run_sweep

    config = load_config(write_config(tmp_path, tiny_sweep(**overrides)))
    run_sweep(config, tmp_path / "sweep", note=lambda m: None, cache=False)
    return [json.loads(line) for line in (tmp_path / "sweep" / "results.jsonl").read_text().splitlines()]


def _close(a, b) -> bool:
    """Equal, floats within 1e-5 relative (the sweep batches its chunk's targets; generate runs one alone)."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def test_a_record_and_a_sweep_row_of_one_search_agree_on_every_common_field(tmp_path):
    from noisesearch.generate import generate
    from noisesearch.records import SCHEMA_VERSION, SEARCH_FIELDS, SWEEP_FIELDS

    rows = _sweep_rows(
        tmp_path, benchmark={"name": "digits", "subset": [7], "per_class": 1}, budgets=[8], baseline=False
    )
    (row,) = rows
    _, record = generate(
        target=row["target"], budget=row["budget"], steps=row["steps"], seed=row["search_seed"], out=tmp_path / "g"
    )
    on_disk = json.loads((tmp_path / "g" / "record.json").read_text())
    assert on_disk["candidates_count"] == len(on_disk["candidates"]) == row["candidates_count"] == 2
    common = (set(record) & set(row)) - {k for k in record if k.startswith("seconds_")} - VARYING
    assert set(SEARCH_FIELDS) - VARYING <= common  # every declared search field is in both
    unequal = {k: (record[k], row[k]) for k in common if not _close(record[k], row[k])}
    assert not unequal
    assert record["seed"] == record["search_seed"] == row["search_seed"]  # generate's seed is its search's
    extra = set(row) - set(record) - {k for k in row if k.startswith("eval_")}
    assert extra <= set(SWEEP_FIELDS)  # a sweep row adds only declared sweep columns
    for r in (record, row):
        assert r["schema_version"] == SCHEMA_VERSION
        assert r["best_index"] is not None and r["best_noise_seed"] is not None and r["noise_shape"] == [1, 8, 8]
    best = record["candidates"][record["best_index"]]
    assert best["noise_seed"] == row["best_noise_seed"] and best["index"] == row["best_index"]


def test_the_best_sample_of_a_sweep_row_is_regenerated_from_the_row_alone(tmp_path):
    from noisesearch.algorithms.base import gaussian
    from noisesearch.models import MODELS
    from noisesearch.samplers import get_sampler

    rows = _sweep_rows(tmp_path, keep_images="best", baseline=False, budgets=[8])
    model = MODELS["digits"]()
    for row in rows[:3]:
        sigmas = model.schedule(row["steps"])
        scale = getattr(model, "start_scale", lambda sigma: 1.0)(sigmas[0])  # VP models scale their noise
        x = gaussian(tuple(row["noise_shape"]), row["best_noise_seed"])[None] * scale
        cond = model.encode([row["target"]])

        def denoise(x, sigma, cond=cond, guidance=row["guidance"]):
            return model.denoise(x, sigma, cond, guidance=guidance)

        image = model.decode(get_sampler(row["sampler"]).fn(denoise, x, sigmas))[0]  # (C, H, W) in [0, 1]
        kept = np.asarray(Image.open(tmp_path / "sweep" / row["image"]))[::8, ::8]  # written enlarged 8x
        ours = (image.clamp(0, 1) * 255).permute(1, 2, 0).squeeze(-1).numpy()
        # 1.5 grey levels: the PNG is rounded to uint8, and the sweep ran the candidate in a batch of others
        assert np.abs(ours - kept.reshape(ours.shape).astype(np.float64)).max() <= 1.5


def test_read_rows_reads_a_row_written_before_the_schema_had_a_version(tmp_path):
    from noisesearch.records import SCHEMA_VERSION, read_rows

    old = {**GOOD_ROW, "candidates": 2}  # schema 1: the count under "candidates", no best_index
    new = {**GOOD_ROW, "target_index": 1, "schema_version": SCHEMA_VERSION, "candidates_count": 3, "best_index": 0}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    first, second = read_rows(path)
    assert first["schema_version"] == 1 and first["candidates_count"] == 2 and "candidates" not in first
    assert second["schema_version"] == SCHEMA_VERSION and second["candidates_count"] == 3


def test_a_sweep_folder_written_before_resumes_without_a_config_change(tmp_path):
    from noisesearch.records import read_rows
    from noisesearch.sweep.config import load_config
    from noisesearch.sweep.run import run_sweep

    config = load_config(write_config(tmp_path, tiny_sweep(budgets=[4], baseline=False)))
    out = tmp_path / "sweep"
    run_sweep(config, out, note=lambda m: None, cache=False)
    path = out / "results.jsonl"
    lines = path.read_text().splitlines()
    old = []
    for line in lines[:5]:  # the first rows as an older version wrote them; the rest never written
        row = json.loads(line)
        for key in ("schema_version", "best_index", "best_noise_seed", "best_noise_sha256", "noise_shape"):
            row.pop(key)
        row["candidates"] = row.pop("candidates_count")
        old.append(json.dumps(row))
    path.write_text("\n".join(old) + "\n")
    counts = run_sweep(config, out, note=lambda m: None, cache=False)
    assert counts["skipped"] == 5 and counts["written"] == len(lines) - 5
    assert [r["candidates_count"] for r in read_rows(path)] == [1] * len(lines)


def test_run_spec_is_frozen_and_validated_once():
    from noisesearch.spec import RunSpec

    spec = RunSpec(budget=8, targets=(3,), steps=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.budget = 9  # type: ignore[misc]
    checked = spec.validate()
    assert checked.checked and not spec.checked and checked.validate() is checked  # checked once, then kept
    assert checked.seeds == (0,)


BAD_BUDGET = "budget must be a positive integer number of NFEs, got 0"


def test_a_bad_budget_is_refused_in_the_same_words_by_every_entrance_before_any_work(tmp_path, monkeypatch):
    import noisesearch as ns
    from noisesearch import spec as spec_module
    from noisesearch.generate import generate
    from noisesearch.sweep.config import load_config

    def no_build(*args, **kwargs):
        raise AssertionError("built before the budget was checked")

    monkeypatch.setattr(spec_module, "build", no_build)
    result = runner.invoke(app, ["generate", "--target", "7", "--budget", "0", "--out", str(tmp_path / "cli")])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and lines == [f"error: {BAD_BUDGET}"]
    with pytest.raises(UserError, match=BAD_BUDGET):
        generate(target=7, budget=0, out=tmp_path / "py")
    with pytest.raises(UserError, match=BAD_BUDGET):
        ns.search(object(), [7], verifier="classifier", budget=0)  # refused before the model is looked at
    with pytest.raises(UserError, match=f"budgets.0: {BAD_BUDGET}"):
        load_config(write_config(tmp_path, tiny_sweep(budgets=[0])))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # nothing written


def test_a_path_option_that_is_not_text_is_one_error_line_and_nothing_is_written(tmp_path):
    from typer.testing import CliRunner

    from noisesearch.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["generate", "--target", "3", "--budget", "8", "--out", str(out), "--model-param", "path=3"]
    )
    assert result.exit_code == 2 and not out.exists()
    assert result.output.strip().splitlines() == [
        "error: model option path=3 is not a path; give a file, folder or hub id as text"
    ]


def test_a_refusal_of_several_lines_prints_as_one_error_line(capsys):
    import typer

    from noisesearch.cli._app import friendly
    from noisesearch.errors import UserError

    @friendly
    def refuse():
        raise UserError("sweep.yaml: 2 problems\n  verifier: Field required\n  budgets: Field required")

    with pytest.raises(typer.Exit):
        refuse()
    assert capsys.readouterr().err.splitlines() == [
        "error: sweep.yaml: 2 problems; verifier: Field required; budgets: Field required"
    ]
