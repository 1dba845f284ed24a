"""Which frames of a video stand for it: ``k`` evenly spaced keyframes, and those frames side by side as one image.

Shared by the frame-scoring verifier wrapper (``verifiers/video.py``) and the writers of video samples
(``_io.save_png``, ``_video_io``), so that a strip shows the frames a verifier scored by default.
"""

from __future__ import annotations

import torch

DEFAULT_KEYFRAMES = 4


def keyframe_indices(n_frames: int, k: int | str) -> list[int]:
    """``k`` evenly spaced frame indices of ``n_frames`` (first and last included; one keyframe: the middle),
    or every index for ``"all"``."""
    if k == "all" or k >= n_frames:
        return list(range(n_frames))
    if k == 1:
        return [(n_frames - 1) // 2]
    return [round(i * (n_frames - 1) / (k - 1)) for i in range(k)]


def keyframe_strip(video: torch.Tensor, indices: list[int] | None = None) -> torch.Tensor:
    """Frames ``indices`` of a video (C, F, H, W) side by side: one image (C, H, k W); by default its
    ``DEFAULT_KEYFRAMES`` keyframes."""
    if indices is None:
        indices = keyframe_indices(video.shape[1], DEFAULT_KEYFRAMES)
    return torch.cat([video[:, i] for i in indices], dim=2)
