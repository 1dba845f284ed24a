"""The diffusers adapters (FLUX, SD, SDXL) on tiny random pipelines built in code and loaded from folders.

For each family: our Euler loop reproduces the pipeline's own ``__call__`` from the same noise; a
candidate in a batch equals the candidate alone; resuming from an intermediate state reproduces the
uninterrupted run; the driver's NFE count equals the real network rows (CFG included); bad inputs
give one clear ``UserError`` (and exit code 2 through the CLI).
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from _algo import build
from typer.testing import CliRunner

from noisesearch.algorithms import ALGORITHMS
from noisesearch.cli import app
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.models import MODELS
from noisesearch.models.base import Model
from noisesearch.samplers import sample_euler

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402
from _tiny_verifiers import Brightness, register_verifier  # noqa: E402

FAMILIES = ["flux", "sd", "sdxl", "pixart-sigma"]
SIZE = {"height": 32, "width": 32}
OPTIONS = {
    "flux": {**SIZE, "max_sequence_length": 16},
    "sd": SIZE,
    "sdxl": SIZE,
    "pixart-sigma": {**SIZE, "max_sequence_length": 16},
}
SAVE = {"flux": tiny.save_flux, "sd": tiny.save_sd, "sdxl": tiny.save_sdxl, "pixart-sigma": tiny.save_pixart}
NETWORK = {"flux": "transformer", "sd": "unet", "sdxl": "unet", "pixart-sigma": "transformer"}
EMBEDS = {"flux": "prompt_embeds", "sd": "embeds", "sdxl": "embeds", "pixart-sigma": "embeds"}
PROMPT = "a red cube"


pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {name: SAVE[name](root / name) for name in FAMILIES}


@pytest.fixture(scope="module")
def models(folders):
    return {name: MODELS[name](path=folders[name], **OPTIONS[name]) for name in FAMILIES}


def noise(model, n=1, seed=0):
    return torch.randn(n, *model.noise_shape, generator=torch.Generator().manual_seed(seed))  # (n, C, h, w)


def guidance_of(name):
    return 3.5 if name == "flux" else 7.5


def our_run(model, x, cond, sigmas, guidance, callback=None):
    return sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=guidance), x, sigmas, callback=callback)


def pipeline_run(name, model, z, steps, output_type):
    """The pipeline's own sampling loop from noise ``z`` (1, C, h, w)."""
    from noisesearch.models.flux import _pack

    extra = {
        "flux": {"max_sequence_length": 16},
        "pixart-sigma": {"max_sequence_length": 16, "use_resolution_binning": False},
    }.get(name, {})
    latents = _pack(z) if name == "flux" else z  # FLUX takes packed latents; SD/SDXL take VP latents (x1 for DDIM)
    return model.pipe(
        PROMPT,
        **SIZE,
        num_inference_steps=steps,
        latents=latents,
        guidance_scale=guidance_of(name),
        output_type=output_type,
        **extra,
    ).images


def start_state(model, z, sigma0):
    """Our start state for the pipeline's noise ``z``: FLUX's is z itself, a VP model's is rescaled."""
    return z * model.start_scale(sigma0) if hasattr(model, "start_scale") else z


@pytest.mark.parametrize("name", FAMILIES)
def test_contract_shapes(models, name):
    model = models[name]
    assert isinstance(model, Model) and model.domain == MODELS[name].domain == "rgb"
    sigmas = model.schedule(3)
    assert len(sigmas) == 4 and sigmas[-1] == 0.0 and all(a > b for a, b in zip(sigmas, sigmas[1:]))
    assert sigmas[0] == 1.0 if name == "flux" else 0 < sigmas[0] < 1
    images = model.decode(noise(model, 2))
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert model.nfe_per_call(guidance_of(name)) == (1 if name == "flux" else 2)
    assert model.nfe_per_call(1.0) == 1


@pytest.mark.parametrize("name", FAMILIES)
def test_our_loop_reproduces_the_pipeline(models, name):
    model, steps = models[name], 3
    z = noise(model)
    sigmas = model.schedule(steps)
    x = our_run(model, start_state(model, z, sigmas[0]), model.encode([PROMPT]), sigmas, guidance_of(name))
    images = model.decode(x)
    reference = pipeline_run(name, model, z, steps, "pt")  # (1, 3, 32, 32)
    assert (images - reference).abs().max() < 1e-4
    latents = pipeline_run(name, model, z, steps, "latent")
    if name == "flux":
        from noisesearch.models.flux import _pack

        x = _pack(x)
    assert (x - latents).abs().max() < 1e-4 * max(1.0, float(latents.abs().max()))


