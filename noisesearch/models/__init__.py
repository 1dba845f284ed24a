"""Model registries: ``MODELS`` name -> factory ``(*, path=None, ...) -> Model`` (see ``noisesearch.models.base``),
and ``PIPELINES`` diffusers pipeline class name -> step-level adapter ``(pipe, **options) -> Model`` built
around a pipeline object (``from_pipeline``, here and as ``noisesearch.from_pipeline``; ``--model diffusers``,
``noisesearch list``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from noisesearch.errors import UserError
from noisesearch.models._factories import LOAD_OPTIONS, PipelineFactory, keyword_options, step_adapter
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


flux = PipelineFactory(
    "flux",
    "flux:FluxModel",
    "FLUX.1 text-to-image rectified flow via diffusers (default black-forest-labs/FLUX.1-dev; 1 NFE per step).",
)
sd = PipelineFactory(
    "sd",
    "sd:StableDiffusionModel",
    "Stable Diffusion 1.x/2.x via diffusers, DDIM in the RF convention, CFG 2 NFEs per step (default SD 1.5).",
    variant="sd",
)
sdxl = PipelineFactory(
    "sdxl",
    "sd:StableDiffusionModel",
    "Stable Diffusion XL base (or a fine-tune such as DPO-SDXL) via diffusers, DDIM, CFG 2 NFEs per step.",
    variant="sdxl",
)
pixart_sigma = PipelineFactory(
    "pixart_sigma",
    "pixart:PixArtSigmaModel",
    "PixArt-Sigma text-to-image DiT via diffusers, DDIM in the RF convention, CFG 2 NFEs per step.",
)
dit = PipelineFactory(
    "dit",
    "dit:DiTModel",
    "Class-conditional ImageNet DiT via diffusers' DiTPipeline, DDIM in the RF convention, CFG 2 NFEs per step.",
)


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


wan = PipelineFactory(
    "wan",
    "wan:WanModel",
    "Wan 2.1 / 2.2 text-to-video (two experts with boundary_ratio) via diffusers, CFG 2 NFEs per step; videos.",
    domain="video",
)


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


def diffusers(*, path=None, device="cpu", dtype="float32", offload=None, **options) -> Model:
    """Any diffusers pipeline folder: the step-level adapter of its class if registered (see PIPELINES), else generic."""
    from noisesearch.models._diffusers_common import load_any

    DIFFUSERS_SIGNATURE.bind(**options)  # an option it does not take: TypeError, before anything is opened
    pipeline_kwargs = check_diffusers(path=path, pipeline_kwargs=options.pop("pipeline_kwargs", None))  # images opened
    pipe = load_any(path, device=device, dtype=dtype, offload=offload)
    given = {k: v for k, v in options.items() if v is not None or k not in ("batch", "decode_batch")}
    return from_pipeline(pipe, pipeline_kwargs=pipeline_kwargs, **given)  # a video's candidates: best.webp + keyframes


# ``diffusers``'s options: the loading ones, then those it hands to ``from_pipeline``: the adapter, the image size,
# the generic adapter's rows per pipeline call, a step-level adapter's VAE decode slice, extra ``__call__`` arguments
DIFFUSERS_SIGNATURE = inspect.Signature(
    [
        *LOAD_OPTIONS,
        *keyword_options(adapter="auto", height=None, width=None, batch=None, decode_batch=None, pipeline_kwargs=None),
    ]
)
diffusers.__signature__ = DIFFUSERS_SIGNATURE  # type: ignore[attr-defined]  # what registry.check_options reads


def check_diffusers(*, path=None, pipeline_kwargs=None, **_) -> dict:
    """``diffusers``'s cheap checks, before any weights load: the folder (``model_index.json`` and every component's
    config readable JSON) and the pipeline arguments against its class's ``__call__`` (image paths opened).
    The pipeline arguments are returned checked; for a hub id they are checked once it is loaded."""
    from noisesearch.models._pipeline_args import check_pipeline_kwargs
    from noisesearch.models._pipeline_folder import pipeline_class

    if path is None:
        raise UserError("model 'diffusers' needs --model-path: a pipeline folder with model_index.json, or a hub id")
    cls = pipeline_class(path)
    return dict(pipeline_kwargs or {}) if cls is None else check_pipeline_kwargs(cls, pipeline_kwargs)


diffusers.precheck = check_diffusers  # type: ignore[attr-defined]  # run by ``generate`` before it opens anything


generic_pipeline = step_adapter("generic:GenericModel")  # any pipeline, through its own ``__call__``

# diffusers pipeline class name -> step-level adapter ``(pipe, **options) -> Model`` (``from_pipeline``, the CLI)
PIPELINES: dict[str, Callable[..., Model]] = {
    "FluxPipeline": step_adapter("flux:FluxModel"),
    "StableDiffusionPipeline": step_adapter("sd:StableDiffusionModel", variant="sd"),
    "StableDiffusionXLPipeline": step_adapter("sd:StableDiffusionModel", variant="sdxl"),
    "PixArtSigmaPipeline": step_adapter("pixart:PixArtSigmaModel"),
    "DiTPipeline": step_adapter("dit:DiTModel"),
}
PIPELINES.update({cls: step_adapter(":".join(FLOW_FAMILIES[name][:2])) for cls, name in FLOW_PIPELINES.items()})
PIPELINES["WanPipeline"] = step_adapter("wan:WanModel")  # video, on FlowModel (models/wan.py)
_flow_models = {
    name: PipelineFactory(module, f"{module}:{cls}", doc) for name, (module, cls, doc) in FLOW_FAMILIES.items()
}
for _factory in (sit, diffusers):
    _factory.needs_setup = True  # loads weights (a file, a hub id or --model-path); not built from nothing
# the family of images each entry's model makes, known without building it (a built model carries the same
# ``domain``; tests hold the two equal): what decides which verifiers fit and where the digits set metrics apply
for _factory in (digits, digits_large):
    _factory.domain = "digits"
toy.domain = "toy"
sit.domain = "rgb"  # the PipelineFactory entries name their own (wan: "video", the others "rgb")
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

    module, name = build.adapter_class.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    return [k for k, v in params.items() if v.kind is v.KEYWORD_ONLY]


__all__ = ["MODELS", "PIPELINES", "Model", "digits_models", "domain_of", "from_pipeline", "index_cond"]
