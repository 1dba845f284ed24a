"""The replay cache as an executor decorator: ``ReplayCache`` wraps a step executor (``engine.executors``).

A chunk of cacheable jobs (``cache.cacheable``) is looked up by key: the hits are replayed (charged through
``Accountant.replay`` as if computed), the misses rendered by the wrapped executor (its own sample, decode and
preview sequence, unscored) and stored, and every row without a cached score is scored in one verifier call
(every row, as without the cache, for a verifier without an identity). Any other chunk goes to the wrapped
executor unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch

from noisesearch.accounting import rows_per_nfe
from noisesearch.algorithms.base import Jobs, Outcomes
from noisesearch.contracts import verifier_info
from noisesearch.engine.executors import Chunked, Executor, Rendered, RunContext, preview_step


class Renders(Executor, Protocol):
    """What the replay cache wraps: an executor that also runs one chunk, and renders one without scoring it."""

    ctx: RunContext
    max_batch: int

    def batch(self, jobs: Jobs, index: torch.Tensor) -> Outcomes: ...

    def render(self, jobs: Jobs) -> Rendered: ...


class _Parts(NamedTuple):
    """A chunk's end states, images and decoded previews, row for row."""

    x: torch.Tensor
    image: torch.Tensor
    preview: torch.Tensor | None