@pytest.mark.parametrize("name", FAMILIES)
def test_batch_row_equals_candidate_alone(models, name):
    model, g = models[name], guidance_of(name)
    sigmas = model.schedule(2)
    x = noise(model, 3, seed=1)
    cond = model.encode([PROMPT, "a blue cat", PROMPT])
    batch = our_run(model, x, cond, sigmas, g)
    alone = our_run(model, x[1:2], model.encode(["a blue cat"]), sigmas, g)
    torch.testing.assert_close(batch[1:2], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batch[0], batch[1])  # the prompt matters
    assert torch.equal(cond[EMBEDS[name]][0], cond[EMBEDS[name]][2])


@pytest.mark.parametrize("name", FAMILIES)
def test_resume_from_an_intermediate_state(models, name):
    model, g = models[name], guidance_of(name)
    sigmas = model.schedule(4)
    cond = model.encode([PROMPT])
    seen = {}

    def keep(i, sigma, x, denoised):
        seen[i] = x

    full = our_run(model, noise(model, seed=2), cond, sigmas, g, callback=keep)
    resumed = our_run(model, seen[2], cond, sigmas[2:], g)
    torch.testing.assert_close(resumed, full, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_driver_nfes_equal_real_network_rows(models, name):
    model = models[name]
    net = getattr(model.pipe, NETWORK[name])
    rows = []
    hook = net.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(len(kwargs.get("hidden_states", args[0] if args else None))),
        with_kwargs=True,
    )
    try:
        (result,) = run_search(
            model,
            Brightness(),
            ALGORITHMS["random"](),
            [PROMPT],
            seeds=[0],
            budget=24,
            steps=2,
            guidance=guidance_of(name),
            max_batch=4,
        )
    finally:
        hook.remove()
    per_candidate = 2 * (1 if name == "flux" else 2)
    assert result.nfe_used == sum(rows) == len(result.candidates) * per_candidate
    assert result.best_image.shape == (3, 32, 32)


@pytest.mark.parametrize("guidance", [1.0, 4.5])
def test_pixart_takes_the_eps_half_of_a_learned_variance_output(models, guidance):
    """eps = the first C of the transformer's 2C output channels (then CFG-combined), sliced by hand here."""
    model = models["pixart-sigma"]
    c = model.noise_shape[0]
    assert model.pipe.transformer.config.out_channels == 2 * c
    outputs = []
    hook = model.pipe.transformer.register_forward_hook(lambda mod, args, out: outputs.append(out[0]))
    try:
        cond = model.encode([PROMPT])
        eps = model.eps(noise(model, seed=4), 500.0, cond, guidance)
    finally:
        hook.remove()
    (out,) = outputs  # (rows, 2C, h, w): one forward, unconditional rows first under CFG
    assert out.shape[1] == 2 * c and not torch.allclose(out[:, :c], out[:, c:]), "the halves must differ"
    half = out[:, :c]
    want = half if guidance == 1.0 else half[:1] + guidance * (half[1:] - half[:1])
    # the same tensor sliced (guidance 1: bit for bit); CFG recombined here in another order: float32 rounding
    torch.testing.assert_close(eps, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["sd", "pixart-sigma"])
def test_decode_in_slices_equals_decoding_the_whole_batch(folders, models, name):
    """decode_batch=1 (one VAE call per image) gives the images of one call on the whole batch."""
    whole = models[name]
    sliced = MODELS[name](path=folders[name], decode_batch=1, **OPTIONS[name])
    calls = []
    hook = sliced.pipe.vae.decoder.register_forward_pre_hook(lambda mod, args: calls.append(len(args[0])))
    try:
        x0 = noise(whole, n=3, seed=5)
        a, b = whole.decode(x0), sliced.decode(x0)
    finally:
        hook.remove()
    assert calls == [1, 1, 1] and a.shape == b.shape == (3, 3, 32, 32)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # batch of 3 vs 1: conv kernels round differently
    assert not torch.allclose(a[0], a[1]), "different latents must decode differently"


def test_prompt_embeddings_are_cached(models):
    model = models["flux"]
    calls = []
    hook = model.pipe.text_encoder_2.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.encode(["a cached prompt", "a cached prompt"])
        model.encode(["a cached prompt"])
    finally:
        hook.remove()
    assert len(calls) == 1


