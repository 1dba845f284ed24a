"""Declared contracts: what the engine reads of a model, verifier or algorithm is declared, with its default.

- every model and verifier that builds without weights exposes its info (``model_info``, ``verifier_info``)
  with the declared types, and a model's info names its protocol (``StepModel`` or ``WholeTrajectoryModel``);
- an object that declares nothing gets every default;
- ``check_run``, the one compatibility check, refuses each incompatible combination in one ``UserError`` line,
  and ``run_search`` calls it before any denoiser call;
- the engine, driver, accountant, ledger and cache look nothing up on a model or verifier outside the helpers.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import noisesearch as ns
from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import AlgorithmInfo, algorithm_info
from noisesearch.contracts import Identity, declared_identity
from noisesearch.driver import run_search
from noisesearch.engine.checks import check_run
from noisesearch.errors import UserError
from noisesearch.models import MODELS
from noisesearch.models.base import ModelInfo, StepModel, WholeTrajectoryModel, model_info
from noisesearch.verifiers import VERIFIERS
from noisesearch.verifiers.base import VerifierInfo, verifier_info
from noisesearch.verifiers.custom import CallableVerifier

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines_more as more  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)
ROOT = Path(__file__).resolve().parents[1] / "noisesearch"
PROMPT = "a red cube"
SIZE = {"height": 32, "width": 32}


def brightness(images, prompts):
    return images.mean(dim=tuple(range(1, images.dim())))  # (B,)


@pytest.fixture(scope="module")
def tiny_models():
    """Every model that builds without downloaded weights: the shipped digits and toy, tiny diffusers pipelines
    through their step-level adapters and through the generic (whole-trajectory) adapter."""
    models = {name: MODELS[name]() for name in ("digits", "digits-large", "toy")}
    models["flux"] = ns.from_pipeline(more.flux(), **SIZE)
    models["sd"] = ns.from_pipeline(more.sd(), **SIZE)
    models["auraflow (generic)"] = ns.from_pipeline(more.auraflow(), **SIZE)
    models["wan"] = ns.from_pipeline(more.wan(), num_frames=5, max_sequence_length=16, **SIZE)
    models["wan (generic)"] = ns.from_pipeline(more.wan(), adapter="generic", pipeline_kwargs={"num_frames": 5}, **SIZE)
    return models


def _optional(value, kind) -> bool:
    return value is None or isinstance(value, kind)


def _callable_or_none(value) -> bool:
    return value is None or callable(value)


@pytest.mark.parametrize(
    "name", ["digits", "digits-large", "toy", "flux", "sd", "wan", "auraflow (generic)", "wan (generic)"]
)
def test_every_buildable_model_declares_its_info_with_the_declared_types(tiny_models, name):
    model = tiny_models[name]
    info = model_info(model)
    assert isinstance(info, ModelInfo) and isinstance(info.whole_trajectory, bool)
    assert info.protocol == ("whole" if name.endswith("(generic)") else "step")
    assert isinstance(model, WholeTrajectoryModel if info.whole_trajectory else StepModel)
    assert info.adapter == ("generic" if info.whole_trajectory else "step")
    assert _optional(info.domain, str) and info.domain in ("digits", "toy", "rgb", "video")
    assert _optional(info.device, (str, torch.device)) and _optional(info.frames, int)
    assert isinstance(info.fps, int) and _optional(info.latents_note, str) and _optional(info.cache_key, str)
    for part in ("start_scale", "denoise_grad", "flops_per_nfe", "flops_per_row"):
        assert _callable_or_none(getattr(info, part)), part
    assert (info.denoise_grad is None) == info.whole_trajectory  # step-level adapters differentiate, pipelines not
    if name == "wan":
        assert info.domain == "video" and info.frames == 5 and info.fps == 16
    shape = info.latent_shape
    assert shape is None or shape == (1, *model.noise_shape)  # what a seeded draw passed as latents= has


@pytest.mark.parametrize("name", [n for n, f in VERIFIERS.items() if not getattr(f, "needs_setup", False)])
def test_every_buildable_verifier_declares_its_info_with_the_declared_types(name):
    verifier = VERIFIERS[name]()
    info = verifier_info(verifier)
    assert isinstance(info, VerifierInfo)
    assert _optional(info.preview_sigma, float) and _optional(info.domain, str) and _optional(info.usage, dict)
    assert isinstance(info.video, bool) and isinstance(info.takes_frames, bool)
    assert info.value_range is None or (isinstance(info.value_range, tuple) and len(info.value_range) == 2)
    assert _callable_or_none(info.score) and _callable_or_none(info.flops_per_row)
    assert isinstance(info.identity, Identity) and not info.metered


def test_every_registered_algorithm_declares_its_info():
    for name, factory in ALGORITHMS.items():
        info = algorithm_info(factory)
        assert isinstance(info, AlgorithmInfo) and info.name == name
        assert isinstance(info.renders_from_noise, bool) and isinstance(info.needs_gradients, bool)
        assert isinstance(info.full_candidates_only, bool)


class _Bare:
    """A user's own model, verifier or algorithm that declares nothing beyond its protocol."""

    name = "bare"


