"""Class-conditional ImageNet transformers: DiT (eps-prediction, VP) and SiT (velocity, linear interpolant).

Both use the DiT architecture (Peebles & Xie 2023, arXiv 2212.09748), run as diffusers'
``DiTTransformer2DModel``, with 1000 ImageNet classes and the null class 1000 for classifier-free
guidance (the conditional and null rows run as one batch: 2 NFEs per call when guidance != 1).

- ``dit``: a ``DiTPipeline`` folder or hub id. The network predicts ``eps`` (and, with a learned
  variance, extra channels that are dropped) on a discrete VP schedule; the state, x0-prediction,
  DDIM schedule and ``start_scale`` are those of ``noisesearch.models.sd``, so Euler is DDIM and
  reproduces ``DiTPipeline.__call__`` with a DDIM scheduler. Guidance is applied to every latent
  channel, as the diffusers pipeline does.
- ``sit``: SiT (Ma et al. 2024, arXiv 2401.08740) is trained on ``x_t = t x0 + (1 - t) noise``,
  t from 0 (noise) to 1 (data), to predict ``v = dx_t/dt = x0 - noise`` with the network's time
  input ``t`` itself. In the package convention ``sigma = 1 - t``, so ``x = (1 - sigma) x0 + sigma noise``
  and ``x + sigma v = t x0 + (1 - t) noise + (1 - t)(x0 - noise) = x0``: ``denoised = x + sigma * v(x, 1 - sigma)``.
  Weights come from a checkpoint in the facebookresearch/DiT key layout (``from_original``). SiT's
  released sampler guides only the first 3 latent channels (``cfg_channels=3``, its default here).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from noisesearch.devices import parse_device, parse_dtype
from noisesearch.errors import UserError
from noisesearch.models._diffusers_common import (
    VPModel,
    VPTable,
    check_decode_batch,
    check_positive_int,
    decode_rows,
    decode_slices,
    denoise_rows,
    execution_device,
    guide,
    in_chunks,
    load_pipeline,
)
from noisesearch.models.sd import vae_decode
from noisesearch.samplers import schedule as uniform_schedule

DEFAULT_ID = "facebook/DiT-XL-2-256"
DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"  # SiT's sample.py default
SIT_XL_2 = {
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 28,
    "sample_size": 32,
    "patch_size": 2,
    "num_embeds_ada_norm": 1000,
}


class _ClassConditional:
    """Shared parts of the DiT-architecture adapters: targets, conditions, guided forward, decoding."""

    domain = "rgb"
    adapter = "step"

    def _setup(self, net, vae, *, decode_batch: int | None, cfg_channels: int | None, pipe=None) -> None:
        self.net, self.vae = net, vae
        self.device, self.dtype = execution_device(pipe, net), net.dtype
        self.decode_batch = check_decode_batch(decode_batch)  # None: sized by image pixels (decode_rows)
        self.channels = net.config.in_channels
        self.classes = net.config.num_embeds_ada_norm  # the null class is this id
        self.cfg_channels = self.channels if cfg_channels is None else check_positive_int(cfg_channels, "cfg_channels")
        size = net.config.sample_size
        self.noise_shape = (self.channels, size, size)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_pixels = (size * factor) ** 2

    def check_target(self, target) -> int:
        value = None
        if isinstance(target, int) and not isinstance(target, bool):
            value = target
        elif isinstance(target, str) and target.strip().isdigit():
            value = int(target)
        if value is None or not 0 <= value < self.classes:
            raise UserError(
                f"target {target!r} is not an ImageNet class id; accepted: integers 0 to {self.classes - 1}"
            )
        return value

    def encode(self, targets: list) -> torch.Tensor:
        return torch.tensor([self.check_target(t) for t in targets], dtype=torch.int64)  # (B,)

    def nfe_per_call(self, guidance: float) -> int:
        return 1 if guidance == 1.0 else 2

    def _forward(self, x: torch.Tensor, t: float, labels: torch.Tensor, guidance: float) -> torch.Tensor:
        """The network's first ``in_channels`` outputs for ``x`` (B, C, h, w) at time input ``t``, guided."""
        x = x.to(self.device, self.dtype)
        labels = labels.to(self.device)
        cfg = guidance != 1.0
        if cfg:  # conditional rows first, then the null class, as DiT's pipeline and SiT's sampler
            x, labels = torch.cat([x, x]), torch.cat([labels, torch.full_like(labels, self.classes)])
        timestep = torch.full((len(x),), t, dtype=torch.float32, device=self.device)  # (rows,)
        out = self.net(x, timestep=timestep, class_labels=labels, return_dict=False)[0][:, : self.channels]
        if not cfg:
            return out  # (B, C, h, w)
        cond, null = out.chunk(2)  # (B, C, h, w) each
        k = self.cfg_channels
        guided = guide(null[:, :k], cond[:, :k], guidance)
        return torch.cat([guided, cond[:, k:]], dim=1)  # (B, C, h, w)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float, cond: torch.Tensor, *, guidance: float) -> torch.Tensor:
        return self.denoise_grad(x, sigma, cond, guidance=guidance)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        rows = decode_rows(self.decode_batch, self.image_pixels)
        return decode_slices(lambda z: vae_decode(self.vae, z), x0, rows)


