"""The bad-input table: every user mistake gets one line ``error: ...``, exit code 2, and nothing written.

Each row is one distinct bad input to ``generate``, ``compare``, ``demo``, ``train digits`` or
``list``. Every row asserts: exit code 2, exactly one non-empty line on stderr starting with
``error:`` and containing the expected words, nothing on stdout, no traceback, and no file or
folder created or changed anywhere under the test's folder. Most rows run in-process through
typer's CliRunner; a few run through the real console script, to prove that no traceback reaches
a terminal. Every row fails before a search starts; most before torch is imported, a few (a target
outside the classes, an impossible compare) after loading the small digits model (seconds in all).
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from _configs import DROP, tiny_sweep
from _tiny_verifiers import FailingVerifier, register_verifier
from typer.testing import CliRunner

from noisesearch.cli import app

runner = CliRunner()
LINUX = sys.platform.startswith("linux")
BIG = str(2**70)  # 1180591620717411303424: overflowed int64 before
GENERATE = ["generate", "--target", "7", "--budget", "64", "--steps", "8", "--out", "{out}"]
COMPARE = ["compare", "--out", "{out}"]
DEMO = ["demo", "--quick", "--out", "{out}"]
TRAIN = ["train", "digits", "--out", "{out}"]


def generate(*extra, drop=()):
    """The generate command line with ``extra`` options (replacing the same option) and ``drop`` removed."""
    base = dict(zip(GENERATE[1::2], GENERATE[2::2]))
    for key in drop:
        base.pop(key)
    args = list(extra)
    flat = []
    for key, value in base.items():
        if key not in args[::2]:
            flat += [key, value]
    return ["generate", *flat, *args]


# (id, argv with {out} {file} {dir} {weights:NAME} placeholders, words the error line must contain)
CASES = [
    # generate: numbers
    ("budget-1e12-digits", generate("--budget", "1000000000000"), "more than this machine's memory"),
    ("budget-1e12-float", generate("--budget", "1e12"), "Invalid value for '--budget'"),
    ("budget-2**70", generate("--budget", BIG), "more than this machine's memory"),
    ("budget-zero", generate("--budget", "0"), "budget must be a positive integer"),
    ("budget-negative", generate("--budget", "-5"), "budget must be a positive integer"),
    ("budget-float", generate("--budget", "1.5"), "Invalid value for '--budget'"),
    ("budget-below-one-candidate", generate("--budget", "7"), "budget 7 is smaller than 1 candidate(s)"),
    ("budget-below-default-steps", generate("--budget", "4", drop=["--steps"]), "give --budget >= 8"),
    ("steps-1e9", generate("--steps", "1000000000"), "steps 1000000000 is more than this machine's memory"),
    ("steps-zero", generate("--steps", "0"), "steps must be a positive integer, got 0"),
    ("steps-negative", generate("--steps", "-3"), "steps must be a positive integer, got -3"),
    ("steps-float", generate("--steps", "2.5"), "Invalid value for '--steps'"),
    ("seed-2**70", generate("--seed", BIG), "seed must be an integer from 0 to 2**63-1"),
    ("seed-2**63", generate("--seed", str(2**63)), "seed must be an integer from 0 to 2**63-1"),
    ("seed-negative", generate("--seed", "-1"), "seed must be an integer from 0 to 2**63-1"),
    ("seed-word", generate("--seed", "abc"), "Invalid value for '--seed'"),
    ("seed-5000-digits", generate("--seed", "9" * 5000), "Invalid value for '--seed'"),
    ("guidance-nan", generate("--guidance", "nan"), "--guidance must be a finite number, got nan"),
    ("guidance-inf", generate("--guidance", "inf"), "--guidance must be a finite number, got inf"),
    ("guidance-minus-inf", generate("--guidance", "-inf"), "--guidance must be a finite number"),
    ("guidance-word", generate("--guidance", "strong"), "Invalid value for '--guidance'"),
    ("max-batch-zero", generate("--max-batch", "0"), "max batch must be a positive integer, got 0"),
    # generate: output folder
    ("out-is-a-file", generate("--out", "{file}"), "is a file; give a folder"),
    ("out-under-a-file", generate("--out", "{file}/sub"), "which is a file; give a folder"),
    ("out-empty", generate("--out", ""), "--out is empty"),
    # /proc takes no new files, even from root (CI runs as root, where chmod 0o555 stops nothing)
    *([("out-not-writable", generate("--out", "/proc/noisesearch-out"), "cannot be written")] if LINUX else []),
    ("out-holds-record-folder", generate("--out", "{dir}"), "holds a folder named 'record.json'"),
    # generate: weights
    ("model-path-empty", generate("--model-path", ""), "--model-path is empty"),
    ("model-path-folder", generate("--model-path", "{dir}"), "is a folder; give a .safetensors file"),
    ("model-path-missing", generate("--model-path", "{out}/flow.safetensors"), "does not exist"),
    ("model-path-not-safetensors", generate("--model-path", "{file}"), "is not a safetensors file"),
    ("weights-no-config", generate("--model-path", "{weights:noconfig}"), "has no 'config' in its metadata"),
    ("weights-bad-config-json", generate("--model-path", "{weights:badjson}"), "'config' is not valid JSON"),
    ("weights-config-not-object", generate("--model-path", "{weights:listconfig}"), "must be a JSON object"),
    ("weights-config-bad-size", generate("--model-path", "{weights:negwidth}"), "config' key 'width' must be"),
    ("weights-config-unknown-key", generate("--model-path", "{weights:unknownkey}"), "does not describe a flow"),
    ("weights-wrong-shape", generate("--model-path", "{weights:shape}"), "tensor 'out.weight' has shape (3, 3)"),
    ("weights-missing-tensor", generate("--model-path", "{weights:missing}"), "missing keys ['out.bias']"),
    ("weights-other-network", generate("--verifier-path", "{weights:flow}"), "holds a 'flow' network"),
    ("verifier-path-folder", generate("--verifier-path", "{dir}"), "is a folder; give a .safetensors file"),
    # generate: names, targets, prompts, parameters
    ("model-unknown", generate("--model", "imagen"), "unknown model 'imagen'; accepted: digits"),
    ("model-empty", generate("--model", ""), "unknown model ''"),
    ("verifier-unknown", generate("--verifier", "clip"), "unknown verifier 'clip'"),
    ("algorithm-unknown", generate("--algorithm", "beam"), "unknown algorithm 'beam'"),
    ("sampler-unknown", generate("--sampler", "ddim"), "unknown sampler 'ddim'"),
    ("sampler-empty", generate("--sampler", ""), "unknown sampler ''"),
    ("target-out-of-range", generate("--target", "10"), "target '10' is not a digits class"),
    ("target-empty", generate("--target", ""), "target '' is not a digits class"),
    ("target-and-prompt", generate("--prompt", "a cat"), "give exactly one of --target"),
    ("neither-target-nor-prompt", generate(drop=["--target"]), "give exactly one of --target"),
    ("prompt-empty", generate("--prompt", "", drop=["--target"]), "--prompt must be a non-empty string"),
    ("prompt-100kb", generate("--prompt", "a" * 100_000, drop=["--target"]), "100,000 characters long"),
    ("prompt-on-digits", generate("--prompt", "a red cube", drop=["--target"]), "is not a digits class"),
    ("param-no-equals", generate("--param", "foo"), "--param 'foo' is not KEY=VALUE"),
    ("param-no-key", generate("--param", "=3"), "--param '=3' is not KEY=VALUE"),
    ("param-unknown", generate("--param", "nosuch=1"), "takes no parameter 'nosuch'"),
    ("param-word", generate("--param", "candidates=abc"), "candidates must be a positive integer"),
    ("param-zero", generate("--param", "candidates=0"), "candidates must be a positive integer"),
    ("param-inf", generate("--algorithm", "zero-order", "--param", "step_size=inf"), "must be a finite number"),
    ("param-nan", generate("--algorithm", "zero-order", "--param", "step_size=NaN"), "must be a finite number"),
    ("param-word-for-number", generate("--algorithm", "zero-order", "--param", "step_size=big"), "bad parameter"),
    ("step-size-nan", generate("--algorithm", "zero-order", "--step-size", "nan"), "step size must be a positive"),
    ("neighbours-on-random", generate("--neighbours", "3"), "takes no parameter 'neighbours'"),
    ("model-param-unknown", generate("--model-param", "foo=1"), "model 'digits' takes no parameter 'foo'"),
    ("verifier-param-junk", generate("--verifier-param", "nokey"), "is not KEY=VALUE"),
    ("generate-unknown-option", generate("--bogus", "1"), "No such option: --bogus"),
    ("generate-extra-argument", [*generate(), "extra"], "unexpected extra argument"),
    # compare
    ("compare-all-searches-impossible", [*COMPARE, "--quick", "--budgets", "2"], "nothing to compare"),
    ("compare-budgets-junk", [*COMPARE, "--budgets", "2,,x"], "item 2 is empty"),
    ("compare-budgets-word", [*COMPARE, "--budgets", "64,abc"], "not a comma-separated list of integers"),
    ("compare-budgets-duplicate", [*COMPARE, "--budgets", "64,64"], "'64' is given twice"),
    ("compare-budgets-duplicate-spelling", [*COMPARE, "--budgets", "64,064"], "64 is given twice"),
    ("compare-budgets-zero", [*COMPARE, "--budgets", "0,64"], "must list positive NFE budgets"),
    ("compare-budgets-empty", [*COMPARE, "--budgets", ""], "--budgets is empty"),
    ("compare-budgets-1e12", [*COMPARE, "--budgets", "1000000000000"], "more than this machine's memory"),
    ("compare-quick-big-budget", [*COMPARE, "--quick", "--budgets", "512"], "--quick runs budgets up to 256"),
    ("compare-odd-budget-with-cfg", [*COMPARE, "--guidance", "1.5", "--budgets", "65"], "budgets must be even"),
    ("compare-guidance-nan", [*COMPARE, "--guidance", "nan"], "--guidance must be a finite number"),
    ("compare-seeds-zero", [*COMPARE, "--seeds", "0"], "--seeds must be a positive integer, got 0"),
    ("compare-seeds-negative", [*COMPARE, "--seeds", "-2"], "--seeds must be a positive integer"),
    ("compare-seeds-huge", [*COMPARE, "--seeds", "100000"], "--seeds must be at most 1,000"),
    ("compare-algorithms-empty", [*COMPARE, "--algorithms", ""], "--algorithms is empty"),
    ("compare-algorithms-duplicate", [*COMPARE, "--algorithms", "random,random"], "'random' is given twice"),
    ("compare-algorithms-unknown", [*COMPARE, "--algorithms", "random,beam"], "unknown algorithm 'beam'"),
    ("compare-verifier-unknown", [*COMPARE, "--verifier", "clip"], "unknown verifier 'clip'"),
    ("compare-model-not-digits", [*COMPARE, "--model", "toy"], "compare runs on the built-in digits models"),
    ("compare-out-is-a-file", ["compare", "--out", "{file}"], "is a file; give a folder"),
    ("compare-out-under-a-file", ["compare", "--out", "{file}/x"], "which is a file"),
    # demo
    ("demo-out-is-a-file", ["demo", "--out", "{file}"], "is a file; give a folder"),
    ("demo-out-empty", ["demo", "--out", ""], "--out is empty"),
    ("demo-seed-negative", [*DEMO, "--seed", "-1"], "seed must be an integer from 0 to 2**63-1"),
    ("demo-seed-2**70", [*DEMO, "--seed", BIG], "seed must be an integer from 0 to 2**63-1"),
    ("demo-guidance-inf", [*DEMO, "--guidance", "inf"], "--guidance must be a finite number"),
    ("demo-extra-argument", [*DEMO, "now"], "unexpected extra argument"),
    # train digits
    ("train-out-is-a-file", ["train", "digits", "--out", "{file}"], "is a file; give a folder"),
    ("train-out-under-a-file", ["train", "digits", "--out", "{file}/w"], "which is a file"),
    ("train-seed-negative", [*TRAIN, "--seed", "-1"], "seed must be an integer from 0 to 2**63-1"),
    ("train-seed-2**64", [*TRAIN, "--seed", str(2**64)], "seed must be an integer from 0 to 2**63-1"),
    ("train-epochs", [*TRAIN, "--epochs", "0"], "No such option: --epochs"),
    ("train-unknown-world", ["train", "imagenet"], "No such command 'imagenet'"),
    # list and the top level
    ("list-extra-argument", ["list", "models"], "unexpected extra argument"),
    ("list-unknown-option", ["list", "--all"], "No such option: --all"),
    ("unknown-command", ["search"], "No such command 'search'"),
]
# run through the real console script as well (no traceback reaches a terminal); each fails before torch loads
CONSOLE = {"seed-2**70", "guidance-nan", "compare-budgets-junk", "train-seed-2**64", "list-extra-argument"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Broken copies of the shipped flow weights, one fault each."""
    from noisesearch._io import load_weights, save_weights
    from noisesearch.digits.train import WEIGHTS_DIR

    tensors, meta = load_weights(WEIGHTS_DIR / "flow.safetensors")
    config = json.loads(meta["config"])
    faults = {
        "noconfig": (tensors, {"kind": "flow"}),
        "badjson": (tensors, {**meta, "config": '{"width": 64,'}),
        "listconfig": (tensors, {**meta, "config": "[64, 128]"}),
        "negwidth": (tensors, {**meta, "config": json.dumps({**config, "width": -1})}),
        "unknownkey": (tensors, {**meta, "config": json.dumps({**config, "heads": 4})}),
        "shape": ({**tensors, "out.weight": torch.zeros(3, 3)}, meta),
        "missing": ({k: v for k, v in tensors.items() if k != "out.bias"}, meta),
    }
    folder = tmp_path_factory.mktemp("weights")
    paths = {"flow": WEIGHTS_DIR / "flow.safetensors"}
    for name, (t, m) in faults.items():
        paths[name] = folder / f"{name}.safetensors"
        save_weights(paths[name], t, m)
    return paths


