"""Shared part of the rectified-flow adapters (SD3, Z-Image, SANA, ...): one file per family holds only its differences.

These pipelines all sample ``x_sigma = (1 - sigma) x0 + sigma noise`` from sigma = 1 with a transformer that
predicts a velocity ``v = noise - x0`` (Liu et al. 2022, arXiv 2209.03003; Esser et al. 2024, arXiv
2403.03206): the package's own sigma convention, so a state needs no rescaling and ``denoised = x - sigma v``.

``FlowModel`` owns everything the families share:

- the image size checked against the VAE factor times the transformer's patch (one ``UserError`` line);
- the schedule: a fresh copy of the pipeline's scheduler gets ``set_timesteps`` with the arguments the
  pipeline's ``__call__`` passes (``schedule_args``: custom ``sigmas``, the resolution-dependent ``mu``),
  and its ``sigmas`` and ``timesteps`` are read back, so each sigma is fed to the transformer as the very
  timestep the pipeline feeds;
- prompt embeddings computed once per distinct prompt (``PromptCache``; computed anew when the text encoders'
  weights change), optionally releasing the text encoders afterwards (``release_text_encoders=True``: new
  prompts are then refused in one line);
- classifier-free guidance as one batch of ``[uncond; cond]`` rows (2 NFEs per step, stacks built once per
  condition by ``CFGStack``), the guided velocity combined in float32 (``combine``);
- row chunking on CPUs and VAE decoding in image-sized slices (``_diffusers_common``).

A family implements ``_embed(prompts)`` (a dict of batch-first tensors: every key in ``cond_keys`` plus its
``negative_`` twin), ``forward(x, t, cond, guidance)`` (one transformer call on rows already in the model's dtype, the
velocity (B, C, h, w) back), and sets ``name`` and ``cond_keys``; it may override ``patch_size``, ``guided``,
``combine``, ``schedule_args``, ``latent_channels`` and ``vae_latents``.
"""

from __future__ import annotations

import inspect

import torch

from noisesearch.errors import UserError
from noisesearch.models._diffusers_common import (
    CFGStack,
    PromptCache,
    StepKwargs,
    check_decode_batch,
    check_positive_int,
    check_prompt,
    decode_rows,
    decode_slices,
    denoise_rows,
    execution_device,
    guide,
    in_chunks,
)


def call_default(pipe, name: str, fallback):
    """The default of ``pipe.__call__``'s argument ``name`` (``fallback`` if it has none or it is None)."""
    param = inspect.signature(pipe.__call__).parameters.get(name)
    value = None if param is None else param.default
    return fallback if value is None or value is inspect.Parameter.empty else value


def calculate_mu(pipe, seq_len: int) -> float:
    """The resolution-dependent shift ``mu`` for ``seq_len`` image tokens, from the pipeline's scheduler config
    (a line from (base_image_seq_len, base_shift) to (max_image_seq_len, max_shift), as FLUX introduced)."""
    config = pipe.scheduler.config
    x0, x1 = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    y0, y1 = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (y1 - y0) / (x1 - x0)
    return seq_len * m + (y0 - m * x0)  # the same float operations as the pipelines' calculate_shift


