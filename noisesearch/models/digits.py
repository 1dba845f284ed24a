"""The built-in class-conditional digits models (``digits`` ~55k parameters, ``digits-large`` ~600k)."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from noisesearch._io import load_weights
from noisesearch.devices import parse_device
from noisesearch.digits import nets
from noisesearch.digits.train import WEIGHTS_DIR
from noisesearch.errors import UserError
from noisesearch.samplers import schedule

CONFIG_MAX = 65536  # the largest size a digits network's config may give (the shipped ones use at most 384)


_FLOPS: weakref.WeakKeyDictionary[torch.nn.Module, float] = weakref.WeakKeyDictionary()  # flops_per_nfe


class _SkipInit(TorchFunctionMode):
    """Makes ``torch.nn.init``'s functions leave their tensor as it is, for a network built for its shapes.

    On the meta device they would do nothing anyway, but ``normal_`` there runs through a
    reference implementation whose first call imports ``torch._dynamo``: 2.4 s per process.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def load_net(path: Path, kind: str) -> torch.nn.Module:
    """Load a digits-world network of ``kind`` from a safetensors file (config in its metadata).

    Every way a file can fail to be that network is one ``UserError`` naming the file and the
    metadata key or tensor at fault: a folder, another format, another network's ``kind``, a missing
    or malformed ``config``, missing or extra tensors, a tensor of the wrong shape.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"weights file {str(path)!r} is a folder; give a .safetensors file")
    tensors, meta = load_weights(path)
    name = str(path)
    if meta.get("kind") != kind:
        raise UserError(f"weights file {name!r} holds a {meta.get('kind')!r} network, expected {kind!r}")
    if "config" not in meta:
        raise UserError(f"weights file {name!r} has no 'config' in its metadata (the network's sizes, as JSON)")
    try:
        config = json.loads(meta["config"])
    except json.JSONDecodeError as e:
        raise UserError(f"weights file {name!r}: metadata 'config' is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"weights file {name!r}: metadata 'config' must be a JSON object, got {config!r:.80}")
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CONFIG_MAX:
            raise UserError(
                f"weights file {name!r}: metadata 'config' key {key!r} must be an integer from 1 to {CONFIG_MAX}, "
                f"got {value!r:.80}"
            )
    try:
        with torch.device("meta"), _SkipInit():  # shapes only: no memory for a file whose config is wrong
            expected = nets.build(kind, config).state_dict()
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"weights file {name!r}: metadata 'config' does not describe a {kind} network ({e})") from None
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"weights file {name!r} does not fit the {kind} network: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise UserError(
                f"weights file {name!r}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"the {kind} network of its config needs {tuple(expected[key].shape)}"
            )
        if not tensor.is_floating_point() and expected[key].is_floating_point():
            raise UserError(f"weights file {name!r}: tensor {key!r} is {tensor.dtype}, not a float tensor")
    net = nets.build(kind, config)
    net.load_state_dict(tensors)
    return net.eval().requires_grad_(False)


class DigitsModel:
    """Class-conditional rectified-flow model on 8x8 digits; targets are class ids 0..9.

    ``denoise`` returns ``x - sigma * v`` for the network's velocity ``v``; with a guidance scale
    other than 1 it runs the conditional and unconditional rows as one batch of 2B (2 NFEs each).
    """

    domain = "digits"
    noise_shape = (1, 8, 8)
    default_steps = 8
    default_guidance = 1.0  # as the paper's SiT-XL setting: no classifier-free guidance

    def __init__(self, name: str = "digits", *, path: Path | str | None = None, device: str | None = None):
        dev = parse_device("cpu" if device is None else device)  # a clear error before loading anything
        self.name = name
        file = "flow.safetensors" if name == "digits" else "flow-large.safetensors"
        self.path = Path(path) if path is not None else WEIGHTS_DIR / file
        self.net = load_net(self.path, "flow")
        if dev.type != "cpu":  # set only off the CPU: a CPU model keeps the cache identity it always had
            self.device = dev  # the driver's search states, noises and scores live here (driver.run_search)
            self.net.to(dev)

    def check_target(self, target) -> int:
        try:
            value = int(str(target))
        except ValueError:
            value = None
        if value is None or not 0 <= value < nets.NUM_CLASSES:
            shown = repr(target) if len(repr(target)) <= 60 else repr(target)[:57] + "..."
            raise UserError(f"target {shown} is not a digits class; accepted: integers 0 to 9")
        return value

    def encode(self, targets: list) -> torch.Tensor:
        labels = [self.check_target(t) for t in targets]
        return torch.tensor(labels, dtype=torch.int64, device=getattr(self, "device", None))  # (B,)

    def nfe_per_call(self, guidance: float) -> int:
        return 1 if guidance == 1.0 else 2

    def flops_per_nfe(self) -> float:
        """Exact FLOPs of one NFE (one row through the network), as the FLOP counter would measure them."""
        flops = _FLOPS.get(self.net)  # the accountant asks once per batch: walk the modules once per network
        if flops is None:  # (kept beside the model, not on it: its attributes are its cache identity)
            flops = _FLOPS[self.net] = float(nets.linear_flops(self.net))
        return flops

    def flops_per_row(self, key: tuple) -> float | None:
        """Analytic FLOPs of the accountant's call ``key`` (``ledger.counted``): decoding is element-wise (0)."""
        return 0.0 if key[0] == "decode" else None

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float, cond: torch.Tensor, *, guidance: float) -> torch.Tensor:
        return self.denoise_grad(x, sigma, cond, guidance=guidance)

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond: torch.Tensor, *, guidance: float) -> torch.Tensor:
        """``denoise`` with autograd left on (for first-order search)."""
        sig = torch.full((x.shape[0],), float(sigma), device=x.device)
        if guidance == 1.0:
            v = self.net(x, sig, cond)
        else:
            null = torch.full_like(cond, nets.NULL_LABEL)
            v_cond, v_uncond = self.net(torch.cat([x, x]), torch.cat([sig, sig]), torch.cat([cond, null])).chunk(2)
            v = v_uncond + guidance * (v_cond - v_uncond)
        return x - sigma * v  # (B, 1, 8, 8)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1) / 2).clamp(0, 1)

    def schedule(self, steps: int) -> tuple[float, ...]:
        return schedule(steps)