def test_bad_inputs_give_one_clear_error(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (dict(path=tmp_path / "missing"), "does not exist"),
        (dict(path=tmp_path / "empty"), "has no model_index.json"),
        (dict(path=folders["sd"]), "holds a StableDiffusionPipeline, expected FluxPipeline"),
        (dict(path=folders["flux"], dtype="float8"), "unknown dtype 'float8'; accepted: float32, float16, bfloat16"),
        (dict(path=folders["flux"], device="tpu9"), "device 'tpu9'"),
        (dict(path=folders["flux"], height=33), "height 33 is not a positive multiple of 2"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            MODELS["flux"](**kwargs)


def test_incomplete_folder_and_empty_prompt(folders, models, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folders["sd"], broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(UserError, match="is incomplete: no unet/ component"):
        MODELS["sd"](path=broken)
    for name in FAMILIES:
        for bad in ("", "   ", 7):
            with pytest.raises(UserError, match="prompt must be a non-empty string"):
                models[name].encode([bad])


runner = CliRunner()


def test_cli_generate_flux_end_to_end(folders, tmp_path, monkeypatch):
    register_verifier(monkeypatch, "brightness", Brightness)
    out = tmp_path / "out"
    args = [
        "generate",
        "--model",
        "flux",
        "--model-path",
        str(folders["flux"]),
        "--prompt",
        PROMPT,
        "--model-param",
        "height=32",
        "--model-param",
        "width=32",
        "--model-param",
        "max_sequence_length=16",
        "--verifier",
        "brightness",
        "--algorithm",
        "random",
        "--budget",
        "8",
        "--steps",
        "2",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert (out / "best.png").is_file() and record["nfe_used"] == 8 and len(record["candidates"]) == 4
    assert record["target"] == PROMPT and record["model_options"]["height"] == 32


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model-path", "/nonexistent/folder"], "model folder '/nonexistent/folder' does not exist"),
        (["--dtype", "float8"], "unknown dtype 'float8'"),
        (["--prompt", ""], "prompt must be a non-empty string"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(folders, tmp_path, monkeypatch, extra, message):
    register_verifier(monkeypatch, "brightness", Brightness)
    base = {"--model-path": str(folders["flux"]), "--prompt": PROMPT, "--dtype": "float32"}
    base.update(dict(zip(extra[::2], extra[1::2])))
    args = [
        "generate",
        "--model",
        "flux",
        *[x for kv in base.items() for x in kv],
        "--model-param",
        "height=32",
        "--model-param",
        "width=32",
        "--verifier",
        "brightness",
        "--budget",
        "8",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "out"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


@pytest.mark.parametrize("name", ["flux", "sd"])
def test_gradients_flow_from_images_to_the_noise(models, name):
    model = models[name]
    x = noise(model, seed=3).requires_grad_(True)
    sigma = model.schedule(2)[0]
    images = model.decode(model.denoise_grad(x, sigma, model.encode([PROMPT]), guidance=guidance_of(name)))
    (g,) = torch.autograd.grad(images.mean(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    # the gradient's value: a central finite difference along a random direction agrees with <g, d>
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(8))
    d = d / d.norm()
    h = 1e-2
    with torch.no_grad():
        cond = model.encode([PROMPT])

        def f(v):
            return float(model.decode(model.denoise(v, sigma, cond, guidance=guidance_of(name))).double().mean())

        fd = (f(x.detach() + h * d) - f(x.detach() - h * d)) / (2 * h)
    # float32 network: O(h^2) truncation plus rounding over a step of 1e-2; 5% of the slope (+ an absolute floor)
    assert abs(fd - float((g * d).sum())) <= 0.05 * abs(fd) + 1e-4, (fd, float((g * d).sum()))


@pytest.mark.parametrize(
    "offload,message",
    [
        ("disk", "unknown offload 'disk'; accepted: model, sequential"),
        ("model", "offload 'model' moves components between CPU and a GPU"),
    ],
)
def test_offload_options_are_checked(tmp_path, offload, message):
    """CPU offload is passed through to diffusers; here (no GPU) only its checks can run."""
    from noisesearch.errors import UserError
    from noisesearch.models import MODELS

    with pytest.raises(UserError, match=message):
        MODELS["sd"](path=tmp_path, offload=offload)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("name", ["flux", "sd"])
def test_every_search_algorithm_runs_unchanged_on_the_adapters(models, name, algorithm):
    """Each registered algorithm, default parameters, on a real-model adapter: within budget, an answer.

    ``sd`` runs with classifier-free guidance (2 NFEs per evaluation); evolution's and first-order's
    extra needs (preview schedules, gradients through the pipeline's networks) are exercised too.
    """
    model = models[name]
    budget = 64 * model.nfe_per_call(guidance_of(name))
    (result,) = run_search(
        model,
        Brightness(),
        build(algorithm),
        [PROMPT],
        seeds=[0],
        budget=budget,
        steps=4,
        guidance=guidance_of(name),
    )
    # every NFE is on a record and the budget is used to within one full candidate (4 steps); spending
    # more than the budget cannot happen (the accountant raises first), so it is not asserted
    full = 4 * model.nfe_per_call(guidance_of(name))
    assert budget - full < result.nfe_used == sum(c["nfe"] for c in result.candidates)
    assert result.best_image is not None and result.best_image.shape == (3, 32, 32)
    assert 0 <= float(result.best_image.min()) and float(result.best_image.max()) <= 1
    assert result.best_score == pytest.approx(float(result.best_image.mean()), abs=1e-6)  # Brightness, float32
