"""Jobs and outcomes as columns: a batch of candidates to run (``Jobs``) with the exact cost of its options
(``plain_cost``), and what the driver reports back for it, row for row (``Outcomes``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from noisesearch.samplers import get_sampler


def plain_cost(
    sigmas: Sequence[float],
    sampler: str,
    nfe_per_call: int,
    *,
    denoised: bool = False,
    score_end: bool = False,
    grad: bool = False,
    backward_cost: float = 0.0,
) -> tuple[int, int]:
    """(forward NFEs, backward-pass NFE-equivalents) of one row along ``sigmas`` (see ``Jobs`` for the options)."""
    evals = get_sampler(sampler).nfe(tuple(sigmas))
    evals -= bool(denoised)  # the first evaluation is already known
    evals += bool(score_end and sigmas[-1] > 0)  # one more evaluation at the end state
    forward = evals * nfe_per_call
    return forward, (math.ceil(backward_cost * forward) if grad else 0)


@dataclass
class Jobs:
    """Candidates to run, as columns: rows of start states ``x`` (n, *noise_shape) at ``sigmas[0]``,
    each integrated along ``sigmas``, row r for search ``owner[r]``.

    ``noise_seed[r]`` is set only when ``x[r]`` is exactly ``gaussian(noise_shape, noise_seed[r])``
    (None for the column: no row is); for any other start state (a neighbour, an intermediate state)
    it is None and the record carries a hash of the row instead. ``info`` holds the algorithm's notes,
    JSON-serialisable columns of length n (lists or 1-d tensors), recorded per row. Options, shared by
    every row, each with its exact cost (``Problems.job_cost``):

    - ``sampler``: run with another registered sampler than the run's (same cost rules);
    - ``noises`` (n, n_steps, *noise_shape): the per-step noises of a stochastic sampler (required by
      one, refused by a deterministic one);
    - ``denoised`` (n, *noise_shape): the already-computed x0-prediction of ``x`` at ``sigmas[0]``
      (from an earlier ``score_end``), so the first evaluation is not paid twice;
    - ``score_end``: for a batch ending at sigma > 0, evaluate the denoiser once more at the end state
      (+1 evaluation) and score that x0-prediction; without it an unfinished row is scored on the
      x0-prediction of its last evaluated step (free);
    - ``grad``: also return the gradient of the score with respect to ``x`` (first-order search),
      charged ``ceil(backward_cost * forward NFEs)`` extra NFEs for the backward pass.
    """

    owner: torch.Tensor  # (n,) int64, on the CPU
    x: torch.Tensor | None  # None: every row is its seeded draw, not drawn yet (``Problems.start_states``)
    sigmas: tuple[float, ...]
    noise_seed: Sequence[int | None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    noises: torch.Tensor | None = None
    denoised: torch.Tensor | None = None
    score_end: bool = False
    grad: bool = False
    backward_cost: float = 0.0

    def __post_init__(self) -> None:
        self.sigmas = tuple(float(s) for s in self.sigmas)
        if not isinstance(self.owner, torch.Tensor):
            self.owner = torch.as_tensor(self.owner, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.owner)

    @property
    def final(self) -> bool:
        """True when the rows end at sigma = 0, i.e. produce finished samples."""
        return self.sigmas[-1] == 0

    def rows(self, idx: slice | torch.Tensor | Sequence[int]) -> Jobs:
        """The rows ``idx`` (a slice, or indices), every column cut alike."""
        pick: Any = idx if isinstance(idx, slice) else torch.as_tensor(idx, dtype=torch.int64)
        listed: Any = idx if isinstance(idx, slice) else pick.tolist()

        def cut(col):
            if col is None:
                return None
            if isinstance(col, torch.Tensor):
                return col[pick.to(col.device) if isinstance(pick, torch.Tensor) else pick]
            return col[listed] if isinstance(listed, slice) else [col[i] for i in listed]

        return replace(
            self,
            owner=cut(self.owner),
            x=cut(self.x),
            noise_seed=cut(self.noise_seed),
            info={k: cut(v) for k, v in self.info.items()},
            noises=cut(self.noises),
            denoised=cut(self.denoised),
        )

    def options(self) -> tuple:
        """Batches with equal options may run as one."""
        return (
            self.sigmas,
            self.sampler,
            self.noises is not None,
            self.denoised is not None,
            self.score_end,
            self.grad,
            self.backward_cost,
        )


@dataclass
class Outcomes:
    """What the driver reports back for one ``Jobs`` batch, row for row.

    ``x`` (n, *noise_shape): end states; ``denoised``: x0-predictions at the end states when the rows
    ended at sigma = 0 (then equal to ``x``) or asked ``score_end``, else those of their last evaluated
    step; ``image`` (n, C, H, W): decoded, what was scored; ``score`` (n,): the verifier's scores (NaN if
    it failed, a +inf or -inf too: ``failed_as_nan``), on the verifier's device; ``nfe``: NFEs charged per
    row; ``index`` (n,) int64: each row's candidate number within its search (assigned when the jobs were
    asked); ``grad``: d score / d ``jobs.x`` for ``grad`` jobs.
    """

    jobs: Jobs
    x: torch.Tensor
    denoised: torch.Tensor
    image: torch.Tensor
    score: torch.Tensor
    nfe: int
    index: torch.Tensor
    grad: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.score)
