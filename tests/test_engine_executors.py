"""The engine: run_search is a short loop over one executor interface; the replay cache is a decorator around the
step-level executor and renders its misses with that executor's own sample/decode/preview sequence."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _cache_runs import plain, search
from _records import close  # floats within a tolerance, also inside candidate records (see tests/_records.py)

from noisesearch.algorithms.base import Jobs, Outcomes
from noisesearch.cache import CandidateCache
from noisesearch.engine.executors import Chunked, StepExecutor
from noisesearch.engine.replay import ReplayCache

ROOT = Path(__file__).resolve().parents[1]
ENGINE = [ROOT / "noisesearch" / "driver.py", *sorted((ROOT / "noisesearch" / "engine").glob("*.py"))]


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    n = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return n - (bool(names) and names[0].arg in ("self", "cls"))


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: p.name)
def test_engine_files_stay_under_400_lines_and_functions_under_60_lines_and_8_parameters(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.name}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            assert lines <= 60, f"{path.name}: {node.name} has {lines} lines"
            if node.name != "run_search":  # public: its keyword options stay as they are
                assert _params(node) <= 8, f"{path.name}: {node.name} has {_params(node)} parameters"


class _Halves(Chunked):
    """A chunked executor whose chunks are recorded; row r scores r, except row 3 (+inf) and row 4 (-inf)."""

    def __init__(self, max_batch: int):
        self.max_batch, self.sizes = max_batch, []

    def batch(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        self.sizes.append(len(jobs))
        x = jobs.x
        assert x is not None
        score = x[:, 0].clone()
        score[(score == 3)] = math.inf
        score[(score == 4)] = -math.inf
        return Outcomes(jobs, x, x, x, score, 1, index)


def test_a_batch_runs_in_chunks_of_at_most_max_batch_rows_and_infinite_scores_come_back_as_nan():
    ex = _Halves(max_batch=2)
    x = torch.arange(5, dtype=torch.float32)[:, None]
    out = ex.run(Jobs(torch.zeros(5, dtype=torch.int64), x, (1.0, 0.0)), torch.arange(5))
    assert ex.sizes == [2, 2, 1]
    assert torch.equal(out.x, x) and out.index.tolist() == [0, 1, 2, 3, 4]
    got = out.score.tolist()
    assert got[:3] == [0.0, 1.0, 2.0] and math.isnan(got[3]) and math.isnan(got[4])


class _NoCache:
    """A cache that must not be touched."""

    def __getattr__(self, name):
        raise AssertionError(f"the cache was asked for {name!r} for a job it cannot hold")


def test_the_replay_cache_hands_a_chunk_it_cannot_hold_to_the_executor_it_wraps_unchanged():
    problems = SimpleNamespace(sigmas=(1.0, 0.5, 0.0), starts_at_noise=lambda jobs: False, sampler="euler")
    inner = SimpleNamespace(ctx=SimpleNamespace(problems=problems), max_batch=4)
    sentinel = object()
    inner.batch = lambda jobs, index: sentinel
    replay = ReplayCache(inner, _NoCache(), "model", "verifier")  # type: ignore[arg-type]
    jobs = Jobs(torch.tensor([0, 0]), torch.zeros(2, 1), (0.5, 0.0))  # an intermediate state: not cacheable
    assert replay.batch(jobs, torch.arange(2)) is sentinel


def test_the_replay_cache_wraps_only_a_model_with_an_identity(tmp_path):
    cache = CandidateCache(tmp_path / "c")
    keyed = SimpleNamespace(ctx=SimpleNamespace(model=SimpleNamespace(cache_key="m"), verifier=None), max_batch=4)
    bare = SimpleNamespace(ctx=SimpleNamespace(model=object(), verifier=None), max_batch=4)
    wrapped = ReplayCache.around(keyed, cache)  # type: ignore[arg-type]
    assert isinstance(wrapped, ReplayCache) and wrapped.inner is keyed
    assert ReplayCache.around(bare, cache) is bare  # type: ignore[arg-type]  # nothing to key: computed as before


@pytest.mark.numerics
def test_the_replay_cache_renders_its_misses_with_the_step_executor_it_wraps(tmp_path, digits, classifier, monkeypatch):
    rendered: list[int] = []
    original = StepExecutor.render

    def render(self, jobs):
        rendered.append(len(jobs))
        return original(self, jobs)

    monkeypatch.setattr(StepExecutor, "render", render)
    cache = CandidateCache(tmp_path / "c")
    uncached = search(digits, classifier, None)
    assert rendered == [16]  # one batch of 2 searches x 8 candidates, computed by the step executor
    first = search(digits, classifier, cache)
    assert rendered == [16, 16]  # the cold cache's misses: rendered by the wrapped executor, not by a copy of it
    again = search(digits, classifier, cache)
    assert rendered == [16, 16]  # all replayed
    for u, f, a in zip(uncached, first, again):
        # same rows in the same batch shape, but compared within float32 rounding as the cache suites do
        close(plain(u), plain(f))
        close(plain(u), plain(a))
        assert a.ledger["replayed"] == 8 and a.ledger["nfe_computed"] == 0
