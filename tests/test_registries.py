"""The registries as data (issue 24): every entry of ``MODELS``, ``VERIFIERS``, ``ALGORITHMS`` and ``BENCHMARKS`` is
one declared record (``registry.Entry``; a model's a ``ModelEntry`` that also declares its cost per denoiser call),
made and grown one way (``registry_of`` / ``register``, which refuses a name twice); no factory carries metadata
set on it after the fact; a model's declared cost equals the built adapter's; ``noisesearch list`` is unchanged.
"""

import inspect
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from noisesearch.algorithms import ALGORITHMS
from noisesearch.benchmarks import BENCHMARKS
from noisesearch.errors import UserError
from noisesearch.models import MODELS, PIPELINES, ModelEntry, domain_of, nfe_per_call_of
from noisesearch.models._factories import CFG_RULES, PipelineFactory, StepAdapter, adapter_class
from noisesearch.registry import Entry, check_options, factory_of, register, registry_of
from noisesearch.verifiers import VERIFIERS, as_verifier

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402

REGISTRIES = {"model": MODELS, "verifier": VERIFIERS, "algorithm": ALGORITHMS, "benchmark": BENCHMARKS}
DOMAINS = {"model": ("digits", "toy", "rgb", "video", None), "verifier": ("digits", "toy", None)}
# ``noisesearch list`` as HEAD printed it before the registries became records (issue 24: nothing changes for users)
LIST_BEFORE = """\
models:
  digits               Built-in class-conditional rectified flow on 8x8 digits (~55k parameters, shipped weights).
  digits-large         Built-in digits flow model, ~600k parameters (for model-size studies).
  toy                  Analytic toy: the exact denoiser over the points -1 and +1 (known optimum, for tests).
  flux                 FLUX.1 text-to-image rectified flow via diffusers (default black-forest-labs/FLUX.1-dev; 1 NFE per step).
  sd                   Stable Diffusion 1.x/2.x via diffusers, DDIM in the RF convention, CFG 2 NFEs per step (default SD 1.5).
  sdxl                 Stable Diffusion XL base (or a fine-tune such as DPO-SDXL) via diffusers, DDIM, CFG 2 NFEs per step.
  pixart-sigma         PixArt-Sigma text-to-image DiT via diffusers, DDIM in the RF convention, CFG 2 NFEs per step.
  dit                  Class-conditional ImageNet DiT via diffusers' DiTPipeline, DDIM in the RF convention, CFG 2 NFEs per step.
  sit                  Class-conditional ImageNet SiT (velocity DiT) from an original-layout checkpoint file plus a VAE.
  sd3                  Stable Diffusion 3 / 3.5 (MMDiT rectified flow) via diffusers, CFG 2 NFEs per step.
  z-image              Z-Image / Z-Image-Turbo via diffusers; guidance 0 (Turbo) 1 NFE per step, else 2.
  sana                 SANA (linear DiT on a 32x DC-AE) via diffusers, CFG 2 NFEs per step.
  qwen-image           Qwen-Image via diffusers; guidance is true_cfg_scale (negative prompt ' ', norm-rescaled), 2 NFEs per step.
  flux2                FLUX.2 (Mistral-3 prompts) via diffusers; guidance-distilled, 1 NFE per step.
  wan                  Wan 2.1 / 2.2 text-to-video (two experts with boundary_ratio) via diffusers, CFG 2 NFEs per step; videos.
  diffusers            Any diffusers pipeline folder: the step-level adapter of its class if registered (see PIPELINES), else generic.
verifiers:
  classifier           Supervised: log p(target | image) from a digits classifier trained with labels.
  feature-similarity   Self-supervised: cosine similarity of label-free features, x0-preview at sigma 0.4 vs final sample.
  oracle-is            Oracle: log p(target | image) from the evaluation network behind FID and IS.
  oracle-fid-digits    Oracle: minus the one-image FID against the target class's real-digit statistics (evaluation network).
  toy-distance         Analytic toy: minus the squared distance to the target point (optimum 0).
  clipscore            Text-image: raw cosine of CLIP image and prompt embeddings (CLIPScore, Hessel et al. 2021).
  clip-zeroshot        Supervised: log p(target class | image) from CLIP zero-shot logits over ImageNet's 80 templates.
  feature-similarity-real Self-supervised: cosine of CLIP/SigLIP/DINOv2 features, x0-preview at sigma 0.4 vs final sample.
  dino-linear          Supervised: log p(target class | image) from DINOv2 features and a linear head file.
  aesthetic            Aesthetic: LAION predictor head on unit CLIP ViT-L/14 image embeddings (1-10 scale).
  imagereward          Text-image: ImageReward's normalised human-preference reward from BLIP + an MLP head (Xu et al. 2023).
  pickscore            Text-image: PickScore, exp(logit_scale) * cosine of a preference-tuned CLIP (Kirstain et al. 2023).
  hpsv2                Text-image: HPS v2 / v2.1, raw cosine of a preference-tuned OpenCLIP ViT-H/14 (Wu et al. 2023).
  oracle-is-imagenet   Oracle: log p(target class | image) under InceptionV3, the IS network (Ma et al. 2025, Sec. 3).
  oracle-fid           Oracle: minus the FID of the one-sample set {image} against reference Inception statistics (Ma et al. 2025).
  ensemble             Ensemble: mean within-batch rank (or weighted sum) of member verifiers; batch-dependent (Ma et al. Sec. 5.1).
  llm-grader           Text-image: a multimodal chat model's 0-10 grading (5 aspects + overall), over an OpenAI-compatible API or local.
algorithms:
  random               Best-of-N over independent Gaussian noises (candidate k uses the draw ``(k,)``).
  zero-order           Greedy local search around a pivot noise (see the module docstring).
  paths                Search over paths (see the module docstring for the algorithm and its parameters).
  first-order          Normalised gradient ascent on the starting noise (first-order search, Ma et al. 2025, Sec. 3.2).
  smc                  Feynman-Kac steering as the reference computes it (Singhal et al. 2025; module docstring).
  smc-incremental      noisesearch's incremental SMC: rewards on the new state, weights accumulated between resamplings.
  epsilon-greedy       Per-step epsilon-greedy local search over injected noises (Ramesh and Mardani 2025).
  evolution            Cross-entropy method over the noise on cheap previews (as Spectral Evolution Search, arXiv:2602.03208).
  evosearch            Evolutionary search over noises and intermediate states (He et al. 2025; module docstring).
  halving              Successive halving over candidates scored on x0-previews (see the module docstring).
  step-greedy          Per-step choice among fresh injected noises: the best, or with probability ``epsilon`` a random one.
samplers:
  euler                first-order Euler; 1 NFE per step
  heun                 second-order Heun; 2 NFEs per step, 1 for the final step to sigma = 0
  euler-sde            stochastic DDIM, eta 0.5 (half of DDPM's noise per step); 1 NFE per step
  euler-ancestral      stochastic, DDPM ancestral (DDIM eta 1); 1 NFE per step
diffusers pipeline classes with a step-level adapter (--model diffusers; any other runs generic):
  FluxPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline, PixArtSigmaPipeline, DiTPipeline, StableDiffusion3Pipeline, ZImagePipeline, SanaPipeline, QwenImagePipeline, Flux2Pipeline, WanPipeline
"""


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_entry_is_a_declared_record(kind):
    registry = REGISTRIES[kind]
    assert type(registry) is dict and registry, kind
    for name, entry in registry.items():
        assert isinstance(entry, Entry) and entry.name == name, f"{kind} {name!r}: not an Entry under its name"
        assert callable(entry.factory) and isinstance(entry.doc, str) and entry.summary.strip(), name
        assert inspect.getdoc(entry) == entry.doc, name  # what ``noisesearch list`` prints the first line of
        assert isinstance(entry.needs_setup, bool) and (entry.precheck is None or callable(entry.precheck)), name
        assert entry.domain in DOMAINS.get(kind, (None,)), f"{kind} {name!r}: domain {entry.domain!r}"
        params = inspect.signature(entry).parameters.values()
        assert all(p.kind is p.KEYWORD_ONLY for p in params), f"{kind} {name!r}: options are keyword-only"
    if kind == "model":
        for name, entry in registry.items():
            assert isinstance(entry, ModelEntry) and entry.cfg in (*CFG_RULES, None), name
            assert entry.default_guidance is None or isinstance(entry.default_guidance, float), name


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_no_factory_carries_metadata_set_on_it_after_the_fact(kind):
    """What is known of an entry is a field of its record, not an attribute put on a function (``f.domain = ...``)."""
    for name, entry in REGISTRIES[kind].items():
        own = getattr(entry.factory, "__dict__", {})
        stray = sorted({"domain", "needs_setup", "precheck", "adapter_class"} & set(own))
        assert not stray, f"{kind} {name!r}: {stray} set on its factory"


