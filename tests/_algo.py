"""Test helpers for driving a search algorithm by hand, without a model: build a run and outcomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from noisesearch.algorithms.base import Jobs, Outcomes, Problem, Problems
from noisesearch.samplers import schedule


def run_of(
    targets: Sequence = (1,),
    seeds: Sequence[int] = (0,),
    *,
    budget: int = 10**6,
    shape: tuple[int, ...] = (1,),
    steps: int = 4,
    sampler: str = "euler",
    nfe_per_call: int = 1,
) -> Problems:
    """A run of ``len(targets)`` searches on a schedule of ``steps`` uniform steps."""
    return Problems(list(targets), [int(s) for s in seeds], budget, shape, schedule(steps), sampler, nfe_per_call)


def single(problem: Problem) -> Problems:
    """The run made of one search."""
    return Problems.of(problem)


def outcomes_of(
    jobs: Jobs,
    scores: Sequence[float] | torch.Tensor,
    *,
    x: torch.Tensor | None = None,
    index: Sequence[int] | None = None,
    nfe: int = 1,
) -> Outcomes:
    """Outcomes of ``jobs`` with the given scores; end states ``x`` (default: the start states), which also
    stand for the x0-predictions and images."""
    end = jobs.x if x is None else x
    score = torch.as_tensor(scores, dtype=torch.float32)
    idx = torch.arange(len(jobs)) if index is None else torch.as_tensor(index, dtype=torch.int64)
    return Outcomes(jobs, end, end, end, score, nfe, idx)


def records_at_stream_cap(monkeypatch, cap: int | None, algorithm, run: Callable) -> tuple[list, list[bool]]:
    """``run(algorithm)`` (a ``run_search``) with ``base.STREAM_CAP_BYTES`` set to ``cap`` (None: the default)
    and each ``ask`` asked twice (the second answer is run; its step noises must equal the first's).

    Returns (each search's candidate records, for every ``Streams.rows`` read whether its streams were
    drawn step by step)."""
    from noisesearch.algorithms import base

    stepwise: list[bool] = []
    rows, ask = base.Streams.rows, algorithm.ask

    def spy(self, start, stop):
        stepwise.append(self.whole is None)
        return rows(self, start, stop)

    def ask_twice(state):
        first, second = ask(state), ask(state)
        assert [j.noises is None for j in first] == [j.noises is None for j in second]
        assert all(a.noises is None or torch.equal(a.noises, b.noises) for a, b in zip(first, second))
        return second

    with monkeypatch.context() as m:
        if cap is not None:
            m.setattr(base, "STREAM_CAP_BYTES", cap)
        m.setattr(base.Streams, "rows", spy)
        m.setattr(algorithm, "ask", ask_twice)
        result = run(algorithm)
    return [list(r.candidates) for r in result], stepwise


def drive(algorithm, problems: Problems, score: Callable[[Jobs], Sequence[float] | torch.Tensor]):
    """Run ``algorithm`` by hand: every batch's rows get ``score(jobs)``, end states = start states.

    Returns (state, asked): the final state and every ``ask``'s batches, in order.
    """
    state = algorithm.init(problems)
    asked = []
    while batches := algorithm.ask(state):
        asked.append(batches)
        algorithm.tell(state, [outcomes_of(jobs, score(jobs)) for jobs in batches])
    return state, asked


# Registry entries whose source defaults need more budget than the tests' small runs give (epsilon-greedy's
# 20 iterations of 4 proposals per step: 320 NFEs at 4 steps): the tests that run every entry build them with
# these options, the same algorithm at a smaller size.
SMALL = {"epsilon-greedy": {"iterations": 1}}


def build(name: str, model=None, **options):
    """``ALGORITHMS[name]`` with ``SMALL``'s options for that entry (``options`` win). For a ``model`` (or a noise
    shape) whose noise has one element (the toy model), zero-order takes the ``mix`` neighbourhood: its default,
    the author's ``cosine``, needs at least two."""
    import math

    from noisesearch.algorithms import ALGORITHMS

    defaults = dict(SMALL.get(name, {}))
    shape = getattr(model, "noise_shape", model)
    if name == "zero-order" and shape is not None and math.prod(shape) < 2:
        defaults["neighbourhood"] = "mix"
    return ALGORITHMS[name](**{**defaults, **options})
