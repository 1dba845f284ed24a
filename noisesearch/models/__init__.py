"""Model registries: ``MODELS`` name -> factory ``(*, path=None, ...) -> Model`` (see ``noisesearch.models.base``),
and ``PIPELINES`` diffusers pipeline class name -> step-level adapter ``(pipe, **options) -> Model`` built
around a pipeline object (``from_pipeline``, here and as ``noisesearch.from_pipeline``; ``--model diffusers``,
``noisesearch list``)."""

from __future__ import annotations

from collections.abc import Callable

from noisesearch.errors import UserError
from noisesearch.models.base import Model, index_cond


def digits(*, path=None, device=None) -> Model:
    """Built-in class-conditional rectified flow on 8x8 digits (~55k parameters, shipped weights)."""
    from noisesearch.models.digits import DigitsModel

    return DigitsModel("digits", path=path, device=device)


def digits_large(*, path=None, device=None) -> Model:
    """Built-in digits flow model, ~600k parameters (for model-size studies)."""
    from noisesearch.models.digits import DigitsModel

    return DigitsModel("digits-large", path=path, device=device)


def toy(*, path=None) -> Model:
    """Analytic toy: the exact denoiser over the points -1 and +1 (known optimum, for tests)."""
    from noisesearch.models.toy import ToyModel

    return ToyModel(path=path)


def flux(
    *,
    path=None,
    device="cpu",
    dtype="float32",
    offload=None,
    height=None,
    width=None,
    max_sequence_length=512,
    decode_batch=None,
) -> Model:
    """FLUX.1 text-to-image rectified flow via diffusers (default black-forest-labs/FLUX.1-dev; 1 NFE per step)."""
    from noisesearch.models.flux import FluxModel, load

    return FluxModel(
        load(path, device=device, dtype=dtype, offload=offload),
        height=height,
        width=width,
        max_sequence_length=max_sequence_length,
        decode_batch=decode_batch,
    )


def sd(*, path=None, device="cpu", dtype="float32", offload=None, height=None, width=None, decode_batch=None) -> Model:
    """Stable Diffusion 1.x/2.x via diffusers, DDIM in the RF convention, CFG 2 NFEs per step (default SD 1.5)."""
    from noisesearch.models.sd import StableDiffusionModel, load

    return StableDiffusionModel(
        load("sd", path, device=device, dtype=dtype, offload=offload),
        "sd",
        height=height,
        width=width,
        decode_batch=decode_batch,
    )


def sdxl(
    *, path=None, device="cpu", dtype="float32", offload=None, height=None, width=None, decode_batch=None
) -> Model:
    """Stable Diffusion XL base (or a fine-tune such as DPO-SDXL) via diffusers, DDIM, CFG 2 NFEs per step."""
    from noisesearch.models.sd import StableDiffusionModel, load

    return StableDiffusionModel(
        load("sdxl", path, device=device, dtype=dtype, offload=offload),
        "sdxl",
        height=height,
        width=width,
        decode_batch=decode_batch,
    )


def pixart_sigma(
    *,
    path=None,
    device="cpu",
    dtype="float32",
    offload=None,
    height=None,
    width=None,
    max_sequence_length=300,
    decode_batch=None,
) -> Model:
    """PixArt-Sigma text-to-image DiT via diffusers, DDIM in the RF convention, CFG 2 NFEs per step."""
    from noisesearch.models.pixart import PixArtSigmaModel, load

    return PixArtSigmaModel(
        load(path, device=device, dtype=dtype, offload=offload),
        height=height,
        width=width,
        max_sequence_length=max_sequence_length,
        decode_batch=decode_batch,
    )


def dit(*, path=None, device="cpu", dtype="float32", offload=None, decode_batch=None) -> Model:
    """Class-conditional ImageNet DiT via diffusers' DiTPipeline, DDIM in the RF convention, CFG 2 NFEs per step."""
    from noisesearch.models.dit import DiTModel, load

    return DiTModel(load(path, device=device, dtype=dtype, offload=offload), decode_batch=decode_batch)


