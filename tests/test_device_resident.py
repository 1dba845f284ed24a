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
from _algo import build
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
    run = run_search(model, verifier, build(name), [1, 2], seeds=[0, 1], budget=48, steps=4)
    assert all(r.best_image is not None for r in run)
    assert model.calls, "the model was called"
    # within one batch's trajectory (consecutive denoiser calls of one batch), nothing moved
    # and nothing was read to the host: the state stayed on the device from step to step
    steps_within = [(a, b) for a, b in zip(model.calls, model.calls[1:]) if a[0] == b[0]]
    moved = [(a, b) for a, b in steps_within if a[1:] != b[1:]]
    assert not moved, f"{name}: a transfer or host read between two denoiser steps: {moved[:3]}"
    # noise left the CPU at most once per batch asked (draws), never per candidate
    assert device["moves"] <= 3 * run.stats.rounds + 2, (device["moves"], run.stats.rounds)


def test_digits_device_option():
    """``device``: a clear error before loading for an unknown or absent device; on the CPU the model is the
    one it always was (no ``device`` attribute, the same cache identity, so existing caches keep their keys)."""
    from noisesearch.cache import model_identity
    from noisesearch.errors import UserError
    from noisesearch.models import MODELS

    plain, cpu = DigitsModel(), MODELS["digits"](device="cpu")
    assert not hasattr(cpu, "device") and model_identity(cpu) == model_identity(plain)
    assert cpu.encode([3, 1]).device.type == "cpu"
    with pytest.raises(UserError, match="'warp'.*accepted: cpu, cuda"):
        MODELS["digits-large"](device="warp")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="'cuda:0' is not available"):
            DigitsModel("digits", device="cuda:0")


def test_synchronized_timers_bracket_every_timed_call(monkeypatch):
    """With ``SYNC_TIMERS`` the accountant waits for the GPU right before and right after each model,
    verifier and backward call (simulated here: a fake CUDA whose synchronize is logged)."""
    from noisesearch import accounting

    log: list[str] = []
    monkeypatch.setattr(accounting, "SYNC_TIMERS", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: log.append("sync"))
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: (log.append("backward"), grad(*a, **k))[1])

    class Logged(DigitsModel):
        def denoise(self, *a, **k):
            log.append("denoise")
            return super().denoise(*a, **k)

        def denoise_grad(self, *a, **k):
            if torch.is_grad_enabled():  # a call of its own, not from denoise (which runs it under no_grad)
                log.append("denoise")
            return super().denoise_grad(*a, **k)

    classifier = VERIFIERS["classifier"]()

    class LoggedVerifier:
        name, preview_sigma = "classifier", None

        def __call__(self, *a, **k):
            log.append("verify")
            return classifier(*a, **k)

        def score(self, *a, **k):
            log.append("verify")
            return classifier.score(*a, **k)

    for name in ("random", "first-order"):
        log.clear()
        run_search(Logged(), LoggedVerifier(), build(name), [1, 2], seeds=[0, 1], budget=32, steps=4)
        calls = [i for i, event in enumerate(log) if event != "sync"]
        events = [log[i] for i in calls]
        if name == "random":  # one batch of 2 x 8 candidates: 4 Euler steps, then one verifier call
            assert events == ["denoise"] * 4 + ["verify"], events
        else:
            assert {"denoise", "verify", "backward"} <= set(events), events
        for i in calls:
            assert log[i - 1] == "sync" and log[i + 1] == "sync", (name, log[max(0, i - 2) : i + 3])
    monkeypatch.setattr(accounting, "SYNC_TIMERS", False)
    log.clear()
    run_search(Logged(), LoggedVerifier(), ALGORITHMS["random"](), [1], seeds=[0], budget=8, steps=4)
    assert "sync" not in log and "denoise" in log  # off by default: no waiting


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CI machine)")
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_digits_search_on_cuda_matches_the_cpu(name):
    """On a GPU: the same plan (NFEs), noises drawn on the CPU from the same seeds, scores within float noise."""
    from noisesearch.models import MODELS

    runs = {}
    for device in ("cpu", "cuda"):
        model, verifier = MODELS["digits"](device=device), VERIFIERS["classifier"]()
        runs[device] = run_search(model, verifier, build(name), [1, 2, 3], seeds=[0, 1, 2], budget=48, steps=4)
    for cpu, gpu in zip(runs["cpu"], runs["cuda"]):
        assert gpu.nfe_used == cpu.nfe_used
        first_cpu, first_gpu = cpu.candidates[0], gpu.candidates[0]
        assert first_gpu["noise_seed"] == first_cpu["noise_seed"]
        assert first_gpu["noise_sha256"] == first_cpu["noise_sha256"]  # drawn on the CPU, hashed as float32
        assert abs(first_gpu["score"] - first_cpu["score"]) < 1e-3
