"""The rectified-flow adapters on the shared base (``models/_flow.py``): SD3, Z-Image, SANA, Qwen-Image, FLUX.2.

Tiny random pipelines built in memory (``_tiny_flow``). For each family: our Euler loop equals the
pipeline's ``__call__`` from the same ``latents=`` in pixels, square and non-square, with and without
guidance; NFEs equal the transformer rows a hook counts; every registered algorithm runs within its
budget with exactly the rows it was charged; a size off the patch grid is one ``UserError`` line; a
saved pipeline loads through ``MODELS[name](path=...)`` as through ``from_pipeline``.
"""

import sys
from pathlib import Path

import pytest
import torch
from _algo import build

import noisesearch as ns
from noisesearch.algorithms import ALGORITHMS
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.models import MODELS, PIPELINES, domain_of
from noisesearch.models.base import Model
from noisesearch.models.flux import _pack
from noisesearch.samplers import sample_euler

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_flow as tiny  # noqa: E402
from _tiny_verifiers import Brightness  # noqa: E402

BUILD = {
    "sd3": tiny.sd3,
    "z-image": tiny.z_image,
    "sana": tiny.sana,
    "qwen-image": tiny.qwen_image,
    "flux2": tiny.flux2,
}
FAMILIES = list(BUILD)
# (unguided, guided) guidance scales in each pipeline's own convention
GUIDANCE = {"sd3": (1.0, 5.0), "z-image": (0.0, 3.0), "sana": (1.0, 4.5), "qwen-image": (1.0, 4.0), "flux2": (1.0, 4.0)}
GUIDANCE_ARG = {"qwen-image": "true_cfg_scale"}  # else guidance_scale
DISTILLED = {"flux2"}  # guidance is an embedding input: 1 NFE per step with or without it
WIDE = {"sd3": 48, "z-image": 48, "sana": 64, "qwen-image": 48, "flux2": 48}  # non-square (Sana: multiples of 32)
MULTIPLE = {"sd3": 4, "z-image": 4, "sana": 32, "qwen-image": 4, "flux2": 4}  # VAE factor 2 x patch 2; Sana's 32
EXTRA = {
    "sana": {"use_resolution_binning": False},  # the adapter renders the size asked for
    "qwen-image": {"negative_prompt": " "},  # the adapter's negative prompt (the pipeline guides only with one)
}
# FLUX.2's few-step schedule is shifted hard (sigmas 1, .96, .88, .70 at 4 steps): halving's checkpoints 0.75 and 0.5
# would snap to one step, so it gets 8 steps (and 16 candidates of 8 x 1 row in the budget of 128)
ALGORITHM_STEPS = {"flux2": 8}
PACKED = {"qwen-image"}  # pipelines that take latents packed in 2x2 patches
MSL = 24  # max_sequence_length: short token sequences keep the tiny text encoders fast
# Qwen-Image drops its template's first 34 tokens; the byte tokenizer spends ~150 on the template, so the
# prompt only matters with a longer limit
MSLS = {"qwen-image": 256, "flux2": 48}  # FLUX.2's system message takes ~40 of its word-level tokens
PROMPT = "a red cube"
# sd3 in the fast set, the other families marked slow where a test is heavy (every algorithm, a saved folder)
HEAVY = [n if n == "sd3" else pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES]

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


@pytest.fixture(scope="module")
def pipes():
    return {name: build() for name, build in BUILD.items()}


def adapter(pipes, name, height=32, width=32):
    return ns.from_pipeline(pipes[name], height=height, width=width, max_sequence_length=MSLS.get(name, MSL))


def noise(model, n=1, seed=0):
    return torch.randn(n, *model.noise_shape, generator=torch.Generator().manual_seed(seed))  # (n, C, h, w)


def our_images(model, z, prompts, steps, guidance):
    cond = model.encode(prompts)
    x = sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=guidance), z, model.schedule(steps))
    return model.decode(x)


def test_registered_in_both_registries(pipes):
    for name in FAMILIES:
        model = adapter(pipes, name)
        assert PIPELINES[type(pipes[name]).__name__] and name in MODELS
        assert isinstance(model, Model) and model.name == name and model.adapter == "step"
        assert model.domain == domain_of(name) == "rgb", name  # the registry knows it without loading


