"""Writing video samples: an animated WebP of the best video and keyframe strips (PNG), through Pillow only.

Pillow ships its own WebP encoder (libwebp inside the wheel), so no new dependency is needed; frames are written
losslessly, so every pixel reads back as its 8-bit value. Every file goes through ``_io.atomic_write_bytes``.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from noisesearch._io import atomic_write_bytes, images_to_uint8, save_png
from noisesearch.keyframes import DEFAULT_KEYFRAMES, keyframe_indices, keyframe_strip

DEFAULT_FPS = 16  # Wan's frame rate; a model may set ``fps``


def save_webp(path: Path, video: torch.Tensor, *, fps: int = DEFAULT_FPS) -> None:
    """Write a video (C, F, H, W) in [0, 1] as a lossless animated WebP that loops."""
    from PIL import Image

    frames = images_to_uint8(video.transpose(0, 1))  # (F, H, W, C)
    images = [Image.fromarray(f[:, :, 0] if f.shape[2] == 1 else f).convert("RGB") for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
        lossless=True,
        quality=100,
    )
    atomic_write_bytes(path, buf.getvalue())


def write_video_outputs(out_dir: Path, result, verifier, *, fps: int = DEFAULT_FPS) -> dict:
    """``best.webp`` and ``keyframes.png`` for the best video, and ``keyframes/<index>.png`` for every kept
    candidate (``run_search(keep_images=True)``, each candidate's record gets its path); the record's note."""
    video = result.best_image  # (C, F, H, W)
    n = video.shape[1]
    picked = getattr(verifier, "picked", None)
    indices = picked(n) if picked is not None else keyframe_indices(n, DEFAULT_KEYFRAMES)
    save_webp(out_dir / "best.webp", video, fps=fps)
    save_png(out_dir / "keyframes.png", keyframe_strip(video, indices))
    if result.images:
        (out_dir / "keyframes").mkdir(exist_ok=True)
        for c in result.candidates:
            if c["index"] in result.images:
                name = f"keyframes/{c['index']}.png"
                save_png(out_dir / name, keyframe_strip(result.images[c["index"]], indices))
                c["keyframes"] = name
    return {"path": "best.webp", "frames": n, "fps": fps, "keyframes": "keyframes.png", "keyframe_indices": indices}