def load(path=None, *, device="cpu", dtype="float32", offload: str | None = None):
    """A ``DiTPipeline`` from a folder or hub id, ready for ``DiTModel``."""
    from diffusers import DiTPipeline

    return load_pipeline(DiTPipeline, path, default=DEFAULT_ID, device=device, dtype=dtype, offload=offload)


class DiTModel(VPModel, _ClassConditional):
    """DiT class-to-image adapter over a ``DiTPipeline`` (eps on a VP schedule, rescaled like ``sd``)."""

    def __init__(self, pipe, *, decode_batch: int | None = None):
        from diffusers import DDIMScheduler

        self.name = "dit"
        self.pipe = pipe  # used as it is: device map, dtype, offload hooks, compiled modules untouched
        self._setup(self.pipe.transformer, self.pipe.vae, decode_batch=decode_batch, cfg_channels=None, pipe=self.pipe)
        self.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)  # timesteps only; we step ourselves
        self.vp = VPTable(self.scheduler.alphas_cumprod)
        self.default_steps, self.default_guidance = 50, 4.0  # the pipeline's defaults
        self.latent_shape = (1, *self.noise_shape)
        self.latents_note = "DiTPipeline takes no latents=: regenerate with this adapter's own loop"

    def eps(self, x_vp: torch.Tensor, t: float, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        """The transformer's guided noise prediction (its eps channels) for VP states ``x_vp`` at timestep ``t``."""
        return self._forward(x_vp, t, cond, guidance)


class SiTModel(_ClassConditional):
    """SiT class-to-image adapter: a velocity DiT from an original-layout checkpoint plus a VAE folder."""

    def __init__(
        self,
        *,
        path=None,
        device="cpu",
        dtype="float32",
        config=None,
        vae_path=None,
        allow_pickle: bool = False,
        cfg_channels: int = 3,
        decode_batch: int | None = None,
    ):
        self.name = "sit"
        if path is None:
            raise UserError("model 'sit' needs --model-path: a SiT checkpoint (.safetensors, or .pt with allow_pickle)")
        dev, dt = parse_device(device), parse_dtype(dtype)
        net = build_transformer(read_config(config))
        state = load_checkpoint(Path(path), allow_pickle=allow_pickle)
        try:
            net.load_state_dict(from_original(state, net.config.num_layers))
        except (KeyError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0]
            raise UserError(f"checkpoint {str(path)!r} does not fit the SiT config: {first}") from None
        for block in net.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = 0  # SiT's frequencies are 10000^(-i/half), not /(half-1)
        vae = load_vae(DEFAULT_VAE if vae_path is None else vae_path)
        net, vae = (part.eval().requires_grad_(False).to(dev) for part in (net, vae))
        if dt != torch.float32:
            net, vae = net.to(dt), vae.to(dt)
        self._setup(net, vae, decode_batch=decode_batch, cfg_channels=cfg_channels)
        self.default_steps, self.default_guidance = 50, 1.0

    def schedule(self, steps: int) -> tuple[float, ...]:
        """Uniform sigmas from 1 to 0 (SiT's ODE runs t uniformly from 0 to 1)."""
        return uniform_schedule(steps)

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond: torch.Tensor, *, guidance: float) -> torch.Tensor:
        """``denoise`` with autograd left on (for first-order search): ``x + sigma * v(x, t = 1 - sigma)``."""
        rows = denoise_rows(getattr(self, "denoise_batch", None), self.device)
        v = in_chunks(lambda xs, cs: self._forward(xs, 1.0 - sigma, cs, guidance), x, cond, rows)
        v = v.to(x.device, x.dtype)  # (B, C, h, w)
        return x + sigma * v


