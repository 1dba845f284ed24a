"""The sweep's fault suite: bad inputs get one line, crashes lose nothing, one writer per folder.

Kill tests stop a tiny digits sweep at random moments (an exception or a full disk injected at a
random write in-process; a real ``kill -9`` of a ``noisesearch sweep`` subprocess, local and Ray),
rerun it to completion and compare rows (minus wall times), ``sets.jsonl`` entries, and the bytes of
``samples/*.npz`` and the kept PNGs with an uninterrupted run. Everything runs on one torch thread
(``OMP_NUM_THREADS=1`` in subprocesses, as Ray's actors) on this machine with the same kernels, and a chunk
is always searched whole, in the same batches: so every run computes the same bits (see ``same``).

These runs turn the replay cache off (``cache=False``, ``--no-cache``): a chunk searched again after a
crash would replay some candidates and compute the rest in a smaller batch, which moves the last bits of
a score on kernels that depend on the batch size, and the write points counted here would include
cache entries. The cache's own kill test is in ``test_cache.py``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _configs import GOOD_ROW, tiny_sweep, write_config
from _tiny_verifiers import FailingVerifier, register_verifier
from typer.testing import CliRunner

from noisesearch import _io
from noisesearch.cli import app
from noisesearch.errors import UserError
from noisesearch.ledger import drop_seconds
from noisesearch.sweep import run as sweep_run
from noisesearch.sweep.config import load_config

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_sweep()  # digits, one image per class, random search at budgets 4 and 8, chunks of 3 (tests/_configs.py)
ROWS = 4 * 10  # (baseline + random) x 2 budgets x 10 targets


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1) and Ray's actors: the same bits
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(one_thread, tmp_path_factory):
    return sweep_run.load_world(load_config(write_config(tmp_path_factory.mktemp("world"), TINY)))


def run(folder: Path, config: dict, world, **kwargs) -> dict:
    """``run_sweep`` in this process with the module's loaded world (loading it is most of a tiny run)."""
    cfg = load_config(write_config(folder.parent, config, f"{folder.name}.yaml"))
    original = sweep_run.load_world
    sweep_run.load_world = lambda _config: world
    try:
        return sweep_run.run_sweep(cfg, folder, note=lambda message: None, **{"cache": False, **kwargs})
    finally:
        sweep_run.load_world = original


