"""The arguments a diffusers pipeline's ``__call__`` takes besides those the search sets (``pipeline_kwargs``),
checked against its signature and annotations before any weights load, image paths opened safely: one check
for the CLI (``--pipeline-param``), the Python API and every adapter (step-level and generic).
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import math
import os
import struct
import types
import typing
from pathlib import Path

import torch

from noisesearch.errors import UserError

SET_BY_SEARCH = (
    "prompt",
    "latents",
    "num_images_per_prompt",
    "num_videos_per_prompt",
    "num_inference_steps",
    "guidance_scale",
    "output_type",
    "return_dict",
    "generator",
    "callback_on_step_end",
)


def call_parameters(pipe) -> dict[str, inspect.Parameter]:
    """The parameters of ``type(pipe).__call__`` (what ``pipe(...)`` takes); ``pipe`` may be the class itself."""
    cls = pipe if isinstance(pipe, type) else type(pipe)
    return dict(inspect.signature(cls.__call__).parameters)


def check_pipeline_kwargs(pipe, kwargs: dict | None) -> dict:
    """``kwargs`` checked for ``pipe.__call__`` (a pipeline object or its class), image paths opened: the one
    check of pipeline arguments, for the CLI (before any weights load) and the Python API alike.

    Each key must be a named parameter of ``__call__`` that the search does not set itself; each value
    must fit the parameter's annotation: text where it takes ``str`` (a number is refused), an ``int``
    where it takes one (never a word or a float; sizes positive), a finite number for a ``float``, and
    so on (a parameter whose annotation cannot be checked takes anything). An image parameter (annotated
    with ``PIL.Image.Image``, or named ``image`` or ``..._image``) takes a path to a still image file,
    opened safely here (``open_image``), or an image object as the pipeline takes it. Returns a new dict
    with every image path replaced by its RGB PIL image; a bad key or value raises ``UserError``.

    Example::

        check_pipeline_kwargs(StableDiffusionControlNetPipeline, {"image": "edges.png", "eta": 0.5})
    """
    if kwargs is not None and not isinstance(kwargs, dict):
        raise UserError(f"pipeline kwargs must be a dict of __call__ arguments, got {kwargs!r}")
    kwargs = dict(kwargs or {})
    params = call_parameters(pipe)  # a **kwargs there only swallows deprecated names: named parameters only
    for key in kwargs:
        if key in SET_BY_SEARCH:
            raise UserError(
                f"pipeline kwarg {key!r} is set by the search itself; accepted: other {_call_name(pipe)} args"
            )
        if key not in params or params[key].kind is inspect.Parameter.VAR_KEYWORD:
            named = (k for k, p in params.items() if p.kind is not p.VAR_KEYWORD)
            takes = ", ".join(k for k in named if k not in ("self", *SET_BY_SEARCH))
            raise UserError(f"{_call_name(pipe)} takes no argument {key!r}; it takes: {takes}")
    return {key: _checked_value(pipe, params[key], value) for key, value in kwargs.items()}


IMAGE_PARAMETERS = ("image", "images", "control_image", "mask_image", "init_image")  # besides any ``..._image``
POSITIVE_INTS = ("height", "width", "num_frames", "max_sequence_length")  # sizes: a 0 or a negative one is refused


def is_image_parameter(param: inspect.Parameter) -> bool:
    """Whether ``__call__``'s ``param`` takes images (so a string there is a path to an image file)."""
    from PIL import Image

    members = _members(param.annotation)
    if any(m is Image.Image for m in members):
        return True
    named = param.name in IMAGE_PARAMETERS or param.name.endswith("_image")
    return named and not any(m in (bool, int, float, str) for m in members)  # not a flag that happens to be named so


