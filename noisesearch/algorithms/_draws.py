"""Seeded noise: each draw from its own generator (``derive_seed``, ``gaussian``, ``gaussians``), the hashes that
identify a noise that is not a seeded draw, and a stochastic sampler's per-step noise streams (``Streams``).

Drawn on the CPU, so a candidate's noise is ``torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))``
exactly, on any device and in plain diffusers; ``Problems`` (``algorithms.base``) names the draws of a run.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from noisesearch.noise_identity import RECORD_HEX, noise_digests


def derive_seed(seed: int, *path: int) -> int:
    """A 63-bit seed derived from ``seed`` and a path of integers (BLAKE2b of their 8-byte forms).

    Different paths give independent-looking seeds; the same path always gives the same seed, on
    every platform.
    """
    data = struct.pack(f"<{1 + len(path)}q", seed, *path)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def gaussian(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` from its own generator seeded with ``seed``.

    This is exactly ``torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))``, the
    draw a diffusers pipeline user writes.
    """
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def gaussians(shape: tuple[int, ...], seeds: Sequence[int]) -> torch.Tensor:
    """``torch.stack([gaussian(shape, s) for s in seeds])`` (len(seeds), *shape), without a tensor per row.

    One generator is reseeded per row and each row is filled in place (the same values as ``gaussian``:
    ``randn`` is ``normal_`` on a fresh tensor). The unavoidable cost of per-candidate seeding is here.
    """
    out = torch.empty((len(seeds), *shape))
    g = torch.Generator()
    for a in range(0, len(seeds), 1024):  # views made by unbind in C, a block at a time (a list of 1e5 is slower)
        for row, seed in zip(out[a : a + 1024].unbind(0), seeds[a : a + 1024]):
            g.manual_seed(seed)
            row.normal_(generator=g)
    return out


def noise_hash(x: torch.Tensor) -> str:
    """First 16 hex digits of the SHA-256 of a tensor's float32 bytes (identifies a noise: ``noise_identity``)."""
    return noise_hashes(x[None])[0]


def noise_hashes(x: torch.Tensor) -> list[str]:
    """``noise_hash`` of each row of ``x`` (B, ...): one copy to the CPU for the batch (``noise_digests``)."""
    return [digest[:RECORD_HEX] for digest in noise_digests(x)]


@dataclass
class DrawClock:
    """Wall time spent drawing seeded noise (the per-candidate cost that cannot go): the one thing that changes
    while a run draws, held apart from its frozen description (``Problems.clock``)."""

    seconds: float = 0.0

    def since(self, start: float) -> None:
        """Add the time from ``start`` (a ``time.perf_counter()`` reading) to now."""
        self.seconds += time.perf_counter() - start


