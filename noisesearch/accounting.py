"""The one accounting point: every denoiser and verifier call of a search goes through here.

NFE = one denoiser evaluation for one sample. A ``denoise`` call on a batch of B rows costs
``nfe_per_call(model, guidance, convention)`` NFEs for each row, charged to the search that owns the row:
under the ``"rows"`` convention (the default) ``model.nfe_per_call(guidance)`` (2 with classifier-free
guidance, 1 without or for guidance-distilled models: one NFE per model row); under ``"steps"`` 1,
whatever the guidance (one NFE per denoising step, as the paper's figures count). FLOPs stay exact
either way: ``flops_per_nfe`` is then the FLOPs of every model row of one step. Verifier calls are
counted separately, as images scored. Budgets are hard limits: the driver refuses a round whose
planned cost would overspend, and the accountant raises ``BudgetExceeded`` the moment an actual
call takes any search past its budget (so a wrong cost formula cannot hide).

It also keeps each search's ledger (``ledger()``): NFEs and denoiser FLOPs, images decoded and their
FLOPs, verifier calls and their FLOPs (``None`` for an API grader), API tokens and cost, and wall
seconds by kind. A batch's seconds are shared equally among its rows; FLOPs per row come from
``noisesearch.ledger`` (measured once per network and shape, on the real call).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from noisesearch import ledger
from noisesearch.contracts import model_info, verifier_info
from noisesearch.errors import BudgetExceeded, UserError
from noisesearch.models.base import Model

NFE_CONVENTIONS = ("rows", "steps")  # what one NFE is: one model row (CFG: 2 per step), or one denoising step


def check_nfe_convention(convention, *, what: str = "nfe convention") -> str:
    """``convention`` if it is one of ``NFE_CONVENTIONS``, else a ``UserError`` naming it and the accepted ones."""
    if not isinstance(convention, str) or convention not in NFE_CONVENTIONS:
        raise UserError(f"{what} {convention!r} is not accepted; accepted: {', '.join(NFE_CONVENTIONS)}")
    return convention


def nfe_per_call(model, guidance: float, convention: str = "rows") -> int:
    """NFEs one denoiser call costs per sample under ``convention``: the one place this cost is decided.

    ``"rows"``: the model's rows per call (``model.nfe_per_call(guidance)``, 2 with CFG); ``"steps"``: 1.
    """
    return model.nfe_per_call(guidance) if check_nfe_convention(convention) == "rows" else 1


def rows_per_nfe(model, guidance: float, convention: str = "rows") -> int:
    """Model rows that one NFE stands for under ``convention`` (1 under "rows"; 2 for a CFG step under "steps")."""
    return model.nfe_per_call(guidance) // nfe_per_call(model, guidance, convention)


SYNC_TIMERS = False  # True: the timers wait for an accelerator's queued work (see ``clock``)


def clock() -> float:
    """``time.perf_counter()`` for the accountant's timers; with ``SYNC_TIMERS``, read after the GPU's queued work.

    A CUDA (or MPS) call returns once its kernels are queued, so without waiting the time of a model call
    lands in whatever Python code next waits for a result. Waiting at both ends of each timed call puts
    the device's work inside the call that queued it, at the price of the overlap of Python and device
    work: off by default, on in ``bench/bench_algorithms.py --device cuda`` for the overhead shares.
    """
    if SYNC_TIMERS:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        elif torch.backends.mps.is_available():
            torch.mps.synchronize()
    return time.perf_counter()


class Accountant:
    """Counts NFEs and verifier calls per search and enforces each search's NFE budget.

    Args:
        budgets: NFE budget per search (index = search id).
        nfe_convention: what one NFE is (``NFE_CONVENTIONS``; see the module docstring).
    """

    def __init__(self, budgets: list[int], nfe_convention: str = "rows"):
        self.nfe_convention = check_nfe_convention(nfe_convention)
        self.budgets = torch.tensor(budgets, dtype=torch.int64)
        self.nfe = torch.zeros(len(budgets), dtype=torch.int64)
        self.verifier_calls = torch.zeros(len(budgets), dtype=torch.int64)
        self.denoise_calls = 0  # batched forward calls, for benchmarks
        self.denoise_seconds = 0.0  # wall time inside the model's denoise (forward, and autograd's tape)
        self.verify_seconds = 0.0  # wall time inside the verifier
        self.backward_seconds = 0.0  # wall time in backward passes (first-order search)
        self.decode_seconds = 0.0  # wall time in the model's decoder
        n = len(budgets)
        self.decodes = torch.zeros(n, dtype=torch.int64)  # images decoded (finals and previews)
        self.seconds = {kind: torch.zeros(n, dtype=torch.float64) for kind in ("denoise", "decode", "verify")}
        self.flops_per_nfe: float | None = None  # denoiser FLOPs per NFE (None: not measurable, e.g. generic)
        self.decode_flops = torch.zeros(n, dtype=torch.float64)
        self.verify_flops = torch.zeros(n, dtype=torch.float64)
        self.decode_flops_known = True
        self.verify_flops_known = True
        self.api_tokens = torch.zeros(n, dtype=torch.float64)
        self.api_cost = torch.zeros(n, dtype=torch.float64)
        self.api_cost_known = True
        self.replayed = torch.zeros(n, dtype=torch.int64)  # candidates replayed from the cache (noisesearch.cache)
        self.nfe_replayed = torch.zeros(n, dtype=torch.int64)  # their NFEs: charged to the budget, not computed
        self.decodes_replayed = torch.zeros(n, dtype=torch.int64)
        self.scores_replayed = torch.zeros(n, dtype=torch.int64)

    def _share(self, counter: torch.Tensor, owners: torch.Tensor, amount: float) -> None:
        """Add ``amount`` to ``counter``, shared equally among the rows of ``owners``."""
        if len(owners):
            counter += torch.bincount(owners, minlength=len(counter)).double() * (amount / len(owners))

    def extend(self, owners: torch.Tensor, nfe: int) -> None:
        """Raise the NFE limit of each search in ``owners`` by ``nfe`` (a final render's exact cost, outside the
        budget of the search): the limit stays hard, so a render that spends more than planned still raises."""
        self._charge(self.budgets, owners, nfe)

    def left(self, search: int) -> int:
        """NFEs that search ``search`` may still spend."""
        return int(self.budgets[search] - self.nfe[search])

    def _charge(self, counter: torch.Tensor, owners: torch.Tensor, cost: int) -> None:
        counter += torch.bincount(owners, minlength=len(counter)) * cost

    def _check(self) -> None:
        over = (self.nfe > self.budgets).nonzero()
        if len(over):
            i = int(over[0, 0])
            raise BudgetExceeded(f"search {i} spent {int(self.nfe[i])} NFEs, over its budget of {int(self.budgets[i])}")

    def charge_backward(self, owners: torch.Tensor, cost: int) -> None:
        """Charge a backward pass through the sampler, ``cost`` NFE-equivalents per row of ``owners``."""
        self._charge(self.nfe, owners, cost)
        self._check()

    def denoiser(self, model: Model, cond, owners: torch.Tensor, *, guidance: float, grad: bool = False):
        """A ``denoise(x, sigma)`` for the samplers that charges each row of ``owners`` per call."""
        cost = nfe_per_call(model, guidance, self.nfe_convention)
        rows = model.nfe_per_call(guidance)  # model rows per sample and call (the FLOP counter's key)
        info = model_info(model)
        fn: Callable[..., torch.Tensor] = model.denoise
        if grad:
            if info.denoise_grad is None:
                raise UserError(f"model {model.name!r} cannot be differentiated (no denoise_grad)")
            fn = info.denoise_grad

        analytic = info.flops_per_nfe  # FLOPs of one model row
        if analytic is not None:
            self.flops_per_nfe = float(analytic()) * rows / cost

        def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
            self._charge(self.nfe, owners, cost)
            self.denoise_calls += 1
            self._check()
            start = clock()
            try:
                if analytic is not None:
                    return fn(x, sigma, cond, guidance=guidance)
                key = ("denoise", tuple(x.shape[1:]), rows, grad)
                out, per_row = ledger.counted(
                    model, key, len(x), lambda: fn(x, sigma, cond, guidance=guidance), info.flops_per_row
                )
                self.flops_per_nfe = per_row / cost
                return out
            finally:
                elapsed = clock() - start
                self.denoise_seconds += elapsed
                self._share(self.seconds["denoise"], owners, elapsed)

        return denoise

    def trajectories(self, model, owners: torch.Tensor, cost: int, *, steps: int, guidance: float):
        """A ``run(x, targets) -> images`` for whole-trajectory models (``models.generic``): each row of
        ``owners`` is one full candidate costing ``cost`` NFEs, charged before the call; the model's
        hook refuses any forward past that plan, and a call that ran other rows than charged raises."""
        planned = cost * len(owners)  # NFEs under the convention
        rows = rows_per_nfe(model, guidance, self.nfe_convention)
        analytic = model_info(model).flops_per_nfe  # a whole pipeline call has no per-NFE count otherwise
        if analytic is not None:
            self.flops_per_nfe = float(analytic()) * rows

        def run(x: torch.Tensor, targets: list) -> torch.Tensor:
            self._charge(self.nfe, owners, cost)
            self.denoise_calls += 1
            self._check()
            start = clock()
            try:
                images, ran = model.trajectories(x, targets, steps=steps, guidance=guidance, rows=planned * rows)
            finally:
                elapsed = clock() - start
                self.denoise_seconds += elapsed
                self._share(self.seconds["denoise"], owners, elapsed)
            # the pipeline decodes each candidate itself, inside the timed call: counted, FLOPs unknown
            self._charge(self.decodes, owners, 1)
            self.decode_flops_known = False
            if ran != planned * rows:
                raise BudgetExceeded(
                    f"{model.name} ran {ran} denoiser rows where {planned * rows} were planned and charged"
                )
            return images

        return run

    def decode(self, model: Model, x0: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """``model.decode(x0)`` (B rows, one image each for its owner), counted and timed."""
        self._charge(self.decodes, owners, 1)
        start = clock()
        try:
            key = ("decode", tuple(x0.shape[1:]))
            analytic = model_info(model).flops_per_row
            images, per_row = ledger.counted(model, key, len(x0), lambda: model.decode(x0), analytic)
        finally:
            elapsed = clock() - start
            self.decode_seconds += elapsed
            self._share(self.seconds["decode"], owners, elapsed)
        self._share(self.decode_flops, owners, per_row * len(owners))
        return images

    def replay(
        self, owners: torch.Tensor, cost: int, *, decodes: int, decode_flops: float | None, flops_per_nfe: float | None
    ) -> None:
        """Charge candidates replayed from the cache as if computed, and count them as replayed.

        Each row of ``owners`` is one finished candidate whose ``cost`` NFEs go to its search's budget
        (checked: a replay spends the budget exactly like the run it stands for); ``decodes`` images
        of ``decode_flops`` FLOPs each per row and the denoiser's ``flops_per_nfe`` (both as measured
        when the entry was computed) keep the ledger equal to an uncached run's.
        """
        self._charge(self.nfe, owners, cost)
        self._charge(self.nfe_replayed, owners, cost)
        self._charge(self.replayed, owners, 1)
        self._check()
        self._charge(self.decodes, owners, decodes)
        self._charge(self.decodes_replayed, owners, decodes)
        if decode_flops is None:
            self.decode_flops_known = False
        else:
            self._share(self.decode_flops, owners, decode_flops * decodes * len(owners))
        if self.flops_per_nfe is None and flops_per_nfe is not None:
            self.flops_per_nfe = float(flops_per_nfe)

    def replay_scores(self, owners: torch.Tensor, verify_flops: list[float | None]) -> None:
        """Charge cached scores (one per row of ``owners``) as verifier calls, with their stored FLOPs per image."""
        self._charge(self.verifier_calls, owners, 1)
        self._charge(self.scores_replayed, owners, 1)
        if any(flops is None for flops in verify_flops):
            self.verify_flops_known = False
        else:
            self.verify_flops.index_add_(0, owners, torch.tensor(verify_flops, dtype=torch.float64))

    def charge_backward_seconds(self, owners: torch.Tensor, seconds: float) -> None:
        """A backward pass through the sampler: its seconds are denoiser work."""
        self.backward_seconds += seconds
        self._share(self.seconds["denoise"], owners, seconds)

    def verify(
        self, verifier, images: torch.Tensor, targets: list, owners: torch.Tensor, *, previews=None, grad: bool = False
    ) -> torch.Tensor:
        """Scores (B,) from ``verifier``, counting one verifier call per image for its owner.

        With ``grad`` the scores keep their autograd graph (the verifier's differentiable ``score``).
        """
        self._charge(self.verifier_calls, owners, 1)
        info = verifier_info(verifier)
        before = dict(info.usage) if info.usage is not None else None  # an API grader: tokens and cost, no FLOPs
        start = clock()
        try:
            if info.metered:
                scores = self._verify(verifier, info.score, images, targets, previews, grad)
            else:
                shown = previews.shape[1:] if isinstance(previews, torch.Tensor) else ()
                preview_shape = None if previews is None else tuple(shown)
                key = ("verify", tuple(images.shape[1:]), preview_shape, grad)
                scores, per_row = ledger.counted(
                    verifier,
                    key,
                    len(images),
                    lambda: self._verify(verifier, info.score, images, targets, previews, grad),
                    info.flops_per_row,
                )
                self._share(self.verify_flops, owners, per_row * len(owners))
        finally:
            elapsed = clock() - start
            self.verify_seconds += elapsed
            self._share(self.seconds["verify"], owners, elapsed)
        if before is not None:
            self.verify_flops_known = False
            after = dict(verifier_info(verifier).usage or {})  # the counters now (a fresh read)
            tokens = sum(after.get(k, 0) - before.get(k, 0) for k in ("prompt_tokens", "completion_tokens"))
            self._share(self.api_tokens, owners, float(tokens))
            if "cost" in after:
                self._share(self.api_cost, owners, float(after["cost"] - before.get("cost", 0.0)))
            else:
                self.api_cost_known = False
        if scores.shape != (len(images),):
            raise RuntimeError(
                f"verifier {verifier.name!r} returned shape {tuple(scores.shape)}, expected ({len(images)},)"
            )
        return scores.float() if grad else scores.detach().float()

    @staticmethod
    def _verify(verifier, score, images, targets, previews, grad):
        """``verifier``'s scores, through its declared differentiable ``score`` with ``grad``."""
        if grad:
            if score is None:
                raise UserError(
                    f"verifier {verifier.name!r} is not differentiable; first-order search needs "
                    "one with a score() method (the digits, toy and CLIP-based verifiers have one)"
                )
            return score(images, targets, previews=previews)
        return verifier(images, targets, previews=previews)

    def ledger(self, search: int, other_seconds: float) -> dict:
        """The flat ledger of search ``search``; ``other_seconds``: its share of the time outside all calls."""
        return self.ledgers(other_seconds, [search])[0]

    def ledgers(self, other_seconds: float, searches: list[int] | None = None) -> list[dict]:
        """``ledger`` of each search in ``searches`` (default: all), each counter read once for all of them."""
        idx = list(range(len(self.nfe))) if searches is None else searches

        def col(t: torch.Tensor) -> list:
            values = t.tolist()
            return [values[i] for i in idx]

        nfe, decodes, calls = col(self.nfe), col(self.decodes), col(self.verifier_calls)
        seconds = {kind: col(v) for kind, v in self.seconds.items()}
        decode_flops, verify_flops = col(self.decode_flops), col(self.verify_flops)
        tokens, cost = col(self.api_tokens), col(self.api_cost)
        nfe_replayed, replayed = col(self.nfe_replayed), col(self.replayed)
        decodes_replayed, scores_replayed = col(self.decodes_replayed), col(self.scores_replayed)
        out = []
        for n in range(len(idx)):
            denoise_flops = None if self.flops_per_nfe is None else self.flops_per_nfe * nfe[n]
            decode = float(decode_flops[n]) if self.decode_flops_known else None
            verify = float(verify_flops[n]) if self.verify_flops_known else None
            parts = (denoise_flops, decode, verify)
            secs = {kind: float(v[n]) for kind, v in seconds.items()}
            out.append(
                {
                    "denoise_nfe": int(nfe[n]),
                    "flops_per_nfe": self.flops_per_nfe,
                    "denoise_flops": denoise_flops,
                    "decode_count": int(decodes[n]),
                    "decode_flops": decode,
                    "verify_calls": int(calls[n]),
                    "verify_flops": verify,
                    "total_flops": None if any(p is None for p in parts) else sum(p for p in parts if p is not None),
                    "api_tokens": round(float(tokens[n])),
                    "api_cost_usd": float(cost[n]) if self.api_cost_known else None,
                    "seconds_denoise": secs["denoise"],
                    "seconds_decode": secs["decode"],
                    "seconds_verify": secs["verify"],
                    "seconds_other": other_seconds,
                    "seconds_total": sum(secs.values()) + other_seconds,
                    # what the replay cache saved (noisesearch.cache): the fields above count replays as computed
                    "nfe_computed": int(nfe[n] - nfe_replayed[n]),
                    "replayed": int(replayed[n]),
                    "decode_computed": int(decodes[n] - decodes_replayed[n]),
                    "verify_computed": int(calls[n] - scores_replayed[n]),
                }
            )
        return out
