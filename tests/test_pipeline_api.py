"""The Python front door on tiny pipelines built in code: ``from_pipeline``, the generic adapter, ``search``.

The generic adapter runs whole candidates through a pipeline's own ``__call__``: each candidate must
equal ``pipe(..., latents=its noise)``, its NFEs must equal the denoiser rows a hook saw, and on the
classes with a step-level adapter both paths must agree. Images are compared to 1e-5: the same
float32 operations on a CPU, only batched differently (a row of a batch of 3 vs a batch of 1).
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import noisesearch as ns
from noisesearch.errors import BudgetExceeded, UserError

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402
import _tiny_pipelines_more as more  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)
SIZE = {"height": 32, "width": 32}
PROMPT = "a red cube"
TOL = 1e-5  # same float32 CPU operations, batched differently

# pipeline class without a step-level adapter -> (builder, extra __call__ arguments, rows per candidate and step)
GENERIC = {
    "StableDiffusionControlNetPipeline": (more.sd_controlnet, {"image": "control"}, 2),
    "StableDiffusionPAGPipeline": (more.sd_pag, {}, 3),  # unconditional, conditional, perturbed
    "PixArtAlphaPipeline": (more.pixart_alpha, {"use_resolution_binning": False}, 2),
    "AuraFlowPipeline": (more.auraflow, {}, 2),
    "WanPipeline": (more.wan, {"num_frames": 5}, 2),  # video; conditional and unconditional as two calls
}


def brightness(images, prompts):
    return images.mean(dim=tuple(range(1, images.dim())))  # (B,)


def control_image():
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def extras(spec: dict) -> dict:
    return {k: control_image() if v == "control" else v for k, v in spec.items()}


@pytest.fixture(scope="module")
def generic_pipes():
    return {name: builder() for name, (builder, _, _) in GENERIC.items()}


@pytest.fixture(scope="module")
def step_pipes(tmp_path_factory):
    from diffusers import DiTPipeline, PixArtSigmaPipeline, StableDiffusionXLPipeline

    root = tmp_path_factory.mktemp("step")
    pipes = {"FluxPipeline": more.flux(), "StableDiffusionPipeline": more.sd()}
    for cls, save in ((StableDiffusionXLPipeline, tiny.save_sdxl), (PixArtSigmaPipeline, tiny.save_pixart)):
        pipes[cls.__name__] = cls.from_pretrained(save(root / cls.__name__))
    pipes["DiTPipeline"] = DiTPipeline.from_pretrained(tiny.save_dit(root / "dit"))
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def count_rows(model):
    """A list that collects the batch rows of every denoiser call of ``model``'s pipeline, and the hook handles."""
    rows: list[int] = []

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        rows.append(len(x))

    handles = [net.register_forward_pre_hook(hook, with_kwargs=True) for net in model.denoisers]
    return rows, handles


def regenerate(pipe, candidate, kwargs, steps=2):
    """Exactly the README's three lines: the seed and shape of a record -> the candidate's image."""
    shape, seed = candidate["latent_shape"], candidate["noise_seed"]
    latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    out = pipe(PROMPT, latents=latents, num_inference_steps=steps, output_type="pt", return_dict=False, **kwargs)[0]
    return out[0].permute(1, 0, 2, 3) if out.dim() == 5 else out[0]  # a video (F, C, H, W) -> (C, F, H, W)


