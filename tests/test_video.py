"""Video as a sample: image verifiers on chosen frames (``verifiers/video.py``) and video outputs (``_video_io.py``).

A brightness verifier picks the video whose chosen frames are brightest, for every choice of frames and
combination, on hand-built videos where the choice changes the winner, in one verifier call over all frames; the
same through ``run_search`` on tiny Wan (previews are videos, sliced alike); refusals are one line before any work;
``generate`` through the CLI writes a lossless animated ``best.webp`` (reopened: its frames are the best video's)
and keyframe strips.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import noisesearch as ns
from noisesearch.errors import UserError
from noisesearch.models import MODELS
from noisesearch.verifiers.video import FrameVerifier, keyframe_indices

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_wan as tiny  # noqa: E402
from _tiny_verifiers import Brightness, FailingVerifier, tiny_clip  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)
PROMPT = "a red cube"


# frame brightness of three hand-built videos of 5 frames: which is brightest depends on the frames chosen
LEVELS = torch.tensor(
    [
        [0.9, 0.1, 0.1, 0.1, 0.9],  # bright ends
        [0.5, 0.5, 0.5, 0.5, 0.5],  # even
        [0.2, 0.9, 0.9, 0.9, 0.2],  # bright middle
    ]
)
# (frames, combine) -> the winner and the keyframes; hand-computed from LEVELS
WINNERS = {
    (2, "mean"): (0, [0, 4]),  # 0.9, 0.5, 0.2
    (2, "min"): (0, [0, 4]),
    (3, "mean"): (0, [0, 2, 4]),  # 0.63, 0.5, 0.43
    (3, "min"): (1, [0, 2, 4]),  # 0.1, 0.5, 0.2
    (1, "mean"): (2, [2]),  # the middle frame: 0.1, 0.5, 0.9
    ("all", "mean"): (2, [0, 1, 2, 3, 4]),  # 0.42, 0.5, 0.62
    ("all", "min"): (1, [0, 1, 2, 3, 4]),  # 0.1, 0.5, 0.2
}


def videos():
    return LEVELS[:, None, :, None, None].expand(3, 3, 5, 4, 6).clone()  # (B, C, F, H, W), each frame flat


@pytest.mark.parametrize("frames, combine", list(WINNERS))
def test_brightest_keyframes_win_whichever_frames_are_chosen(frames, combine):
    inner = Brightness()
    verifier = FrameVerifier(inner, 5, frames=frames, combine=combine)
    scores = verifier(videos(), ["a", "b", "c"])
    winner, indices = WINNERS[(frames, combine)]
    assert verifier.indices == indices and int(scores.argmax()) == winner
    chosen = LEVELS[:, indices]  # (B, k): computed apart from the wrapper
    expected = chosen.mean(dim=1) if combine == "mean" else chosen.min(dim=1).values
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)  # a mean of a few float32 values
    assert inner.calls == [((3 * len(indices), 3, 4, 6), None)]  # one call over every chosen frame


def test_keyframes_are_evenly_spaced_with_both_ends():
    assert keyframe_indices(81, 4) == [0, 27, 53, 80]
    assert keyframe_indices(9, 3) == [0, 4, 8] and keyframe_indices(9, 1) == [4] and keyframe_indices(3, 8) == [0, 1, 2]
    assert keyframe_indices(5, "all") == [0, 1, 2, 3, 4]


def test_a_failed_frame_fails_its_video_only():
    def frame_1(images, targets):  # frame 1 of video 0 (frames are grouped video by video)
        return torch.arange(len(images)) == 1

    for combine in ("mean", "min"):
        scores = FrameVerifier(FailingVerifier(fails=frame_1), 5, frames="all", combine=combine)(
            videos(), ["a", "b", "c"]
        )
        assert torch.isnan(scores[0]) and not torch.isnan(scores[1:]).any()


@pytest.fixture(scope="module")
def wan():
    return tiny.wan()


def wan_model(pipe, frames=5):
    return ns.from_pipeline(pipe, height=16, width=16, num_frames=frames, max_sequence_length=16)


def test_search_on_video_scores_frames_and_keeps_the_brightest(wan):
    """Through ``ns.search``: the record's scores are the min brightness of keyframes 0 and 8 of 9 frames."""
    inner = Brightness()
    (result,) = ns.search(
        wan_model(wan, 9),
        PROMPT,
        verifier=inner,
        verifier_options={"frames": 2, "combine": "min"},
        budget=24,
        steps=2,
        guidance=5.0,
        keep_images=True,
    )
    assert len(result.candidates) == 6 and inner.calls == [((12, 3, 16, 16), None)]  # 6 videos x 2 frames, 1 call
    for c in result.candidates:
        video = result.images[c["index"]]  # (C, F, H, W)
        by_hand = min(float(video[:, 0].mean()), float(video[:, 8].mean()))
        assert abs(c["score"] - by_hand) <= 1e-6  # the same float32 means, in another order
    best = max(result.candidates, key=lambda c: c["score"])
    assert result.best_index == best["index"] and torch.equal(result.best_image, result.images[best["index"]])
    assert result.record["verifier_frames"] == {"frames": 2, "frame_indices": [0, 8], "combine": "min"}


