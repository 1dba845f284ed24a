"""The Wan text-to-video adapter (``models/wan.py``) on tiny random pipelines (``_tiny_wan``): Wan 2.1 and 2.2's two experts.

Our Euler loop equals ``WanPipeline.__call__`` from the same ``latents=`` in pixels (square and non-square, with and
without guidance, two frame counts); NFEs equal the transformer rows a hook counts, per expert; every registered
algorithm runs within its budget with exactly the rows it was charged; bad sizes, frame counts and schedulers are
one ``UserError`` line before any work; a saved folder loads through ``MODELS["wan"]`` and ``--model diffusers``.
"""

import sys
import warnings
from pathlib import Path

import pytest
import torch
from _algo import build

import noisesearch as ns
from noisesearch.algorithms import ALGORITHMS
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.models import MODELS, PIPELINES
from noisesearch.models.base import Model
from noisesearch.models.wan import WanModel
from noisesearch.samplers import sample_euler

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_wan as tiny  # noqa: E402
from _tiny_verifiers import Brightness  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)
PROMPT = "a red cube"
MSL = 16  # max_sequence_length: short token sequences keep the tiny UMT5 fast
LAYOUTS = ["2.1", "2.2"]
TOL = 1e-5  # float32 rounding only: CFG rows batched here, two calls there; Euler written as x0 vs velocity


@pytest.fixture(scope="module")
def pipes():
    return {"2.1": tiny.wan(), "2.2": tiny.wan(1, two_experts=True)}


def adapter(pipe, height=16, width=16, frames=5, **options):
    return ns.from_pipeline(pipe, height=height, width=width, num_frames=frames, max_sequence_length=MSL, **options)


def noise(model, n=1, seed=0):
    return torch.randn(n, *model.noise_shape, generator=torch.Generator().manual_seed(seed))  # (n, C, F', h, w)


def our_videos(model, z, prompts, steps, guidance):
    cond = model.encode(prompts)
    x = sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=guidance), z, model.schedule(steps))
    return model.decode(x)  # (B, 3, F, H, W)


def pipeline_videos(pipe, z, *, height, width, frames, steps, guidance, **extra):
    out = pipe(
        PROMPT,
        height=height,
        width=width,
        num_frames=frames,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=z,
        output_type="pt",
        max_sequence_length=MSL,
        **extra,
    ).frames  # (B, F, 3, H, W)
    return out.transpose(1, 2)  # (B, 3, F, H, W)


def test_registered_in_both_registries(pipes):
    model = adapter(pipes["2.1"])
    assert isinstance(model, WanModel) and isinstance(model, Model)
    assert "WanPipeline" in PIPELINES and "wan" in MODELS and MODELS["wan"].needs_setup
    assert model.domain == MODELS["wan"].domain == "video" and model.adapter == "step" and model.name == "wan"
    assert model.noise_shape == (8, 2, 2, 2) and model.latent_shape == (1, 8, 2, 2, 2)  # 5 frames -> 2 latent


@pytest.mark.parametrize("frames", [5, 9])
@pytest.mark.parametrize("size", [(16, 16), (16, 32)])
@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_our_loop_equals_the_pipeline(pipes, layout, guided, size, frames):
    """Measured <= 6e-6 in pixels (the two CFG calls vs one batch of both), hence 1e-5."""
    pipe, g = pipes[layout], 5.0 if guided else 1.0
    extra = {"guidance_scale_2": 2.5} if layout == "2.2" and guided else {}
    options = {"guidance_2": 2.5} if extra else {}
    model = adapter(pipe, *size, frames, **options)
    assert model.nfe_per_call(g) == (2 if guided else 1)
    z = noise(model)
    ours = our_videos(model, z, [PROMPT], 3, g)
    reference = pipeline_videos(pipe, z, height=size[0], width=size[1], frames=frames, steps=3, guidance=g, **extra)
    assert ours.shape == reference.shape == (1, 3, frames, *size)
    assert (ours - reference).abs().max() <= TOL