def test_an_object_that_declares_nothing_gets_every_default():
    def defaults(info):
        return {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "source"}

    bare = _Bare()
    assert defaults(model_info(bare)) == defaults(ModelInfo()) and model_info(bare).latent_shape is None
    assert model_info(bare).protocol == "step"
    assert verifier_info(bare) == VerifierInfo() and verifier_info(brightness) == VerifierInfo()
    assert declared_identity(bare) == Identity()
    assert algorithm_info(bare) == AlgorithmInfo(name="bare")


def test_declared_none_counts_as_left_out_and_a_declaration_wins():
    verifier = SimpleNamespace(name="v", preview_sigma=None, takes_frames=False, cache_key="k", members=[1])
    info = verifier_info(verifier)
    assert info.preview_sigma is None and info.takes_frames is False
    assert info.identity == Identity(cache_key="k", members=(1,))
    model = SimpleNamespace(name="m", whole_trajectory=True, fps=24, frames=None, latent_shape=[1, 2])
    assert model_info(model).whole_trajectory and model_info(model).fps == 24 and model_info(model).frames is None
    assert model_info(model).latent_shape == (1, 2)


class _Untouchable:
    """Counts what a run did to a model before it was refused."""

    def __init__(self, model):
        self.calls = 0
        for part in ("denoise", "denoise_grad"):  # a step-level model's calls, with and without gradients
            if callable(getattr(model, part, None)):
                setattr(model, part, self._counted(getattr(model, part)))
        for net in getattr(model, "denoisers", []):  # a whole-trajectory adapter's pipeline: every forward
            net.register_forward_pre_hook(self._count)

    def _counted(self, call):
        def counted(*args, **kwargs):
            self.calls += 1
            return call(*args, **kwargs)

        return counted

    def _count(self, module, args):
        self.calls += 1


class _GradientSearch:
    """A custom algorithm that declares it follows gradients (it is refused before it could ask for any)."""

    name = "my-gradient-search"
    renders_from_noise = True
    needs_gradients = True

    def __init__(self):
        self.inner = ALGORITHMS["first-order"](starts=1)

    def params(self):
        return {}

    def init(self, problems):
        return self.inner.init(problems)

    def ask(self, state):
        return self.inner.ask(state)

    def tell(self, state, outcomes):
        self.inner.tell(state, outcomes)


def _video_model():
    return SimpleNamespace(name="a-video-model", domain="video", frames=5)


def _refusals(tiny_models):
    """(model, algorithm, sampler, verifier, final steps, words the one line must hold) for each incompatibility."""
    digits, generic = tiny_models["digits"], tiny_models["auraflow (generic)"]
    classifier, previews = VERIFIERS["classifier"](), VERIFIERS["feature-similarity"]()
    anonymous = CallableVerifier(brightness, name="brightness")  # no score(): not differentiable
    one_by_one = SimpleNamespace(name="set-judge", takes_frames=False)
    random, paths = ALGORITHMS["random"](candidates=1), ALGORITHMS["paths"]()
    return [
        (generic, paths, "euler", anonymous, None, "needs step-level control"),
        (generic, random, "heun", anonymous, None, "own scheduler runs"),
        (generic, random, "euler", previews, None, "needs x0-previews"),
        (generic, random, "euler", anonymous, 2, "whole-trajectory"),
        (digits, paths, "euler", classifier, 2, "does not end in a full trajectory"),
        (digits, random, "euler-ancestral", classifier, 2, "stochastic"),
        (digits, _GradientSearch(), "euler", anonymous, None, "is not differentiable"),
        (tiny_models["toy"], random, "euler", classifier, None, None),  # compatible: nothing refused
        (_video_model(), random, "euler", one_by_one, None, "cannot score a video's frames"),
        (_video_model(), random, "euler", anonymous, None, None),  # an image verifier scores frames
        (_video_model(), random, "euler", SimpleNamespace(name="d", domain="digits"), None, "digits images only"),
    ]