def fill(args: list[str], tmp_path: Path, weights: dict[str, Path]) -> list[str]:
    """Placeholders -> paths: {out} (never created), {file} (a file), {dir} (a folder), {weights:NAME}."""
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "dir" / "record.json").mkdir(parents=True)
    values = {"out": tmp_path / "out", "file": tmp_path / "file", "dir": tmp_path / "dir"}
    values.update({f"weights:{k}": v for k, v in weights.items()})
    out = []
    for arg in args:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", str(value))
        out.append(arg)
    return out


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def check_one_error_line(code: int, stdout: str, stderr: str, words: str) -> None:
    assert code == 2, (code, stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].strip() != "error:", stderr
    assert words in lines[0], lines[0]
    assert stdout == ""
    assert "Traceback" not in stdout + stderr


def test_the_table_holds_distinct_inputs():
    assert len(CASES) >= 60
    assert len({name for name, _, _ in CASES}) == len(CASES)
    assert len({json.dumps(args) for _, args, _ in CASES}) == len(CASES)
    assert CONSOLE <= {name for name, _, _ in CASES}


@pytest.mark.parametrize("name,args,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_exit_2_and_writes_nothing(tmp_path, weights, name, args, words):
    argv = fill(args, tmp_path, weights)
    before = snapshot(tmp_path)
    result = runner.invoke(app, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    check_one_error_line(result.exit_code, result.stdout, result.stderr, words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name,args,words", [c for c in CASES if c[0] in CONSOLE], ids=sorted(CONSOLE))
def test_console_script_prints_one_line_and_no_traceback(tmp_path, weights, name, args, words):
    exe = Path(sys.executable).with_name("noisesearch")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    argv = fill(args, tmp_path, weights)
    before = snapshot(tmp_path)
    proc = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=120)
    check_one_error_line(proc.returncode, proc.stdout, proc.stderr, words)
    assert snapshot(tmp_path) == before


def test_read_only_out_is_refused_before_the_search(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root (CI) writes into a 0555 folder anyway: answer as the kernel does for a user
        real_mkstemp = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        result = runner.invoke(app, generate("--out", str(folder / "out")))
        check_one_error_line(result.exit_code, result.stdout, result.stderr, "cannot be written")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_python_functions_refuse_the_same_inputs_before_any_work(tmp_path):
    """The functions behind the commands check their arguments too (one UserError each)."""
    from noisesearch.errors import UserError
    from noisesearch.generate import generate as run
    from noisesearch.studies import compare_study, demo_study
    from noisesearch.sweep.config import validate_config

    plain = tiny_sweep(benchmark={"name": "digits"}, budgets=[8])
    bad_calls = [
        lambda: run(target=7, budget=64, seed=2**70, out=tmp_path / "a"),
        lambda: run(target=7, budget=10**12, out=tmp_path / "a"),
        lambda: run(target=7, budget=64, guidance=math.nan, out=tmp_path / "a"),
        lambda: run(target=7, budget=64, steps=10**9, out=tmp_path / "a"),
        lambda: run(target=7, budget=64, out=tmp_path / "file" / "a"),
        lambda: run(target=7, budget=64, algorithm_params=["candidates"], out=tmp_path / "a"),
        lambda: compare_study(budgets=[64, 64]),
        lambda: compare_study(budgets=[64], seeds=0),
        lambda: compare_study(budgets=[64], algorithms=[]),
        lambda: compare_study(budgets=[4], algorithms=["random"]),  # no search can run: nothing to compare
        lambda: demo_study(seed=-1),
        lambda: demo_study(guidance=math.inf),
        lambda: validate_config({**plain, "benchmark": {"name": "digits", "per_class": 0}}, "x"),
        lambda: validate_config({**plain, "algorithms": [{"name": "random"}, {"name": "random"}]}, "x"),
        lambda: validate_config({**plain, "budgets": [16], "guidance": 1.5, "baseline_budgets": [3]}, "x"),  # 1.5 steps
    ]
    (tmp_path / "file").write_text("x")
    for call in bad_calls:
        with pytest.raises(UserError) as e:
            call()
        assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_verifier_failing_on_every_image_ends_generate_with_a_record_and_exit_1(tmp_path, monkeypatch):
    """All scores NaN: record.json (valid JSON, best_score null, nan_scores counted), no best.png, exit 1."""
    register_verifier(monkeypatch, "failing", FailingVerifier)  # NaN on every image
    out = tmp_path / "out"
    result = runner.invoke(app, generate("--verifier", "failing", "--out", str(out)))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: every candidate's score failed (8 NaN or infinite scores); {out / 'record.json'} written, no best.png"
    )
    record = json.loads((out / "record.json").read_text())  # strict JSON: NaN would not parse back as null
    assert record["best_score"] is None and record["nan_scores"] == 8 and len(record["candidates"]) == 8
    assert all(c["score"] is None for c in record["candidates"])
    assert "NaN" not in (out / "record.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["record.json"]


def test_step_baseline_under_guidance_spends_exactly_its_budget_as_half_the_steps(tmp_path):
    """With CFG a step costs 2 NFEs: the baseline at budget B runs B/2 steps and its rows say so."""
    from noisesearch.studies import compare_study, demo_study
    from noisesearch.sweep.config import baseline_steps
    from noisesearch.sweep.run import run_sweep

    study = compare_study(budgets=[8, 16], seeds=1, algorithms=["random"], guidance=1.5)
    [(config, _)] = study.sweeps
    assert config.step_budgets == [8, 16] and config.guidance == 1.5
    assert [baseline_steps(b, "euler", 2) for b in config.step_budgets] == [4, 8]
    assert [(a, b) for a, b, _ in study.skipped] == [("random", 8)]
    assert "budget 8 is smaller than 1 candidate(s) (16 NFEs" in study.skipped[0][2]
    assert config.algorithms[0].budgets == [16]
    [(demo, _)] = demo_study(quick=True, guidance=1.5).sweeps
    assert demo.step_budgets == [2 * s for s in (1, 2, 4, 8, 16, 32)]
    # without guidance the same budget buys as many steps as NFEs
    assert baseline_steps(8, "euler", 1) == 8
    small = config.model_copy(update={"benchmark": config.benchmark.model_copy(update={"per_class": 1})})
    small = small.model_copy(update={"algorithms": [], "budgets": [8], "baseline_budgets": None})
    run_sweep(small, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {(r["steps"], r["budget"], r["guidance"], r["nfe_used"]) for r in rows} == {(4, 8, 1.5, 8)}
    assert len(rows) == 10


def test_rerun_of_a_finished_study_says_all_rows_were_there(tmp_path):
    """A rerun computes nothing and says so; the CLI line comes from these counts."""
    from noisesearch.cli import _written
    from noisesearch.studies import Study, run_study
    from noisesearch.sweep.config import validate_config

    config = validate_config(tiny_sweep(budgets=[4], steps=2, baseline_scored=False, chunk=DROP, keep_images=DROP), "x")
    study = Study([(config, ".")])
    assert run_study(study, tmp_path, keep_cache=True) == {"written": 20, "already": 0, "sets": 2}
    assert any((tmp_path / "cache").rglob("*.safetensors")), "the sweep's replay cache was not used"
    assert run_study(study, tmp_path) == {"written": 0, "already": 20, "sets": 0}
    assert not (tmp_path / "cache").exists(), "a finished study keeps no cache unless asked"
    before = (tmp_path / "results.jsonl").read_bytes()
    counts = run_study(study, tmp_path)
    assert counts == {"written": 0, "already": 20, "sets": 0}
    assert (tmp_path / "results.jsonl").read_bytes() == before
    assert _written(counts, tmp_path) == f"all 20 rows were already in {tmp_path / 'results.jsonl'}; nothing recomputed"


def test_a_configuration_whose_verifier_fails_everywhere_is_counted_not_lost(tmp_path, monkeypatch):
    """A study goes on past a verifier that fails on every image: its searches are counted as failed."""
    from noisesearch.studies import Study, draw, run_study
    from noisesearch.sweep.config import validate_config

    register_verifier(monkeypatch, "failing", FailingVerifier)  # NaN on every image
    config = validate_config(
        tiny_sweep(
            verifier={"name": "failing"},
            budgets=[4],
            steps=2,
            baseline_budgets=[2],
            baseline_scored=False,
            chunk=DROP,
            keep_images=DROP,
        ),
        "x",
    )
    study = Study([(config, ".")])
    assert run_study(study, tmp_path)["written"] == 20
    sets = {s["algorithm"]: s for s in map(json.loads, (tmp_path / "sets.jsonl").read_text().splitlines())}
    assert sets["random"]["failed_searches"] == 10 and sets["random"]["n_samples"] == 0
    assert sets["none"]["failed_searches"] == 0 and sets["none"]["n_samples"] == 10  # unscored: not failed
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    searched = [r for r in rows if r["algorithm"] == "random"]
    assert all(r["best_score"] is None and r["nan_scores"] == 2 for r in searched)
    lines = draw(study, tmp_path, metrics=["fid"], title="t")
    assert lines[1][0] == "more denoising steps (no search)" and lines[2][-1] == "-"