def test_an_entry_reads_its_factorys_own_declarations():
    for name, entry in ALGORITHMS.items():
        cls = factory_of(entry)
        assert isinstance(cls, type) and entry.renders_from_noise is cls.renders_from_noise and entry.name == name
        assert inspect.signature(entry) == inspect.signature(cls)
        assert type(entry()) is cls and entry(**entry().params()).params() == entry().params()
    assert factory_of(len) is len  # a plain factory that a caller put in a registry is its own
    with pytest.raises(AttributeError):
        ALGORITHMS["random"].no_such_declaration  # noqa: B018


def test_registering_a_name_twice_is_refused():
    def thing(*, path=None):
        """A thing (tests only)."""

    for registry in REGISTRIES.values():
        taken = next(iter(registry))
        copy = dict(registry)
        with pytest.raises(UserError, match=f"{taken!r} is registered already"):
            register(copy, Entry(taken, thing))
        assert copy == registry  # nothing replaced
    with pytest.raises(UserError, match="'a' is registered already"):
        registry_of(Entry("a", thing), Entry("b", thing), Entry("a", thing))
    grown = registry_of(Entry("a", thing))
    assert register(grown, Entry("b", thing)) is grown["b"] and list(grown) == ["a", "b"]
    with pytest.raises(UserError, match="takes Entry records"):
        register(grown, thing)  # a bare function: its metadata would have nowhere to go