def sit(
    *,
    path=None,
    device="cpu",
    dtype="float32",
    config=None,
    vae_path=None,
    allow_pickle=False,
    cfg_channels=3,
    decode_batch=None,
) -> Model:
    """Class-conditional ImageNet SiT (velocity DiT) from an original-layout checkpoint file plus a VAE."""
    from noisesearch.models.dit import SiTModel

    return SiTModel(
        path=path,
        device=device,
        dtype=dtype,
        config=config,
        vae_path=vae_path,
        allow_pickle=allow_pickle,
        cfg_channels=cfg_channels,
        decode_batch=decode_batch,
    )


def wan(
    *,
    path=None,
    device="cpu",
    dtype="float32",
    offload=None,
    height=None,
    width=None,
    num_frames=None,
    max_sequence_length=None,
    decode_batch=None,
    release_text_encoders=False,
    vae_tiling=False,
    guidance_2=None,
    negative_prompt="",
) -> Model:
    """Wan 2.1 / 2.2 text-to-video (two experts with boundary_ratio) via diffusers, CFG 2 NFEs per step; videos."""
    from noisesearch.models.wan import WanModel, load

    return WanModel(
        load(path, device=device, dtype=dtype, offload=offload),
        height=height,
        width=width,
        num_frames=num_frames,
        max_sequence_length=max_sequence_length,
        decode_batch=decode_batch,
        release_text_encoders=release_text_encoders,
        vae_tiling=vae_tiling,
        guidance_2=guidance_2,
        negative_prompt=negative_prompt,
    )


wan.needs_setup = True  # type: ignore[attr-defined]


def _flow_factory(module: str, cls: str, doc: str) -> Callable[..., Model]:
    """A MODELS factory for a ``FlowModel`` family: its module's ``load`` (folder or hub id) then the adapter,
    the same constructor ``from_pipeline`` uses."""

    def factory(
        *,
        path=None,
        device="cpu",
        dtype="float32",
        offload=None,
        height=None,
        width=None,
        max_sequence_length=None,
        decode_batch=None,
        release_text_encoders=False,
    ) -> Model:
        import importlib

        mod = importlib.import_module(f"noisesearch.models.{module}")
        return getattr(mod, cls)(
            mod.load(path, device=device, dtype=dtype, offload=offload),
            height=height,
            width=width,
            max_sequence_length=max_sequence_length,
            decode_batch=decode_batch,
            release_text_encoders=release_text_encoders,
        )

    factory.__doc__ = doc
    factory.__name__ = module
    return factory


def _flow_pipeline(module: str, cls: str) -> Callable[..., Model]:
    """A PIPELINES factory ``(pipe, **options) -> Model`` for a ``FlowModel`` family."""

    def build(pipe, **options) -> Model:
        import importlib

        return getattr(importlib.import_module(f"noisesearch.models.{module}"), cls)(pipe, **options)

    build.adapter_class = f"noisesearch.models.{module}:{cls}"  # type: ignore[attr-defined]
    return build


# the rectified-flow families on the shared base (models/_flow.py): registry name -> (module, adapter class, summary)
FLOW_FAMILIES = {
    "sd3": ("sd3", "SD3Model", "Stable Diffusion 3 / 3.5 (MMDiT rectified flow) via diffusers, CFG 2 NFEs per step."),
    "z-image": (
        "z_image",
        "ZImageModel",
        "Z-Image / Z-Image-Turbo via diffusers; guidance 0 (Turbo) 1 NFE per step, else 2.",
    ),
    "sana": ("sana", "SanaModel", "SANA (linear DiT on a 32x DC-AE) via diffusers, CFG 2 NFEs per step."),
    "qwen-image": (
        "qwen_image",
        "QwenImageModel",
        "Qwen-Image via diffusers; guidance is true_cfg_scale (negative prompt ' ', norm-rescaled), 2 NFEs per step.",
    ),
    "flux2": ("flux2", "Flux2Model", "FLUX.2 (Mistral-3 prompts) via diffusers; guidance-distilled, 1 NFE per step."),
}
FLOW_PIPELINES = {
    "StableDiffusion3Pipeline": "sd3",
    "ZImagePipeline": "z-image",
    "SanaPipeline": "sana",
    "QwenImagePipeline": "qwen-image",
    "Flux2Pipeline": "flux2",
}