@pytest.mark.parametrize("square", [True, False])
@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_our_loop_equals_the_pipeline(pipes, name, square, guided):
    """Same noise, same schedule, same transformer inputs: only float32 rounding differs (Euler written as
    ``x + (s' - s)(x - denoised)/s`` vs ``x + (s' - s) v``; measured <= 1e-6 in pixels), hence 1e-5."""
    size = (32, 32) if square else (32, WIDE[name])
    model, g = adapter(pipes, name, *size), GUIDANCE[name][guided]
    assert model.nfe_per_call(g) == (2 if guided and name not in DISTILLED else 1)
    z = noise(model)
    ours = our_images(model, z, [PROMPT], 3, g)
    height, width = size
    reference = pipes[name](
        prompt=PROMPT,
        height=height,
        width=width,
        num_inference_steps=3,
        latents=_pack(z) if name in PACKED else z,
        output_type="pt",
        max_sequence_length=MSLS.get(name, MSL),
        **{GUIDANCE_ARG.get(name, "guidance_scale"): g},
        **EXTRA.get(name, {}),
    ).images  # (1, 3, H, W)
    assert ours.shape == reference.shape == (1, 3, height, width)
    assert (ours - reference).abs().max() <= 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_batch_row_equals_candidate_alone(pipes, name):
    """Prompts of different lengths batched together (Z-Image keeps per-prompt lengths): row 1 as if alone."""
    model, g = adapter(pipes, name), GUIDANCE[name][1]
    z = noise(model, 3, seed=1)
    batch = our_images(model, z, [PROMPT, "a blue cat on the photo", PROMPT], 2, g)
    alone = our_images(model, z[1:2], ["a blue cat on the photo"], 2, g)
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=0)  # batched matmuls round differently
    assert not torch.allclose(batch[0], batch[1])  # the prompt matters
    cond = model.encode([PROMPT, "a blue cat on the photo", PROMPT])
    assert torch.equal(cond["prompt_embeds"][0], cond["prompt_embeds"][2])  # one cache entry per prompt