def test_previews_of_a_video_are_videos_sliced_like_it(wan):
    class Previewed(Brightness):
        preview_sigma = 0.5

    inner = Previewed()
    (result,) = ns.search(wan_model(wan), PROMPT, verifier=inner, budget=8, steps=4, guidance=1.0)
    assert inner.calls == [((8, 3, 16, 16), (8, 3, 16, 16))]  # 2 videos x 4 keyframes, previews alike
    assert result.record["verifier_frames"]["frame_indices"] == [0, 1, 3, 4]  # the default: 4 keyframes of 5


def test_refusals_are_one_line_before_any_work(wan):
    class SetJudge(Brightness):
        takes_frames = False  # e.g. it compares a set of images: frames one by one mean nothing to it

    class DigitsOnly(Brightness):
        domain = "digits"

    model = wan_model(wan)
    rows = []
    hook = wan.transformer.register_forward_pre_hook(lambda m, a, k: rows.append(1), with_kwargs=True)
    cases = [
        ({"verifier": SetJudge()}, "verifier 'brightness' cannot score a video's frames one by one"),
        ({"verifier": DigitsOnly()}, "verifier 'brightness' scores digits images only; wan makes videos"),
        ({"verifier": Brightness(), "verifier_options": {"frames": 6}}, "frames=6 asks for more keyframes than the 5"),
        ({"verifier": Brightness(), "verifier_options": {"frames": 0}}, "frames=0 is not accepted"),
        ({"verifier": Brightness(), "verifier_options": {"frames": "some"}}, "frames='some' is not accepted"),
        ({"verifier": Brightness(), "verifier_options": {"combine": "max"}}, "combine='max' is not accepted"),
    ]
    try:
        for kwargs, message in cases:
            with pytest.raises(UserError) as err:
                ns.search(model, PROMPT, budget=8, steps=2, **kwargs)
            assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    finally:
        hook.remove()
    assert rows == []  # refused before any denoiser call
    with pytest.raises(UserError, match="frames/combine are for video models; toy makes images"):
        ns.search(MODELS["toy"](), 1, verifier=Brightness(), verifier_options={"frames": 2}, budget=4, steps=2)


def test_per_candidate_keyframe_strips(wan, tmp_path):
    from noisesearch._video_io import write_video_outputs

    inner = Brightness()
    (result,) = ns.search(wan_model(wan), PROMPT, verifier=inner, budget=6, steps=2, guidance=1.0, keep_images=True)
    verifier = FrameVerifier(inner, 5, frames=3)
    note = write_video_outputs(tmp_path, result, verifier)
    assert note == {
        "path": "best.webp",
        "frames": 5,
        "fps": 16,
        "keyframes": "keyframes.png",
        "keyframe_indices": [0, 2, 4],
    }
    for c in result.candidates:
        strip = np.asarray(Image.open(tmp_path / c["keyframes"]))  # (16, 3 x 16, 3)
        video = result.images[c["index"]]
        expected = torch.cat([video[:, i] for i in (0, 2, 4)], dim=2).permute(1, 2, 0).numpy() * 255
        assert strip.shape == (16, 48, 3) and np.abs(strip - expected).max() <= 0.5 + 1e-4  # 8-bit rounding