def snapshot(folder: Path) -> dict:
    """What an uninterrupted run must leave: rows (no wall times), set entries, sample and PNG bytes."""
    lines = (folder / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for r in rows:
        drop_seconds(r)  # wall_time_s and the ledger's seconds_*
    keys = [(r["cell"], r["target_index"]) for r in rows]
    assert len(keys) == len(set(keys)), "a row was written twice"
    sets = [json.loads(line) for line in (folder / "sets.jsonl").read_text().splitlines()]
    assert len({s["cell"] for s in sets}) == len(sets), "a set entry was written twice"
    files = {
        str(p.relative_to(folder)): p.read_bytes()
        for pattern in ("samples/*.npz", "images/**/*.png")
        for p in folder.glob(pattern)
    }
    leftovers = [
        str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".npz" and "sets" in p.parts
    ]
    assert leftovers == [], leftovers
    return {
        "rows": sorted(rows, key=lambda r: (r["cell"], r["target_index"])),
        "sets": sorted(sets, key=lambda s: s["cell"]),
        "files": files,
    }


def same(got: dict, want: dict) -> None:
    """Bit for bit, and that is a real promise here: the reference and every resumed run (this process, a
    ``noisesearch sweep`` subprocess, a Ray actor) run on this machine, with these kernels (the environment is
    inherited), on one thread, and a chunk cut by a crash is searched again whole, so every row is computed in the
    same batch as in the reference. (Across machines, kernels or batch sizes only a tolerance would hold.)"""
    assert len(got["rows"]) == len(want["rows"]) == ROWS
    assert got["rows"] == want["rows"]  # exact: the same batches compute the same bits
    assert got["sets"] == want["sets"] and len(want["sets"]) == 4
    assert sorted(got["files"]) == sorted(want["files"]) and len(want["files"]) == 4 + ROWS
    assert all(got["files"][k] == want["files"][k] for k in want["files"]), "a sample or image differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, world):
    """An uninterrupted run, and how many writes it makes (the points a crash can hit)."""
    folder = tmp_path_factory.mktemp("faults") / "reference"
    counted = []
    append, atomic = _io.append_jsonl, _io.atomic_write_bytes
    _io.append_jsonl = lambda *a: (counted.append("append"), append(*a))[1]
    _io.atomic_write_bytes = lambda *a: (counted.append("atomic"), atomic(*a))[1]
    try:
        counts = run(folder, TINY, world)
    finally:
        _io.append_jsonl, _io.atomic_write_bytes = append, atomic
    assert counts["written"] == ROWS and counts["sets"] == 4
    # sweep.json + 16 chunk parts + 40 PNGs + 16 appends of a chunk's rows + 4 samples + 4 set entries
    assert len(counted) == 1 + 16 + 40 + 16 + 4 + 4
    return snapshot(folder), len(counted)


# ---------------------------------------------------------------------------------------------
# kill tests


class Killed(BaseException):
    """The process died here (nothing after this point runs, no ``except Exception`` catches it)."""


def inject(monkeypatch, at: int, mode: str) -> None:
    """Make write number ``at`` fail: ``kill`` dies before it (a half temp file left), ``enospc`` gets a full
    disk in the middle of it (half of the JSONL lines of an append reach the file)."""
    calls = iter(range(10**6))
    append, atomic = _io.append_jsonl, _io.atomic_write_bytes

    def failing_append(path, row):
        if next(calls) == at:
            line = "".join(_io.dumps(r) + "\n" for r in (row if isinstance(row, list) else [row])).encode()
            if mode == "enospc":
                with open(path, "ab") as f:
                    f.write(line[: len(line) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise Killed
        append(path, row)

    def failing_atomic(path, data):
        if next(calls) == at:
            if mode == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            # a half temporary file in this program's own pattern (_io.is_own_temp), as a crash leaves it
            (Path(path).parent / f".{Path(path).name}.noisesearch-killed00.tmp").write_bytes(data[: len(data) // 2])
            raise Killed
        atomic(path, data)

    monkeypatch.setattr(_io, "append_jsonl", failing_append)
    monkeypatch.setattr(_io, "atomic_write_bytes", failing_atomic)


IN_PROCESS = [(k, "kill" if k % 3 else "enospc") for k in random.Random(10).sample(range(1, 73), 11)] + [
    (0, "kill"),  # before sweep.json
    (74, "enospc"),  # the merge: the first set entry half written
    (77, "kill"),  # the merge: between a set entry and the next cell's samples
    (80, "enospc"),  # the last set entry, half written
]


@pytest.mark.slow
@pytest.mark.parametrize("at,mode", IN_PROCESS)
def test_a_crash_at_any_write_then_a_rerun_gives_the_uninterrupted_result(tmp_path, world, reference, at, mode):
    want, writes = reference
    assert at < writes
    folder = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        inject(mp, at, mode)
        with pytest.raises(UserError if mode == "enospc" else Killed) as failed:
            run(folder, TINY, world)
    if mode == "enospc":
        assert "No space left on device; free some space, then rerun the same command" in str(failed.value)
    counts = run(folder, TINY, world)
    assert counts["skipped"] + counts["written"] == ROWS
    same(snapshot(folder), want)


def _sweep_process(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "noisesearch.cli", "sweep", str(config), "--out", str(out), "--no-cache", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes Ray's processes too
    )


def _rows_in(folder: Path) -> int:
    try:
        return (folder / "results.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_after(proc: subprocess.Popen, folder: Path, rows: int, extra_s: float) -> int:
    """``kill -9`` the sweep (and its process group) once ``rows`` rows are written, ``extra_s`` later."""
    deadline = time.monotonic() + 120
    while _rows_in(folder) < rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(extra_s)
    seen = _rows_in(folder)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("rows,extra_s", [(1, 0.0), (7, 0.003), (23, 0.0), (39, 0.0)])
def test_kill_9_of_a_local_sweep_then_a_rerun_gives_the_uninterrupted_result(tmp_path, world, reference, rows, extra_s):
    folder = tmp_path / "out"
    proc = _sweep_process(write_config(tmp_path, TINY), folder)
    kill_after(proc, folder, rows, extra_s)
    counts = run(folder, TINY, world)
    assert counts["skipped"] + counts["written"] == ROWS
    same(snapshot(folder), reference[0])


@pytest.fixture(scope="module")
def start_ray():
    """Starts a local Ray here when first called (after a test's subprocess has started its own)."""
    ray = pytest.importorskip("ray")
    yield lambda: ray.is_initialized() or ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("rows", [13])
def test_kill_9_of_a_ray_sweep_then_a_ray_rerun_gives_the_uninterrupted_result(
    tmp_path, world, reference, start_ray, rows
):
    from noisesearch.sweep.ray_backend import RayExecutor

    folder = tmp_path / "out"
    proc = _sweep_process(write_config(tmp_path, TINY), folder, "--backend", "ray")
    seen = kill_after(proc, folder, rows, 0.0)
    assert 0 < seen < ROWS, seen  # killed mid-sweep
    start_ray()
    counts = run(folder, TINY, world, executor=RayExecutor(workers=2))
    assert counts["skipped"] + counts["written"] == ROWS and counts["written"] >= ROWS - seen
    same(snapshot(folder), reference[0])


# ---------------------------------------------------------------------------------------------
# one folder, one writer

HOLD = """
import sys, time
from noisesearch.sweep.lock import FolderLock
lock = FolderLock(sys.argv[1]).acquire()
print("held", flush=True)
if sys.argv[2] == "die":
    import os
    os._exit(0)  # dies holding it: the file keeps this PID, the kernel drops the lock
time.sleep(60)
"""


def _holder(folder: Path, how: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), how], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_sweep_into_a_live_folder_is_refused_naming_the_owner(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    holder = _holder(folder, "hold")
    try:
        result = runner.invoke(app, ["sweep", str(write_config(tmp_path, TINY)), "--out", str(folder)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {str(folder)!r} is being written by another sweep (PID {holder.pid} on host "
        f"{socket.gethostname()}); wait for it to finish or use another --out folder\n"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["sweep.lock"]  # nothing else written


def test_a_stale_lock_of_a_dead_sweep_is_taken_over_with_a_message(tmp_path, world):
    folder = tmp_path / "out"
    folder.mkdir()
    dead = _holder(folder, "die")
    dead.wait()
    messages = []
    cfg = load_config(write_config(tmp_path, tiny_sweep(budgets=[4], benchmark={"name": "digits", "subset": [0, 1]})))
    original = sweep_run.load_world
    sweep_run.load_world = lambda _config: world
    try:
        counts = sweep_run.run_sweep(cfg, folder, note=messages.append)
    finally:
        sweep_run.load_world = original
    assert counts["written"] == 2 * 2
    assert messages == [
        f"taking over the lock of a sweep that is gone (PID {dead.pid} on host {socket.gethostname()}); "
        "resuming its rows"
    ]
    assert (folder / "sweep.lock").read_bytes() == b""  # released on exit


# ---------------------------------------------------------------------------------------------
# failing verifiers, the CFG baseline, canonical configs, nothing to do


@pytest.mark.slow
def test_a_search_whose_scores_all_fail_is_a_null_row_and_the_sweep_goes_on(tmp_path, monkeypatch, one_thread):
    from noisesearch.verifiers import VERIFIERS

    def threes(images, targets):  # a grader that times out on every image of target 3
        return torch.tensor([t == 3 for t in targets])

    classifier = VERIFIERS["classifier"]()
    register_verifier(
        monkeypatch,
        "fails-on-threes",
        lambda: FailingVerifier(classifier, threes, name="fails-on-threes"),
        domain="digits",
    )
    config = tiny_sweep(
        verifier={"name": "fails-on-threes"}, eval_verifiers=[{"name": "oracle-is"}], baseline=False, budgets=[8]
    )
    folder = tmp_path / "out"
    cfg = load_config(write_config(tmp_path, config))
    counts = sweep_run.run_sweep(cfg, folder, note=lambda m: None)
    assert counts["written"] == 10 and counts["sets"] == 1
    rows = {r["target_index"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}
    three = rows[3]
    assert three["best_score"] is None and three["image"] is None and three["eval_oracle-is"] is None
    assert three["nan_scores"] == three["candidates_count"] == 2 and three["nfe_used"] == 8  # 2 candidates x 4 steps
    assert all(r["best_score"] is not None and r["nan_scores"] == 0 for i, r in rows.items() if i != 3)
    (entry,) = map(json.loads, (folder / "sets.jsonl").read_text().splitlines())
    assert (entry["n_samples"], entry["failed_searches"], entry["missing_targets"]) == (9, 1, [3])
    with np.load(folder / entry["samples"]) as npz:
        assert npz["arr_1"].tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9] and npz["arr_0"].shape == (9, 8, 8, 1)
    assert runner.invoke(app, ["report", str(folder)]).exit_code == 0
    assert "| random, fails-on-threes | " in (table := (folder / "report" / "tables.md").read_text())
    assert "| 1 of 10 (2) |" in table


def test_the_step_baseline_spends_its_budget_under_guidance_as_half_the_steps(tmp_path, world):
    config = tiny_sweep(guidance=1.5, steps=2, benchmark={"name": "digits", "subset": [0, 1, 2]})
    folder = tmp_path / "out"
    assert run(folder, config, world)["written"] == 4 * 3
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    baseline = sorted({(r["budget"], r["steps"], r["nfe_used"]) for r in rows if r["algorithm"] == "none"})
    assert baseline == [(4, 2, 4), (8, 4, 8)]  # budget NFEs exactly, as budget / 2 steps of 2 NFEs
    assert {r["guidance"] for r in rows} == {1.5}


def test_one_and_one_point_zero_are_one_configuration(tmp_path, world):
    zero_order = tiny_sweep(algorithms=[{"name": "zero-order", "params": {"neighbours": 1, "step_size": 1}}])
    zero_order["budgets"], zero_order["benchmark"] = [8], {"name": "digits", "subset": [0]}
    folder = tmp_path / "out"
    assert run(folder, zero_order, world)["written"] == 2
    again = {**zero_order, "algorithms": [{"name": "zero-order", "params": {"neighbours": 1.0, "step_size": 1.0}}]}
    assert run(folder, again, world) == {"written": 0, "skipped": 2, "cells": 2, "targets": 1, "sets": 0}
    result = runner.invoke(app, ["sweep", str(write_config(tmp_path, again, "again.yaml")), "--out", str(folder)])
    assert result.exit_code == 0 and result.stdout == f"nothing to do: all 2 rows are in {folder / 'results.jsonl'}\n"


def test_a_first_run_that_wrote_no_row_does_not_block_a_corrected_config(tmp_path, world, monkeypatch):
    folder = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        inject(mp, 2, "kill")  # sweep.json and one part written, no row
        with pytest.raises(Killed):
            run(folder, TINY, world)
    fixed = tiny_sweep(budgets=[4], benchmark={"name": "digits", "subset": [0]})
    messages = []
    cfg = load_config(write_config(tmp_path, fixed))
    monkeypatch.setattr(sweep_run, "load_world", lambda _config: world)
    assert sweep_run.run_sweep(cfg, folder, note=messages.append)["written"] == 2
    assert messages == [f"{folder / 'sweep.json'} held another config but no rows were written with it; replacing it"]
    assert json.loads((folder / "sweep.json").read_text())["budgets"] == [4]


@pytest.mark.slow
def test_report_only_reads_and_warns_of_a_half_line_that_sweep_then_repairs(tmp_path, reference, world):
    folder = tmp_path / "out"
    run(folder, TINY, world)
    path = folder / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:50])
    before = path.read_bytes()
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"warning: {path}: the last line is unfinished (a crash mid-write) and is ignored; the next sweep repairs it\n"
    )
    assert path.read_bytes() == before  # a report never writes its input
    counts = run(folder, TINY, world)
    assert counts["written"] == 1 and path.read_bytes().count(b"\n") == ROWS
    same(snapshot(folder), reference[0])


def test_a_ray_address_with_nothing_listening_fails_fast_in_one_line(tmp_path):
    started = time.monotonic()
    result = runner.invoke(
        app,
        [
            "sweep",
            str(write_config(tmp_path, TINY)),
            "--out",
            str(tmp_path / "o"),
            "--backend",
            "ray",
            "--address",
            "127.0.0.1:1",
        ],
    )
    assert time.monotonic() - started < 30
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no Ray cluster answers at 127.0.0.1:1 (Connection refused); ")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# bad inputs: exit 2, one line on stderr starting "error:", no traceback, nothing written

BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}"
    f",*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
    for i in range(8)
)


def _yaml(text: str):
    return lambda tmp: _file(tmp, text.encode())


def _file(tmp: Path, data: bytes) -> Path:
    path = tmp / "bad.yaml"
    path.write_bytes(data)
    return path


def _config(**change):
    return lambda tmp: write_config(tmp, tiny_sweep(**change), "bad.yaml")


SWEEP_BAD = {
    "not UTF-8": (
        lambda tmp: _file(tmp, "model: digits\nbenchmark: {name: é}\n".encode("latin-1")),
        "not UTF-8 text (byte 0xe9",
    ),
    "alias bomb": (_yaml(BOMB), "anchors and aliases expand to"),
    "recursive alias": (_yaml("a: &a [*a]\n"), "an alias inside its own anchor"),
    "budget 1e23": (
        _yaml(yaml.safe_dump(TINY).replace("- 4\n", "- 1.0e+23\n")),
        "budgets.0: Unable to parse input string as an integer, exceeded maximum size",
    ),
    "budget 10**15": (_config(budgets=[10**15]), "budgets.0: budget 1,000,000,000,000,000 NFEs is more than this"),
    "budget 1e23 as text": (_yaml(yaml.safe_dump(TINY).replace("- 4\n", "- 1e23\n")), "budgets.0: Input should be"),
    "guidance .nan": (_yaml(yaml.safe_dump(TINY) + "guidance: .nan\n"), "guidance: guidance must be a finite number"),
    "guidance .inf": (_yaml(yaml.safe_dump(TINY) + "guidance: .inf\n"), "guidance: guidance must be a finite number"),
    "seed -1": (_config(seeds=[-1]), "seeds.0: seed must be an integer from 0 to 2**63-1"),
    "seed 2**64": (_config(seeds=[2**64]), "seeds.0: seed must be an integer from 0 to 2**63-1"),
    "steps 10**12": (_config(steps=10**12), "steps: steps 1000000000000 is more than this machine's memory"),
    "budget 0": (_config(budgets=[0]), "budget must be a positive integer"),
    "no budgets": (_config(budgets=[]), "budgets: List should have at least 1 item"),
    "duplicate budget": (_config(budgets=[4, 8, 4]), "budgets.2: 4 is already budgets.0"),
    "duplicate seed": (_config(seeds=[0, 1, 0]), "seeds.2: 0 is already seeds.0"),
    "duplicate algorithm 1 vs 1.0": (
        _config(
            budgets=[8],
            algorithms=[
                {"name": "zero-order", "params": {"step_size": 1}},
                {"name": "zero-order", "params": {"step_size": 1.0}},
            ],
        ),
        "algorithms.1: zero-order is already algorithms.0",
    ),
    "odd budget with guidance": (
        _config(guidance=1.5, steps=2, budgets=[8, 9]),
        "budgets.1: the step baseline cannot spend budget 9",
    ),
    "unknown algorithm": (
        _config(algorithms=[{"name": "annealing"}]),
        "algorithms.0.name: unknown algorithm 'annealing'",
    ),
    "unknown setting": (_config(colour="blue"), "colour: Extra inputs are not permitted"),
    "unknown parameter": (
        _config(algorithms=[{"name": "random", "params": {"width": 2}}]),
        "takes no parameter 'width'",
    ),
    "a list": (_yaml("- model\n- digits\n"), "the config must be a mapping of settings, got list"),
    "empty": (_yaml(""), "the config must be a mapping of settings, got NoneType"),
    "broken YAML": (_yaml("budgets: [4, 8\nmodel: digits\n"), "not valid YAML"),
    "missing file": (lambda tmp: tmp / "missing.yaml", "cannot read config"),
    "budget below one candidate": (_config(budgets=[2]), "budgets.0: random (algorithms.0): budget 2"),
}


@pytest.mark.parametrize("name", SWEEP_BAD)
def test_bad_sweep_configs_get_one_line_and_exit_2(tmp_path, name):
    make, message = SWEEP_BAD[name]
    result = runner.invoke(app, ["sweep", str(make(tmp_path)), "--out", str(tmp_path / "out")])
    assert_one_line(result, message)
    assert not (tmp_path / "out").exists()


def assert_one_line(result, message: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _out_is_a_file(tmp):
    (tmp / "f").write_text("x")
    return ["--out", str(tmp / "f")]


def _out_under_a_file(tmp):
    (tmp / "f").write_text("x")
    return ["--out", str(tmp / "f" / "out")]


CLI_BAD = {
    "--out is a file": (_out_is_a_file, "is a file; give a folder"),
    "--out under a file": (_out_under_a_file, "cannot create the output folder"),
    "unknown backend": (lambda tmp: ["--out", str(tmp / "o"), "--backend", "dask"], "unknown backend 'dask'"),
    "--address without ray": (
        lambda tmp: ["--out", str(tmp / "o"), "--address", "127.0.0.1:1"],
        "it needs --backend ray",
    ),
    "--address not host:port": (
        lambda tmp: ["--out", str(tmp / "o"), "--backend", "ray", "--address", "nowhere"],
        "--address 'nowhere' is not HOST:PORT",
    ),
}


@pytest.mark.parametrize("name", CLI_BAD)
def test_bad_sweep_options_get_one_line_and_exit_2(tmp_path, name):
    make, message = CLI_BAD[name]
    result = runner.invoke(app, ["sweep", str(write_config(tmp_path, TINY)), *make(tmp_path)])
    assert_one_line(result, message)


def _rows(*rows, sets=None):
    def make(tmp):
        folder = tmp / "sweep"
        folder.mkdir()
        (folder / "results.jsonl").write_text(
            "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
        )
        if sets is not None:
            (folder / "sets.jsonl").write_text(json.dumps(sets) + "\n")
        return [str(folder)]

    return make


def _without(key):
    return {k: v for k, v in GOOD_ROW.items() if k != key}


REPORT_BAD = {
    "no folder": (lambda tmp: [str(tmp / "nothing")], "has no results.jsonl"),
    "no rows": (_rows(), "has no rows yet"),
    "missing budget": (_rows(GOOD_ROW, _without("budget")), "line 2 has no 'budget'; it is not a sweep row"),
    "missing cell": (_rows(_without("cell")), "line 1 has no 'cell'"),
    "target_index a string": (
        _rows({**GOOD_ROW, "target_index": "x"}),
        "line 1: 'target_index' is \"x\", expected int",
    ),
    "budget a float": (_rows({**GOOD_ROW, "budget": 4.5}), "line 1: 'budget' is 4.5, expected int"),
    "best_score a string": (
        _rows({**GOOD_ROW, "best_score": "high"}),
        "'best_score' is \"high\", expected int or float or null",
    ),
    "params a list": (_rows({**GOOD_ROW, "params": [1]}), "'params' is [1], expected dict"),
    "eval a string": (_rows({**GOOD_ROW, "eval_x": "n/a"}), "'eval_x' is \"n/a\", expected a number or null"),
    "image a number": (_rows({**GOOD_ROW, "image": 3}), "'image' is 3, expected a path or null"),
    "a broken middle line": (_rows(GOOD_ROW, "{oops", GOOD_ROW), "line 2 is not valid JSON"),
    "a list row": (_rows("[1, 2]"), "line 1 is a JSON list, not an object"),
    "set fid a string": (
        _rows(GOOD_ROW, sets={"cell": "c", "algorithm": "random", "budget": 4, "seed": 0, "fid": "x"}),
        "sets.jsonl' line 1: 'fid' is \"x\"",
    ),
    "set without budget": (
        _rows(GOOD_ROW, sets={"cell": "c", "algorithm": "random", "seed": 0}),
        "sets.jsonl' line 1 has no 'budget'",
    ),
    "--budget not in the sweep": (
        lambda tmp: [*_rows(GOOD_ROW)(tmp), "--budget", "64"],
        "--budget 64 is not one of the sweep's budgets [4]",
    ),
}


@pytest.mark.parametrize("name", REPORT_BAD)
def test_bad_report_inputs_get_one_line_and_exit_2(tmp_path, name):
    make, message = REPORT_BAD[name]
    result = runner.invoke(app, ["report", *make(tmp_path)])
    assert_one_line(result, message)