def hooked_rows(model):
    rows = []

    def count(module, args, kwargs):
        x = kwargs.get("hidden_states", args[0] if args else None)
        rows.append(len(x))  # a tensor's batch, or Z-Image's list of samples

    return rows, model.pipe.transformer.register_forward_pre_hook(count, with_kwargs=True)


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_nfes_equal_transformer_rows(pipes, name, guided):
    model, g = adapter(pipes, name), GUIDANCE[name][guided]
    rows, hook = hooked_rows(model)
    try:
        (result,) = run_search(
            model, Brightness(), ALGORITHMS["random"](), [PROMPT], seeds=[0], budget=12, steps=2, guidance=g
        )
    finally:
        hook.remove()
    per_candidate = 2 * (2 if guided and name not in DISTILLED else 1)
    assert result.nfe_used == sum(rows) == len(result.candidates) * per_candidate == 12 // per_candidate * per_candidate


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("name", HEAVY)
def test_every_algorithm_runs_within_its_budget(pipes, name, algorithm):
    """Default parameters, guided (2 NFEs per evaluation, 1 for FLUX.2): the NFEs charged are exactly the rows that ran."""
    model, g = adapter(pipes, name), GUIDANCE[name][1]
    budget = 128
    rows, hook = hooked_rows(model)
    try:
        (result,) = run_search(
            model,
            Brightness(),
            build(algorithm),
            [PROMPT],
            seeds=[0],
            budget=budget,
            steps=ALGORITHM_STEPS.get(name, 4),
            guidance=g,
        )
    finally:
        hook.remove()
    assert result.nfe_used <= budget and result.nfe_used == sum(c["nfe"] for c in result.candidates)
    # a first-order gradient candidate is charged its forward rows times (1 + backward_cost = 4)
    forward = sum(c["nfe"] // (4 if (c.get("info") or {}).get("role") == "gradient" else 1) for c in result.candidates)
    assert forward == sum(rows)
    if algorithm == "random":
        assert result.nfe_used == budget  # 16 candidates of 4 steps x 2 rows (FLUX.2: 8 steps x 1 row)
    assert result.best_image is not None and result.best_image.shape == (3, 32, 32)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("off", [-2, -32, 1])
def test_size_off_the_patch_grid_is_one_line(pipes, name, off):
    size = 32 + off
    with pytest.raises(UserError) as err:
        adapter(pipes, name, height=size)
    message = str(err.value)
    assert "\n" not in message and f"height {size} is not a positive multiple of {MULTIPLE[name]}" in message


@pytest.mark.parametrize("name", HEAVY)
def test_folder_loads_through_the_same_constructor(pipes, name, tmp_path):
    pipes[name].save_pretrained(tmp_path)
    model = MODELS[name](path=tmp_path, height=32, width=WIDE[name], max_sequence_length=MSLS.get(name, MSL))
    same = adapter(pipes, name, 32, WIDE[name])
    assert type(model) is type(same) and model.noise_shape == same.noise_shape
    z, g = noise(model), GUIDANCE[name][1]
    torch.testing.assert_close(our_images(model, z, [PROMPT], 2, g), our_images(same, z, [PROMPT], 2, g))


def test_release_text_encoders_keeps_cached_prompts_and_refuses_new_ones():
    pipe = tiny.sd3(t5=False)
    model = ns.from_pipeline(pipe, height=32, width=32, max_sequence_length=MSL, release_text_encoders=True)
    first = model.encode([PROMPT, "a blue cat"])
    assert pipe.text_encoder is None and pipe.text_encoder_2 is None
    torch.testing.assert_close(model.encode(["a blue cat"])["prompt_embeds"][0], first["prompt_embeds"][1])
    with pytest.raises(UserError, match="prompt 'a dog' was not encoded before the text encoders were released"):
        model.encode(["a dog"])


def test_sd3_without_t5_and_with_dynamic_shift_equals_the_pipeline():
    pipe = tiny.sd3(t5=False, dynamic=True)
    model = ns.from_pipeline(pipe, height=32, width=48, max_sequence_length=MSL)
    z = noise(model)
    ours = our_images(model, z, [PROMPT], 3, 5.0)
    reference = pipe(
        PROMPT,
        height=32,
        width=48,
        num_inference_steps=3,
        guidance_scale=5.0,
        latents=z,
        output_type="pt",
        max_sequence_length=MSL,
    ).images
    assert (ours - reference).abs().max() <= 1e-5  # float32 rounding only (see test_our_loop_equals_the_pipeline)


def test_flux2_release_text_encoders():
    pipe = tiny.flux2()
    model = ns.from_pipeline(pipe, height=32, width=32, max_sequence_length=48, release_text_encoders=True)
    first = model.encode([PROMPT, "a blue cat"])
    assert pipe.text_encoder is None
    torch.testing.assert_close(model.encode(["a blue cat"])["prompt_embeds"][0], first["prompt_embeds"][1])
    with pytest.raises(UserError, match="prompt 'a dog' was not encoded before the text encoders were released"):
        model.encode(["a dog"])
    assert model.decode(model.denoise(noise(model), 1.0, model.encode([PROMPT]), guidance=4.0)).shape == (1, 3, 32, 32)


def test_flux2_text_encoder_layers_pipeline_kwarg_equals_the_pipeline():
    """``text_encoder_out_layers`` (a step kwarg of the adapter) picks the embedding's layers as the pipeline does."""
    layers = (29, 30)
    kwargs = {"text_encoder_out_layers": layers}
    pipe = tiny.flux2()
    pipe.transformer = tiny.flux2(joint_attention_dim=32).transformer  # two layers of hidden 16
    model = ns.from_pipeline(pipe, height=32, width=48, max_sequence_length=48, pipeline_kwargs=kwargs)
    z = noise(model)
    ours = our_images(model, z, [PROMPT], 3, 2.5)
    reference = pipe(
        prompt=PROMPT,
        height=32,
        width=48,
        num_inference_steps=3,
        guidance_scale=2.5,
        latents=z,
        output_type="pt",
        max_sequence_length=48,
        **kwargs,
    ).images
    assert model.cond_keys == ("prompt_embeds",) and model.encode([PROMPT])["prompt_embeds"].shape == (1, 48, 32)
    assert (ours - reference).abs().max() <= 1e-5


def test_qwen_image_runs_no_text_padding_past_the_batch_longest_prompt(pipes):
    """The cache pads prompts to max_sequence_length; the transformer gets only up to the longest unmasked token.

    With guidance the negative prompt (" ", a few tokens) and the prompts run as two calls, as the pipeline
    runs them, each cut to its own longest: stacked, the negative would run at the prompts' length."""
    model = adapter(pipes, "qwen-image")
    cond = model.encode([PROMPT, "a blue cat on the photo"])
    longest = int(cond["mask"].sum(dim=1).max())
    assert cond["mask"].shape[1] == MSLS["qwen-image"] > longest
    seen = []
    hook = model.pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["encoder_hidden_states"].shape[1]), with_kwargs=True
    )
    try:
        model.denoise(noise(model, 2), 0.5, cond, guidance=4.0)
    finally:
        hook.remove()
    negative = int(cond["negative_mask"].sum(dim=1).max())
    assert negative < longest and seen == [negative, longest]