def test_a_record_is_refused_without_a_name_a_callable_factory_or_a_doc():
    def undocumented(**_):
        pass

    with pytest.raises(TypeError, match="non-empty string"):
        Entry("", len)
    with pytest.raises(TypeError, match="callable"):
        Entry("x", "not a factory")
    with pytest.raises(TypeError, match="no doc"):
        Entry("x", undocumented)
    assert Entry("x", undocumented, "Declared here.").summary == "Declared here."
    with pytest.raises(TypeError, match="cfg 'sometimes'"):
        ModelEntry("x", len, cfg="sometimes")


def test_noisesearch_list_is_unchanged():
    from noisesearch.cli import app

    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert result.stdout == LIST_BEFORE


def test_pipelines_are_read_off_the_model_entries():
    """A diffusers family is declared once: its ``MODELS`` entry names the pipeline class its adapter is for."""
    families = {e.factory.pipeline: e for e in MODELS.values() if isinstance(e.factory, PipelineFactory)}
    assert list(PIPELINES) == list(families)  # the order ``noisesearch list`` prints
    for cls, adapter in PIPELINES.items():
        factory = families[cls].factory
        assert isinstance(adapter, StepAdapter) and (adapter.target, adapter.variant) == (
            factory.target,
            factory.variant,
        )
        assert adapter.adapter_class == f"noisesearch.models.{factory.target}"
    assert domain_of("wan") == "video" and domain_of("diffusers") is None and domain_of("no-such") is None


GUIDANCES = (0.0, 0.5, 1.0, 1.5, 4.0)


@pytest.mark.parametrize("name", ["digits", "digits-large", "toy"])
def test_declared_cost_equals_the_built_models(name):
    model = MODELS[name]()
    entry = MODELS[name]
    assert entry.default_guidance == model.default_guidance, name
    for g in GUIDANCES:
        assert entry.nfe_per_call(g) == model.nfe_per_call(g) == nfe_per_call_of(name, g), (name, g)
    assert entry.nfe_per_call(None) == model.nfe_per_call(model.default_guidance)


@pytest.mark.parametrize("name", [n for n, e in MODELS.items() if isinstance(e.factory, PipelineFactory)])
def test_declared_cost_equals_the_adapter_classs_rule(name):
    """The step-level adapters' ``nfe_per_call`` reads only the guidance (never weights or the pipeline), so it is
    asked of an instance built without ``__init__``: the rule the entry declares must be the adapter's."""
    entry = MODELS[name]
    cls = adapter_class(entry.factory.target)
    bare = cls.__new__(cls)
    for g in GUIDANCES:
        assert entry.nfe_per_call(g) == bare.nfe_per_call(g) == nfe_per_call_of(name, g), (name, g)


def test_a_cost_known_only_once_loaded_is_none():
    assert nfe_per_call_of("diffusers", 4.0) is None and nfe_per_call_of("no-such-model", 1.0) is None
    assert nfe_per_call_of("sd3", None) is None  # the flow pipelines' own default guidance: read once loaded
    assert nfe_per_call_of("flux", None) == nfe_per_call_of("flux2", None) == 1  # distilled: 1 at any guidance
    assert nfe_per_call_of("sd", None) == 2 and nfe_per_call_of("digits", None) == 1