def diffusers(
    *,
    path=None,
    device="cpu",
    dtype="float32",
    offload=None,
    adapter="auto",
    height=None,
    width=None,
    batch=None,
    decode_batch=None,
    pipeline_kwargs=None,
) -> Model:
    """Any diffusers pipeline folder: the step-level adapter of its class if registered (see PIPELINES), else generic."""
    from noisesearch.models._diffusers_common import load_any

    pipeline_kwargs = check_diffusers(path=path, pipeline_kwargs=pipeline_kwargs)  # image paths opened
    pipe = load_any(path, device=device, dtype=dtype, offload=offload)
    options = {k: v for k, v in (("decode_batch", decode_batch), ("batch", batch)) if v is not None}
    model = from_pipeline(pipe, adapter=adapter, height=height, width=width, pipeline_kwargs=pipeline_kwargs, **options)
    return model  # a video model's candidates are written as best.webp + keyframes.png (generate)


def check_diffusers(*, path=None, pipeline_kwargs=None, **_) -> dict:
    """``diffusers``'s cheap checks, before any weights load: the folder (``model_index.json`` and every component's
    config readable JSON) and the pipeline arguments against its class's ``__call__`` (image paths opened).
    The pipeline arguments are returned checked; for a hub id they are checked once it is loaded."""
    from noisesearch.models._diffusers_common import pipeline_class
    from noisesearch.models._pipeline_args import check_pipeline_kwargs

    if path is None:
        raise UserError("model 'diffusers' needs --model-path: a pipeline folder with model_index.json, or a hub id")
    cls = pipeline_class(path)
    return dict(pipeline_kwargs or {}) if cls is None else check_pipeline_kwargs(cls, pipeline_kwargs)


diffusers.precheck = check_diffusers  # type: ignore[attr-defined]  # run by ``generate`` before it opens anything


def _flux_pipeline(pipe, **options) -> Model:
    from noisesearch.models.flux import FluxModel

    return FluxModel(pipe, **options)


def _sd_pipeline(pipe, **options) -> Model:
    from noisesearch.models.sd import StableDiffusionModel

    return StableDiffusionModel(pipe, "sd", **options)


def _sdxl_pipeline(pipe, **options) -> Model:
    from noisesearch.models.sd import StableDiffusionModel

    return StableDiffusionModel(pipe, "sdxl", **options)


def _pixart_sigma_pipeline(pipe, **options) -> Model:
    from noisesearch.models.pixart import PixArtSigmaModel

    return PixArtSigmaModel(pipe, **options)


def _dit_pipeline(pipe, **options) -> Model:
    from noisesearch.models.dit import DiTModel

    return DiTModel(pipe, **options)


def generic_pipeline(pipe, **options) -> Model:
    from noisesearch.models.generic import GenericModel

    return GenericModel(pipe, **options)


for _factory, _cls in (
    (_flux_pipeline, "flux:FluxModel"),
    (_sd_pipeline, "sd:StableDiffusionModel"),
    (_sdxl_pipeline, "sd:StableDiffusionModel"),
    (_pixart_sigma_pipeline, "pixart:PixArtSigmaModel"),
    (_dit_pipeline, "dit:DiTModel"),
    (generic_pipeline, "generic:GenericModel"),
):
    _factory.adapter_class = f"noisesearch.models.{_cls}"  # whose keyword options the factory takes

# diffusers pipeline class name -> step-level adapter ``(pipe, **options) -> Model`` (``from_pipeline``, the CLI)
PIPELINES: dict[str, Callable[..., Model]] = {
    "FluxPipeline": _flux_pipeline,
    "StableDiffusionPipeline": _sd_pipeline,
    "StableDiffusionXLPipeline": _sdxl_pipeline,
    "PixArtSigmaPipeline": _pixart_sigma_pipeline,
    "DiTPipeline": _dit_pipeline,
}
PIPELINES.update({cls: _flow_pipeline(*FLOW_FAMILIES[name][:2]) for cls, name in FLOW_PIPELINES.items()})
PIPELINES["WanPipeline"] = _flow_pipeline("wan", "WanModel")  # video, on FlowModel (models/wan.py)
_flow_models = {name: _flow_factory(*spec) for name, spec in FLOW_FAMILIES.items()}
for _factory in (flux, sd, sdxl, pixart_sigma, dit, sit, diffusers, *_flow_models.values()):
    _factory.needs_setup = True  # loads a pipeline (hub id or --model-path); not built from nothing
