"""Shared fixtures. Nothing here touches the network: every model and verifier is built in code or
loaded from the weights that ship inside the package."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))  # OMP_NUM_THREADS=1 (the kernel reruns) keeps one


def pytest_report_header(config):
    """Which kernels and how many threads this run computes with (`make test` reruns the `numerics` tests under
    others: see docs/TESTING.md)."""
    kernels = {k: os.environ[k] for k in ("MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY") if k in os.environ}
    return (
        f"torch {torch.__version__}: {torch.get_num_threads()} thread(s), "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {kernels or 'default kernels'}"
    )


@pytest.fixture(scope="session")
def digits():
    from noisesearch.models import MODELS

    return MODELS["digits"]()


@pytest.fixture(scope="session")
def classifier():
    from noisesearch.verifiers import VERIFIERS

    return VERIFIERS["classifier"]()


@pytest.fixture(scope="session")
def toy():
    from noisesearch.models import MODELS

    return MODELS["toy"]()


@pytest.fixture(scope="session")
def toy_verifier():
    from noisesearch.verifiers import VERIFIERS

    return VERIFIERS["toy-distance"]()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny diffusers models gain nothing from threads, and two threads on a busy 2-core machine are ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