@pytest.mark.parametrize("name", list(GENERIC))
def test_generic_candidates_are_the_pipelines_own_images(generic_pipes, name):
    pipe, (_, spec, rows_per_step) = generic_pipes[name], GENERIC[name]
    kwargs = {**SIZE, **extras(spec)}
    model = ns.from_pipeline(pipe, adapter="generic", pipeline_kwargs=kwargs)  # WanPipeline also has a step one
    assert model.adapter == "generic" and model.pipe is pipe
    assert model.nfe_per_call(model.default_guidance) == rows_per_step
    cost = 2 * rows_per_step  # 2 steps
    rows, handles = count_rows(model)
    try:
        (result,) = ns.search(model, [PROMPT], verifier=brightness, budget=3 * cost + 1, steps=2, keep_images=True)
    finally:
        for h in handles:
            h.remove()
    assert result.nfe_used == sum(rows) == 3 * cost  # exact: the budget pays 3 candidates, 1 NFE is left
    assert [c["nfe"] for c in result.candidates] == [cost] * 3
    assert result.record["adapter"] == "generic" and result.record["nfe_used"] == 3 * cost
    for c in result.candidates:
        assert c["latent_shape"] == [1, *model.noise_shape]
        assert (regenerate(pipe, c, kwargs) - result.images[c["index"]]).abs().max() <= TOL
    video = name == "WanPipeline"
    assert result.best_image.shape == ((3, 5, 32, 32) if video else (3, 32, 32))
    assert 0 <= float(result.best_image.min()) and float(result.best_image.max()) <= 1


def test_two_prompts_in_one_batch_match_each_alone(generic_pipes):
    pipe = generic_pipes["AuraFlowPipeline"]
    model = ns.from_pipeline(pipe, **SIZE)
    noise = torch.randn(3, *model.noise_shape, generator=torch.Generator().manual_seed(3))
    planned = 3 * 2 * model.nfe_per_call(model.default_guidance)
    images, rows = model.trajectories(noise, [PROMPT, "a blue cat", PROMPT], steps=2, guidance=3.5, rows=planned)
    alone, _ = model.trajectories(noise[1:2], ["a blue cat"], steps=2, guidance=3.5, rows=planned // 3)
    assert rows == planned
    assert (images[1] - alone[0]).abs().max() <= TOL
    assert not torch.allclose(images[0], images[1])


STEP_OPTIONS = {
    "FluxPipeline": {"max_sequence_length": 16},
    "PixArtSigmaPipeline": {"max_sequence_length": 16},
}
CALL_OPTIONS = {
    "FluxPipeline": {"max_sequence_length": 16},
    "PixArtSigmaPipeline": {"max_sequence_length": 16, "use_resolution_binning": False},
}


@pytest.mark.parametrize(
    "name", ["FluxPipeline", "StableDiffusionPipeline", "StableDiffusionXLPipeline", "PixArtSigmaPipeline"]
)
def test_generic_and_step_level_agree(step_pipes, name):
    pipe = step_pipes[name]
    step = ns.from_pipeline(pipe, **SIZE, **STEP_OPTIONS.get(name, {}))
    generic = ns.from_pipeline(pipe, adapter="generic", **SIZE, pipeline_kwargs=CALL_OPTIONS.get(name, {}))
    assert step.adapter == "step" and generic.adapter == "generic"
    g = step.default_guidance
    assert generic.nfe_per_call(g) == step.nfe_per_call(g)
    runs = {}
    for kind, model in (("step", step), ("generic", generic)):
        (runs[kind],) = ns.search(model, [PROMPT], verifier=brightness, budget=12, steps=2, keep_images=True)
    assert runs["step"].nfe_used == runs["generic"].nfe_used == 12
    if name == "FluxPipeline":  # the step adapter draws unpacked noise: compare on the same (packed) noise
        from noisesearch.models.flux import _pack

        noise = torch.randn(2, *step.noise_shape, generator=torch.Generator().manual_seed(1))
        cost = 2 * step.nfe_per_call(g)
        images, _ = generic.trajectories(_pack(noise), [PROMPT] * 2, steps=2, guidance=g, rows=2 * cost)
        sigmas = step.schedule(2)
        from noisesearch.samplers import sample_euler

        cond = step.encode([PROMPT] * 2)
        x = sample_euler(lambda x, s: step.denoise(x, s, cond, guidance=g), noise, sigmas)
        assert (step.decode(x) - images).abs().max() <= 1e-4  # FLUX's own loop vs ours: 1e-4 as in its tests
        return
    for k, image in runs["step"].images.items():
        assert (image - runs["generic"].images[k]).abs().max() <= 1e-4  # DDIM in RF form vs diffusers' DDIM


def test_step_level_winner_regenerates_in_plain_diffusers(step_pipes):
    pipe = step_pipes["StableDiffusionPipeline"]  # DDIM already: the record's note asks for it
    (result,) = ns.search(ns.from_pipeline(pipe, **SIZE), [PROMPT], verifier=brightness, budget=12, steps=2)
    best = result.candidates[result.best_index]
    assert (regenerate(pipe, best, SIZE) - result.best_image).abs().max() <= 1e-4  # DDIM in RF form, as above
    flux = step_pipes["FluxPipeline"]
    model = ns.from_pipeline(flux, **SIZE, max_sequence_length=16)
    (result,) = ns.search(model, [PROMPT], verifier=brightness, budget=6, steps=2)
    best = result.candidates[result.best_index]
    z = torch.randn(best["latent_shape"], generator=torch.Generator("cpu").manual_seed(best["noise_seed"]))
    c, h, w = best["latent_shape"][1:]
    assert "_pack_latents" in result.record["latents"]
    latents = flux._pack_latents(z, 1, c, h, w)
    image = flux(PROMPT, latents=latents, num_inference_steps=2, output_type="pt", max_sequence_length=16, **SIZE)
    assert (image.images[0] - result.best_image).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "name",
    ["FluxPipeline", "StableDiffusionPipeline", "StableDiffusionXLPipeline", "PixArtSigmaPipeline", "DiTPipeline"],
)
def test_from_pipeline_keeps_the_object(step_pipes, name):
    pipe = step_pipes[name]
    before = {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}
    params = {k: [p.data_ptr() for p in v.parameters()] for k, v in before.items()}
    size = {} if name == "DiTPipeline" else SIZE
    model = ns.from_pipeline(pipe, **size)
    assert model.adapter == "step" and model.pipe is pipe
    for key, module in before.items():
        assert getattr(pipe, key) is module
        assert [p.data_ptr() for p in module.parameters()] == params[key]