class FlowModel(StepKwargs):
    """A rectified-flow text-to-image pipeline driven step by step (see the module docstring)."""

    domain = "rgb"
    adapter = "step"
    step_kwargs: tuple[str, ...] = ()
    name = "flow"
    cond_keys: tuple[str, ...] = ("prompt_embeds",)
    uncond_first = True  # row order of the CFG batch, as the pipeline stacks it
    # True: the unconditional and conditional rows run as two transformer calls (as the pipeline does), for a
    # family whose calls are cut to their longest prompt: stacked, the short negative would be padded to it
    cfg_two_calls = False
    text_encoders: tuple[str, ...] = ("text_encoder",)
    default_max_sequence_length = 256
    guidance_arg = "guidance_scale"  # the pipeline's __call__ argument that ``guidance`` stands for

    def __init__(
        self,
        pipe,
        *,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int | None = None,
        decode_batch: int | None = None,
        release_text_encoders: bool = False,
    ):
        self.pipe = pipe  # used as it is: device map, dtype, offload hooks, LoRA, compiled modules untouched
        self.device = execution_device(pipe, pipe.transformer)
        self.dtype = pipe.transformer.dtype
        self.decode_batch = check_decode_batch(decode_batch)
        msl = self.default_max_sequence_length if max_sequence_length is None else max_sequence_length
        self.max_sequence_length = check_positive_int(msl, "max_sequence_length")
        if not isinstance(release_text_encoders, bool):
            raise UserError(f"release_text_encoders must be true or false, got {release_text_encoders!r}")
        self.release_text_encoders = release_text_encoders
        factor, self.patch = self.vae_factor(), self.patch_size()
        native = call_default(pipe, "height", getattr(pipe, "default_sample_size", 128) * factor)
        self.height = native if height is None else height
        self.width = call_default(pipe, "width", native) if width is None else width
        step = self.size_multiple()
        for what, size in (("height", self.height), ("width", self.width)):
            if isinstance(size, bool) or not isinstance(size, int) or size < step or size % step:
                raise UserError(
                    f"{what} {size!r} is not a positive multiple of {step} (the VAE's {factor}x downsampling "
                    f"times {self.name}'s {self.patch}x{self.patch} patches{self.size_note})"
                )
        self.channels = self.latent_channels()
        self.noise_shape = (self.channels, self.height // factor, self.width // factor)
        self.latent_shape = (1, *self.noise_shape)  # what a seeded draw has; the pipeline takes it as latents=
        self.latents_note = f"{type(pipe).__name__} takes latents (1, {', '.join(map(str, self.noise_shape))})"
        self.default_steps = int(call_default(pipe, "num_inference_steps", 28))
        self.default_guidance = float(call_default(pipe, self.guidance_arg, 1.0))
        self.prompts = PromptCache(self._embed, pipe)  # dropped when the text encoders change
        self.cfg_stack = CFGStack()
        self.timesteps: dict[float, float] = {}  # sigma -> the pipeline's timestep, filled by schedule()
        self.setup()

    def setup(self) -> None:
        """Family state derived from the built base (ids, shapes, defaults); runs last in ``__init__``."""

    # -- family hooks ------------------------------------------------------------------------------------------
    def vae_factor(self) -> int:
        """Pixels per latent pixel."""
        return int(self.pipe.vae_scale_factor)

    size_note = ""  # why ``size_multiple`` is more than the VAE factor times the patch, if it is

    def size_multiple(self) -> int:
        """Image sizes must be multiples of this (default: VAE factor times patch)."""
        return self.vae_factor() * self.patch_size()

    def patch_size(self) -> int:
        """Latent pixels per transformer patch side."""
        return int(getattr(self.pipe.transformer.config, "patch_size", 2))

    def latent_channels(self) -> int:
        return int(self.pipe.transformer.config.in_channels)

    def seq_len(self) -> int:
        """Image tokens of one sample (for ``mu``)."""
        return (self.noise_shape[1] // self.patch) * (self.noise_shape[2] // self.patch)

    def schedule_args(self, steps: int) -> dict:
        """Keyword arguments of ``scheduler.set_timesteps(steps, ...)`` as the pipeline passes them."""
        if self.pipe.scheduler.config.get("use_dynamic_shifting"):
            return {"mu": calculate_mu(self.pipe, self.seq_len())}
        return {}

    def guided(self, guidance: float) -> bool:
        """Whether this guidance scale runs the unconditional rows (the pipeline's ``do_classifier_free_guidance``)."""
        return guidance > 1.0

    def combine(self, uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
        """The guided velocity from the two halves (float32)."""
        return guide(uncond, cond, guidance)

    def _embed(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict, guidance: float) -> torch.Tensor:
        """Velocity (B, C, h, w) of rows ``x`` (B, C, h, w) at the pipeline's timesteps ``t`` (B,); ``guidance`` is
        for guidance-distilled models, which take it as an input (CFG itself is ``velocity``'s)."""
        raise NotImplementedError

    def vae_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Our latents -> what the VAE decodes (the pipeline's un-scaling)."""
        config = self.pipe.vae.config
        return z / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)

    # -- the contract ------------------------------------------------------------------------------------------
    def check_target(self, target) -> str:
        return check_prompt(target)

    def encode(self, targets: list) -> dict[str, torch.Tensor]:
        prompts = [self.check_target(t) for t in targets]
        self.prompts.refresh()  # embeddings of text encoders edited since are dropped
        new = [p for p in prompts if p not in self.prompts.cache]
        if new and self.release_text_encoders and getattr(self, "released", False):
            raise UserError(
                f"prompt {new[0]!r} was not encoded before the text encoders were released; "
                "pass every prompt in the first encode, or release_text_encoders=false"
            )
        cond = self.prompts(prompts, refresh=False)
        if self.release_text_encoders and not getattr(self, "released", False):
            self.release()
        return cond

    def release(self) -> None:
        """Drop the pipeline's text encoders (their embeddings are cached): frees their memory for the search."""
        for name in self.text_encoders:
            if getattr(self.pipe, name, None) is not None:
                setattr(self.pipe, name, None)
        self.released = True
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def nfe_per_call(self, guidance: float) -> int:
        return 2 if self.guided(guidance) else 1

    def schedule(self, steps: int) -> tuple[float, ...]:
        """The pipeline's own sigmas for ``steps`` steps (shifted as its scheduler shifts them), ending at 0."""
        check_positive_int(steps, "steps")
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(steps, **self.schedule_args(steps))
        sigmas = [float(s) for s in scheduler.sigmas]
        for s, t in zip(sigmas, scheduler.timesteps.tolist()):
            self.timesteps[s] = float(t)
        return tuple(sigmas if sigmas[-1] == 0.0 else [*sigmas, 0.0])

    def timestep(self, sigma: float, rows: int) -> torch.Tensor:
        """The scheduler's timestep for ``sigma`` (its own value on the schedule, else ``sigma * T``), (rows,)."""
        t = self.timesteps.get(float(sigma))
        if t is None:
            t = float(sigma) * self.pipe.scheduler.config.get("num_train_timesteps", 1000)
        return torch.full((rows,), t, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, sigma: float, cond: dict, *, guidance: float) -> torch.Tensor:
        return self.denoise_grad(x, sigma, cond, guidance=guidance)

    def denoise_grad(self, x: torch.Tensor, sigma: float, cond: dict, *, guidance: float) -> torch.Tensor:
        """``denoise`` with autograd left on (for first-order search)."""
        rows = denoise_rows(getattr(self, "denoise_batch", None), self.device)
        v = in_chunks(lambda xs, cs: self.velocity(xs, sigma, cs, guidance), x, cond, rows)  # (B, C, h, w)
        return x - sigma * v.to(x.device, x.dtype)

    def velocity(self, x: torch.Tensor, sigma: float, cond: dict, guidance: float) -> torch.Tensor:
        """The (guided) velocity of rows ``x`` (B, C, h, w): one transformer call, ``[uncond; cond]`` when guided."""
        b = x.shape[0]
        xin = x.to(self.device, self.dtype)  # (B, C, h, w)
        if not self.guided(guidance):
            return self.forward(xin, self.timestep(sigma, b), {k: cond[k] for k in self.cond_keys}, guidance).float()
        if self.cfg_two_calls:
            t = self.timestep(sigma, b)
            uncond = self.forward(xin, t, {k: cond[f"negative_{k}"] for k in self.cond_keys}, guidance).float()
            return self.combine(
                uncond, self.forward(xin, t, {k: cond[k] for k in self.cond_keys}, guidance).float(), guidance
            )
        order = (lambda k: (f"negative_{k}", k)) if self.uncond_first else (lambda k: (k, f"negative_{k}"))
        stacks = self.cfg_stack(cond, tuple(order(k) for k in self.cond_keys))  # each (2B, ...)
        both = self.forward(
            torch.cat([xin, xin]), self.timestep(sigma, 2 * b), dict(zip(self.cond_keys, stacks)), guidance
        )
        first, second = both.float().chunk(2)  # (B, C, h, w) each
        uncond, c = (first, second) if self.uncond_first else (second, first)
        return self.combine(uncond, c, guidance)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae

        def one(z: torch.Tensor) -> torch.Tensor:
            z = self.vae_latents(z.to(vae.device, vae.dtype))  # (b, C, h, w), or (b, C, 1, h, w) for a video VAE
            image = vae.decode(z, return_dict=False)[0]  # (b, 3, H, W) or (b, 3, 1, H, W), in [-1, 1]
            image = image[:, :, 0] if image.ndim == 5 else image
            return (image.float() / 2 + 0.5).clamp(0, 1).cpu()  # (b, 3, H, W)

        return decode_slices(one, x0, decode_rows(self.decode_batch, self.height * self.width))