def test_the_one_compatibility_check_refuses_each_incompatible_combination_in_one_line(tiny_models):
    for model, algorithm, sampler, verifier, final_steps, words in _refusals(tiny_models):
        if words is None:
            check_run(model, algorithm, sampler, verifier, final_steps)
            continue
        with pytest.raises(UserError) as refused:
            check_run(model, algorithm, sampler, verifier, final_steps)
        assert words in str(refused.value) and "\n" not in str(refused.value), str(refused.value)


def test_a_model_without_gradients_is_refused_for_a_gradient_search():
    model = SimpleNamespace(name="no-grad")
    with pytest.raises(UserError, match="cannot be differentiated"):
        check_run(model, _GradientSearch(), "euler", VERIFIERS["classifier"]())


def test_run_search_refuses_an_incompatible_run_before_any_denoiser_call(tiny_models):
    for model, algorithm, sampler, verifier, final_steps, words in _refusals(tiny_models):
        if words is None or isinstance(model, SimpleNamespace):
            continue
        spy = _Untouchable(model)
        try:
            with pytest.raises(UserError, match=words):
                run_search(
                    model,
                    verifier,
                    algorithm,
                    [PROMPT if model_info(model).domain == "rgb" else 3],
                    seeds=[0],
                    budget=64,
                    steps=2,
                    sampler=sampler,
                    final_steps=final_steps,
                )
            assert spy.calls == 0, (words, spy.calls)
        finally:
            vars(model).pop("denoise", None)  # the class's own methods again
            vars(model).pop("denoise_grad", None)


def _lookups(path: Path) -> dict[str, list[str]]:
    """Function name -> the getattr/hasattr calls in it (module level as "<module>")."""
    tree = ast.parse(path.read_text())
    found: dict[str, list[str]] = {}

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inside = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name):
                if child.func.id in ("getattr", "hasattr"):
                    found.setdefault(inside, []).append(ast.unparse(child))
            visit(child, inside)

    visit(tree, "<module>")
    return found


# the only places of the engine's files that look an attribute up by name, and why none is a model's or verifier's
# undeclared attribute
ALLOWED = {
    "contracts.py": {
        "declared": "the one reader of a declared capability (ModelInfo, VerifierInfo, AlgorithmInfo, Identity)",
        "model_info": "a ModelInfo field's default, read from the record itself (not from the model)",
    },
    "_files.py": {"<module>": "os flags that some platforms lack"},  # noisesearch/cache/
    "_hashing.py": {  # noisesearch/cache/
        "_describe": "an option value's bytes (numpy arrays, PIL images), for the identity hash",
        "_fields": "an object's own fields (vars), all hashed into its identity",
        "_modules_and_tensors": "a held diffusers pipeline's components, whose weights are hashed",
    },
    "_packs.py": {"gather": "a stored torch dtype by its name"},  # noisesearch/cache/
}


def test_the_engine_looks_up_no_model_or_verifier_attribute_outside_the_declared_helpers():
    files = sorted((ROOT / "engine").glob("*.py")) + sorted((ROOT / "cache").glob("*.py"))
    files += [ROOT / name for name in ("driver.py", "accounting.py", "ledger.py", "contracts.py")]
    for path in files:
        allowed = ALLOWED.get(path.name, {})
        for where, calls in _lookups(path).items():
            assert where in allowed, f"{path.name}: {where} looks up {calls}; read a declared info instead"


def test_the_whole_trajectory_algorithms_are_the_ones_that_declare_it():
    """Which algorithms a whole-trajectory model runs, and which need gradients, is declared data, not a name list."""
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.algorithms.base import algorithm_info

    full = {n for n, f in ALGORITHMS.items() if algorithm_info(f).full_candidates_only}
    grads = {n for n, f in ALGORITHMS.items() if algorithm_info(f).needs_gradients}
    assert full == {"random", "zero-order"} and grads == {"first-order"}


def test_an_unknown_algorithm_name_and_mismatched_seeds_are_one_user_error(digits, classifier):
    from noisesearch.driver import run_search
    from noisesearch.engine.checks import check_run
    from noisesearch.errors import UserError

    with pytest.raises(UserError, match=r"^unknown algorithm 'nope'; accepted: random, zero-order"):
        check_run(digits, "nope", "euler", classifier, None)
    with pytest.raises(UserError, match=r"^2 targets but 1 seeds$"):
        run_search(digits, classifier, ALGORITHMS["random"](), [1, 2], seeds=[0], budget=8, steps=8)
