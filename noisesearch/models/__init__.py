"""Model registries: ``MODELS`` name -> ``ModelEntry`` (a declared record, called as its factory
``(*, path=None, ...) -> Model``: see ``noisesearch.models.base`` and ``noisesearch.registry``), and
``PIPELINES`` diffusers pipeline class name -> step-level adapter ``(pipe, **options) -> Model`` built around a
pipeline object (``from_pipeline``, here and as ``noisesearch.from_pipeline``; ``--model diffusers``,
``noisesearch list``)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from noisesearch.errors import UserError
from noisesearch.keywords import bind, declare
from noisesearch.models._factories import ModelEntry, PipelineFactory, StepAdapter
from noisesearch.models.base import Model, index_cond
from noisesearch.registry import Entry, registry_of


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


@dataclass(frozen=True, kw_only=True)
class DiffusersOptions:
    """``diffusers``'s options after the loading ones, those it hands to ``from_pipeline``: the adapter, the image
    size, the generic adapter's rows per pipeline call, a step-level adapter's VAE decode slice, extra ``__call__``
    arguments."""

    adapter: str = "auto"
    height: int | None = None
    width: int | None = None
    batch: int | None = None
    decode_batch: int | None = None
    pipeline_kwargs: dict | None = None


def diffusers(*, path=None, device="cpu", dtype="float32", offload=None, **options) -> Model:
    """Any diffusers pipeline folder: the step-level adapter of its class if registered (see PIPELINES), else generic."""
    from noisesearch.models._diffusers_common import load_any

    bind(DiffusersOptions, options, where="diffusers")  # an option it does not take: TypeError, before any work
    pipeline_kwargs = check_diffusers(path=path, pipeline_kwargs=options.pop("pipeline_kwargs", None))  # images opened
    pipe = load_any(path, device=device, dtype=dtype, offload=offload)
    given = {k: v for k, v in options.items() if v is not None or k not in ("batch", "decode_batch")}
    return from_pipeline(pipe, pipeline_kwargs=pipeline_kwargs, **given)  # a video's candidates: best.webp + keyframes


declare(diffusers, DiffusersOptions)  # its signature: the loading options, then DiffusersOptions'


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


# every model, one declared record each: the family of images it makes, known without building it (a built model
# carries the same ``domain``; tests hold the two equal), which decides which verifiers fit and where the digits
# set metrics apply; whether it loads weights not shipped (``needs_setup``); its cost per denoiser call
MODELS: dict[str, Entry] = registry_of(
    ModelEntry("digits", digits, domain="digits", cfg="guidance != 1", default_guidance=1.0),
    ModelEntry("digits-large", digits_large, domain="digits", cfg="guidance != 1", default_guidance=1.0),
    ModelEntry("toy", toy, domain="toy", cfg="never", default_guidance=1.0),
    ModelEntry(
        "flux",
        PipelineFactory("flux:FluxModel", pipeline="FluxPipeline"),
        "FLUX.1 text-to-image rectified flow via diffusers (default black-forest-labs/FLUX.1-dev; 1 NFE per step).",
        domain="rgb",
        needs_setup=True,
        cfg="never",
    ),
    ModelEntry(
        "sd",
        PipelineFactory("sd:StableDiffusionModel", variant="sd", pipeline="StableDiffusionPipeline"),
        "Stable Diffusion 1.x/2.x via diffusers, DDIM in the RF convention, CFG 2 NFEs per step (default SD 1.5).",
        domain="rgb",
        needs_setup=True,
        cfg="guidance != 1",
        default_guidance=7.5,
    ),
    ModelEntry(
        "sdxl",
        PipelineFactory("sd:StableDiffusionModel", variant="sdxl", pipeline="StableDiffusionXLPipeline"),
        "Stable Diffusion XL base (or a fine-tune such as DPO-SDXL) via diffusers, DDIM, CFG 2 NFEs per step.",
        domain="rgb",
        needs_setup=True,
        cfg="guidance != 1",
        default_guidance=5.0,
    ),
    ModelEntry(
        "pixart-sigma",
        PipelineFactory("pixart:PixArtSigmaModel", pipeline="PixArtSigmaPipeline"),
        "PixArt-Sigma text-to-image DiT via diffusers, DDIM in the RF convention, CFG 2 NFEs per step.",
        domain="rgb",
        needs_setup=True,
        cfg="guidance != 1",
        default_guidance=4.5,
    ),
    ModelEntry(
        "dit",
        PipelineFactory("dit:DiTModel", pipeline="DiTPipeline"),
        "Class-conditional ImageNet DiT via diffusers' DiTPipeline, DDIM in the RF convention, CFG 2 NFEs per step.",
        domain="rgb",
        needs_setup=True,
        cfg="guidance != 1",
        default_guidance=4.0,
    ),
    ModelEntry("sit", sit, domain="rgb", needs_setup=True, cfg="guidance != 1", default_guidance=1.0),
    # the rectified-flow families on the shared base (models/_flow.py); their default guidance is the pipeline's
    ModelEntry(
        "sd3",
        PipelineFactory("sd3:SD3Model", pipeline="StableDiffusion3Pipeline"),
        "Stable Diffusion 3 / 3.5 (MMDiT rectified flow) via diffusers, CFG 2 NFEs per step.",
        domain="rgb",
        needs_setup=True,
        cfg="guidance > 1",
    ),
    ModelEntry(
        "z-image",
        PipelineFactory("z_image:ZImageModel", pipeline="ZImagePipeline"),
        "Z-Image / Z-Image-Turbo via diffusers; guidance 0 (Turbo) 1 NFE per step, else 2.",
        domain="rgb",
        needs_setup=True,
        cfg="guidance > 0",
    ),
    ModelEntry(
        "sana",
        PipelineFactory("sana:SanaModel", pipeline="SanaPipeline"),
        "SANA (linear DiT on a 32x DC-AE) via diffusers, CFG 2 NFEs per step.",
        domain="rgb",
        needs_setup=True,
        cfg="guidance > 1",
    ),
    ModelEntry(
        "qwen-image",
        PipelineFactory("qwen_image:QwenImageModel", pipeline="QwenImagePipeline"),
        "Qwen-Image via diffusers; guidance is true_cfg_scale (negative prompt ' ', norm-rescaled), 2 NFEs per step.",
        domain="rgb",
        needs_setup=True,
        cfg="guidance > 1",
    ),
    ModelEntry(
        "flux2",
        PipelineFactory("flux2:Flux2Model", pipeline="Flux2Pipeline"),
        "FLUX.2 (Mistral-3 prompts) via diffusers; guidance-distilled, 1 NFE per step.",
        domain="rgb",
        needs_setup=True,
        cfg="never",
    ),
    ModelEntry(
        "wan",
        PipelineFactory("wan:WanModel", pipeline="WanPipeline"),
        "Wan 2.1 / 2.2 text-to-video (two experts with boundary_ratio) via diffusers, CFG 2 NFEs per step; videos.",
        domain="video",
        needs_setup=True,
        cfg="guidance > 1",
    ),
    # an image or a video pipeline, its cost too: known only once it is loaded
    ModelEntry("diffusers", diffusers, needs_setup=True, precheck=check_diffusers),
)

generic_pipeline = StepAdapter("generic:GenericModel")  # any pipeline, through its own ``__call__``

# diffusers pipeline class name -> step-level adapter ``(pipe, **options) -> Model`` (``from_pipeline``, the CLI):
# read off the ``MODELS`` entries, so a family is declared once
PIPELINES: dict[str, StepAdapter] = {
    e.factory.pipeline: e.factory.step_adapter()
    for e in MODELS.values()
    if isinstance(e.factory, PipelineFactory) and e.factory.pipeline is not None
}


def domain_of(name: str) -> str | None:
    """The family of images registry entry ``name`` makes ("digits", "toy", "rgb", "video"), without building
    it; None for an unknown name or one known only once loaded (``diffusers``)."""
    return getattr(MODELS.get(name), "domain", None)


def nfe_per_call_of(name: str, guidance: float | None) -> int | None:
    """NFEs one denoiser call of registry entry ``name`` costs per sample at ``guidance`` (None: its default
    guidance), without building it (``ModelEntry.nfe_per_call``); None for an unknown name or a cost known only
    once loaded (``diffusers``, a flow family at its pipeline's default guidance)."""
    entry = MODELS.get(name)
    return entry.nfe_per_call(guidance) if isinstance(entry, ModelEntry) else None


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


__all__ = [
    "MODELS",
    "PIPELINES",
    "Model",
    "ModelEntry",
    "digits_models",
    "domain_of",
    "from_pipeline",
    "index_cond",
    "nfe_per_call_of",
]
