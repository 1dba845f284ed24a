"""Verifier Ensemble: several registered verifiers combined into one score (Ma et al. 2025, Sec. 5.1).

The paper ranks the candidates under each verifier and averages the ranks. A rank only exists
among images scored together, so **this is the one verifier whose scores depend on the batch**:

- ``mode="rank"``: each member's scores are ranked within the batch (ties get their average
  rank), scaled to [0, 1] (worst 0, best 1; a lone image 0.5), then averaged with ``weights``;
- ``mode="weighted-sum"``: the weighted sum of the members' scores, z-scored within the batch when
  ``standardize`` is true (batch-dependent), raw when false (batch-independent).

``batch_dependent`` says which holds. An image with a NaN from any member gets NaN (a failed
score) and the others are ranked without it. Compare scores only within one call, e.g. with
random search scoring all candidates of a target in one batch (``max_batch`` >= candidates).
"""

from __future__ import annotations

import inspect
import math

import torch

from noisesearch.errors import UserError

MODES = ("rank", "weighted-sum")


def average_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks (B,) of finite ``scores`` scaled to [0, 1], ties averaged; NaN stays NaN."""
    ok = torch.isfinite(scores)
    x = scores[ok]  # (n,)
    n = len(x)
    below = (x[None, :] < x[:, None]).sum(dim=1).double()  # (n,) strictly smaller scores
    equal = (x[None, :] == x[:, None]).sum(dim=1).double()  # (n,) ties, self included
    rank = below + (equal - 1) / 2  # 0-based average rank
    out = torch.full(scores.shape, float("nan"), dtype=torch.float64)
    out[ok] = rank / (n - 1) if n > 1 else torch.full_like(rank, 0.5)
    return out


def zscores(scores: torch.Tensor) -> torch.Tensor:
    """(s - mean) / std over the finite entries (std 0 -> 0); NaN stays NaN."""
    ok = torch.isfinite(scores)
    x = scores[ok].double()
    out = torch.full(scores.shape, float("nan"), dtype=torch.float64)
    std = x.std(unbiased=False) if len(x) else torch.tensor(0.0)
    out[ok] = (x - x.mean()) / std if std > 0 else torch.zeros_like(x)
    return out


def _split(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)):
        return [value]
    raise UserError(f"ensemble: expected a comma-separated string or a list, got {value!r}")


def _member(spec, device, registry: dict | None):
    """A verifier from a name or a dict {"name", "path", ...options} in ``registry`` (the ``VERIFIERS`` that
    builds this ensemble), or a verifier object."""
    if not isinstance(spec, (str, dict)):
        return spec  # an already built verifier (Python API)
    if registry is None:
        raise UserError(
            f"ensemble: member {spec!r} is a registry entry; give verifier objects, "
            "or build the ensemble by name: as_verifier('ensemble', members=...)"
        )
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name not in registry or name == "ensemble":
        raise UserError(
            f"ensemble: unknown member {name!r}; accepted: {', '.join(n for n in registry if n != 'ensemble')}"
        )
    factory = registry[name]
    accepted = inspect.signature(factory).parameters
    if "device" in accepted:
        spec.setdefault("device", device)
    bad = [k for k in spec if k not in accepted]
    if bad:
        raise UserError(f"ensemble: member {name!r} takes no parameter {bad[0]!r}; accepted: {', '.join(accepted)}")
    return factory(**spec)


class EnsembleVerifier:
    """Mean rank (or weighted sum) of several verifiers' scores within the batch (Ma et al. 2025, Sec. 5.1).

    Args:
        members: registry names ("clipscore,aesthetic"), or a list of names, of dicts
            ``{"name": ..., "path": ..., **options}`` or of verifier objects;
        weights: one non-negative weight per member (comma-separated or a list); default equal;
        mode: "rank" or "weighted-sum"; standardize: z-score members within the batch (weighted-sum);
        registry: the verifier registry that member names are looked up in (the ``ensemble`` entry of
            ``VERIFIERS`` passes itself; without it members must be verifier objects).

    Range: [0, 1] in rank mode (a weighted mean of ranks scaled to [0, 1], clamped against rounding of
    the weights); any real number in weighted-sum mode. NaN where a member failed.
    """

    def __init__(self, *, members, weights=None, mode="rank", standardize=True, device="cpu", registry=None):
        self.name = "ensemble"
        if mode not in MODES:
            raise UserError(f"ensemble: unknown mode {mode!r}; accepted: {', '.join(MODES)}")
        specs = _split(members)
        if not specs:
            raise UserError("ensemble needs members=name1,name2")
        weights = [1.0] * len(specs) if weights is None else [float(w) for w in _split(weights) if w != ""]
        if len(weights) != len(specs) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise UserError(f"ensemble: need {len(specs)} non-negative weights (not all 0), got {weights}")
        self.members = [_member(s, device, registry) for s in specs]
        sigmas = {m.preview_sigma for m in self.members if m.preview_sigma is not None}
        if len(sigmas) > 1:
            raise UserError(
                f"ensemble: members want x0-previews at different sigmas {sorted(sigmas)}; the driver gives one"
            )
        self.preview_sigma = sigmas.pop() if sigmas else None
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)  # (M,)
        self.mode, self.standardize = mode, bool(standardize)
        self.batch_dependent = mode == "rank" or self.standardize
        self.value_range = (0.0, 1.0) if mode == "rank" else (-math.inf, math.inf)

    def member_scores(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Each member's scores (M, B) float64 on the CPU."""
        rows = []
        for m in self.members:
            kw = {"previews": previews} if m.preview_sigma is not None else {}
            rows.append(m(images, targets, **kw).detach().double().cpu())
        return torch.stack(rows)  # (M, B)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        scores = self.member_scores(images, targets, previews=previews)  # (M, B)
        failed = ~torch.isfinite(scores).all(dim=0)  # (B,) NaN from any member
        scores[:, failed] = float("nan")
        if self.mode == "rank":
            parts = torch.stack([average_ranks(s) for s in scores])  # (M, B)
            return (self.weights[:, None] * parts).sum(dim=0).clamp(0.0, 1.0).float()  # (B,) NaN stays NaN
        if self.standardize:
            parts = torch.stack([zscores(s) for s in scores])  # (M, B)
        else:
            parts = scores
        return (self.weights[:, None] * parts).sum(dim=0).float()  # (B,)
