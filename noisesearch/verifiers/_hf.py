"""Loading transformers models for verifiers, and their image preprocessing done in torch.

Private helpers shared by the real verifiers (``clip.py``, ``dino.py``, ``aesthetic.py``):

- ``load(path, what=..., device=..., dtype=...)``: a model (+ image processor, + tokenizer) from a
  local folder written by ``save_pretrained`` or from a hub id, with ``trust_remote_code`` off; a
  checkpoint whose weights do not fit its config (wrong shapes, missing tensors) is refused with a
  ``UserError`` naming the keys instead of being silently re-initialised;
- ``Preprocess``: the processor's resize / centre crop / normalisation applied to our (B, C, H, W)
  tensors in [0, 1] in torch, so it is batched and differentiable (first-order search);
- ``check_prompts``: targets must be non-empty strings.

References: the preprocessing mirrors transformers' image processors (``size``, ``crop_size``,
``image_mean``, ``image_std``; https://huggingface.co/docs/transformers/main_classes/image_processor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noisesearch.errors import UserError
from noisesearch.verifiers.base import check_images

INSTALL_HINT = "pip install 'noisesearch[verifiers]'"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def require(module: str, what: str):
    """Import optional dependency ``module`` or raise a ``UserError`` with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"{what} needs {module.split('.')[0]} ({e}); install it with: {INSTALL_HINT}") from None


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, refusing unknown names and absent accelerators."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; accepted: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available; use device=cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``dtype`` name ("float32", "float16", "bfloat16") as a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def source(path, *, what: str, example: str) -> tuple[str, bool]:
    """(where to load from, whether it is local) for ``path``: an existing folder or a hub id."""
    if path is None:
        raise UserError(
            f"{what} needs weights: pass --verifier-path, a folder written by save_pretrained "
            f"or a hub id such as {example}"
        )
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{what}: {p} is a file; expected a folder with config.json and weights")
        if not (p / "config.json").is_file():
            raise UserError(f"{what}: no config.json in {p}")
        if not any((p / name).is_file() for name in WEIGHT_FILES):
            raise UserError(f"{what}: no weights file in {p} (expected one of {', '.join(WEIGHT_FILES)})")
        return str(p), True
    if _HUB_ID.match(str(path)) and not str(path).startswith((".", "~")):
        return str(path), False
    raise UserError(f"{what}: no folder {p} (and {str(path)!r} is not a hub id like {example})")


def _weights_problems(info: dict) -> str | None:
    """A one-line description of checkpoint keys that do not fit the model, or None."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: m[0])
    missing = sorted(info.get("missing_keys") or [])
    parts = [f"{k} has shape {tuple(got)}, the config expects {tuple(want)}" for k, got, want in mismatched[:5]]
    if len(mismatched) > 5:
        parts.append(f"and {len(mismatched) - 5} more of the wrong shape")
    if missing:
        parts.append(
            f"missing: {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return "; ".join(parts) or None


@dataclass
class Loaded:
    """A model in eval mode on its device, its image preprocessing, and its tokenizer (if asked)."""

    model: Any
    preprocess: Preprocess
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype


def load(path, *, what: str, example: str, device="cpu", dtype="float32", tokenizer: bool = False) -> Loaded:
    """Load a transformers model (``AutoModel``) + preprocessing (+ tokenizer) from ``path``."""
    src, local = source(path, what=what, example=example)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    transformers = require("transformers", what)
    common = {"trust_remote_code": False, "local_files_only": local}
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_kw = {"dtype": dt} if (major, minor) >= (4, 56) else {"torch_dtype": dt}  # renamed in 4.56
    try:
        model, info = transformers.AutoModel.from_pretrained(
            src, ignore_mismatched_sizes=True, output_loading_info=True, **dtype_kw, **common
        )
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{what}: cannot load a model from {src}: {str(e).strip().splitlines()[0]}") from None
    problems = _weights_problems(info)
    if problems:
        raise UserError(f"{what}: the weights in {src} do not fit its config.json: {problems}")
    model = model.to(dev).eval().requires_grad_(False)
    processor = _image_processor(transformers, src, common, what)
    tok = None
    if tokenizer:
        try:
            tok = transformers.AutoTokenizer.from_pretrained(src, **common)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{what}: no tokenizer in {src}: {str(e).strip().splitlines()[0]}") from None
    return Loaded(model, Preprocess.from_processor(processor, device=dev, dtype=dt), tok, dev, dt)


def _image_processor(transformers, src: str, common: dict, what: str):
    errors = []
    for loader in (transformers.AutoImageProcessor, transformers.AutoProcessor):
        try:
            proc = loader.from_pretrained(src, **common)
            return getattr(proc, "image_processor", proc)
        except (OSError, ValueError, KeyError, TypeError) as e:
            errors.append(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    raise UserError(f"{what}: no image processor (preprocessor_config.json) in {src}: {errors[0]}")


def _size(size, key: str):
    """A field of an image processor's size dict (a dict or a SizeDict), or None."""
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


