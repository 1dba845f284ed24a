"""The four small networks of the built-in digits world.

Images are scikit-learn's 8x8 digits, scaled to [-1, 1] and shaped (B, 1, 8, 8).

- ``FlowNet``: class-conditional rectified-flow velocity model (residual MLP with adaLN blocks),
  the generator that search runs on. Label ``NULL_LABEL`` (= 10) is the unconditional slot used by
  classifier-free guidance.
- ``Classifier``: MLP on pixels, trained with labels: the supervised verifier.
- ``Encoder``: the encoder half of an autoencoder trained without labels: the self-supervised
  verifier's feature space.
- ``EvalNet``: a small CNN, other architecture and other seed than every verifier: the evaluation
  network behind FID, IS, precision/recall and class accuracy.

Each network is built from a plain dict config (stored in its safetensors metadata), so a weights
file fully describes the network it belongs to.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

NUM_CLASSES = 10
NULL_LABEL = NUM_CLASSES  # the "no class" slot of the flow model, for classifier-free guidance


def timestep_features(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of sigma in [0, 1]: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    args = sigma.float()[:, None] * 1000.0 * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def linear_flops(module: nn.Module) -> int:
    """FLOPs of one row through every ``nn.Linear`` of ``module``, each applied once: ``2 * in * out`` each.

    This is how ``torch.utils.flop_counter`` counts a linear layer (a matrix product of 2 M N K FLOPs;
    bias, activations and norms count 0), so for the networks here, whose every linear layer runs once
    per row, it is their exact count; a test holds it equal to the counter's. The accountant uses it
    instead of running the counter, whose first use imports ``torch._dynamo`` (2.4 s per process).
    """
    return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


@dataclass(frozen=True)
class FlowConfig:
    """Sizes of a ``FlowNet``."""

    width: int = 64
    hidden: int = 128
    cond_dim: int = 32
    depth: int = 2


class AdaLNBlock(nn.Module):
    """Residual MLP block whose LayerNorm shift, scale and output gate come from the condition."""

    def __init__(self, width: int, hidden: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(cond_dim, 3 * width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, width))
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=1)  # each (B, width)
        return h + (1 + gate) * self.mlp(self.norm(h) * (1 + scale) + shift)


class FlowNet(nn.Module):
    """Velocity model v(x, sigma, label) for x_sigma = (1 - sigma) x0 + sigma noise."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        self.cond_dim = config.cond_dim
        self.label_embedding = nn.Embedding(NUM_CLASSES + 1, config.cond_dim)
        self.time_mlp = nn.Sequential(
            nn.Linear(config.cond_dim, config.cond_dim), nn.SiLU(), nn.Linear(config.cond_dim, config.cond_dim)
        )
        self.inp = nn.Linear(64, config.width)
        self.blocks = nn.ModuleList(
            AdaLNBlock(config.width, config.hidden, config.cond_dim) for _ in range(config.depth)
        )
        self.out_norm = nn.LayerNorm(config.width)
        self.out = nn.Linear(config.width, 64)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x (B, 1, 8, 8), sigma (B,), labels (B,) long in [0, 10] -> velocity (B, 1, 8, 8)."""
        c = self.time_mlp(timestep_features(sigma, self.cond_dim)) + self.label_embedding(labels)
        c = nn.functional.silu(c)  # (B, cond_dim)
        h = self.inp(x.reshape(x.shape[0], 64))  # (B, width)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h)).reshape(x.shape)


class Classifier(nn.Module):
    """Pixel MLP classifier: images (B, 1, 8, 8) in [-1, 1] -> logits (B, 10)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.config = {"hidden": hidden}
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """Label-free encoder (autoencoder half): images (B, 1, 8, 8) -> features (B, latent)."""

    def __init__(self, hidden: int = 96, latent: int = 16):
        super().__init__()
        self.config = {"hidden": hidden, "latent": latent}
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, latent))
        # The decoder is only needed to train the encoder; it is saved beside it all the same.
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.net(x)).reshape(x.shape)


class EvalNet(nn.Module):
    """Small CNN: images (B, 1, 8, 8) -> logits (B, 10); ``features`` gives the 64-d penultimate layer."""

    def __init__(self, channels: int = 16, features: int = 64):
        super().__init__()
        self.config = {"channels": channels, "features": features}
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 2c, 4, 4)
            nn.Flatten(),
            nn.Linear(2 * channels * 16, features),
            nn.ReLU(),
        )
        self.head = nn.Linear(features, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build(kind: str, config: dict) -> nn.Module:
    """Build an untrained network of ``kind`` ('flow', 'classifier', 'encoder', 'evalnet')."""
    if kind == "flow":
        return FlowNet(FlowConfig(**config))
    return {"classifier": Classifier, "encoder": Encoder, "evalnet": EvalNet}[kind](**config)


def config_of(net: nn.Module) -> dict:
    """The plain-dict config that ``build`` turns back into ``net``'s architecture."""
    return asdict(net.config) if isinstance(net, FlowNet) else dict(net.config)
