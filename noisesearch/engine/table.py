"""A run's records and its best candidates, as columns: ``CandidateTable`` (one dict per candidate only when
read, through ``Candidates``) and ``Best`` (each search's best finished candidate, vectorised)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

import torch

from noisesearch.algorithms.base import Jobs, Outcomes, Problems, gaussians, noise_hashes, rank_values

HASH_LATER_BYTES = 64 * 2**20  # derived noises a run keeps to hash when its records are read (CandidateTable)


class _Chunk(NamedTuple):
    """One recorded batch: the columns its records are built from (no states or images)."""

    owner: torch.Tensor  # (n,) search of each row
    indices: torch.Tensor  # (n,) candidate index within its search
    seeds: list[int | None] | None  # noise seed per row (None: no seeded draw)
    hashes: list[str | None] | torch.Tensor | None  # per row, or the unseeded rows' noises (u, ...) to hash on read
    sigmas: tuple[float, float]  # (start, end) of every row
    nfe: int  # NFEs of each row
    score: torch.Tensor  # (n,)
    info: dict  # the batch's info columns


class CandidateTable:
    """The records of a run as columns: one chunk per run batch, turned into dicts only when read."""

    def __init__(self, problems: Problems, latent_shape: tuple[int, ...] | None, hash_later: int = HASH_LATER_BYTES):
        self.n = len(problems)
        self.hash_later = hash_later  # bytes of derived noises kept to hash on read (``driver.HASH_LATER_BYTES``)
        self.problems = problems
        self.latent_shape = list(latent_shape) if latent_shape else None
        self.chunks: list[_Chunk] = []  # one per recorded batch
        self._rows: list[list[dict]] | None = None
        self.counts = torch.zeros(self.n, dtype=torch.int64)  # records per search (known without building them)
        self.held_bytes = 0  # bytes of derived noises kept for hashing when the records are read

    def add(self, jobs: Jobs, out: Outcomes) -> None:
        """Record a batch; everything stays as columns until read.

        A noise that is not a seeded draw (a neighbour, an iterate, a CEM sample) is identified in its
        record by its hash. Hashing (SHA-256, about 2 us a row) waits until the records are read, which
        a sweep never does: the batch's derived noises are kept as one float32 CPU copy for it, up to
        ``hash_later`` bytes in all; past that they are hashed now and only the hashes are kept.
        """
        hashes: list[str | None] | torch.Tensor | None = None
        if self.problems.starts_at_noise(jobs) and (jobs.noise_seed is None or None in jobs.noise_seed):
            x = self.problems.start_states(jobs)  # drawn: a row without a seed is never deferred
            if jobs.noise_seed is not None:
                x = x[torch.tensor([s is None for s in jobs.noise_seed], device=x.device)]
            size = x.numel() * 4
            if self.held_bytes + size <= self.hash_later:
                hashes = x.detach().to("cpu", torch.float32, copy=True)  # (u, ...): a copy, safe from in-place edits
                self.held_bytes += size
            else:
                got = iter(noise_hashes(x))
                hashes = [next(got) if s is None else None for s in (jobs.noise_seed or [None] * len(x))]
        seeds = None if jobs.noise_seed is None else list(jobs.noise_seed)
        sigmas = (jobs.sigmas[0], jobs.sigmas[-1])
        self.chunks.append(
            _Chunk(jobs.owner, out.index, seeds, hashes, sigmas, out.nfe, out.score.detach(), dict(jobs.info))
        )
        self.counts += torch.bincount(jobs.owner, minlength=self.n)
        self._rows = None

    def rows(self, search: int) -> list[dict]:
        """The records of search ``search``, in candidate-index order (all searches built at once)."""
        if self._rows is None:
            self._rows = self._build()
        return self._rows[search]

    def _build(self) -> list[list[dict]]:
        per: list[list[dict]] = [[] for _ in range(self.n)]
        for c, chunk in enumerate(self.chunks):
            owners, indices, scores = chunk.owner.tolist(), chunk.indices.tolist(), chunk.score.tolist()
            seeds = chunk.seeds or [None] * len(owners)
            hashes = chunk.hashes
            if isinstance(hashes, torch.Tensor):  # kept noises of the rows without a seed: hashed now, once
                got = iter(noise_hashes(hashes))
                self.held_bytes -= hashes.numel() * 4
                hashes = [next(got) if s is None else None for s in seeds]
                self.chunks[c] = chunk._replace(hashes=hashes)
            (start, end), nfe = chunk.sigmas, chunk.nfe
            info = {k: (v.tolist() if isinstance(v, torch.Tensor) else list(v)) for k, v in chunk.info.items()}
            for r, (i, index, score, seed) in enumerate(zip(owners, indices, scores, seeds)):
                record = {
                    "index": index,
                    "noise_seed": seed,
                    # torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(noise_seed)) is the draw
                    **({"latent_shape": self.latent_shape} if self.latent_shape and seed is not None else {}),
                    "noise_sha256": hashes[r] if hashes is not None else None,
                    "sigma_start": start,
                    "sigma_end": end,
                    "nfe": nfe,
                    "score": None if math.isnan(score) else score,
                }
                if info:
                    record["info"] = {k: v[r] for k, v in info.items()}
                per[i].append(record)
        for rows in per:
            rows.sort(key=lambda c: c["index"])
        return per


class Candidates(Sequence[dict]):
    """One search's records, read from the run's ``CandidateTable`` on first use (a read-only list)."""

    def __init__(self, table: CandidateTable, search: int):
        self._table, self._search = table, search

    def _list(self) -> list[dict]:
        return self._table.rows(self._search)

    def __len__(self) -> int:
        return int(self._table.counts[self._search])  # a count needs no records built

    @overload
    def __getitem__(self, i: int) -> dict: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict]: ...
    def __getitem__(self, i):
        return self._list()[i]

    def __iter__(self) -> Iterator[dict]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Sequence) else other)

    def __repr__(self) -> str:
        return repr(self._list())

    def __reduce__(self):
        return (list, (self._list(),))  # pickled (Ray) as a plain list


class Best:
    """Each search's best finished candidate so far, as tensors (a failed score never ranks; ties keep the earliest)."""

    def __init__(self, n: int):
        self.n = n
        self.score = torch.full((n,), -math.inf, dtype=torch.float64)
        self.index = torch.full((n,), -1, dtype=torch.int64)
        self.image: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.nans = torch.zeros(n, dtype=torch.int64)

    def update(self, jobs: Jobs, out: Outcomes, problems: Problems) -> None:
        score = out.score.detach()
        owner = jobs.owner.to(score.device)
        self.nans = self.nans.to(score.device).index_add_(0, owner, torch.isnan(score).long())
        if not jobs.final:
            return
        self.score, self.index = self.score.to(score.device), self.index.to(score.device)
        ranked = rank_values(score)  # (n,) failed (NaN) -> -inf
        top = self.score.scatter_reduce(0, owner, ranked, "amax")  # (S,) best of the kept one and this batch's
        searches = (top > self.score).nonzero().flatten()  # (m,) strictly better; one copy of a small index
        if not len(searches):
            return
        # each improving search's first row that reaches its new best (rows of other searches never do:
        # their best stays the kept score, which none of their rows exceeds, and a tie is not better)
        n = len(score)
        winner = (ranked == top[owner]) & (ranked > self.score[owner])  # (n,)
        first = torch.full((self.n,), n, dtype=torch.int64, device=score.device)
        first = first.scatter_reduce(0, owner, torch.where(winner, torch.arange(n, device=score.device), n), "amin")
        pick = first[searches]  # (m,) the winning rows
        self.score[searches] = ranked[pick]
        self.index[searches] = out.index.to(score.device)[pick]
        images = out.image.detach()
        if jobs.x is not None:
            noises = jobs.x.detach()[pick.to(jobs.x.device)]
        else:  # a deferred batch: only the winners' noises are drawn
            seeds = jobs.noise_seed
            assert seeds is not None
            noises = problems.to_device(gaussians(problems.noise_shape, [seeds[r] for r in pick.tolist()]))
        if self.image is None:
            self.image = torch.zeros((self.n, *images.shape[1:]), dtype=images.dtype, device=images.device)
            self.noise = torch.zeros((self.n, *noises.shape[1:]), dtype=noises.dtype, device=noises.device)
        assert self.noise is not None
        self.image[searches.to(images.device)] = images[pick.to(images.device)]
        self.noise[searches.to(noises.device)] = noises