class ReplayCache(Chunked):
    """``inner`` with the replay cache (``noisesearch.cache.CandidateCache``) in front of its cacheable chunks."""

    def __init__(self, inner: Renders, cache: Any, model_id: str, verifier_id: str | None):
        self.inner, self.cache, self.model_id, self.verifier_id = inner, cache, model_id, verifier_id
        self.ctx, self.max_batch = inner.ctx, inner.max_batch

    @classmethod
    def around(cls, inner: Renders, cache: Any) -> Executor:
        """``inner`` behind ``cache``; ``inner`` itself when the model has no identity (nothing can be keyed)."""
        from noisesearch.cache import model_identity, verifier_identity

        model_id = model_identity(inner.ctx.model)
        if model_id is None:
            return inner
        return cls(inner, cache, model_id, verifier_identity(inner.ctx.verifier))

    def batch(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """A cacheable chunk replayed where it can be, any other run by the wrapped executor."""
        from noisesearch.cache import cacheable

        if not cacheable(jobs, self.ctx.problems):
            return self.inner.batch(jobs, index)
        return self._replay(jobs, index)

    def _rows_per_nfe(self) -> int:
        """Model rows per NFE of the run: the cache stores FLOPs per model row, whatever the NFE convention."""
        ctx = self.ctx
        return rows_per_nfe(ctx.model, ctx.guidance, ctx.acct.nfe_convention)

    def _replay(self, jobs: Jobs, index: torch.Tensor) -> Outcomes:
        """Replay the hits, compute and store the misses, score what has no cached score."""
        from noisesearch.cache import job_keys

        ctx = self.ctx
        preview_at = preview_step(jobs.sigmas, ctx.preview_sigma)
        keys = job_keys(self.model_id, jobs, ctx.problems, ctx.guidance)
        hits = self.cache.get_rows(keys, preview_at)
        hit = [] if hits is None else hits.rows
        taken = set(hit)
        miss = [r for r in range(len(jobs)) if r not in taken]
        computed = (
            self._compute(jobs.rows(miss) if hit else jobs, [keys[r] for r in miss], preview_at) if miss else None
        )
        if hits is None:
            assert computed is not None
            parts = computed
        else:
            parts = self._with_hits(jobs, hits, computed, miss)
        score = self._scores(jobs, keys, hit, parts)
        return Outcomes(jobs, parts.x, parts.x, parts.image, score, ctx.problems.job_cost(jobs), index)

    def _compute(self, jobs: Jobs, keys: list[str], preview_at: int | None) -> _Parts:
        """Render the missed rows with the wrapped executor (unscored: scored with the replayed rows) and store them."""
        from noisesearch import ledger

        ctx = self.ctx
        with torch.no_grad():
            done = self.inner.render(jobs)
        flops_per_nfe = None if ctx.acct.flops_per_nfe is None else ctx.acct.flops_per_nfe / self._rows_per_nfe()
        self.cache.put(
            keys,
            done.x,
            done.image,
            {} if done.preview is None else {f"preview@{preview_at}": done.preview},
            flops_per_nfe=flops_per_nfe,
            decode_flops=ledger.cached(ctx.model, ("decode", tuple(done.x.shape[1:]))),
        )
        return _Parts(done.x, done.image, done.preview)

    def _with_hits(self, jobs: Jobs, hits: Any, computed: _Parts | None, miss: list[int]) -> _Parts:
        """The hits' stored rows on the run's device, put back in row order with the computed ones; the hits charged."""
        ctx = self.ctx
        device = ctx.problems.device
        preview = None
        if ctx.preview_sigma is not None:
            assert hits.preview is not None
            preview = hits.preview.to(device)
        got = _Parts(hits.x.to(device), hits.image.to(device), preview)
        if computed is not None:
            got = _merge(got, computed, hits.rows, miss, device)
        per_row = hits.flops_per_nfe
        ctx.acct.replay(
            jobs.owner[torch.tensor(hits.rows)],
            ctx.problems.job_cost(jobs),
            decodes=1 + (ctx.preview_sigma is not None),
            decode_flops=hits.decode_flops,
            flops_per_nfe=None if per_row is None else per_row * self._rows_per_nfe(),
        )
        return got

    def _scores(self, jobs: Jobs, keys: list[str], hit: list[int], parts: _Parts) -> torch.Tensor:
        """Each row's score: a cached one where the verifier has an identity and one is stored, else computed
        (every row in one call, as without the cache, when none is cached)."""
        n, owners = len(jobs), jobs.owner
        scores: list[Any] = [None] * n  # float per row once known
        if self.verifier_id is not None and hit:
            stored = dict(zip(hit, self.cache.scores([keys[r] for r in hit], self.verifier_id)))
            known = [r for r in hit if stored[r] is not None]
            for r in known:
                scores[r] = stored[r]["score"]
            if known:
                self.ctx.acct.replay_scores(owners[torch.tensor(known)], [stored[r]["verify_flops"] for r in known])
        need = [r for r in range(n) if scores[r] is None]
        if len(need) == n:  # every row scored in one call, as without the cache
            return self._score(keys, need, parts, owners)
        if need:
            values = self._score(keys, need, parts, owners).tolist()
            for r, value in zip(need, values):
                scores[r] = value
        return torch.tensor(scores, dtype=torch.float32, device=parts.image.device)

    def _score(self, keys: list[str], need: list[int], parts: _Parts, owners: torch.Tensor) -> torch.Tensor:
        """Score rows ``need`` of a chunk in one verifier call and store their scores."""
        from noisesearch import ledger

        ctx, images, previews = self.ctx, parts.image, parts.preview
        whole = len(need) == len(images)
        pick = torch.tensor(need, dtype=torch.int64)
        batch = images if whole else images[pick.to(images.device)]
        shown = None if previews is None else (previews if whole else previews[pick.to(previews.device)])
        scored = owners if whole else owners[pick]
        with torch.no_grad():  # a cacheable job takes no gradient
            got = ctx.acct.verify(ctx.verifier, batch, ctx.targets(scored), scored, previews=shown)
        if self.verifier_id is not None:
            key = ("verify", tuple(batch.shape[1:]), None if shown is None else tuple(shown.shape[1:]), False)
            flops = None if verifier_info(ctx.verifier).metered else ledger.cached(ctx.verifier, key)
            self.cache.put_scores([keys[r] for r in need], self.verifier_id, got.tolist(), flops)
        return got


def _merge(hit: _Parts, miss: _Parts, hit_rows: list[int], miss_rows: list[int], device) -> _Parts:
    """The replayed and the computed rows of a chunk in row order (in the computed rows' dtypes)."""
    at_hit = torch.tensor(hit_rows, dtype=torch.int64, device=device)
    at_miss = torch.tensor(miss_rows, dtype=torch.int64, device=device)
    n = len(hit_rows) + len(miss_rows)

    def merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.empty((n, *b.shape[1:]), dtype=b.dtype, device=b.device)
        out[at_hit] = a.to(b.dtype)
        out[at_miss] = b
        return out

    preview = None
    if hit.preview is not None and miss.preview is not None:
        preview = merge(hit.preview, miss.preview)
    return _Parts(merge(hit.x, miss.x), merge(hit.image, miss.image), preview)
