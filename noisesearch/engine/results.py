"""What ``run_search`` returns: a ``SearchRun`` (a list of ``SearchResult``, one per target) and its ``RunStats``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class SearchResult:
    """The answer of one search and how it was reached.

    ``best_image`` (C, H, W) in [0, 1] and ``best_noise`` (*noise_shape, the starting state of the
    best job) are None only if no finished candidate got a real score; both are on the CPU.
    ``candidates`` holds one flat dict per evaluated job, in candidate-index order (built from the
    run's columns when first read); ``images`` maps candidate index -> image (C, H, W) for every
    finished candidate when ``run_search(keep_images=True)``.

    With ``run_search(final_steps=...)`` the best noise is denoised again with that many steps:
    ``best_image`` is then that final render, ``final_score`` the verifier's score of it (None without a
    render, or when its score failed), and ``nfe_final`` its NFEs (0 without one); ``nfe_used`` stays the
    search's NFEs (at most ``budget``), ``best_score`` the search's best score, and the ledger counts both.
    """

    target: Any
    seed: int
    budget: int
    nfe_used: int
    verifier_calls: int
    best_score: float
    best_index: int
    best_image: torch.Tensor | None
    best_noise: torch.Tensor | None
    nan_scores: int
    candidates: Sequence[dict] = field(default_factory=list)
    images: dict[int, torch.Tensor] = field(default_factory=dict)  # finished candidates' images, if kept
    record: dict = field(default_factory=dict)  # the JSON-ready record (``noisesearch.search`` fills it)
    ledger: dict = field(default_factory=dict)  # its costs, flat (``Accountant.ledger``): FLOPs, decodes, seconds
    nfe_final: int = 0  # NFEs of the final render (``final_steps``), outside the budget
    final_score: float | None = None  # the verifier's score of the final render


@dataclass
class RunStats:
    """Where a run's wall time went, measured at the accountant (for benchmarks and progress reports).

    ``denoise_seconds``, ``verify_seconds`` and ``backward_seconds``: time inside the model, the verifier
    and autograd's backward pass; ``denoise_calls``: batched denoiser calls; ``rounds``: ask/tell rounds;
    ``candidates``: rows run (all searches); ``draw_seconds``: time drawing seeded noise (one generator per
    draw: the per-candidate cost of reproducibility, part of the time outside the calls); ``decode_seconds``:
    time in the model's decoder (a VAE for latent models; also outside the calls of ``inside_share``).
    """

    wall_seconds: float = 0.0
    denoise_seconds: float = 0.0
    verify_seconds: float = 0.0
    backward_seconds: float = 0.0
    denoise_calls: int = 0
    rounds: int = 0
    candidates: int = 0
    draw_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def inside_share(self) -> float:
        """Share of the wall time spent inside the model, the verifier and backward passes."""
        inside = self.denoise_seconds + self.verify_seconds + self.backward_seconds
        return inside / self.wall_seconds if self.wall_seconds > 0 else 0.0


class SearchRun(list):
    """What ``run_search`` returns: the ``SearchResult`` of each target, in order (a list), and ``stats``."""

    stats: RunStats

    def __init__(self, results: list[SearchResult], stats: RunStats):
        super().__init__(results)
        self.stats = stats
