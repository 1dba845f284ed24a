"""The command line end to end: generate, demo, list, and one clear line for every bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noisesearch.algorithms import derive_seed, gaussian
from noisesearch.cli import app
from noisesearch.ledger import drop_seconds

runner = CliRunner()
GENERATE = [
    "generate",
    "--model",
    "digits",
    "--target",
    "7",
    "--verifier",
    "classifier",
    "--algorithm",
    "random",
    "--budget",
    "256",
    "--steps",
    "16",
    "--seed",
    "0",
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def without_wall_time(path: Path) -> str:
    record = json.loads(path.read_text())
    drop_seconds(record)  # wall_time_s and the ledger's seconds_*
    return json.dumps(record, sort_keys=True)


def test_generate_writes_best_png_and_a_full_record(tmp_path):
    result = invoke(*GENERATE, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "a" / "record.json").read_text())
    for key in (
        "model",
        "target",
        "verifier",
        "algorithm",
        "algorithm_params",
        "seed",
        "budget",
        "nfe_used",
        "verifier_calls",
        "best_score",
        "candidates",
        "wall_time_s",
        "versions",
    ):
        assert key in record, key
    assert record["target"] == 7 and record["budget"] == 256 and record["nfe_used"] == 256
    assert record["verifier_calls"] == len(record["candidates"]) == 16
    assert record["versions"]["torch"] == torch.__version__
    for k, c in enumerate(record["candidates"]):
        assert {"noise_seed", "noise_sha256", "score", "nfe"} <= set(c) and c["nfe"] == 16
        assert c["noise_seed"] == derive_seed(0, k) and c["noise_sha256"] is None  # random search: draw (k,)
    assert record["best_score"] == max(c["score"] for c in record["candidates"])
    best = record["candidates"][record["best_index"]]
    assert best["score"] == record["best_score"]
    # The recorded seed regenerates the best candidate: its noise, sampled again outside the driver,
    # gives the written image and the recorded score.
    from PIL import Image

    from noisesearch.models import MODELS
    from noisesearch.samplers import sample_euler
    from noisesearch.verifiers import VERIFIERS

    model = MODELS["digits"]()
    noise = gaussian((1, 8, 8), best["noise_seed"])[None]  # (1, 1, 8, 8)
    cond = model.encode([7])
    x0 = sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=1.0), noise, model.schedule(16))
    image = model.decode(x0)  # (1, 1, 8, 8)
    png = np.asarray(Image.open(tmp_path / "a" / "best.png"), dtype=np.float64)  # (64, 64), 8x nearest neighbour
    assert png.shape == (64, 64) and (png == np.kron(png[::8, ::8], np.ones((8, 8)))).all()
    # 8-bit rounding (half a level) plus float32 differences between a batch of 16 and a batch of 1
    assert np.abs(png[::8, ::8] - image[0, 0].numpy() * 255).max() <= 1.0
    score = float(VERIFIERS["classifier"]()(image, [7])[0])
    assert abs(score - best["score"]) <= 1e-4  # same float32 maths on another batch size
    other = record["candidates"][(record["best_index"] + 1) % 16]
    assert other["noise_seed"] != best["noise_seed"] and other["score"] != best["score"]


def test_generate_twice_gives_byte_identical_records_and_other_seeds_differ(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert invoke(*GENERATE[:-1], seed, "--out", tmp_path / name).exit_code == 0
    a, b, c = (without_wall_time(tmp_path / n / "record.json") for n in "abc")
    assert a == b  # bit for bit: the same command in one process, same batches, threads and kernels
    assert a != c
    assert (tmp_path / "a" / "best.png").read_bytes() == (tmp_path / "b" / "best.png").read_bytes()  # likewise


def test_generate_zero_order_takes_its_parameters(tmp_path):
    result = invoke(
        *GENERATE[:8],
        "zero-order",
        "--budget",
        "96",
        "--steps",
        "8",
        "--neighbours",
        "3",
        "--step-size",
        "0.4",
        "--out",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["algorithm_params"] == {
        "neighbours": 3,
        "step_size": 0.4,
        "iterations": None,
        "neighbourhood": "cosine",  # the author's (tt-scale-flux); step_size is a parameter of the others
        "cosine": 0.95,
        "restart": True,
        "rescore_pivot": False,
    }
    assert record["nfe_used"] == 96
    roles = [c["info"]["role"] for c in record["candidates"]]
    assert len(roles) == 12 and roles[0] == "pivot" and set(roles) <= {"pivot", "neighbour"}  # a restart: a pivot


def test_list_shows_every_registered_name():
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.models import MODELS
    from noisesearch.verifiers import VERIFIERS

    result = invoke("list")
    assert result.exit_code == 0
    for name in [*MODELS, *VERIFIERS, *ALGORITHMS]:
        assert f"  {name} " in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "imagen"], "unknown model 'imagen'; accepted: digits, digits-large, toy"),
        (["--verifier", "clip"], "unknown verifier 'clip'; accepted: classifier"),
        (["--algorithm", "beam"], "unknown algorithm 'beam'; accepted: random, zero-order"),
        (["--budget", "8"], "budget 8 is smaller than 1 candidate(s) (16 NFEs with 16 steps"),
        (["--budget", "0"], "budget must be a positive integer"),
        (["--steps", "0"], "steps must be a positive integer, got 0"),
        (["--steps", "-3"], "steps must be a positive integer, got -3"),
        (["--algorithm", "zero-order", "--neighbours", "0"], "neighbours must be a positive integer, got 0"),
        (["--algorithm", "zero-order", "--step-size", "0"], "step size must be a positive number, got 0.0"),
        (["--algorithm", "zero-order", "--step-size", "-1"], "step size must be a positive number, got -1.0"),
        (["--neighbours", "3"], "algorithm 'random' takes no parameter 'neighbours'; accepted: candidates"),
        (["--param", "foo"], "--param 'foo' is not KEY=VALUE"),
        (["--target", "11"], "target '11' is not a digits class; accepted: integers 0 to 9"),
        (["--target", "cat"], "target 'cat' is not a digits class"),
        (["--sampler", "ddim"], "unknown sampler 'ddim'; accepted: euler, heun"),
        (["--verifier", "toy-distance"], "verifier 'toy-distance' scores toy images only"),
        (
            ["--model-path", "/nonexistent/flow.safetensors"],
            "weights file '/nonexistent/flow.safetensors' does not exist",
        ),
        (["--dtype", "float16"], "model 'digits' takes no parameter 'dtype'; accepted: path, device"),
        (["--device", "warp"], "unknown device 'warp'; accepted: cpu, cuda, cuda:N, mps"),
        (["--model-param", "foo=1"], "model 'digits' takes no parameter 'foo'"),
        (
            ["--verifier-param", "temperature=2"],
            "verifier 'classifier' takes no parameter 'temperature'; accepted: path",
        ),
        (["--verifier-param", "nokey"], "--verifier-param 'nokey' is not KEY=VALUE"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_code_2(tmp_path, args, message):
    base = dict(zip(GENERATE[1::2], GENERATE[2::2]))
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    flat = [x for kv in base.items() for x in kv]
    result = invoke("generate", *flat, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]


@pytest.mark.parametrize("extra", [["--prompt", "a red cube"], []])
def test_exactly_one_of_target_and_prompt(tmp_path, extra):
    args = [a for a in GENERATE if a not in ("--target", "7")]
    result = invoke(*args, *extra, *(["--target", "7"] if extra else []), "--out", tmp_path)
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: give exactly one of --target (class-conditional models) and --prompt (text models)"
    )


def test_a_prompt_for_a_class_conditional_model_is_refused(tmp_path):
    args = [a for a in GENERATE if a not in ("--target", "7")]
    result = invoke(*args, "--prompt", "a red cube", "--out", tmp_path)
    assert result.exit_code == 2 and "target 'a red cube' is not a digits class" in result.output


def test_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = invoke(*GENERATE, "--out", target)
    assert result.exit_code == 2 and "is a file; give a folder" in result.output
    assert target.read_text() == "keep me"


def test_pickled_weights_are_refused_and_earlier_results_survive(tmp_path):
    out = tmp_path / "out"
    assert invoke(*GENERATE, "--out", out).exit_code == 0
    before = (out / "record.json").read_bytes()
    pickled = tmp_path / "flow.pt"
    torch.save({"weight": torch.zeros(2)}, pickled)
    result = invoke(*GENERATE, "--model-path", pickled, "--out", out)
    assert result.exit_code == 2
    assert "is not a safetensors file" in result.output and "only safetensors weights are accepted" in result.output
    assert (out / "record.json").read_bytes() == before


def test_weights_of_the_wrong_network_are_refused(tmp_path):
    from noisesearch.digits.train import WEIGHTS_DIR

    result = invoke(*GENERATE, "--model-path", WEIGHTS_DIR / "classifier.safetensors", "--out", tmp_path)
    assert result.exit_code == 2 and "holds a 'classifier' network, expected 'flow'" in result.output


def test_console_script_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("noisesearch")
    proc = subprocess.run(
        [str(exe), "generate", "--target", "12", "--budget", "64", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: target '12' is not a digits class; accepted: integers 0 to 9"
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    sets = [json.loads(line) for line in (out / "sets.jsonl").read_text().splitlines()]
    from noisesearch.studies import demo_study
    from noisesearch.sweep.run import cells_of

    [(config, _)] = demo_study(quick=True).sweeps
    assert len(sets) == len(cells_of(config)) == 6 + 2 * 5  # 6 step counts; random and zero-order at 5 budgets
    rows = (out / "results.jsonl").read_text().splitlines()
    assert len(rows) == len(sets) * 300  # one row per target of every configuration
    assert (out / "scaling.png").stat().st_size > 10_000
    for s in sets:
        for key in ("algorithm", "budget", "fid", "is", "precision", "recall", "accuracy", "samples"):
            assert key in s
        with np.load(out / s["samples"]) as npz:
            images, labels = npz["arr_0"], npz["arr_1"]
        assert images.dtype == np.uint8 and images.shape == (300, 8, 8, 1)
        assert labels.shape == (300,) and set(labels.tolist()) == set(range(10))
    by = {(s["algorithm"], s["budget"]): s for s in sets}
    # the paper's finding in miniature: steps plateau, search keeps improving at matched NFEs
    assert by[("none", 32)]["fid"] > by[("none", 8)]["fid"] - 5
    assert by[("random", 32)]["fid"] < by[("none", 32)]["fid"] - 8
    assert by[("random", 128)]["is"] > by[("none", 32)]["is"] + 1
    assert "fid" in result.output and "zero-order" in result.output and "95% CI" in result.output
    table = (out / "table.md").read_text()
    assert (
        "| more denoising steps (no search) | 8 | 8 | 1 |" in table
        and "| random, classifier | 128 | 128 | 1 |" in table
    )
    # rerunning resumes: nothing is recomputed, nothing duplicated
    mtime = (out / sets[0]["samples"]).stat().st_mtime_ns
    result = invoke("demo", "--quick", "--out", out)
    assert result.exit_code == 0 and "nothing recomputed" in result.output
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    assert len((out / "sets.jsonl").read_text().splitlines()) == len(sets)
    assert (out / sets[0]["samples"]).stat().st_mtime_ns == mtime


def test_train_digits_writes_weights_that_generate_can_use(tmp_path, monkeypatch):
    """`train digits` (shortened here) writes loadable safetensors; --model-path/--verifier-path use them."""
    from noisesearch.digits import train

    short = {name: (kind, config, 20, offset) for name, (kind, config, _, offset) in train.WORLD.items()}
    monkeypatch.setattr(train, "WORLD", short)
    weights = tmp_path / "w"
    result = invoke("train", "digits", "--seed", "3", "--out", weights)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in weights.iterdir()) == sorted(short)
    result = invoke(
        *GENERATE,
        "--model-path",
        weights / "flow.safetensors",
        "--verifier-path",
        weights / "classifier.safetensors",
        "--out",
        tmp_path / "g",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "g" / "record.json").read_text())
    assert record["model_path"] == str(weights / "flow.safetensors")
    assert invoke(*GENERATE, "--out", tmp_path / "s").exit_code == 0
    shipped = json.loads((tmp_path / "s" / "record.json").read_text())
    assert record["best_score"] != shipped["best_score"]  # the retrained weights were really used


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budgets", "64,abc"], "--budgets '64,abc' is not a comma-separated list of integers"),
        (["--budgets", "0,64"], "must list positive NFE budgets"),
        (["--algorithms", "random,beam"], "unknown algorithm 'beam'"),
        (["--verifier", "clip"], "unknown verifier 'clip'"),
        (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
        (["--model", "toy"], "compare runs on the built-in digits models"),
    ],
)
def test_compare_bad_input(tmp_path, args, message):
    result = invoke("compare", *args, "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: ") and message in result.output


@pytest.mark.slow
def test_compare_quick_rows_spread_and_skips(tmp_path):
    """A two-algorithm compare: one sample set per (configuration, seed), plot and table with spreads."""
    out = tmp_path / "cmp"
    result = invoke(
        "compare", "--quick", "--budgets", "16,64", "--seeds", "2", "--algorithms", "random,paths", "--out", out
    )
    assert result.exit_code == 0, result.output
    sets = [json.loads(line) for line in (out / "sets.jsonl").read_text().splitlines()]
    keys = {(s["algorithm"], s["budget"], s["seed"]) for s in sets}
    # paths cannot run at 16 NFEs (one path costs 26): skipped with its reason, everything else ran
    assert keys == {(a, b, s) for a in ("none", "random") for b in (16, 64) for s in (0, 1)} | {
        ("paths", 64, 0),
        ("paths", 64, 1),
    }
    assert len(sets) == len(keys) and len((out / "results.jsonl").read_text().splitlines()) == 200 * len(keys)
    assert "skipped paths at 16 NFEs" in result.output and "give --budget >= 36" in result.output
    table = (out / "table.md").read_text()
    assert "| random, classifier | 64 | 64 | 2 |" in table and " ± " in table
    assert (out / "scaling.png").stat().st_size > 10_000