def lora_state_dict(transformer, rank: int = 2, seed: int = 7) -> dict:
    """A LoRA in diffusers' FLUX key format on every attention projection: seeded A, non-zero B (so it changes images)."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in transformer.named_modules():
        if name.endswith(("attn.to_q", "attn.to_k", "attn.to_v")):
            out_features, in_features = module.weight.shape
            weights[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, in_features, generator=g) * 0.5
            weights[f"transformer.{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=g) * 0.5
    return weights


def test_lora_changes_images_as_the_pipeline_does(step_pipes):
    pytest.importorskip("peft", reason="peft is not installed in this environment (LoRA loading needs it)")
    pipe = step_pipes["FluxPipeline"]  # shared (building one costs seconds): the LoRA is unloaded at the end
    options = {**SIZE, "max_sequence_length": 16}

    def run():
        (result,) = ns.search(
            ns.from_pipeline(pipe, **options), [PROMPT], verifier=brightness, budget=6, steps=2, keep_images=True
        )
        return result

    plain = run()
    transformer = pipe.transformer
    lora = lora_state_dict(transformer)
    assert len(lora) == 2 * 3 * 2  # 2 blocks (one double, one single) x q, k, v x A, B
    pipe.load_lora_weights(lora)
    try:
        model = ns.from_pipeline(pipe, **options)
        assert model.pipe is pipe and pipe.transformer is transformer  # the LoRA'd object itself, not a copy
        result = run()
        best = result.candidates[result.best_index]
        z = torch.randn(best["latent_shape"], generator=torch.Generator("cpu").manual_seed(best["noise_seed"]))
        c, h, w = best["latent_shape"][1:]
        out = pipe(
            PROMPT, latents=pipe._pack_latents(z, 1, c, h, w), num_inference_steps=2, output_type="pt", **options
        )
    finally:
        pipe.unload_lora_weights()
    assert result.nfe_used == 6 and sorted(result.images) == sorted(plain.images) == [0, 1, 2]
    tol = 1e-4  # FLUX's own loop vs ours on a CPU, as in test_step_level_winner_regenerates_in_plain_diffusers
    assert (out.images[0] - result.best_image).abs().max() <= tol
    for k, image in result.images.items():  # same seeds, same candidates: only the LoRA differs
        assert (image - plain.images[k]).abs().max() > 100 * tol
    unloaded = run()  # the shared pipeline is itself again
    assert all((unloaded.images[k] - plain.images[k]).abs().max() <= TOL for k in plain.images)


def test_callable_verifier_batches_on_its_device_and_nan_never_wins(generic_pipes):
    model = ns.from_pipeline(generic_pipes["AuraFlowPipeline"], **SIZE)
    calls = []

    def reward(images, prompts):
        calls.append((len(images), images.device, list(prompts)))
        scores = images.mean(dim=(1, 2, 3))
        scores[0] = float("nan")  # the first image of every call fails
        return scores

    (result,) = ns.search(
        model, PROMPT, verifier=reward, budget=12, steps=2, verifier_options={"batch": 2, "device": "cpu"}
    )
    assert [n for n, _, _ in calls] == [2, 1] and all(d == torch.device("cpu") for _, d, _ in calls)
    assert calls[0][2] == [PROMPT, PROMPT]
    assert result.nan_scores == 2 and result.record["verifier"] == "reward"
    assert result.best_index == 1 and math.isfinite(result.best_score)
    assert result.candidates[0]["score"] is None
    json.dumps(result.record)  # JSON-ready


def test_bad_inputs_are_one_line(generic_pipes, step_pipes):
    aura = generic_pipes["AuraFlowPipeline"]
    cases = [
        (lambda: ns.from_pipeline(step_pipes["DiTPipeline"], adapter="generic"), "takes no latents="),
        (lambda: ns.from_pipeline(torch.nn.Linear(2, 2)), "takes a diffusers pipeline object, got a Linear"),
        (lambda: ns.search(object(), PROMPT, verifier=brightness, budget=4), "got a object"),
        (
            lambda: ns.search(aura, PROMPT, verifier=lambda im, p: im.mean(), budget=4, steps=2, **SIZE_ALG),
            "returned shape () for 1 images",
        ),
        (lambda: ns.from_pipeline(aura, pipeline_kwargs={"control_scale": 1.0}), "takes no argument 'control_scale'"),
        (lambda: ns.from_pipeline(aura, pipeline_kwargs={"latents": None}), "set by the search itself"),
        (
            lambda: ns.search(
                ns.from_pipeline(aura, **SIZE), PROMPT, verifier=brightness, budget=8, steps=2, algorithm="paths"
            ),
            "step-level adapters: FluxPipeline",
        ),
        (lambda: ns.search(aura, PROMPT, verifier="no-such", budget=4), "unknown verifier 'no-such'"),
        (
            lambda: ns.search(aura, PROMPT, verifier=brightness, budget=8, algorithm="evolution"),
            "accepted here: random",
        ),
        (lambda: ns.search(aura, PROMPT, verifier=brightness, budget=8, sampler="heun"), "own scheduler runs"),
        (lambda: ns.search(aura, PROMPT, verifier=brightness, budget=8, seed=2**70), "seed must be an integer"),
        (lambda: ns.search(aura, PROMPT, verifier=brightness, budget=10**13), "more than this machine's memory"),
        (lambda: ns.search(aura, PROMPT, verifier=brightness, budget=8, guidance=float("nan")), "finite number"),
        (
            lambda: ns.from_pipeline(step_pipes["StableDiffusionPipeline"], pipeline_kwargs={"eta": 0.5}),
            "use ns.from_pipeline(pipe, adapter='generic')",
        ),
    ]
    for fn, message in cases:
        with pytest.raises(UserError) as info:
            fn()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


SIZE_ALG = {"pipeline_kwargs": SIZE, "candidates": 1}


def test_a_pipeline_that_runs_more_rows_than_planned_is_stopped(generic_pipes):
    model = ns.from_pipeline(generic_pipes["AuraFlowPipeline"], **SIZE)
    shape, rows = model._probe(3.5)
    model._probes[3.5] = (shape, rows - 1)  # a cost model that under-counts: 1 row per step instead of 2
    with pytest.raises(BudgetExceeded, match="more than the 2 planned"):
        ns.search(model, PROMPT, verifier=brightness, budget=2, steps=2)


def test_cli_generate_on_a_pipeline_folder(tmp_path, monkeypatch):
    from PIL import Image

    from noisesearch.cli import app

    folder = tmp_path / "cn"
    more.sd_controlnet().save_pretrained(folder)
    control = tmp_path / "control.png"
    Image.fromarray((control_image()[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(control)
    model_index = json.loads((folder / "model_index.json").read_text())
    assert model_index["_class_name"] == "StableDiffusionControlNetPipeline"
    args = ["generate", "--model", "diffusers", "--model-path", str(folder), "--prompt", PROMPT, "--budget", "8"]
    args += ["--steps", "2", "--verifier", "brightness-test", "--out", str(tmp_path / "out")]
    args += ["--model-param", "height=32", "--model-param", "width=32", "--pipeline-param", f"image={control}"]
    args += ["--pipeline-param", "controlnet_conditioning_scale=0.5"]
    from noisesearch.verifiers import VERIFIERS

    def factory(*, path=None):
        """Mean brightness (tests only)."""
        from noisesearch.verifiers.custom import CallableVerifier

        return CallableVerifier(brightness, name="brightness-test")

    factory.domain = None
    monkeypatch.setitem(VERIFIERS, "brightness-test", factory)
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["adapter"] == "generic" and record["nfe_used"] == 8 and len(record["candidates"]) == 2
    assert record["model_options"]["pipeline_kwargs"]["image"] == str(control)
    listing = CliRunner().invoke(app, ["list"]).output
    assert "FluxPipeline, StableDiffusionPipeline" in listing
    bad = CliRunner().invoke(app, [*args[:-2], "--pipeline-param", "no_such_arg=1"])
    assert bad.exit_code == 2 and "takes no argument 'no_such_arg'" in bad.output


def test_negative_prompt_passes_through_both_adapters(step_pipes):
    pipe, extra = step_pipes["StableDiffusionPipeline"], {"negative_prompt": "a blue cat"}
    runs = {}
    for adapter in ("step", "generic"):
        model = ns.from_pipeline(pipe, adapter=adapter, **SIZE)
        (runs[adapter],) = ns.search(
            model, PROMPT, verifier=brightness, budget=4, steps=2, pipeline_kwargs=extra, keep_images=True
        )
    (plain,) = ns.search(ns.from_pipeline(pipe, **SIZE), PROMPT, verifier=brightness, budget=4, steps=2)
    assert (runs["step"].images[0] - runs["generic"].images[0]).abs().max() <= 1e-4  # DDIM in RF form, as above
    assert (runs["step"].images[0] - plain.best_image).abs().max() > 1e-3  # the negative prompt mattered
    assert runs["generic"].record["pipeline_kwargs"] == extra


def test_unknown_adapter_options_and_bad_video_sizes_are_one_line(step_pipes, generic_pipes, tmp_path):
    from noisesearch.models import MODELS

    cases = [
        (lambda: ns.from_pipeline(step_pipes["DiTPipeline"], height=32), "step-level adapter for DiTPipeline"),
        (lambda: ns.from_pipeline(generic_pipes["AuraFlowPipeline"], decode_batch=2), "takes no option 'decode_batch'"),
        (lambda: ns.from_pipeline(step_pipes["FluxPipeline"], adapter="sideways"), "unknown adapter 'sideways'"),
    ]
    generic_pipes["WanPipeline"].save_pretrained(tmp_path / "wan")
    cases.append((lambda: MODELS["diffusers"](path=tmp_path / "wan", height=24, width=32), "height 24 is not"))
    for fn, message in cases:
        with pytest.raises(UserError) as info:
            fn()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
