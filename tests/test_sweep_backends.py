"""Sweep backends as a declared registry (``noisesearch.sweep.backends.BACKENDS``): what it lists, how a wrong name
or option is refused, and that a backend registered with one line (here a toy one, in the test) runs a sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _configs import tiny_sweep, write_config
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.errors import UserError
from noisesearch.ledger import drop_computed, drop_seconds
from noisesearch.registry import Entry, register
from noisesearch.sweep.backends import BACKENDS, Backend, check_backend, make_executor
from noisesearch.sweep.chunk import load_world, run_chunk
from noisesearch.sweep.config import load_config
from noisesearch.sweep.run import LocalExecutor, run_sweep

runner = CliRunner()
TINY = tiny_sweep()  # digits, one image per class, random search at budgets 4 and 8, chunks of 3


class SerialExecutor:
    """A toy backend: every task in this process, last task first (results may arrive in any order)."""

    def map(self, config, items, tasks, cache=None):
        world = load_world(config)
        for cell, chunk in reversed(list(tasks)):
            yield run_chunk(config, world, items, cell, chunk, cache=cache)


@pytest.fixture
def serial():
    """The toy backend registered as "serial", with the one line a new backend adds (removed after the test)."""
    register(BACKENDS, Backend("serial", SerialExecutor, "every chunk here, last first"))
    yield
    del BACKENDS["serial"]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def lines_of(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["cell"], r.get("target_index", -1)))


def same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        x, y = dict(x), dict(y)
        for r in (x, y):
            drop_seconds(r)  # wall times differ between any two runs
            drop_computed(r)
        for key in [k for k in x if isinstance(x[k], float)]:
            # another backend may batch or order the work differently: the last bits of a float may move
            assert x.pop(key) == pytest.approx(y.pop(key), abs=1e-5), key
        assert x == y


def test_the_registry_lists_local_and_ray_as_declared_records():
    assert list(BACKENDS)[:2] == ["local", "ray"]
    assert all(isinstance(b, Entry) and b.summary for b in BACKENDS.values())  # the one record of every registry
    assert BACKENDS["local"].requires is None and BACKENDS["local"].installed()
    assert BACKENDS["ray"].requires == "ray" and "address" in BACKENDS["ray"].options
    assert isinstance(make_executor("local"), LocalExecutor)


def test_an_unknown_backend_or_a_foreign_option_is_refused_naming_the_accepted_ones(serial):
    with pytest.raises(UserError, match=r"^unknown backend 'dask'; accepted: local, ray, serial$"):
        make_executor("dask")
    with pytest.raises(UserError, match=r"^--address is a Ray cluster address; it needs --backend ray$"):
        check_backend("serial", address="127.0.0.1:1")


def test_the_command_line_accepts_the_registrys_backends_and_refuses_others_before_any_work(tmp_path, serial):
    config = write_config(tmp_path, TINY)
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out"), "--backend", "dask"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines == ["error: unknown backend 'dask'; accepted: local, ray, serial"], result.stderr
    assert "Traceback" not in result.output and snapshot(tmp_path) == before  # nothing written, no folder made


def test_a_backend_registered_with_one_line_runs_a_sweep_and_gives_the_rows_of_local(tmp_path, serial):
    config = load_config(write_config(tmp_path, TINY))
    local = run_sweep(config, tmp_path / "local", note=lambda message: None, cache=False)
    toy = run_sweep(config, tmp_path / "toy", executor=make_executor("serial"), note=lambda message: None, cache=False)
    assert toy == local and toy["written"] == 4 * 10  # (baseline + random) x 2 budgets x 10 targets
    same_rows(lines_of(tmp_path / "toy" / "results.jsonl"), lines_of(tmp_path / "local" / "results.jsonl"))
    same_rows(lines_of(tmp_path / "toy" / "sets.jsonl"), lines_of(tmp_path / "local" / "sets.jsonl"))
