"""Comparing results computed in other batch compositions, with or without the cache, or on other kernels.

Bit for bit holds only for the same computation on the same machine: the same batches, the same thread count,
the same kernels (or stored bits replayed from the cache). A row computed in a batch of another size (a search
run alone instead of with others, the misses of a partly cached run, a chunk of another size) may round its
last bits differently: matrix products pick their blocking, and so their order of summation, by the batch's
shape, and which kernels a CPU runs (AVX-512, AMX, AVX2, the generic ones) changes that choice. So such results
are compared here within a tolerance, and a derived noise (recorded by a hash of its bytes, where one ulp is a
different hash) by its tensor, captured while the search runs (``with_noises``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pytest
import torch

from noisesearch import driver
from noisesearch.algorithms.base import noise_hashes
from noisesearch.models.toy import ToyModel

T = TypeVar("T")

# Scores and derived noises of one row computed in another batch: a few float32 roundings of O(1) values
# through small networks (and, for first-order search, their gradients) differ by ~1e-7 relative; 1e-5
# leaves room for those differences to pass through a few rounds of a search, and is still far below any
# difference a search's decisions depend on.
RTOL, ATOL = 1e-5, 1e-6
# Derived noises are O(1) values; a first-order step along the unit gradient divides the gradient's rounding by
# its norm, so a few ulps can grow to ~1e-5 once a search nears its optimum. 1e-4 absolute still tells apart any
# real difference of the computation (a row of another search, another draw: O(1)).
NOISE_ATOL = 1e-4
# A search that has reached its verifier's optimum (within PLATEAU) scores every later candidate within rounding
# of it: on the toy world's saturated denoiser the images no longer move and the gradients are rounding. Which
# candidate it then takes as its pivot, best start or best, where a gradient step points, even whether a gradient
# counts as vanished, is decided by the last bits, so two batch compositions (or two CPUs) may go separate ways
# from there; only the records up to that point are comparable.
PLATEAU = 1e-6

Noises = dict[tuple[int, int], torch.Tensor]  # (search, candidate index) -> the derived noise it started from


def with_noises(call: Callable[[], T]) -> tuple[T, Noises]:
    """``call()`` (one ``run_search``) and the derived noises its records hash, by (search, candidate index).

    A row that starts from a noise without a seed (a neighbour, an iterate, a mutation) is recorded by
    ``noise_sha256``; this keeps the tensor itself, as the driver's ``CandidateTable.add`` sees it.
    """
    noises: Noises = {}
    original = driver.CandidateTable.add

    def add(table, jobs, out):
        seeds = jobs.noise_seed or [None] * len(jobs)
        if table.problems.starts_at_noise(jobs) and None in seeds:
            x = table.problems.start_states(jobs).detach().to("cpu", torch.float32, copy=True)
            for row, (search, index, seed) in enumerate(zip(jobs.owner.tolist(), out.index.tolist(), seeds)):
                if seed is None:
                    noises[(search, index)] = x[row]
        return original(table, jobs, out)

    driver.CandidateTable.add = add
    try:
        result = call()
    finally:
        driver.CandidateTable.add = original
    return result, noises


def close(a: Any, b: Any, where: str = "", *, rtol: float = RTOL, atol: float = ATOL) -> None:
    """``a`` equals ``b`` but for floats, which agree within ``rtol``/``atol``; dicts and sequences (lists, tuples,
    a result's ``candidates``) are compared item by item, so the tolerance reaches every float inside them."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for k in a:
            close(a[k], b[k], f"{where}.{k}", rtol=rtol, atol=atol)
    elif isinstance(a, Sequence) and not isinstance(a, str | bytes):
        assert isinstance(b, Sequence) and not isinstance(b, str | bytes), f"{where}: {a!r} != {b!r}"
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for n, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{n}]", rtol=rtol, atol=atol)
    elif isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        assert a == pytest.approx(b, rel=rtol, abs=atol, nan_ok=True), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def same_records(
    got: Sequence[dict],
    want: Sequence[dict],
    got_noises: Noises,
    want_noises: Noises,
    *,
    search: tuple[int, int] = (0, 0),
    optimum: float | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> int:
    """The records of one search computed twice, in other batches: equal, floats within the tolerance, and each
    derived noise equal to the other's as a tensor (within ``NOISE_ATOL``) instead of by its hash.

    ``search`` gives that search's number in each run (``got``'s, ``want``'s), to find its noises. With
    ``optimum`` (the verifier's best score), records are compared up to the first that scores within
    ``PLATEAU`` of it, and only their number after it: see ``PLATEAU``. Returns how many were compared.
    """
    assert len(got) == len(want)
    upto = len(want) if optimum is None else reaches(want, optimum)
    for g, w in zip(got[:upto], want[:upto]):
        g, w = dict(g), dict(w)
        g_hash, w_hash = g.pop("noise_sha256"), w.pop("noise_sha256")
        close(g, w, f"candidate {g['index']}", rtol=rtol, atol=atol)
        assert (g_hash is None) == (w_hash is None), f"candidate {g['index']}: one derived noise, one not"
        if g_hash is not None:
            g_noise, w_noise = got_noises[(search[0], g["index"])], want_noises[(search[1], w["index"])]
            # the captured tensors are those the records hashed (same run: bit for bit)
            assert noise_hashes(torch.stack([g_noise, w_noise])) == [g_hash, w_hash]
            torch.testing.assert_close(g_noise, w_noise, rtol=0, atol=max(atol, NOISE_ATOL))
    return upto


def reaches(records: Sequence[dict], optimum: float) -> int:
    """How many of ``records`` (in index order) come up to and including the first within ``PLATEAU`` of
    ``optimum`` (all of them if none is)."""
    for n, c in enumerate(records):
        if c["score"] is not None and c["score"] > optimum - PLATEAU:
            return n + 1
    return len(records)


def best_agrees(got, want, *, upto: int | None = None, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Two results of one search computed in other batches pick the same best candidate, or candidates whose
    scores tie within the tolerance; their best scores agree within it, and their best noises too when the best
    is one of the first ``upto`` records (those ``same_records`` compared; default all)."""
    if got.best_index != want.best_index:
        scores = [c["score"] for c in want.candidates]
        assert scores[got.best_index] == pytest.approx(scores[want.best_index], rel=rtol, abs=atol), "another best"
    assert got.best_score == pytest.approx(want.best_score, rel=rtol, abs=atol)
    assert (got.best_noise is None) == (want.best_noise is None)
    compared = len(want.candidates) if upto is None else upto
    if got.best_index == want.best_index and got.best_noise is not None and got.best_index < compared:
        torch.testing.assert_close(got.best_noise, want.best_noise, rtol=0, atol=max(atol, NOISE_ATOL))


class BatchRoundedToy(ToyModel):
    """The toy model with x0-predictions that round by the batch's size, as matrix products do on some CPUs.

    Each prediction is moved by up to a few float32 ulps, by the bit length of the batch's size: a search run alone and the
    same search run with others then differ in their last bits on every machine, so a test comparing them
    must use a tolerance to pass here, not only on the CPUs whose kernels round that way.
    """

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond, *, guidance: float) -> torch.Tensor:
        return super().denoise_grad(x, sigma, cond, guidance=guidance) * (1 + 2.0**-22 * (len(x).bit_length() % 4))