def expert_rows(model):
    """Rows per expert: {"transformer": [...], "transformer_2": [...]} and the hook handles."""
    rows: dict[str, list[int]] = {}
    handles = []
    for name in ("transformer", "transformer_2"):
        net = getattr(model.pipe, name, None)
        if net is not None:
            rows[name] = []

            def count(module, args, kwargs, into=rows[name]):
                into.append(len(kwargs.get("hidden_states", args[0] if args else None)))

            handles.append(net.register_forward_pre_hook(count, with_kwargs=True))
    return rows, handles


def test_two_experts_split_at_the_boundary_with_their_own_guidance(pipes):
    """Shift 3, 4 steps: timesteps 1000, 858, 602, 9 -> the high-noise expert once (t >= 875), the low-noise one
    three times; ``guidance_2`` changes the video (it is the low-noise expert's scale), as in the pipeline."""
    pipe = pipes["2.2"]
    model = adapter(pipe)
    rows, handles = expert_rows(model)
    try:
        z = noise(model)
        base = our_videos(model, z, [PROMPT], 4, 5.0)
    finally:
        for h in handles:
            h.remove()
    assert rows == {"transformer": [2], "transformer_2": [2, 2, 2]}  # [uncond; cond] batched: 2 rows per call
    other = our_videos(adapter(pipe, guidance_2=0.0), z, [PROMPT], 4, 5.0)
    reference = pipeline_videos(pipe, z, height=16, width=16, frames=5, steps=4, guidance=5.0, guidance_scale_2=0.0)
    assert (other - reference).abs().max() <= TOL
    assert (other - base).abs().max() > 5 * TOL  # the tiny random text path is weak, but well above rounding


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nfes_equal_transformer_rows(pipes, layout, guided):
    model, g = adapter(pipes[layout]), 5.0 if guided else 1.0
    rows, handles = expert_rows(model)
    try:
        (result,) = run_search(
            model, Brightness(), ALGORITHMS["random"](), [PROMPT], seeds=[0], budget=12, steps=2, guidance=g
        )
    finally:
        for h in handles:
            h.remove()
    per_candidate = 2 * (2 if guided else 1)
    n = 12 // per_candidate
    assert (
        result.nfe_used == sum(map(sum, rows.values())) == n * per_candidate == len(result.candidates) * per_candidate
    )
    assert result.best_image.shape == (3, 5, 16, 16)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_runs_within_its_budget(pipes, algorithm):
    """Wan 2.2 (both experts), guided (2 NFEs per evaluation): the NFEs charged are exactly the rows that ran."""
    model = adapter(pipes["2.2"])
    budget = 80 if algorithm == "paths" else 64  # one guided path scored at its branches' ends costs 72
    rows, handles = expert_rows(model)
    try:
        (result,) = run_search(
            model, Brightness(), build(algorithm), [PROMPT], seeds=[0], budget=budget, steps=4, guidance=5.0
        )
    finally:
        for h in handles:
            h.remove()
    assert result.nfe_used <= budget and result.nfe_used == sum(c["nfe"] for c in result.candidates)
    # a first-order gradient candidate is charged its forward rows times (1 + backward_cost = 4)
    forward = sum(c["nfe"] // (4 if (c.get("info") or {}).get("role") == "gradient" else 1) for c in result.candidates)
    assert forward == sum(map(sum, rows.values()))
    if algorithm == "random":
        assert result.nfe_used == budget  # 8 candidates of 4 steps x 2 rows
    assert result.best_image is not None and result.best_image.shape == (3, 5, 16, 16)


@pytest.mark.parametrize("frames", [0, 2, 4, 6, 8, -3, 5.0, True])
def test_frame_count_off_the_vae_stride_is_one_line(pipes, frames):
    with pytest.raises(UserError) as err:
        adapter(pipes["2.1"], frames=frames)
    message = str(err.value)
    assert "\n" not in message and f"num_frames {frames!r} is not 4k + 1 frames" in message


@pytest.mark.parametrize("what, size", [("height", (24, 16)), ("width", (16, 8)), ("height", (40, 16))])
def test_size_off_the_patch_grid_is_one_line(pipes, what, size):
    """VAE factor 8 x patch 2 = 16, which is also WanPipeline's own multiple."""
    with pytest.raises(UserError) as err:
        adapter(pipes["2.1"], *size)
    message = str(err.value)
    assert (
        "\n" not in message
        and f"{what} {size[0 if what == 'height' else 1]} is not a positive multiple of 16" in message
    )


def test_bad_options_are_one_line(pipes):
    cases = [
        (lambda: adapter(pipes["2.1"], guidance_2=2.0), "guidance_2 is for a two-expert Wan 2.2 pipeline"),
        (lambda: adapter(pipes["2.2"], guidance_2="high"), "guidance_2 must be a finite number, got 'high'"),
        (lambda: adapter(pipes["2.1"], vae_tiling="yes"), "vae_tiling must be true or false, got 'yes'"),
        (lambda: adapter(pipes["2.1"], negative_prompt=3), "negative_prompt must be a string, got 3"),
    ]
    for fn, message in cases:
        with pytest.raises(UserError) as err:
            fn()
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_unipc_scheduler_warns_once_and_keeps_its_flow_sigmas():
    """A released Wan folder's UniPC on flow sigmas: one warning line, and our schedule is its sigma grid."""
    from diffusers import DDIMScheduler, UniPCMultistepScheduler

    pipe = tiny.wan()
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = adapter(pipe)
    (w,) = [w for w in caught if issubclass(w.category, UserWarning)]
    assert "\n" not in str(w.message) and "FlowMatchEulerDiscreteScheduler(shift=3.0)" in str(w.message)
    reference = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    reference.set_timesteps(4)
    assert model.schedule(4) == tuple(float(s) for s in reference.sigmas)
    pipe.scheduler = DDIMScheduler()
    with pytest.raises(UserError, match="DDIMScheduler is not on flow-matching sigmas"):
        adapter(pipe)


def test_vae_tiling_and_release_text_encoders(pipes):
    pipe = tiny.wan()
    model = adapter(pipe, vae_tiling=True, release_text_encoders=True)
    assert pipe.vae.use_tiling
    z = noise(model)
    tiled = our_videos(model, z, [PROMPT], 2, 5.0)
    assert pipe.text_encoder is None  # released after the first encode; the prompt's embeddings are cached
    plain = our_videos(adapter(pipes["2.1"]), z, [PROMPT], 2, 5.0)  # frames below the tile size: one tile
    assert (tiled - plain).abs().max() <= TOL


def test_folder_loads_through_the_registry_and_the_diffusers_model(pipes, tmp_path):
    pipes["2.2"].save_pretrained(tmp_path)
    options = {"height": 16, "width": 32, "num_frames": 5, "max_sequence_length": MSL}
    model = MODELS["wan"](path=tmp_path, **options, guidance_2=3.0)
    same = adapter(pipes["2.2"], 16, 32, 5, guidance_2=3.0)
    assert type(model) is WanModel and model.noise_shape == same.noise_shape and model.boundary == same.boundary
    z = noise(model)
    torch.testing.assert_close(our_videos(model, z, [PROMPT], 2, 5.0), our_videos(same, z, [PROMPT], 2, 5.0))
    generic_door = MODELS["diffusers"](path=tmp_path, height=16, width=32)
    assert type(generic_door) is WanModel and generic_door.frames == 81  # the pipeline's default num_frames


def test_negative_prompt_and_per_token_timesteps_equal_the_pipeline(pipes):
    """A negative prompt (the pipeline's ``negative_prompt``) and Wan 2.2 TI2V's ``expand_timesteps`` (one timestep
    per token, 24 fps): our loop still equals ``pipe()``, and the negative prompt changes the video."""
    model = adapter(pipes["2.1"], negative_prompt="blurry")
    z = noise(model)
    ours = our_videos(model, z, [PROMPT], 3, 5.0)
    reference = pipeline_videos(
        pipes["2.1"], z, height=16, width=16, frames=5, steps=3, guidance=5.0, negative_prompt="blurry"
    )
    assert (ours - reference).abs().max() <= TOL
    assert (ours - our_videos(adapter(pipes["2.1"]), z, [PROMPT], 3, 5.0)).abs().max() > 5 * TOL
    ti2v = tiny.wan(2, expand_timesteps=True)
    model = adapter(ti2v, 16, 32)
    assert model.fps == 24
    z = noise(model)
    reference = pipeline_videos(ti2v, z, height=16, width=32, frames=5, steps=3, guidance=5.0)
    assert (our_videos(model, z, [PROMPT], 3, 5.0) - reference).abs().max() <= TOL
