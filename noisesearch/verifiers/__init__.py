"""Verifier registry: name -> ``Entry`` (a declared record, called as its factory ``(*, path=None, ...) ->
Verifier``: see ``noisesearch.verifiers.base`` and ``noisesearch.registry``).

Each entry declares ``domain``: the model family whose images it understands (``"digits"``), or None for
any. Entries with ``needs_setup=True`` load weights that are not shipped (a folder written by
``save_pretrained``, or a hub id) and raise ``UserError`` without ``path``.
"""

from __future__ import annotations

from dataclasses import dataclass

from noisesearch.keywords import accepted, bind, declare
from noisesearch.registry import Entry, check_options, registry_of
from noisesearch.verifiers.base import Verifier, check_images
from noisesearch.verifiers.llm_grader import GraderSettings, LLMGrader


def classifier(*, path=None) -> Verifier:
    """Supervised: log p(target | image) from a digits classifier trained with labels."""
    from noisesearch.verifiers.digits import ClassifierVerifier

    return ClassifierVerifier(path=path)


def feature_similarity(*, path=None, preview_sigma=0.4) -> Verifier:
    """Self-supervised: cosine similarity of label-free features, x0-preview at sigma 0.4 vs final sample."""
    from noisesearch.verifiers.digits import FeatureSimilarityVerifier

    return FeatureSimilarityVerifier(path=path, preview_sigma=preview_sigma)


def oracle_is(*, path=None) -> Verifier:
    """Oracle: log p(target | image) from the evaluation network behind FID and IS."""
    from noisesearch.verifiers.digits import ClassifierVerifier

    return ClassifierVerifier(path=path, kind="evalnet", name="oracle-is")


def oracle_fid_digits(*, path=None) -> Verifier:
    """Oracle: minus the one-image FID against the target class's real-digit statistics (evaluation network)."""
    from noisesearch.verifiers.digits import OracleFIDVerifier

    return OracleFIDVerifier(path=path)


def toy_distance(*, path=None) -> Verifier:
    """Analytic toy: minus the squared distance to the target point (optimum 0)."""
    from noisesearch.models.toy import ToyDistanceVerifier

    return ToyDistanceVerifier(path=path)


def clipscore(*, path=None, device="cpu", dtype="float32") -> Verifier:
    """Text-image: raw cosine of CLIP image and prompt embeddings (CLIPScore, Hessel et al. 2021)."""
    from noisesearch.verifiers.clip import ClipScoreVerifier

    return ClipScoreVerifier(path=path, device=device, dtype=dtype)


def clip_zeroshot(*, path=None, device="cpu", dtype="float32", classes=None, templates=None) -> Verifier:
    """Supervised: log p(target class | image) from CLIP zero-shot logits over ImageNet's 80 templates."""
    from noisesearch.verifiers.clip import ClipZeroShotVerifier

    return ClipZeroShotVerifier(path=path, device=device, dtype=dtype, classes=classes, templates=templates)


def feature_similarity_real(
    *, path=None, device="cpu", dtype="float32", backbone="auto", preview_sigma=0.4
) -> Verifier:
    """Self-supervised: cosine of CLIP/SigLIP/DINOv2 features, x0-preview at sigma 0.4 vs final sample."""
    from noisesearch.verifiers.features import FeatureSimilarityVerifier

    return FeatureSimilarityVerifier(
        path=path, device=device, dtype=dtype, backbone=backbone, preview_sigma=preview_sigma
    )


def dino_linear(*, path=None, device="cpu", dtype="float32", head=None) -> Verifier:
    """Supervised: log p(target class | image) from DINOv2 features and a linear head file."""
    from noisesearch.verifiers.features import DinoLinearVerifier

    return DinoLinearVerifier(path=path, device=device, dtype=dtype, head=head)


def aesthetic(*, path=None, device="cpu", dtype="float32", head=None, activation="none") -> Verifier:
    """Aesthetic: LAION predictor head on unit CLIP ViT-L/14 image embeddings (1-10 scale)."""
    from noisesearch.verifiers.aesthetic import AestheticVerifier

    return AestheticVerifier(path=path, device=device, dtype=dtype, head=head, activation=activation)


def ensemble(*, members="", weights=None, mode="rank", standardize=True, device="cpu") -> Verifier:
    """Ensemble: mean within-batch rank (or weighted sum) of member verifiers; batch-dependent (Ma et al. Sec. 5.1)."""
    from noisesearch.verifiers.ensemble import EnsembleVerifier

    return EnsembleVerifier(
        members=members, weights=weights, mode=mode, standardize=standardize, device=device, registry=VERIFIERS
    )


@dataclass(frozen=True, kw_only=True)
class GraderOptions(GraderSettings):
    """``llm-grader``'s keyword options: the API back end's (``LLMGrader``'s own, first), ``backend``, then the
    local back end's; ``registry.check_options`` lists them in this order."""

    backend: str | None = None
    path: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    max_new_tokens: int = 512

    def only(self, *names: str) -> dict:
        """The options ``names`` by name (what one back end takes)."""
        return {name: getattr(self, name) for name in names}


_LOCAL_OPTIONS = ("path", "device", "dtype", "metric", "cache_dir", "max_new_tokens")  # what LocalLLMGrader takes