class DrawSource(Protocol):
    """What ``Streams`` reads of the run it draws for (``algorithms.base.Problems``): the noise shape, the
    model's device (``to_device``) and the clock of drawing time it adds to."""

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """The shape of one noise."""

    @property
    def clock(self) -> DrawClock:
        """The run's drawing-time clock."""

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device."""


def _stream_draws_whole(shape: tuple[int, ...]) -> bool:
    """Whether one draw of (steps, *shape) equals ``steps`` successive draws of ``shape`` on one generator.

    On torch's CPU ``normal_`` it does when a draw has one element or a multiple of 16 (the Box-Muller
    transform fills blocks of 16 from a block of uniforms; a ragged tail is filled from fresh uniforms).
    ``tests/test_core_exact.py`` checks both forms against each other for such shapes and others.
    """
    size = math.prod(shape)
    return size == 1 or size % 16 == 0


class Streams:
    """The per-step noises of a stochastic sampler for n candidates: one stream per candidate.

    Stream r is seeded with ``seeds[r]``; its row t (the noise injected at step t) is the ``t + 1``-th
    ``torch.randn(noise_shape, generator=g)`` on ``g = torch.Generator("cpu").manual_seed(seeds[r])``, so
    a candidate's step noises are reproducible with plain PyTorch, and one generator is seeded per
    candidate, not per step. When the n streams of ``n_steps`` rows take at most ``cap_bytes`` they are
    drawn once and held (on the device); beyond it (a video latent, many particles) each keeps its
    generator on the CPU and ``rows`` draws only the rows asked for, in order, so memory holds one step.
    """

    def __init__(self, problems: DrawSource, seeds: list[int], n_steps: int, *, cap_bytes: int | None):
        self.problems, self.n_steps = problems, n_steps
        self._seeds: list[int] = seeds
        self._pick: torch.Tensor | None = None  # seeds[r] = _seeds[_pick[r]] (a selection read lazily)
        shape = problems.noise_shape
        nbytes = len(seeds) * n_steps * math.prod(shape) * 4
        self.whole: torch.Tensor | None = None
        self.generators: list[torch.Generator] = []
        self.next = 0  # step-by-step: the next row each generator gives
        self.last: tuple[int, int, torch.Tensor] | None = None  # step-by-step: the last block read
        if cap_bytes is None or nbytes <= cap_bytes:
            start = time.perf_counter()
            if _stream_draws_whole(shape):
                drawn = gaussians((n_steps, *shape), seeds)  # (n, n_steps, *shape)
            else:
                drawn = torch.empty((len(seeds), n_steps, *shape))
                g = torch.Generator()
                for rows, seed in zip(drawn.unbind(0), seeds):
                    g.manual_seed(seed)
                    for row in rows.unbind(0):
                        row.normal_(generator=g)
            problems.clock.since(start)
            self.whole = problems.to_device(drawn)
        else:
            self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    @property
    def seeds(self) -> list[int]:
        """The stream seeds (a host list; after a ``select`` by a device index, one copy when first read)."""
        if self._pick is not None:
            listed = self._pick.tolist()
            self._seeds, self._pick = [self._seeds[i] for i in listed], None
        return self._seeds

    def __len__(self) -> int:
        return len(self._seeds) if self._pick is None else len(self._pick)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of every stream, (n, stop - start, *noise_shape) on the device.

        Held whole: any rows. Step by step: rows are read in order (asking for the last block again gives
        it again, so an algorithm's ``ask`` may run twice; rows skipped are drawn and dropped)."""
        if not 0 <= start <= stop <= self.n_steps:
            raise ValueError(f"rows {start}:{stop} of streams of {self.n_steps} steps")
        if self.whole is not None:
            return self.whole[:, start:stop]
        if self.last is not None and self.last[:2] == (start, stop):
            return self.last[2]
        if start < self.next:
            raise ValueError(f"streams drawn step by step are read in order: rows {start}:{stop} after {self.next}")
        t0 = time.perf_counter()
        shape = self.problems.noise_shape
        out = torch.empty((len(self), stop - start, *shape))
        scratch = torch.empty(shape)
        for g, rows in zip(self.generators, out.unbind(0)):
            for _ in range(self.next, start):
                scratch.normal_(generator=g)
            for row in rows.unbind(0):
                row.normal_(generator=g)
        self.next = stop
        self.problems.clock.since(t0)
        block = self.problems.to_device(out)
        self.last = (start, stop, block)
        return block

    def select(self, idx: Sequence[int] | torch.Tensor) -> Streams:
        """The streams ``idx`` (in that order; repeats allowed), each continuing where it was."""
        new = Streams.__new__(Streams)
        new.problems, new.n_steps, new.next, new.last = self.problems, self.n_steps, self.next, None
        if self.whole is not None:  # no host copy: the seeds are picked when read
            pick = torch.as_tensor(idx, dtype=torch.int64)
            new.whole, new.generators = self.whole[pick.to(self.whole.device)], []
            base = torch.arange(len(self)) if self._pick is None else self._pick
            new._seeds, new._pick = self._seeds, base.to(pick.device)[pick]
            return new
        listed = idx.tolist() if isinstance(idx, torch.Tensor) else list(idx)  # one copy: generators live here
        new.whole, new.generators = None, []
        for i in listed:
            g = torch.Generator()
            g.set_state(self.generators[i].get_state())
            new.generators.append(g)
        seeds = self.seeds
        new._seeds, new._pick = [seeds[i] for i in listed], None
        return new