class Preprocess:
    """A processor's resize, centre crop and normalisation on (B, C, H, W) tensors in [0, 1].

    Args:
        shortest_edge: resize so the short side has this length (aspect kept), or None;
        resize_to: (height, width) to resize to exactly, or None;
        crop_to: (height, width) of the centre crop, or None;
        mean, std: per-channel normalisation;
        mode: interpolation ("bicubic" or "bilinear"; antialiased like PIL's resampling).
    """

    def __init__(
        self,
        *,
        shortest_edge=None,
        resize_to=None,
        crop_to=None,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        mode="bicubic",
        device="cpu",
        dtype=torch.float32,
    ):
        self.shortest_edge, self.resize_to, self.crop_to, self.mode = shortest_edge, resize_to, crop_to, mode
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # (1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # (1, 3, 1, 1)
        self.device, self.dtype = device, dtype

    @classmethod
    def from_processor(cls, proc, *, device="cpu", dtype=torch.float32) -> Preprocess:
        """The preprocessing described by a transformers image processor's settings."""
        size, crop = getattr(proc, "size", None), getattr(proc, "crop_size", None)
        shortest = resize_to = crop_to = None
        if getattr(proc, "do_resize", True) and size is not None:
            if _size(size, "shortest_edge"):
                shortest = int(_size(size, "shortest_edge"))
            elif _size(size, "height") and _size(size, "width"):
                resize_to = (int(_size(size, "height")), int(_size(size, "width")))
        if getattr(proc, "do_center_crop", False) and crop is not None and _size(crop, "height"):
            crop_to = (int(_size(crop, "height")), int(_size(crop, "width")))
        normalize = getattr(proc, "do_normalize", True)
        mean = tuple(proc.image_mean) if normalize else (0.0,) * 3
        std = tuple(proc.image_std) if normalize else (1.0,) * 3
        resample = getattr(proc, "resample", 3)
        mode = "bilinear" if resample is not None and int(resample) == 2 else "bicubic"
        return cls(
            shortest_edge=shortest,
            resize_to=resize_to,
            crop_to=crop_to,
            mean=mean,
            std=std,
            mode=mode,
            device=device,
            dtype=dtype,
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel values (B, 3, h, w) for the model, on its device and dtype; keeps autograd."""
        check_images(images)
        if images.shape[1] not in (1, 3):
            raise UserError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}")
        x = (
            images.to(self.device).float().expand(-1, 3, -1, -1)
        )  # (B, 3, H, W): grey images repeated like convert("RGB")
        h, w = x.shape[-2:]
        if self.shortest_edge is not None:
            s = self.shortest_edge
            out = (s, max(1, int(s * w / h))) if h <= w else (max(1, int(s * h / w)), s)
            x = self._resize(x, out)
        elif self.resize_to is not None:
            x = self._resize(x, self.resize_to)
        if self.crop_to is not None:
            x = _center_crop(x, self.crop_to)
        x = (x - self.mean) / self.std  # (B, 3, h, w)
        return x.to(self.dtype)

    def _resize(self, x: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(out):
            return x
        x = torch.nn.functional.interpolate(x, size=out, mode=self.mode, antialias=True, align_corners=False)
        return x.clamp(0, 1)  # (B, 3, *out): bicubic overshoot clipped like 8-bit PIL images


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre crop (padding with zeros when the image is smaller, like transformers)."""
    ch, cw = size
    h, w = x.shape[-2:]
    if h < ch or w < cw:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        x = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]  # (B, 3, ch, cw)


def check_prompts(targets: list, count: int, *, what: str) -> list[str]:
    """``targets`` as a list of ``count`` non-empty prompt strings, or a ``UserError``."""
    if len(targets) != count:
        raise UserError(f"{what}: got {len(targets)} targets for {count} images")
    for t in targets:
        if not isinstance(t, str) or not t.strip():
            raise UserError(f"{what}: prompt must be a non-empty string, got {t!r}")
    return list(targets)


def pooled(output) -> torch.Tensor:
    """The pooled embedding of a transformers output (ModelOutput in transformers 5, a tensor before)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class Scorer:
    """Base of the real verifiers: ``__call__`` is ``score`` without autograd, as float32 on the CPU."""

    preview_sigma = None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        return self.score(images, targets, previews=previews).detach().float().cpu()


def load_tensors(path, *, what: str) -> dict[str, torch.Tensor]:
    """A flat float32 state dict from a ``.safetensors`` file or a ``.pth`` state dict (``weights_only``)."""
    from noisesearch.verifiers._state import read_state_dict

    return {k: v.float() for k, v in read_state_dict(path, what=what).items()}