def llm_grader(**options) -> Verifier:
    """Text-image: a multimodal chat model's 0-10 grading (5 aspects + overall), over an OpenAI-compatible API or local.

    ``options``: ``GraderOptions``. ``backend="api"`` (the default, with ``url`` and ``model``) or
    ``backend="local"`` (the default when only ``path`` is given: a transformers vision-language model;
    ``device``, ``dtype``, ``max_new_tokens``).
    """
    from noisesearch.errors import UserError

    o = bind(GraderOptions, options, where="llm_grader")
    backend = o.backend or ("local" if o.path is not None and not o.url else "api")
    if backend == "local":
        if o.url:
            raise UserError("llm-grader: backend=local takes path=<VLM folder or hub id>, not url=...")
        from noisesearch.verifiers.llm_local import LocalLLMGrader

        return LocalLLMGrader(**o.only(*_LOCAL_OPTIONS))
    if backend != "api":
        raise UserError(f"llm-grader: unknown backend {backend!r}; accepted: api, local")
    if o.path is not None:
        raise UserError("llm-grader: path=... is for backend=local; the api back end takes url=... and model=...")
    return LLMGrader(**o.only(*accepted(GraderSettings)))


declare(llm_grader, GraderOptions)  # its signature: every keyword of GraderOptions, as check_options reads it


def imagereward(*, path=None, device="cpu", dtype="float32") -> Verifier:
    """Text-image: ImageReward's normalised human-preference reward from BLIP + an MLP head (Xu et al. 2023)."""
    from noisesearch.verifiers.imagereward import ImageRewardVerifier

    return ImageRewardVerifier(path=path, device=device, dtype=dtype)


def pickscore(*, path=None, device="cpu", dtype="float32") -> Verifier:
    """Text-image: PickScore, exp(logit_scale) * cosine of a preference-tuned CLIP (Kirstain et al. 2023)."""
    from noisesearch.verifiers.pickscore import PickScoreVerifier

    return PickScoreVerifier(path=path, device=device, dtype=dtype)


def hpsv2(*, path=None, device="cpu", dtype="float32", arch="ViT-H-14") -> Verifier:
    """Text-image: HPS v2 / v2.1, raw cosine of a preference-tuned OpenCLIP ViT-H/14 (Wu et al. 2023)."""
    from noisesearch.verifiers.hpsv2 import HPSv2Verifier

    return HPSv2Verifier(path=path, device=device, dtype=dtype, arch=arch)


def oracle_is_imagenet(*, path=None, device="cpu", size=299) -> Verifier:
    """Oracle: log p(target class | image) under InceptionV3, the IS network (Ma et al. 2025, Sec. 3)."""
    from noisesearch.verifiers.oracle import OracleISVerifier

    return OracleISVerifier(path=path, device=device, size=size)


def oracle_fid(*, path=None, device="cpu", reference=None, metric="fid1", eps=1e-6, size=299) -> Verifier:
    """Oracle: minus the FID of the one-sample set {image} against reference Inception statistics (Ma et al. 2025)."""
    from noisesearch.verifiers.oracle import OracleFIDVerifier

    return OracleFIDVerifier(path=path, device=device, reference=reference, metric=metric, eps=eps, size=size)


# every verifier, one declared record each: the family of images it understands (None: any RGB or grey images in
# [0, 1]; the ImageNet oracles expect ImageNet class ids), and whether its weights (or options) are not shipped,
# so that construction without them raises ``UserError``
VERIFIERS: dict[str, Entry] = registry_of(
    Entry("classifier", classifier, domain="digits"),
    Entry("feature-similarity", feature_similarity, domain="digits"),
    Entry("oracle-is", oracle_is, domain="digits"),
    Entry("oracle-fid-digits", oracle_fid_digits, domain="digits"),
    Entry("toy-distance", toy_distance, domain="toy"),
    Entry("clipscore", clipscore, domain=None, needs_setup=True),
    Entry("clip-zeroshot", clip_zeroshot, domain=None, needs_setup=True),
    Entry("feature-similarity-real", feature_similarity_real, domain=None, needs_setup=True),
    Entry("dino-linear", dino_linear, domain=None, needs_setup=True),
    Entry("aesthetic", aesthetic, domain=None, needs_setup=True),
    Entry("imagereward", imagereward, domain=None, needs_setup=True),
    Entry("pickscore", pickscore, domain=None, needs_setup=True),
    Entry("hpsv2", hpsv2, domain=None, needs_setup=True),
    Entry("oracle-is-imagenet", oracle_is_imagenet, domain=None, needs_setup=True),
    Entry("oracle-fid", oracle_fid, domain=None, needs_setup=True),  # and its reference statistics
    Entry("ensemble", ensemble, needs_setup=True),  # needs members=... (their domains apply); no path of its own
    # needs url=... and model=..., or path=... (backend=local)
    Entry("llm-grader", llm_grader, needs_setup=True),
)


def as_verifier(verifier, **options) -> Verifier:
    """A verifier from a registry name (``options`` go to its factory), a verifier object, or any callable.

    A callable ``f(images, prompts) -> scores`` is wrapped by ``CallableVerifier`` (``options``:
    ``name``, ``batch``, ``device``, ``cache_key``). An object with ``name`` and ``preview_sigma`` is used as it is.
    """
    from noisesearch.errors import UserError

    if isinstance(verifier, str):
        if verifier not in VERIFIERS:
            raise UserError(f"unknown verifier {verifier!r}; accepted: {', '.join(VERIFIERS)}, or a callable")
        check_options(VERIFIERS[verifier], options, "verifier", verifier)
        return VERIFIERS[verifier](**options)
    if isinstance(verifier, Verifier) and not options:
        return verifier
    from noisesearch.verifiers.custom import CallableVerifier

    if isinstance(verifier, Verifier):
        raise UserError(f"verifier {verifier.name!r} is an object already; options {sorted(options)} go to names")
    unknown = set(options) - {"name", "batch", "device", "cache_key"}
    if unknown:
        raise UserError(
            f"a callable verifier takes no option {sorted(unknown)[0]!r}; accepted: name, batch, device, cache_key"
        )
    return CallableVerifier(verifier, **options)


__all__ = ["VERIFIERS", "Verifier", "as_verifier", "check_images"]
