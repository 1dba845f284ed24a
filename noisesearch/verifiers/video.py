"""Video through image verifiers: one wrapper scores chosen frames of each video and combines their scores.

A video model (``domain == "video"``, e.g. ``models/wan.py``) decodes candidates to videos (B, C, F, H, W) in
[0, 1]; its x0-previews are videos too. ``FrameVerifier`` picks frames of every video (``frames``: ``k`` evenly
spaced keyframes, the first and last among them, or ``"all"``), scores all B x k frames with the image verifier
in **one** call (targets and previews repeated and sliced alike), and combines each video's k scores with
``combine`` (``"mean"`` or ``"min"``; a NaN frame score makes the video's score NaN, a failed score). So every
image verifier works on video unchanged, and image i's score still depends on video i alone.

Declared by verifiers (``VerifierInfo``, read through ``verifier_info``) and by models (``ModelInfo``: ``domain``,
``frames``):

- ``video = True``: the verifier scores whole videos (B, C, F, H, W) itself and is used as it is;
- ``takes_frames = False``: it cannot score a video's frames one by one (say it judges a set of images, or
  needs previews of another kind); with a video model it is refused in one line;
- ``domain`` (on the verifier or its registry factory) other than None: it understands one model family's images
  (the digits classifier's 8x8 digits), not a video's RGB frames; refused in one line.

Choose frames and combination from the CLI with ``--verifier-param frames=4 --verifier-param combine=min``
(``frames=all`` for every frame) and from Python with ``verifier_options={"frames": 4, "combine": "min"}``;
without them a video is scored on ``DEFAULT_KEYFRAMES`` keyframes (every frame if it has fewer), mean.
"""

from __future__ import annotations

import torch

from noisesearch.contracts import verifier_info
from noisesearch.errors import UserError
from noisesearch.keyframes import DEFAULT_KEYFRAMES, keyframe_indices
from noisesearch.models.base import model_info

COMBINE = ("mean", "min")
OPTIONS = ("frames", "combine")  # verifier options that belong to this wrapper, not to the verifier's factory


def check_options(frames, combine) -> None:
    """Refuse a frame choice or combination that is not accepted (one line, before any work)."""
    if (
        frames is not None
        and frames != "all"
        and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1)
    ):
        raise UserError(
            f"verifier option frames={frames!r} is not accepted; give a positive number of keyframes or all"
        )
    if combine is not None and combine not in COMBINE:
        raise UserError(f"verifier option combine={combine!r} is not accepted; accepted: {', '.join(COMBINE)}")


def split_options(options: dict | None) -> tuple[dict, dict]:
    """``options`` without this wrapper's keys, and those keys (``frames``, ``combine``) apart."""
    options = dict(options or {})
    video = {k: options.pop(k) for k in OPTIONS if k in options}
    check_options(video.get("frames"), video.get("combine"))
    return options, video


class FrameVerifier:
    """Scores videos (B, C, F, H, W) with an image verifier on chosen frames (see the module docstring).

    Range: the image verifier's (a mean or a minimum of its scores).
    """

    video = True

    def __init__(self, inner, n_frames: int | None, *, frames: int | str | None = None, combine: str | None = None):
        check_options(frames, combine)
        declared = verifier_info(inner)
        self.inner = inner
        self.members = (inner,)  # its identity includes the image verifier's (None for a keyless callable: no replay)
        self.name = inner.name
        self.preview_sigma = declared.preview_sigma
        self.frames = frames if frames is not None else min(DEFAULT_KEYFRAMES, n_frames or DEFAULT_KEYFRAMES)
        if n_frames is not None and self.frames != "all" and self.frames > n_frames:
            raise UserError(f"verifier option frames={self.frames} asks for more keyframes than the {n_frames} frames")
        self.combine = combine or "mean"
        self.n_frames = n_frames  # None: read from each batch (the generic adapter's videos)
        self.indices = None if n_frames is None else keyframe_indices(n_frames, self.frames)
        if declared.value_range is not None:
            self.value_range = declared.value_range
        if declared.score is not None:
            self.score = self._score  # differentiable only if the image verifier is

    @property
    def usage(self):
        return verifier_info(self.inner).usage  # an API grader's counters, read by the accountant

    def describe(self) -> dict:
        """The record's note of how videos were scored."""
        indices = None if self.indices is None else list(self.indices)
        return {"frames": self.frames, "frame_indices": indices, "combine": self.combine}

    def _frames(self, videos: torch.Tensor | None) -> torch.Tensor | None:
        """Videos (B, C, F, H, W) -> the chosen frames as images (B * k, C, H, W), video by video."""
        if videos is None:
            return None
        n = self.n_frames or (videos.shape[2] if isinstance(videos, torch.Tensor) and videos.dim() == 5 else "F")
        if not isinstance(videos, torch.Tensor) or videos.dim() != 5 or videos.shape[2] != n:
            shape = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
            raise UserError(f"{self.name} on video: expected videos (B, C, {n}, H, W), got {shape}")
        picked = videos[:, :, self.picked(n)]  # (B, C, k, H, W)
        return picked.transpose(1, 2).reshape(-1, videos.shape[1], *videos.shape[3:])  # (B * k, C, H, W)

    def picked(self, n_frames: int) -> list[int]:
        """The frame indices scored in videos of ``n_frames`` frames."""
        return self.indices if self.indices is not None else keyframe_indices(n_frames, self.frames)

    def _run(self, fn, images, targets, previews) -> torch.Tensor:
        k = len(self.picked(images.shape[2])) if isinstance(images, torch.Tensor) and images.dim() == 5 else 0
        frame_targets = [t for t in targets for _ in range(k)]
        scores = fn(self._frames(images), frame_targets, previews=self._frames(previews))  # (B * k,)
        per_video = scores.reshape(len(images), k)  # (B, k)
        return per_video.mean(dim=1) if self.combine == "mean" else per_video.min(dim=1).values  # NaN stays NaN

    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        return self._run(self.inner, images, targets, previews)

    def _score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        return self._run(self.inner.score, images, targets, previews)


def for_model(verifier, model, *, frames=None, combine=None, domain: str | None = None):
    """The verifier to use with ``model``: wrapped in ``FrameVerifier`` if the model makes videos and the verifier
    scores images; as it is otherwise. ``domain``: the registry factory's, if known. Refusals are one line
    (``check_pairing``)."""
    check_pairing(model, verifier, frames=frames, combine=combine, domain=domain)
    m, v = model_info(model), verifier_info(verifier)
    if m.domain != "video" or v.video:
        return verifier
    return FrameVerifier(verifier, m.frames, frames=frames, combine=combine)


def check_pairing(model, verifier, *, frames=None, combine=None, domain: str | None = None) -> None:
    """Refuse (one ``UserError``) a verifier that cannot score ``model``'s videos, or frame options without videos.

    Only declarations are read (``ModelInfo``, ``VerifierInfo``): cheap, before any work."""
    m, v = model_info(model), verifier_info(verifier)
    if m.domain != "video":
        if frames is not None or combine is not None:
            raise UserError(f"verifier options frames/combine are for video models; {model.name} makes images")
        return
    if v.video:
        if frames is not None or combine is not None:
            raise UserError(f"verifier {verifier.name!r} scores whole videos; frames/combine do not apply")
        return
    declared = v.domain or domain
    if declared is not None:
        raise UserError(f"verifier {verifier.name!r} scores {declared} images only; {model.name} makes videos")
    if not v.takes_frames:
        raise UserError(
            f"verifier {verifier.name!r} cannot score a video's frames one by one ({model.name} makes videos)"
        )
