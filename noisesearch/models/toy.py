"""An analytic toy world: the ideal denoiser over a few points, and a verifier with a known optimum.

The data distribution is uniform over ``points`` (P, D). For x_sigma = (1 - sigma) x0 + sigma noise
the exact x0-prediction is a softmax-weighted mean of the points (smalldiffusion's "ideal
denoiser"), so no training is needed and answers are known in closed form: with the symmetric
points -1 and +1 in one dimension, the probability-flow ODE sends a noise to the point of its
sign, so best-of-K random search reaches the target point with probability 1 - 2**-K.
"""

from __future__ import annotations

import math

import torch

from noisesearch.errors import UserError
from noisesearch.samplers import schedule


class ToyModel:
    """Ideal denoiser over ``points`` (P, D); targets are point indices (ignored by the denoiser).

    Images are the states themselves mapped from [-1, 1] to [0, 1], shaped (B, 1, 1, D).
    """

    domain = "toy"
    default_steps = 32
    default_guidance = 1.0

    def __init__(self, points: torch.Tensor | None = None, *, path=None):
        if path is not None:
            raise UserError("the toy model takes no weights (--model-path)")
        self.name = "toy"
        self.points = torch.tensor([[-1.0], [1.0]]) if points is None else points.float()  # (P, D)
        self.noise_shape = (self.points.shape[1],)

    def check_target(self, target) -> int:
        try:
            value = int(str(target))
        except ValueError:
            value = None
        if value is None or not 0 <= value < len(self.points):
            raise UserError(f"target {target!r} is not a toy point; accepted: integers 0 to {len(self.points) - 1}")
        return value

    def encode(self, targets: list) -> torch.Tensor:
        return torch.tensor([self.check_target(t) for t in targets], dtype=torch.int64)

    def nfe_per_call(self, guidance: float) -> int:
        return 1

    def denoise(self, x: torch.Tensor, sigma: float, cond, *, guidance: float) -> torch.Tensor:
        return self.denoise_grad(x, sigma, cond, guidance=guidance)

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond, *, guidance: float) -> torch.Tensor:
        if sigma == 0:
            return x
        # log N(x; (1 - sigma) p, sigma^2 I) up to a constant, for every point p
        d2 = ((x[:, None, :] - (1 - sigma) * self.points[None]) ** 2).sum(-1)  # (B, P)
        weights = torch.softmax(-d2 / (2 * sigma**2), dim=1)  # (B, P)
        return weights @ self.points  # (B, D)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1) / 2).clamp(0, 1)[:, None, None, :]  # (B, 1, 1, D)

    def schedule(self, steps: int) -> tuple[float, ...]:
        return schedule(steps)


class ToyDistanceVerifier:
    """Minus the squared distance between the image and the target point (best possible: 0).

    Range: (-inf, 0] (minus a sum of squares, which rounding cannot make negative).
    """

    preview_sigma = None
    value_range = (-math.inf, 0.0)

    def __init__(self, points: torch.Tensor | None = None, *, path=None):
        if path is not None:
            raise UserError("the toy verifier takes no weights (--verifier-path)")
        self.name = "toy-distance"
        self.points = torch.tensor([[-1.0], [1.0]]) if points is None else points.float()

    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        return self.score(images, targets, previews=previews)

    def score(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Differentiable score (plain torch arithmetic)."""
        x = images.reshape(len(images), -1) * 2 - 1  # (B, D) back in [-1, 1]
        goal = self.points[torch.as_tensor([int(t) for t in targets])]  # (B, D)
        return -((x - goal) ** 2).sum(1)
