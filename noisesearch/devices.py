"""Device and dtype names as the user gives them (``device="cuda:0"``, ``dtype="bf16"``), parsed into torch's objects
and refused in one ``UserError`` line when unknown or absent on this machine; shared by the models and the verifiers.
"""

from __future__ import annotations

import torch

from noisesearch.errors import UserError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype) -> torch.dtype:
    """``torch.dtype`` from a name such as ``"float32"`` or ``"bf16"`` (or a dtype itself)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise UserError(f"unknown dtype {dtype!r}; accepted: float32, float16, bfloat16")


def parse_device(device) -> torch.device:
    """``torch.device`` from a name such as ``"cpu"`` or ``"cuda:0"``, refused if not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; accepted: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"device {device!r} is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} is not available on this machine")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device {device!r}; accepted: cpu, cuda, cuda:N, mps")
    return dev