@pytest.mark.slow
def test_declared_default_guidance_equals_the_built_adapters(tmp_path):
    """The class-conditional and DDIM families' default guidance, declared on the entry, is the built adapter's."""
    sit = tiny.save_sit(tmp_path / "sit")
    built = {
        "sd": MODELS["sd"](path=tiny.save_sd(tmp_path / "sd"), height=32, width=32),
        "sdxl": MODELS["sdxl"](path=tiny.save_sdxl(tmp_path / "sdxl"), height=32, width=32),
        "pixart-sigma": MODELS["pixart-sigma"](path=tiny.save_pixart(tmp_path / "pixart"), height=32, width=32),
        "dit": MODELS["dit"](path=tiny.save_dit(tmp_path / "dit")),
        "sit": MODELS["sit"](path=sit["checkpoint"], config=sit["config"], vae_path=sit["vae"]),
    }
    for name, model in built.items():
        entry = MODELS[name]
        assert entry.default_guidance == model.default_guidance, name
        for g in (None, *GUIDANCES):
            expected = model.nfe_per_call(model.default_guidance if g is None else g)
            assert entry.nfe_per_call(g) == expected, (name, g)
        assert model.domain == entry.domain


def test_llm_grader_takes_every_keyword_it_took_in_that_order():
    """The factory takes ``**options`` checked against ``GraderOptions``: the same keywords, order and errors."""
    before = ["url", "model", "key_env", "metric", "cache_dir", "workers", "timeout", "retries", "backoff"]
    before += ["max_tokens", "price_prompt", "price_completion", "backend", "path", "device", "dtype", "max_new_tokens"]
    entry = VERIFIERS["llm-grader"]
    params = inspect.signature(entry).parameters
    assert list(params) == before and params["workers"].default == 8 and params["key_env"].default == "OPENAI_API_KEY"
    with pytest.raises(UserError) as err:
        check_options(entry, {"temperature": 0.0}, "verifier", "llm-grader")
    assert str(err.value) == f"verifier 'llm-grader' takes no parameter 'temperature'; accepted: {', '.join(before)}"
    with pytest.raises(UserError, match="takes no parameter 'temperature'"):
        as_verifier("llm-grader", temperature=0.0)
    with pytest.raises(TypeError, match="temperature"):
        entry(temperature=0.0)  # called directly: Python's own kind of error
    for options, message in [
        ({}, "needs url"),
        ({"backend": "onnx"}, "unknown backend 'onnx'; accepted: api, local"),
        ({"url": "http://127.0.0.1:1", "model": "m", "path": "x"}, "path=... is for backend=local"),
        ({"url": "http://127.0.0.1:1", "model": "m", "metric": "beauty"}, "unknown metric 'beauty'"),
    ]:
        with pytest.raises(UserError, match=message):
            entry(**options)
    grader = entry(url="http://127.0.0.1:1/v1", model="m", workers=3, price_prompt=1.0, price_completion=2.0)
    assert grader.url == "http://127.0.0.1:1/v1/chat/completions" and grader.workers == 3
    assert grader.prices == (1.0, 2.0) and grader.usage["cost"] == 0.0


def test_sweep_cost_planning_asks_the_model_entry_not_a_guess():
    """Before anything loads, a sweep plans with the entry's declared cost: a guidance-distilled model pays 1 NFE
    per call at any guidance, an SD model 2 at its default guidance; under ``nfe_convention: steps`` always 1."""
    from types import SimpleNamespace

    from noisesearch.sweep.costs import guided_nfe_per_call

    def cost(model, guidance, convention="rows"):
        return guided_nfe_per_call(SimpleNamespace(model=model, guidance=guidance, nfe_convention=convention))

    assert cost("flux", 3.5) == 1 and cost("flux2", 4.0) == 1  # guidance-distilled: the old guess said 2
    assert cost("sd", None) == 2  # CFG at its default guidance: the old guess said 1
    assert cost("digits", None) == 1 and cost("digits", 1.5) == 2
    assert cost("sd", None, "steps") == 1
    assert cost("diffusers", 2.0) == 2  # only a loaded pipeline knows: the rule of thumb stands


@pytest.mark.parametrize(
    "option, message",
    [
        ({"workers": "abc"}, "workers must be a positive integer, got 'abc'"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer, got 0"),
        ({"retries": -2}, "retries must be an integer >= 0, got -2"),
        ({"timeout": -1}, "timeout must be a finite number of seconds >= 0, got -1"),
        ({"backoff": float("inf")}, "backoff must be a finite number of seconds >= 0, got inf"),
    ],
)
def test_llm_grader_numbers_are_one_user_error_before_any_request(option, message):
    from noisesearch.errors import UserError
    from noisesearch.verifiers import VERIFIERS

    with pytest.raises(UserError, match=f"^llm-grader: {message}$"):
        VERIFIERS["llm-grader"](url="http://127.0.0.1:9", model="m", **option)