def read_config(config) -> dict:
    """A DiTTransformer2DModel config: SiT-XL/2's, updated by a dict or a JSON file's dict."""
    if config is None:
        return dict(SIT_XL_2)
    if isinstance(config, (str, Path)):
        try:
            config = json.loads(Path(config).expanduser().read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"config {str(config)!r} is not a readable JSON file") from None
    if not isinstance(config, dict):
        raise UserError(f"config must be a dict or a JSON file, got {type(config).__name__}")
    return {**SIT_XL_2, **{k: v for k, v in config.items() if not k.startswith("_")}}


def build_transformer(config: dict):
    """A ``DiTTransformer2DModel`` with random weights from ``config`` (float32, CPU)."""
    from diffusers import DiTTransformer2DModel

    try:
        with torch.device("cpu"):
            return DiTTransformer2DModel(**config)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise UserError(f"bad SiT config: {e}") from None


def load_checkpoint(path: Path, *, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or from a pickle through ``torch.load(weights_only=True)`` if allowed."""
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for a corrupt file
            raise UserError(f"checkpoint {str(path)!r} is not a readable safetensors file: {e}") from None
    if not allow_pickle:
        raise UserError(
            f"checkpoint {str(path)!r} is a pickle file; pass --model-param allow_pickle=true to load it "
            "with torch.load(weights_only=True), or convert it to safetensors"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise UserError(f"checkpoint {str(path)!r} cannot be loaded with weights_only=True: {e}") from None
    for key in ("ema", "model"):  # training checkpoints wrap the weights (SiT's find_model prefers "ema")
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {str(path)!r} holds no state dict")
    return state


def load_vae(source):
    """An ``AutoencoderKL`` from a local folder or hub id (safetensors only)."""
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(str(source), use_safetensors=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load the VAE from {str(source)!r}: {first}") from None


# Original (facebookresearch/DiT, SiT) names -> diffusers' DiTTransformer2DModel names, per block and global.
_BLOCK = {
    "adaLN_modulation.1": "norm1.linear",
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_GLOBAL = {
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.adaLN_modulation.1": "proj_out_1",
    "final_layer.linear": "proj_out_2",
}
_SHARED = {
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
    "y_embedder.embedding_table": "norm1.emb.class_embedder.embedding_table",
}


def from_original(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """A diffusers DiT state dict from one in the original DiT/SiT layout.

    The original's single timestep and label embedders are copied into every block (diffusers keeps
    one per block); ``qkv`` is split into q, k, v; the fixed ``pos_embed`` is dropped (diffusers
    recomputes the same sin-cos table). Raises ``KeyError`` on a missing key.
    """
    out = {}
    for old, new in _GLOBAL.items():
        for p in ("weight", "bias"):
            out[f"{new}.{p}"] = state[f"{old}.{p}"]
    for n in range(num_layers):
        for old, new in _SHARED.items():
            for p in ("weight", "bias") if "mlp" in old else ("weight",):
                out[f"transformer_blocks.{n}.{new}.{p}"] = state[f"{old}.{p}"]
        for old, new in _BLOCK.items():
            for p in ("weight", "bias"):
                out[f"transformer_blocks.{n}.{new}.{p}"] = state[f"blocks.{n}.{old}.{p}"]
        for p in ("weight", "bias"):
            q, k, v = state[f"blocks.{n}.attn.qkv.{p}"].chunk(3)  # (3D, ...) -> 3 x (D, ...)
            for name, part in zip("qkv", (q, k, v)):
                out[f"transformer_blocks.{n}.attn1.to_{name}.{p}"] = part
    return out


def to_original(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Inverse of ``from_original`` (embedders taken from block 0; ``pos_embed`` not included)."""
    out = {}
    for old, new in _GLOBAL.items():
        for p in ("weight", "bias"):
            out[f"{old}.{p}"] = state[f"{new}.{p}"]
    for old, new in _SHARED.items():
        for p in ("weight", "bias") if "mlp" in old else ("weight",):
            out[f"{old}.{p}"] = state[f"transformer_blocks.0.{new}.{p}"]
    for n in range(num_layers):
        for old, new in _BLOCK.items():
            for p in ("weight", "bias"):
                out[f"blocks.{n}.{old}.{p}"] = state[f"transformer_blocks.{n}.{new}.{p}"]
        for p in ("weight", "bias"):
            out[f"blocks.{n}.attn.qkv.{p}"] = torch.cat(
                [state[f"transformer_blocks.{n}.attn1.to_{name}.{p}"] for name in "qkv"]
            )  # (3D, ...)
    return out