def test_generate_through_the_cli_writes_a_playable_webp_and_the_keyframe_strip(tmp_path):
    """CLI end to end on a saved tiny Wan folder and a tiny CLIP: the WebP reopens with the best video's frames."""
    from noisesearch.cli import app

    tiny.wan().save_pretrained(tmp_path / "wan")
    clip = tiny_clip(tmp_path / "clip")
    out = tmp_path / "out"
    args = [
        "generate",
        *("--model", "wan", "--model-path", tmp_path / "wan", "--prompt", PROMPT, "--out", out),
        *("--verifier", "clipscore", "--verifier-path", clip, "--budget", 8, "--steps", 2, "--guidance", 4.0),
        *("--model-param", "num_frames=9", "--model-param", "height=16", "--model-param", "width=32"),
        *("--model-param", "max_sequence_length=16", "--verifier-param", "frames=3", "--verifier-param", "combine=min"),
    ]
    run = CliRunner().invoke(app, [str(a) for a in args])
    assert run.exit_code == 0, run.output
    assert "best.webp" in run.output
    record = json.loads((out / "record.json").read_text())
    assert record["video"] == {
        "path": "best.webp",
        "frames": 9,
        "fps": 16,
        "keyframes": "keyframes.png",
        "keyframe_indices": [0, 4, 8],
    }
    assert record["verifier_frames"] == {"frames": 3, "frame_indices": [0, 4, 8], "combine": "min"}
    assert record["nfe_used"] == 8 and len(record["candidates"]) == 2  # 2 steps x 2 CFG rows each
    best = next(c for c in record["candidates"] if c["index"] == record["best_index"])
    # regenerate the best video from its recorded seed, outside the search
    model = MODELS["wan"](path=tmp_path / "wan", height=16, width=32, num_frames=9, max_sequence_length=16)
    z = torch.randn(best["latent_shape"], generator=torch.Generator("cpu").manual_seed(best["noise_seed"]))
    cond = model.encode([PROMPT])
    from noisesearch.samplers import sample_euler

    x = sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=4.0), z, model.schedule(2))
    video = model.decode(x)[0]  # (3, 9, 16, 32)
    webp = Image.open(out / "best.webp")
    assert webp.format == "WEBP" and webp.n_frames == 9 and webp.size == (32, 16)
    for f in range(9):
        webp.seek(f)
        frame = np.asarray(webp.convert("RGB"), dtype=np.float64)  # (16, 32, 3)
        assert np.abs(frame - video[:, f].permute(1, 2, 0).numpy() * 255).max() <= 0.5 + 1e-3  # lossless 8-bit
    strip = np.asarray(Image.open(out / "keyframes.png"))
    assert strip.shape == (16, 3 * 32, 3)


def test_a_video_written_as_png_is_its_keyframe_strip(tmp_path):
    """Sweeps write samples with ``_io.save_png``: a video becomes its 4-keyframe strip (frames 0, 1, 3, 4 of 5)."""
    from noisesearch._io import save_png

    video = videos()[2]  # (3, 5, 4, 6): frame brightness 0.2, 0.9, 0.9, 0.9, 0.2
    save_png(tmp_path / "v.png", video)
    strip = np.asarray(Image.open(tmp_path / "v.png"), dtype=np.float64)  # (4, 4 x 6, 3)
    expected = np.repeat(np.array([0.2, 0.9, 0.9, 0.2]) * 255, 6)[None, :, None]
    assert strip.shape == (4, 24, 3) and np.abs(strip - expected).max() <= 0.5 + 1e-4  # 8-bit rounding


@pytest.mark.slow  # measured ~21 s on 2 busy cores
def test_a_sweep_on_video_keeps_keyframe_strips_and_reports(tmp_path):
    """A sweep (``generate.build`` with frames/combine, ``keep_images="all"``) writes each video as its strip of
    4 keyframes of 5, and its report builds from the rows."""
    from noisesearch.sweep.config import SweepConfig
    from noisesearch.sweep.report import build_report
    from noisesearch.sweep.run import run_sweep

    tiny.wan().save_pretrained(tmp_path / "wan")
    (tmp_path / "prompts.txt").write_text("a red cube\na blue cat\n")
    config = SweepConfig(
        model="wan",
        model_path=str(tmp_path / "wan"),
        model_options={"height": 16, "width": 32, "num_frames": 5, "max_sequence_length": 16},
        benchmark={"name": "file", "path": str(tmp_path / "prompts.txt")},
        verifier={"name": "clipscore", "path": str(tiny_clip(tmp_path / "clip")), "options": {"frames": 2}},
        algorithms=[{"name": "random"}],
        budgets=[4],
        steps=2,
        guidance=1.0,
        keep_images="all",
        baseline=False,
    )
    run_sweep(config, tmp_path / "out", note=lambda line: None)
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["nfe_used"] == 4 for r in rows)  # 2 candidates x 2 steps each
    pngs = sorted((tmp_path / "out" / "images").rglob("*.png"))
    assert len(pngs) == 2 + 4  # each prompt's best, and its 2 candidates
    assert all(np.asarray(Image.open(p)).shape == (16, 4 * 32, 3) for p in pngs)  # (sweeps enlarge 16-px images)
    build_report(tmp_path / "out")
    assert (tmp_path / "out" / "report" / "index.html").is_file()