def _checked_value(pipe, param: inspect.Parameter, value):
    """``value`` for ``param`` (image paths opened), or ``UserError`` naming the key, the value and what fits."""
    key = param.name
    if is_image_parameter(param) and isinstance(value, (str, os.PathLike, list, tuple)):
        paths = value if isinstance(value, (list, tuple)) else [value]
        if paths and all(isinstance(v, (str, os.PathLike)) for v in paths):
            opened = [open_image(v, key) for v in paths]
            return opened if isinstance(value, (list, tuple)) else opened[0]
    if value is None and param.default is None:
        return value
    members = _members(param.annotation)
    verdicts = [_fits(m, value) for m in members]
    if True not in verdicts and None not in verdicts:
        raise UserError(
            f"pipeline argument {key}={_short(value)} does not fit {_call_name(pipe)}: {_wanted(param, value)}"
        )
    if key in POSITIVE_INTS and _is_int(value) and value < 1:
        raise UserError(f"pipeline argument {key}={value!r} must be a positive integer")
    return _as_floats(members, value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_floats(members: list, value):
    """``value`` with an int made a float where the annotation takes a float but no int (``1`` on the command line
    for ``controlnet_conditioning_scale: float | list[float]``, which the pipeline checks with ``isinstance``)."""
    if int in members or not (float in members or list[float] in members):
        return value
    if _is_int(value) and float in members:
        return float(value)
    if isinstance(value, list) and list[float] in members and all(_is_int(v) or isinstance(v, float) for v in value):
        return [float(v) for v in value]
    return value


def _members(annotation) -> list:
    """The alternatives of an annotation: the members of a ``Union`` / ``X | Y`` (flattened), else itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _is_tensor_type(member) -> bool:
    """``torch.Tensor`` or one of torch's legacy tensor types (``torch.FloatTensor``: any tensor is taken)."""
    return isinstance(member, type) and (
        issubclass(member, torch.Tensor) or (member.__module__ == "torch" and member.__name__.endswith("Tensor"))
    )


def _fits(member, value) -> bool | None:
    """Whether ``value`` fits one alternative of an annotation; None when that cannot be told (``Any``, a
    callable type, a forward reference given as text, a missing annotation)."""
    if member is type(None):
        return value is None
    if member is bool:
        return isinstance(value, bool)
    if member is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if member is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if member is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(member), typing.get_args(member)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and len(args) > 1 and args[-1] is not Ellipsis:  # tuple[int] is often meant as any length
            if len(args) != len(value):
                return False
            verdicts = [_fits(a, v) for a, v in zip(args, value)]
        else:
            verdicts = [_fits(args[0], v) for v in value] if args else []
        return False if False in verdicts else (None if None in verdicts else True)
    if origin is dict:
        return isinstance(value, dict)
    if _is_tensor_type(member):
        return isinstance(value, torch.Tensor)
    if isinstance(member, type) and member is not inspect.Parameter.empty:
        return isinstance(value, member)
    return None


def _wanted(param: inspect.Parameter, value) -> str:
    """What ``param`` accepts, in words (for an error line)."""
    if is_image_parameter(param):
        return "it takes an image file path (PNG, JPEG, WebP, ...; or a PIL image, array or tensor from Python)"
    kinds = [_kind(m) for m in _members(param.annotation) if m is not type(None)]
    if param.name in POSITIVE_INTS:
        kinds = ["a positive integer" if k == "int" else k for k in kinds]
    text = " or ".join(dict.fromkeys(kinds))
    if param.default is None or type(None) in _members(param.annotation):
        text += " (or null)"
    if "str" in kinds and isinstance(value, (bool, int, float)):  # --pipeline-param reads 5 as a number
        word = json.dumps(value)
        text += f"; for the text {word} on the command line, quote it as JSON: {param.name}='\"{word}\"'"
    return f"it takes {text}"


def _kind(member) -> str:
    """One alternative of an annotation, in words."""
    origin, args = typing.get_origin(member), typing.get_args(member)
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {_kind(args[0])}" if args else "a list"
    if origin is dict:
        return "a dict"
    if _is_tensor_type(member):
        return "a tensor"
    if member is float:
        return "a finite number"
    return getattr(member, "__name__", str(member))


def _short(value) -> str:
    """``repr(value)`` cut to 80 characters (an error stays one readable line)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _call_name(pipe) -> str:
    return f"{(pipe if isinstance(pipe, type) else type(pipe)).__name__}.__call__"


def open_image(value, key: str):
    """The still image file at path ``value`` (argument ``key`` of a pipeline) as an RGB PIL image, opened safely.

    The path must name a regular file that PIL identifies as an image it can decode, whole (a truncated
    file is refused), of one frame (an animated GIF, PNG or WebP or a multi-page TIFF is refused: give
    the frame wanted as a still image) and within PIL's decompression-bomb guard
    (``PIL.Image.MAX_IMAGE_PIXELS`` pixels; its warning band counts as too large here too). Anything
    else raises ``UserError`` naming ``key``, the path and what is accepted.
    """
    import warnings

    from PIL import Image

    text = str(value)
    accepted = "accepted: a still image file (PNG, JPEG, WebP, BMP, ...)"
    if not text.strip():
        raise UserError(f"pipeline argument {key}= is empty; {accepted}")
    path = Path(text).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else ("is not a regular file" if path.exists() else "does not exist")
        raise UserError(f"pipeline argument {key}={text!r}: {what}; {accepted}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    raise UserError(
                        f"pipeline argument {key}={text!r} is a {im.format} of {frames} frames; {accepted} of one frame"
                    )
                return im.convert("RGB")  # decodes every pixel: a truncated file fails here, not in the pipeline
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"pipeline argument {key}={text!r} is an image of more than {Image.MAX_IMAGE_PIXELS:,} pixels "
            f"(PIL's decompression-bomb limit); {accepted}, smaller"
        ) from None
    except UserError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, MemoryError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"pipeline argument {key}={text!r} is not a readable image ({reason}); {accepted}") from None
