"""Faults around diffusers pipelines: pipeline arguments, model folders, stale prompt embeddings, non-finite scores.

- ``--pipeline-param`` / ``pipeline_kwargs``: every key and value is checked against the pipeline class's
  ``__call__`` signature and annotations (``models.generic.check_pipeline_kwargs``) before any weights load;
  an image argument is a path opened safely (a text file, a truncated file, an animated GIF, a 20000x20000
  PNG, an empty value are one line each).
- A pipeline folder with a garbage component config (not JSON, not an object, values of the wrong type):
  one line naming the file or the folder and component.
- A text encoder edited in place after ``from_pipeline``: the adapter's prompt embeddings are computed anew
  (and the replay cache's key changes with the weights).
- A verifier returning +inf or -inf: a failed score like NaN, never ``best_score`` +-1.797e308.

Every refusal is: exit code 2, exactly one ``error:`` line on stderr, nothing on stdout, no traceback,
nothing written under the test's folder (the ``--out`` folder and a ``--cache`` folder included).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import noisesearch as ns
from noisesearch.cli import app
from noisesearch.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402
import _tiny_pipelines_more as more  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)
PROMPT = "a red cube"
runner = CliRunner()


def brightness(images, prompts):
    return images.mean(dim=tuple(range(1, images.dim())))  # (B,)


@pytest.fixture
def bright(monkeypatch):
    """A registered verifier ``bright`` (mean brightness) for the CLI rows."""
    from noisesearch.verifiers import VERIFIERS
    from noisesearch.verifiers.custom import CallableVerifier

    def factory(*, path=None):
        """Mean brightness (tests only)."""
        return CallableVerifier(brightness, name="bright")

    factory.domain = None
    monkeypatch.setitem(VERIFIERS, "bright", factory)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Saved tiny pipeline folders (a ControlNet one run generic, an SD one run step-level, a FLUX one) and images."""
    root = tmp_path_factory.mktemp("pipes")
    more.sd_controlnet().save_pretrained(root / "cn")
    more.sd().save_pretrained(root / "sd")
    tiny.save_flux(root / "flux")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(root / "ok.png")
    (root / "text.txt").write_text("not an image\n")
    (root / "fake.png").write_text("not an image either\n")
    data = (root / "ok.png").read_bytes()
    (root / "trunc.png").write_bytes(data[: len(data) // 2])
    frames = [Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("1", (20000, 20000)).save(root / "bomb.png")  # 400 M pixels, about 50 KB on disk
    (root / "dir").mkdir()
    return root


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def check_one_error_line(result, words: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert words in lines[0], lines[0]
    assert result.stdout == "" and "Traceback" not in result.stderr


def generate_args(folder: Path, out: Path, *pipeline_params: str, model: str = "diffusers", cache=True) -> list[str]:
    args = ["generate", "--model", model, "--model-path", str(folder), "--prompt", PROMPT, "--budget", "4"]
    args += ["--steps", "2", "--verifier", "bright", "--out", str(out / "out")]
    args += ["--cache", str(out / "cache")] if cache else []
    args += ["--model-param", "height=32", "--model-param", "width=32"]
    for param in pipeline_params:
        args += ["--pipeline-param", param]
    return args


def no_loading(monkeypatch):
    """Make any pipeline load fail the test: the refusal must come before weights are read."""
    from noisesearch.models import _diffusers_common

    def refuse(*args, **kwargs):
        raise AssertionError("a pipeline was loaded before its arguments were checked")

    monkeypatch.setattr(_diffusers_common, "load_pipeline", refuse)


# (id, folder, --pipeline-param values with {name} = a file of the ``files`` fixture, words of the error line)
PARAMS = [
    ("image-text-file", "cn", ["image={text.txt}"], "image='{text.txt}' is not a readable image"),
    ("image-text-named-png", "cn", ["image={fake.png}"], "is not a readable image (cannot identify image file"),
    ("image-truncated-png", "cn", ["image={trunc.png}"], "is not a readable image (image file is truncated"),
    ("image-animated-gif", "cn", ["image={anim.gif}"], "is a GIF of 3 frames; accepted: a still image file"),
    ("image-20000x20000-png", "cn", ["image={bomb.png}"], "more than 89,478,485 pixels (PIL's decompression-bomb"),
    ("image-empty", "cn", ["image="], "pipeline argument image= is empty; accepted: a still image file"),
    ("image-a-folder", "cn", ["image={dir}"], "is a folder; accepted: a still image file"),
    ("image-missing-file", "cn", ["image={dir}/none.png"], "does not exist; accepted: a still image file"),
    ("image-a-number", "cn", ["image=5"], "image=5 does not fit StableDiffusionControlNetPipeline.__call__"),
    ("ip-adapter-image-text", "cn", ["image={ok.png}", "ip_adapter_image={text.txt}"], "ip_adapter_image="),
    ("height-word", "cn", ["image={ok.png}", "height=abc"], "height='abc' does not fit"),
    ("height-float", "cn", ["image={ok.png}", "height=2.5"], "it takes a positive integer"),
    ("height-zero", "cn", ["image={ok.png}", "height=0"], "height=0 must be a positive integer"),
    ("eta-word", "cn", ["image={ok.png}", "eta=abc"], "eta='abc' does not fit"),
    ("scale-list-of-words", "cn", ["image={ok.png}", 'controlnet_conditioning_scale=["a"]'], "a list of a finite"),
    ("guess-mode-number", "cn", ["image={ok.png}", "guess_mode=5"], "guess_mode=5 does not fit"),
    ("negative-prompt-number-generic", "cn", ["image={ok.png}", "negative_prompt=5"], "quote it as JSON"),
    ("negative-prompt-number-step", "sd", ["negative_prompt=5"], "negative_prompt=5 does not fit"),
    ("negative-prompt-bool-step", "sd", ["negative_prompt=true"], "it takes str or a list of str"),
    ("unknown-argument", "sd", ["no_such_arg=1"], "takes no argument 'no_such_arg'"),
    ("set-by-the-search", "cn", ["latents=1"], "is set by the search itself"),
]


def fill(text: str, files: Path) -> str:
    for p in files.iterdir():
        text = text.replace("{" + p.name + "}", str(p))
    return text


@pytest.mark.parametrize("name,folder,params,words", PARAMS, ids=[p[0] for p in PARAMS])
def test_a_bad_pipeline_param_is_one_line_before_any_load(
    tmp_path, files, bright, monkeypatch, name, folder, params, words
):
    no_loading(monkeypatch)
    before = snapshot(tmp_path)
    result = runner.invoke(app, generate_args(files / folder, tmp_path, *(fill(p, files) for p in params)))
    check_one_error_line(result, fill(words, files))
    assert snapshot(tmp_path) == before


def test_a_missing_required_image_is_one_line_not_a_pipeline_traceback(tmp_path, files, bright):
    """The ControlNet pipeline's own check (no image=) fires in the adapter's probe: one line, nothing written.

    (The probe runs once the pipeline is loaded, after a ``--cache`` folder is opened: not given here.)"""
    before = snapshot(tmp_path)
    result = runner.invoke(app, generate_args(files / "cn", tmp_path, cache=False))
    check_one_error_line(result, "refused its arguments before the first step (image must be passed")
    assert snapshot(tmp_path) == before


def test_good_pipeline_params_run_and_the_record_keeps_the_path(tmp_path, files, bright):
    args = generate_args(files / "cn", tmp_path, f"image={files / 'ok.png'}", "controlnet_conditioning_scale=1")
    result = runner.invoke(app, [*args, "--pipeline-param", 'negative_prompt="5"'])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    kwargs = record["model_options"]["pipeline_kwargs"]
    assert kwargs == {"image": str(files / "ok.png"), "controlnet_conditioning_scale": 1, "negative_prompt": "5"}


# a tiny FLUX folder with one file replaced: (id, relative path, new bytes or a config edit, words of the error line)
FOLDERS = [
    ("vae-config-not-json", "vae/config.json", b"{not json", "vae/config.json' is not valid JSON"),
    ("vae-config-not-utf8", "vae/config.json", b"\xff\xfe\x00garbage", "vae/config.json' is not valid JSON"),
    ("vae-config-a-list", "vae/config.json", b"[1, 2]", "vae/config.json' must hold a JSON object, not a list"),
    ("vae-config-wrong-type", "vae/config.json", {"block_out_channels": "abc"}, "(building its vae/ component)"),
    ("vae-config-negative", "vae/config.json", {"latent_channels": -3}, "(building its vae/ component)"),
    ("vae-config-empty-object", "vae/config.json", b"{}", "cannot load FluxPipeline from"),
    ("scheduler-config-garbage", "scheduler/scheduler_config.json", b"\x00\x01", "scheduler_config.json' is not valid"),
    ("model-index-a-list", "model_index.json", b"[1]", "model_index.json' must hold a JSON object, not a list"),
    ("model-index-no-class", "model_index.json", {"_class_name": None}, "names no pipeline class"),
    ("model-index-empty-spec", "model_index.json", {"vae": []}, "cannot load FluxPipeline from"),
    ("model-index-unknown-class", "model_index.json", {"vae": ["diffusers", "NoSuchVAE"]}, "building its vae/"),
]


def broken_copy(files: Path, tmp_path: Path, relative: str, change) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(files / "flux", folder)
    target = folder / relative
    if isinstance(change, bytes):
        target.write_bytes(change)
    else:
        config = json.loads(target.read_text())
        config.update(change)
        target.write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("name,relative,change,words", FOLDERS, ids=[f[0] for f in FOLDERS])
@pytest.mark.parametrize("model", ["diffusers", "flux"])
def test_a_garbage_model_folder_is_one_line_naming_it(tmp_path, files, bright, name, relative, change, words, model):
    folder = broken_copy(files, tmp_path, relative, change)
    before = snapshot(tmp_path)
    result = runner.invoke(app, generate_args(folder, tmp_path, model=model))
    check_one_error_line(result, words)
    assert str(folder) in result.stderr
    assert snapshot(tmp_path) == before


def test_pipeline_kwargs_are_checked_by_class_and_image_paths_opened(files):
    """The one check (CLI and Python alike) needs only the class: no pipeline object, no weights."""
    from diffusers import FluxPipeline, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    from noisesearch.models.generic import check_pipeline_kwargs

    ok = str(files / "ok.png")
    got = check_pipeline_kwargs(StableDiffusionControlNetPipeline, {"image": ok, "controlnet_conditioning_scale": 1})
    assert isinstance(got["image"], Image.Image) and got["image"].mode == "RGB" and got["image"].size == (32, 32)
    assert got["controlnet_conditioning_scale"] == 1  # an int where a float goes
    two = check_pipeline_kwargs(StableDiffusionControlNetPipeline, {"image": [ok, files / "ok.png"]})["image"]
    assert len(two) == 2 and all(isinstance(im, Image.Image) for im in two)  # a list of paths (MultiControlNet)
    tensor = torch.zeros(1, 3, 32, 32)
    assert check_pipeline_kwargs(StableDiffusionControlNetPipeline, {"image": tensor})["image"] is tensor
    keep = {"negative_prompt": None, "prompt_2": ["a", "b"], "joint_attention_kwargs": {"scale": 0.5}, "height": 32}
    assert check_pipeline_kwargs(FluxPipeline, keep) == keep
    refused = [
        (StableDiffusionPipeline, {"negative_prompt": 5}, "negative_prompt=5 does not fit StableDiffusionPipeline"),
        (StableDiffusionPipeline, {"guidance_rescale": math.nan}, "guidance_rescale=nan does not fit"),
        (StableDiffusionPipeline, {"guidance_rescale": "0.7"}, "it takes a finite number"),
        (StableDiffusionPipeline, {"clip_skip": True}, "clip_skip=True does not fit"),
        (StableDiffusionPipeline, {"width": 32.0}, "width=32.0 does not fit"),
        (FluxPipeline, {"prompt_2": [1, 2]}, "prompt_2=[1, 2] does not fit"),
        (FluxPipeline, {"joint_attention_kwargs": "scale"}, "it takes a dict"),
        (FluxPipeline, {"ip_adapter_image": str(files / "text.txt")}, "is not a readable image"),
        (StableDiffusionControlNetPipeline, {"image": [ok, ""]}, "image= is empty"),
        (StableDiffusionControlNetPipeline, "image=x.png", "must be a dict"),
    ]
    for cls, kwargs, words in refused:
        with pytest.raises(UserError) as info:
            check_pipeline_kwargs(cls, kwargs)
        assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_the_python_api_refuses_bad_pipeline_kwargs_before_any_work(files, tmp_path):
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(files / "sd")
    sd.set_progress_bar_config(disable=True)
    model = ns.from_pipeline(sd, height=32, width=32)
    for kwargs, words in (({"negative_prompt": 5}, "negative_prompt=5 does not fit"), ({"height": "abc"}, "height")):
        with pytest.raises(UserError, match=words):
            ns.search(
                model, PROMPT, verifier=brightness, budget=4, steps=2, pipeline_kwargs=kwargs, cache=tmp_path / "c"
            )
    cn = StableDiffusionControlNetPipeline.from_pretrained(files / "cn")
    with pytest.raises(UserError, match="is a GIF of 3 frames"):
        ns.from_pipeline(cn, adapter="generic", pipeline_kwargs={"image": str(files / "anim.gif")})
    assert list(tmp_path.iterdir()) == []  # no cache folder for a refused search
    generic = ns.from_pipeline(cn, adapter="generic", height=32, width=32, pipeline_kwargs={"image": files / "ok.png"})
    assert isinstance(generic.pipeline_kwargs["image"], Image.Image)  # a path from Python is opened too


def _edit_text_encoder(pipe) -> None:
    """Double the final layer norm's weight of the pipeline's last text encoder, in place, through ``.data``
    (FLUX: the T5 encoder, which gives the token embeddings; SD: its CLIP encoder)."""
    encoder = pipe.text_encoder_2 if getattr(pipe, "text_encoder_2", None) is not None else pipe.text_encoder
    (weight,) = [p for name, p in encoder.named_parameters() if name.endswith("final_layer_norm.weight")]
    weight.data.mul_(2)


EMBEDS = {"flux": "prompt_embeds", "sd": "embeds"}


@pytest.mark.parametrize("family", ["flux", "sd"])
def test_an_edited_text_encoder_gives_fresh_prompt_embeddings(family):
    from noisesearch.cache import model_identity

    pipe = getattr(more, family)()
    model = ns.from_pipeline(pipe, height=32, width=32)
    key = EMBEDS[family]
    before = model.encode([PROMPT])[key].clone()
    identity = model_identity(model)
    _edit_text_encoder(pipe)
    after = model.encode([PROMPT])[key]
    fresh = ns.from_pipeline(pipe, height=32, width=32).encode([PROMPT])[key]  # a new adapter: nothing kept
    assert (after - before).abs().max() > 1e-3  # the edit changes the embeddings
    assert (after - fresh).abs().max() <= 1e-6  # same calls on the same weights; margin for nothing but safety
    assert model_identity(model) != identity  # and the replay cache's key moved with the weights


def test_a_replaced_text_encoder_gives_fresh_prompt_embeddings():
    pipe = more.flux()
    model = ns.from_pipeline(pipe, height=32, width=32)
    before = model.encode([PROMPT])["prompt_embeds"].clone()
    pipe.text_encoder_2 = more.flux(seed=1).text_encoder_2  # another encoder (same shapes) put in its place
    after = model.encode([PROMPT])["prompt_embeds"]
    fresh = ns.from_pipeline(pipe, height=32, width=32).encode([PROMPT])["prompt_embeds"]
    assert (after - before).abs().max() > 1e-3 and (after - fresh).abs().max() <= 1e-6  # as above


def test_the_replay_cache_stores_no_stale_embeddings_after_an_edit(tmp_path):
    """Search, edit the text encoder in place, search again with the same cache: the second search must match a
    search by a new adapter on the edited pipeline without any cache (not the first search's images)."""
    pipe = more.flux()
    model = ns.from_pipeline(pipe, height=32, width=32)
    run = dict(verifier=brightness, budget=4, steps=2, keep_images=True)
    (first,) = ns.search(model, PROMPT, cache=tmp_path / "cache", **run)
    _edit_text_encoder(pipe)
    (second,) = ns.search(model, PROMPT, cache=tmp_path / "cache", **run)
    assert second.record["replayed"] == 0  # a new model identity: nothing replayed
    (fresh,) = ns.search(ns.from_pipeline(pipe, height=32, width=32), PROMPT, **run)
    for k in fresh.images:
        assert (second.images[k] - fresh.images[k]).abs().max() <= 1e-5  # same ops; batching may differ
        assert (second.images[k] - first.images[k]).abs().max() > 1e-4  # the edit shows in the images
    (third,) = ns.search(model, PROMPT, cache=tmp_path / "cache", **run)
    assert third.record["replayed"] == len(fresh.images)  # entries under the new key are the fresh ones
    assert third.best_score == pytest.approx(fresh.best_score, abs=1e-5)  # a replay vs a computation


def scores_with(value: float, where: str):
    """A verifier: brightness, with ``value`` at the first image of each call ("first") or at every image ("all")."""

    def verifier(images, targets):
        s = brightness(images, targets).clone()
        if where == "all":
            s[:] = value
        else:
            s[0] = value
        return s

    return verifier


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_score_is_a_failed_score_never_the_best(digits, value):
    (r,) = ns.search(digits, 3, verifier=scores_with(value, "first"), budget=32, steps=4)
    scores = [c["score"] for c in r.candidates]
    assert scores[0] is None and all(s is not None and math.isfinite(s) for s in scores[1:])
    assert r.nan_scores == 1 and r.best_index != 0
    assert r.best_score == max(scores[1:]) and r.record["best_score"] == r.best_score
    json.dumps(r.record, allow_nan=False)  # strict JSON: no inf or 1.797e308 anywhere


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_an_infinite_score_everywhere_gives_no_best(digits, value):
    (r,) = ns.search(digits, 3, verifier=scores_with(value, "all"), budget=32, steps=4)
    assert r.record["best_score"] is None and r.best_image is None and r.best_index == -1
    assert r.nan_scores == 8 and all(c["score"] is None for c in r.candidates)
    assert r.best_score == -math.inf  # the SearchResult's "nothing found", as for all-NaN scores
    json.dumps(r.record, allow_nan=False)


def test_zero_order_never_pivots_on_an_infinite_score(digits):
    (r,) = ns.search(
        digits, 3, verifier=scores_with(math.inf, "first"), algorithm="zero-order", budget=48, steps=4, neighbours=2
    )
    assert all(abs(c["score"] or 0) < 1e300 for c in r.candidates) and math.isfinite(r.best_score)


def test_rank_values_ranks_every_non_finite_score_last():
    from noisesearch.algorithms.base import failed_as_nan, first_best, rank_values

    scores = torch.tensor([1.0, math.inf, -math.inf, math.nan, 2.0])
    assert rank_values(scores).tolist() == [1.0, -math.inf, -math.inf, -math.inf, 2.0]
    assert int(first_best(torch.tensor([math.inf, 0.5]))) == 1
    assert torch.isnan(failed_as_nan(scores)).tolist() == [False, True, True, True, False]


def test_cli_with_an_infinite_score_everywhere_exits_1_with_an_honest_record(tmp_path, monkeypatch):
    from noisesearch.verifiers import VERIFIERS
    from noisesearch.verifiers.custom import CallableVerifier

    def factory(*, path=None):
        """+inf for every image (tests only)."""
        return CallableVerifier(scores_with(math.inf, "all"), name="infinite")

    factory.domain = None
    monkeypatch.setitem(VERIFIERS, "infinite", factory)
    out = tmp_path / "out"
    args = ["generate", "--target", "7", "--budget", "64", "--steps", "8", "--verifier", "infinite", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "every candidate's score failed (8 NaN or infinite scores)" in result.stderr
    text = (out / "record.json").read_text()
    record = json.loads(text)
    assert record["best_score"] is None and record["nan_scores"] == 8 and "e+308" not in text
    assert sorted(p.name for p in out.iterdir()) == ["record.json"]
