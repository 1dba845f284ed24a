"""Data and training for the built-in digits world (scikit-learn's ``load_digits``, shipped; no download).

``train_world(seed)`` retrains every network reproducibly from one seed; the shipped weights in
``noisesearch/digits/weights`` were made by ``noisesearch train digits --seed 0``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from noisesearch.digits import nets

WEIGHTS_DIR = Path(__file__).parent / "weights"
# file name -> (network kind, architecture config, training steps, seed offset)
WORLD: dict[str, tuple[str, dict, int, int]] = {
    "flow.safetensors": ("flow", {"width": 64, "hidden": 128, "cond_dim": 32, "depth": 2}, 1500, 0),
    "flow-large.safetensors": ("flow", {"width": 160, "hidden": 384, "cond_dim": 96, "depth": 3}, 3000, 1),
    "classifier.safetensors": ("classifier", {"hidden": 128}, 1500, 2),
    "encoder.safetensors": ("encoder", {"hidden": 96, "latent": 16}, 2000, 3),
    "evalnet.safetensors": ("evalnet", {"channels": 16, "features": 64}, 2000, 4),
}
HELD_OUT_EVERY = 5  # every 5th image is held out from the verifier classifier's training


@dataclass(frozen=True)
class DigitsData:
    """All 1797 digits: ``images`` (N, 1, 8, 8) float32 in [-1, 1], ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def split(self, held_out: bool) -> DigitsData:
        """The verifier classifier's training split (``held_out=False``) or the rest."""
        mask = (torch.arange(len(self.labels)) % HELD_OUT_EVERY == 0) == held_out
        return DigitsData(self.images[mask], self.labels[mask])


DATA = Path(__file__).parent / "data" / "digits.npz"


@functools.lru_cache(maxsize=1)
def load_data() -> DigitsData:
    """The 1797 8x8 digits of scikit-learn's ``load_digits`` (pixel values 0..16, shipped in ``data/``,
    see its README) scaled to [-1, 1]; read once per process. The tensors are shared: callers must not
    change them in place."""
    import numpy as np

    with np.load(DATA, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    scaled = torch.from_numpy(images.astype(np.float32))[:, None] / 8.0 - 1.0  # (N, 1, 8, 8)
    return DigitsData(scaled, torch.from_numpy(labels.astype(np.int64)))


def _batches(n: int, batch: int, steps: int, gen: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=gen)


def _fit(net: nn.Module, loss_fn, data: DigitsData, steps: int, gen: torch.Generator, lr: float) -> nn.Module:
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for idx in _batches(len(data.labels), 256, steps, gen):
        loss = loss_fn(net, data.images[idx], data.labels[idx], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def _flow_loss(net, x0, labels, gen):
    """Rectified-flow loss: v(x_sigma, sigma) should predict noise - x0; 10% of labels dropped."""
    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.rand(x0.shape[0], generator=gen)
    x = (1 - sigma)[:, None, None, None] * x0 + sigma[:, None, None, None] * noise
    drop = torch.rand(x0.shape[0], generator=gen) < 0.1
    labels = torch.where(drop, torch.full_like(labels, nets.NULL_LABEL), labels)
    return ((net(x, sigma, labels) - (noise - x0)) ** 2).mean()


def _augment(x, gen):
    """Small random shifts of up to one pixel and pixel noise, so classifiers see near-digits."""
    shifts = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = torch.roll(x, shifts=shifts, dims=(2, 3))
    return x + 0.1 * torch.randn(x.shape, generator=gen)


def _classifier_loss(net, x, labels, gen):
    return nn.functional.cross_entropy(net(_augment(x, gen)), labels)


def _encoder_loss(net, x, labels, gen):  # labels unused: the encoder is label-free
    return ((net.reconstruct(x + 0.05 * torch.randn(x.shape, generator=gen)) - x) ** 2).mean()


LOSSES = {
    "flow": (_flow_loss, 2e-3),
    "classifier": (_classifier_loss, 1e-3),
    "encoder": (_encoder_loss, 2e-3),
    "evalnet": (_classifier_loss, 1e-3),
}


def train_network(name: str, *, seed: int, data: DigitsData | None = None, steps: int | None = None) -> nn.Module:
    """Train the network stored as ``name`` in ``WORLD`` reproducibly from ``seed``."""
    kind, config, default_steps, offset = WORLD[name]
    data = data if data is not None else load_data()
    if kind == "classifier":  # the supervised verifier never sees the held-out split
        data = data.split(held_out=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 * seed + offset)  # only for the weight initialisation
        net = nets.build(kind, config)
    gen = torch.Generator().manual_seed(1000 * seed + offset)
    loss_fn, lr = LOSSES[kind]
    return _fit(net, loss_fn, data, steps or default_steps, gen, lr)


def train_world(out_dir: Path, *, seed: int = 0, progress=None) -> list[Path]:
    """Retrain every network of the digits world into ``out_dir`` (safetensors files)."""
    from noisesearch._io import save_weights

    data = load_data()
    written = []
    for name, (kind, _, _, _) in WORLD.items():
        if progress:
            progress(name)
        net = train_network(name, seed=seed, data=data)
        meta = {"kind": kind, "config": json.dumps(nets.config_of(net)), "seed": str(seed)}
        save_weights(Path(out_dir) / name, net.state_dict(), meta)
        written.append(Path(out_dir) / name)
    return written


def accuracy(net: nn.Module, data: DigitsData) -> float:
    """Share of ``data`` that a classifier labels right."""
    with torch.no_grad():
        return float((net(data.images).argmax(1) == data.labels).float().mean())