# the family of images each entry's model makes, known without building it (a built model carries the same
# ``domain``; tests hold the two equal): what decides which verifiers fit and where the digits set metrics apply
for _factory in (digits, digits_large):
    _factory.domain = "digits"
toy.domain = "toy"
for _factory in (flux, sd, sdxl, pixart_sigma, dit, sit, *_flow_models.values()):
    _factory.domain = "rgb"
wan.domain = "video"
diffusers.domain = None  # an image or a video pipeline: known only once it is loaded

MODELS: dict[str, Callable[..., Model]] = {
    "digits": digits,
    "digits-large": digits_large,
    "toy": toy,
    "flux": flux,
    "sd": sd,
    "sdxl": sdxl,
    "pixart-sigma": pixart_sigma,
    "dit": dit,
    "sit": sit,
    **_flow_models,
    "wan": wan,
    "diffusers": diffusers,
}


def domain_of(name: str) -> str | None:
    """The family of images registry entry ``name`` makes ("digits", "toy", "rgb", "video"), without building
    it; None for an unknown name or one known only once loaded (``diffusers``)."""
    return getattr(MODELS.get(name), "domain", None)


def digits_models() -> list[str]:
    """Names of the registry's digits-world models (the set metrics, ``compare`` and the demo run on these)."""
    return [name for name in MODELS if domain_of(name) == "digits"]


ADAPTERS = ("auto", "step", "generic")  # ``from_pipeline``'s choices of adapter


def from_pipeline(
    pipe,
    *,
    adapter: str = "auto",
    height: int | None = None,
    width: int | None = None,
    pipeline_kwargs: dict | None = None,
    **options,
) -> Model:
    """The adapter for a diffusers pipeline object, built around it (never reloaded, moved or cast).

    ``adapter``: "auto" (the step-level adapter of ``type(pipe).__name__`` in ``PIPELINES``, else the
    generic one), "step" or "generic". ``height``/``width``: image size (default: the pipeline's).
    ``pipeline_kwargs``: extra ``__call__`` arguments applied to every candidate (the generic adapter
    passes any; a step-level one the few its loop honours). ``options``: the adapter's own keywords
    (``decode_batch``, ``max_sequence_length``; the generic adapter's ``batch``).

    Example::

        pipe = FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16).to("cuda")
        model = from_pipeline(pipe, height=512, width=512)            # FluxModel around this very object
        model = from_pipeline(pipe, adapter="generic")                # or run through pipe.__call__ itself
    """
    size = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
    if adapter not in ADAPTERS:
        raise UserError(f"unknown adapter {adapter!r}; accepted: {', '.join(ADAPTERS)}")
    try:
        from diffusers import DiffusionPipeline
    except ImportError:  # pragma: no cover
        raise UserError("from_pipeline needs diffusers: pip install diffusers") from None
    if not isinstance(pipe, DiffusionPipeline):
        raise UserError(f"from_pipeline takes a diffusers pipeline object, got a {type(pipe).__name__}")
    cls = type(pipe).__name__
    step = PIPELINES.get(cls)
    if adapter == "step" and step is None:
        raise UserError(f"{cls} has no step-level adapter; those with one: {', '.join(PIPELINES)}")
    if step is not None and adapter != "generic":
        build, options = step, {**size, **options}
    else:
        build, options = generic_pipeline, {"pipeline_kwargs": {**size, **(pipeline_kwargs or {})}, **options}
    accepted = adapter_options(build)
    for key in options:
        if key not in accepted:
            kind = "generic" if build is generic_pipeline else "step-level"
            raise UserError(f"the {kind} adapter for {cls} takes no option {key!r}; accepted: {', '.join(accepted)}")
    model = build(pipe, **options)
    if build is not generic_pipeline and pipeline_kwargs:
        model = model.with_pipeline_kwargs(pipeline_kwargs)
    return model


def adapter_options(build) -> list[str]:
    """Keyword options of the adapter class behind a ``PIPELINES`` factory (its ``adapter_class``)."""
    import importlib
    import inspect

    module, name = build.adapter_class.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    return [k for k, v in params.items() if v.kind is v.KEYWORD_ONLY]


__all__ = ["MODELS", "PIPELINES", "Model", "digits_models", "domain_of", "from_pipeline", "index_cond"]
