"""Device-resident search: noise leaves the CPU once per batch, and states never go back and forth per step.

This machine has no GPU, so the model's device is simulated: ``Problems.to_device`` (the one place where
drawn noise leaves the CPU) marks tensors as ``OnDevice``, a tensor subclass that every torch operation
propagates, and so is a tensor allocated with an explicit ``device=`` (``torch.empty(..., device=dev)``,
an allocation on the device); the model refuses any unmarked input in ``denoise``. A state that went through the CPU as a
plain tensor and back would arrive unmarked. Reads to the host (``.cpu()``, ``.tolist()``, ``.item()``,
``float()``...) of marked tensors are counted, and none may happen between two denoiser calls of a batch.
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from noisesearch.accounting import Accountant
from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import Problems
from noisesearch.driver import run_search
from noisesearch.models.digits import DigitsModel
from noisesearch.verifiers import VERIFIERS

HOST_READS = {
    torch.Tensor.cpu,
    torch.Tensor.tolist,
    torch.Tensor.item,
    torch.Tensor.numpy,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__bool__,
}
COUNTS = {"moves": 0, "reads": 0, "batch": 0}


class OnDevice(torch.Tensor):
    """A CPU tensor that stands for one on the model's device; host reads of it are counted."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            COUNTS["reads"] += 1
        return super().__torch_function__(func, types, args, kwargs or {})


class Allocations(TorchFunctionMode):
    """Marks tensors made by a factory called with an explicit ``device=`` (allocated on the device)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if kwargs.get("device") is not None and type(out) is torch.Tensor:
            out = out.as_subclass(OnDevice)
        return out


class DeviceOnlyDigits(DigitsModel):
    """The digits model, refusing inputs that did not come from the device; notes the counters at every call."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int, int]] = []  # (batch, moves, reads) at each denoiser call

    def denoise(self, x, sigma, cond, *, guidance):
        if not isinstance(x, OnDevice):
            raise AssertionError(f"denoise got a host tensor at sigma {sigma}")
        self.calls.append((COUNTS["batch"], COUNTS["moves"], COUNTS["reads"]))
        return super().denoise(x, sigma, cond, guidance=guidance)


@pytest.fixture
def device(monkeypatch):
    def to_device(self, x):
        COUNTS["moves"] += 1
        return x.as_subclass(OnDevice)

    denoiser = Accountant.denoiser

    def batch_denoiser(self, *args, **kwargs):  # one per batch run: numbers the batches
        COUNTS["batch"] += 1
        return denoiser(self, *args, **kwargs)

    monkeypatch.setattr(Problems, "to_device", to_device)
    monkeypatch.setattr(Accountant, "denoiser", batch_denoiser)
    COUNTS.update(moves=0, reads=0, batch=0)
    with Allocations():
        yield COUNTS


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_search_states_stay_on_the_device(device, name):
    model, verifier = DeviceOnlyDigits(), VERIFIERS["classifier"]()
    run = run_search(model, verifier, ALGORITHMS[name](), [1, 2], seeds=[0, 1], budget=48, steps=4)
    assert all(r.best_image is not None for r in run)
    assert model.calls, "the model was called"
    # within one batch's trajectory (consecutive denoiser calls of one batch), nothing moved
    # and nothing was read to the host: the state stayed on the device from step to step
    steps_within = [(a, b) for a, b in zip(model.calls, model.calls[1:]) if a[0] == b[0]]
    moved = [(a, b) for a, b in steps_within if a[1:] != b[1:]]
    assert not moved, f"{name}: a transfer or host read between two denoiser steps: {moved[:3]}"
    # noise left the CPU at most once per batch asked (draws), never per candidate
    assert device["moves"] <= 3 * run.stats.rounds + 2, (device["moves"], run.stats.rounds)
