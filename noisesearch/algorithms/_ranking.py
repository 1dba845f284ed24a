"""Ranking scores: a failed score (NaN, +inf or -inf) is recorded as NaN and ranks below every real one."""

from __future__ import annotations

import math

import torch


def failed_as_nan(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` with every value that is not a finite number (NaN, +inf, -inf) as NaN: a failed score.

    A verifier's +inf or -inf measures nothing that can be ranked against other candidates (nor written
    to a JSON record or the replay cache), so the driver treats it as a NaN: recorded as a failed score
    (``null``), counted in ``nan_scores``, never the best. Autograd passes through the finite rows.
    """
    return torch.where(torch.isfinite(scores), scores, torch.nan)


def rank_values(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` as float64 with every failed score (NaN, and +inf or -inf, see ``failed_as_nan``) as -inf:
    a failed score ranks below every real one. (``nan_to_num(nan=-inf)`` alone would turn +inf into the
    largest float, which would win.)"""
    s = scores.double()
    return torch.where(torch.isfinite(s), s, -math.inf)


def first_best(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Index of the first maximum along ``dim`` of ``scores`` with failed scores (NaN, +-inf) ranked lowest
    (ties: the earliest)."""
    s = rank_values(scores)
    return torch.argmax((s == s.amax(dim=dim, keepdim=True)).to(torch.int8), dim=dim)


def rank_order(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Indices that sort ``scores`` best first along ``dim``, failed scores (NaN, +-inf) last, ties in their
    original order."""
    return torch.sort(rank_values(scores), dim=dim, descending=True, stable=True).indices
