"""Real verifiers on tiny random-config backbones saved to folders and loaded through our loader (offline)."""

import math

import pytest
import torch

pytest.importorskip("transformers")

from _tiny_verifiers import aesthetic_head, images, linear_head, tiny_clip, tiny_dinov2, tiny_siglip  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from noisesearch.errors import UserError  # noqa: E402
from noisesearch.verifiers import VERIFIERS, Verifier  # noqa: E402
from noisesearch.verifiers.clip import SCALE, clipscore, cosine  # noqa: E402

PROMPTS = ["a red cube", "a dog on the beach", "a red cube"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("verifiers")
    clip = tiny_clip(root / "clip")
    dino = tiny_dinov2(root / "dino")
    save_file(linear_head(32, 5, seed=1), str(dino / "linear_head.safetensors"))
    save_file(aesthetic_head(16), str(root / "aesthetic.safetensors"))
    return {
        "root": root,
        "clip": clip,
        "dino": dino,
        "siglip": tiny_siglip(root / "siglip"),
        "clip_processor": tiny_clip(root / "clip_proc", as_processor=True),
        "aesthetic": root / "aesthetic.safetensors",
    }


def build(name, folders, **options):
    path = {
        "clipscore": "clip",
        "clip-zeroshot": "clip",
        "feature-similarity-real": "dino",
        "dino-linear": "dino",
        "aesthetic": "clip",
    }[name]
    extra = {
        "clip-zeroshot": {"classes": ["tench", "goldfish", "great white shark", "cock"], "templates": "imagenet7"},
        "aesthetic": {"head": str(folders["aesthetic"])},
    }.get(name, {})
    return VERIFIERS[name](path=str(folders[path]), **{**extra, **options})


def targets_for(name, n):
    return (PROMPTS * n)[:n] if name == "clipscore" else [i % 4 for i in range(n)]


REAL = ["clipscore", "clip-zeroshot", "feature-similarity-real", "dino-linear", "aesthetic"]


@pytest.mark.parametrize("name", REAL)
def test_real_verifier_contract(name, folders):
    """Shapes, float on the CPU, finite, deterministic, image i independent of the batch, differentiable."""
    v = build(name, folders)
    assert isinstance(v, Verifier) and VERIFIERS[name].domain is None and VERIFIERS[name].needs_setup
    x, prev = images(3, seed=1), images(3, seed=2)
    kw = {"previews": prev} if v.preview_sigma is not None else {}
    s = v(x, targets_for(name, 3), **kw)
    assert s.shape == (3,) and s.dtype == torch.float32 and s.device.type == "cpu" and torch.isfinite(s).all()
    assert torch.equal(s, v(x, targets_for(name, 3), **kw))  # same inputs, same process: bit for bit
    lo, hi = v.value_range  # the range the class docstring states
    assert "Range:" in type(v).__doc__ and bool(((s >= lo) & (s <= hi)).all())
    alone = v(x[1:2], targets_for(name, 3)[1:2], **({"previews": prev[1:2]} if kw else {}))
    # batch of 1 vs batch of 3: float32 rounding of O(1) scores
    torch.testing.assert_close(alone, s[1:2], atol=1e-5, rtol=1e-5)
    xg = x.clone().requires_grad_(True)
    v.score(xg, targets_for(name, 3), **kw).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_clipscore_formula_on_known_vectors():
    a, b = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [-1.0, 0.0]])
    cos = cosine(a, b)
    torch.testing.assert_close(cos, torch.tensor([24 / 25, -1.0]))
    torch.testing.assert_close(clipscore(cos), torch.tensor([2.5 * 24 / 25, 0.0]))  # Hessel et al.
    torch.testing.assert_close(clipscore(cos, weight=100), torch.tensor([96.0, 0.0]))  # torchmetrics
    assert "2.5" in SCALE and "100" in SCALE


def test_clipscore_is_the_cosine_of_the_models_own_embeddings(folders):
    """The verifier's number = a hand computation on the model's image and text embeddings."""
    v = build("clipscore", folders)
    assert v.scale == SCALE
    x = images(2, seed=3)
    got = v(x, PROMPTS[:2])
    model, tok = v.loaded.model, v.loaded.tokenizer
    with torch.no_grad():
        img = model.get_image_features(pixel_values=v.loaded.preprocess(x)).pooler_output  # (2, D)
        txt = torch.cat([model.get_text_features(**tok([p], return_tensors="pt")).pooler_output for p in PROMPTS[:2]])
    for i in range(2):
        a, b = img[i].double(), txt[i].double()
        want = float(a @ b / (a.norm() * b.norm()))
        assert math.isclose(float(got[i]), want, abs_tol=1e-5)
    assert not torch.allclose(txt[0], txt[1]), "different prompts must embed differently"


def test_clipscore_loads_a_combined_processor_folder(folders):
    """A folder saved as one CLIPProcessor scores like the same weights saved as separate parts."""
    v = VERIFIERS["clipscore"](path=str(folders["clip_processor"]))
    x = images(2, seed=9)
    got = v(x, ["a cat", "a red cube"])
    want = build("clipscore", folders)(x, ["a cat", "a red cube"])  # same seed, same tiny weights
    # the same float32 computation on both folders' weights: equal up to loading/rounding order
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert got[0] != got[1]


def test_preprocess_follows_the_image_processor(folders):
    """Our torch resize/crop/normalise matches transformers' own processor closely (PIL resampling)."""
    from transformers import AutoImageProcessor

    v = build("feature-similarity-real", folders)
    x = images(1, seed=4, size=(40, 48))
    ours = v.loaded.preprocess(x)  # (1, 3, 32, 32)
    pil = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    theirs = AutoImageProcessor.from_pretrained(str(folders["dino"]))(pil, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    assert (ours - theirs).abs().mean() < 0.03


def test_zeroshot_gives_log_probabilities_over_its_classes(folders):
    v = build("clip-zeroshot", folders)
    x = images(1, seed=5).expand(4, -1, -1, -1)
    logp = v(x, [0, 1, 2, 3])
    assert (logp <= 0).all() and math.isclose(float(logp.exp().sum()), 1.0, rel_tol=1e-4)
    assert len(v.templates) == 7 and len(VERIFIERS["clip-zeroshot"](path=str(folders["clip"])).classes) == 1000
    with pytest.raises(UserError, match="out of range"):
        v(x[:1], [4])


@pytest.mark.parametrize("backbone", ["dino", "siglip", "clip"])
def test_feature_similarity_real_backbones(backbone, folders):
    v = VERIFIERS["feature-similarity-real"](path=str(folders[backbone]))
    assert v.preview_sigma == 0.4
    x = images(2, seed=6)
    torch.testing.assert_close(v(x, [None, None], previews=x), torch.ones(2), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="previews"):
        v(x, [None, None])
    with pytest.raises(UserError, match="backbone"):
        VERIFIERS["feature-similarity-real"](
            path=str(folders[backbone]), backbone="siglip" if backbone != "siglip" else "dinov2"
        )


def test_dino_linear_heads(folders, tmp_path):
    v = build("dino-linear", folders)
    x = images(1, seed=7).expand(5, -1, -1, -1)
    assert math.isclose(float(v(x, list(range(5))).exp().sum()), 1.0, rel_tol=1e-4)
    torch.save(linear_head(64, 3), tmp_path / "cls_patch.pth")  # class token + mean patch token
    v2 = VERIFIERS["dino-linear"](path=str(folders["dino"]), head=str(tmp_path / "cls_patch.pth"))
    assert v2(x[:2], [0, 2]).shape == (2,)
    save_file(linear_head(48, 3), str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match="head takes 48 features"):
        VERIFIERS["dino-linear"](path=str(folders["dino"]), head=str(tmp_path / "bad.safetensors"))


def test_aesthetic_matches_the_head_by_hand(folders, tmp_path):
    head = aesthetic_head(16)
    torch.save(head, tmp_path / "head.pth")
    v = VERIFIERS["aesthetic"](path=str(folders["clip"]), head=str(tmp_path / "head.pth"))
    x = images(2, seed=8)
    with torch.no_grad():
        e = v.loaded.model.get_image_features(pixel_values=v.loaded.preprocess(x)).pooler_output  # (2, 16)
    h = e / e.norm(dim=-1, keepdim=True)
    for i in (0, 2, 4, 6, 7):
        h = h @ head[f"layers.{i}.weight"].T + head[f"layers.{i}.bias"]
    torch.testing.assert_close(v(x, [None, None]), h[:, 0], atol=1e-5, rtol=1e-5)
    torch.save(aesthetic_head(768), tmp_path / "l14.pth")
    with pytest.raises(UserError, match="768-d"):
        VERIFIERS["aesthetic"](path=str(folders["clip"]), head=str(tmp_path / "l14.pth"))
    with pytest.raises(UserError, match="not found"):
        VERIFIERS["aesthetic"](path=str(folders["clip"]), head=str(tmp_path / "missing.pth"))


def test_loader_errors(folders, tmp_path):
    with pytest.raises(UserError, match="needs weights"):
        VERIFIERS["clipscore"]()
    with pytest.raises(UserError, match="no folder"):
        VERIFIERS["clipscore"](path=str(tmp_path / "nowhere"))
    broken = tiny_clip(tmp_path / "broken")
    sd = load_file(str(broken / "model.safetensors"))
    sd["visual_projection.weight"] = torch.zeros(8, 32)
    save_file(sd, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"visual_projection.weight has shape \(8, 32\), the config expects \(16, 32\)"):
        VERIFIERS["clipscore"](path=str(broken))
    del sd["visual_projection.weight"]
    save_file(sd, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match="missing: visual_projection.weight"):
        VERIFIERS["clipscore"](path=str(broken))
    (broken / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no weights file"):
        VERIFIERS["clipscore"](path=str(broken))
    with pytest.raises(UserError, match="dtype"):
        VERIFIERS["clipscore"](path=str(folders["clip"]), dtype="float8")


def test_bad_images_and_prompts(folders):
    v = build("clipscore", folders)
    with pytest.raises(UserError, match=r"values in \[0, 1\]"):
        v(images(2) * 255, PROMPTS[:2])
    with pytest.raises(UserError, match=r"\(B, C, H, W\)"):
        v(images(2)[:, 0], PROMPTS[:2])
    with pytest.raises(UserError, match="prompt must be a non-empty string"):
        v(images(2), ["a cat", "  "])
    with pytest.raises(UserError, match="channels"):
        v(images(2, channels=4), PROMPTS[:2])
    grey = v(images(1, channels=1), ["a cat"])  # grey images are repeated to RGB
    assert torch.isfinite(grey).all()


class Fixed:
    """A fake member: image i's score is ``table[round(images[i].mean() * 10)]``."""

    preview_sigma = None

    def __init__(self, table, name="fixed"):
        self.table, self.name = table, name

    def __call__(self, images, targets, *, previews=None):
        return torch.tensor([self.table[round(float(im.mean()) * 10)] for im in images])


def constant_images(values):
    return torch.stack([torch.full((3, 4, 4), v / 10) for v in values])  # (B, 3, 4, 4)


def test_ensemble_rank_mode_averages_ties():
    from noisesearch.verifiers.ensemble import EnsembleVerifier, average_ranks

    torch.testing.assert_close(
        average_ranks(torch.tensor([1.0, 2.0, 2.0, 3.0])), torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(average_ranks(torch.tensor([5.0, 5.0, 5.0])), torch.full((3,), 0.5, dtype=torch.float64))
    a = Fixed({0: 1.0, 1: 2.0, 2: 2.0, 3: 3.0})
    b = Fixed({0: 9.0, 1: 8.0, 2: 7.0, 3: 6.0})
    e = EnsembleVerifier(members=[a, b], weights="1,3")
    s = e(constant_images([0, 1, 2, 3]), [None] * 4)
    want = 0.25 * torch.tensor([0.0, 0.5, 0.5, 1.0]) + 0.75 * torch.tensor([1.0, 2 / 3, 1 / 3, 0.0])
    torch.testing.assert_close(s, want.float())
    assert e.batch_dependent
    nan = EnsembleVerifier(members=[a, Fixed({0: 1.0, 1: float("nan"), 2: 3.0, 3: 4.0})])
    s = nan(constant_images([0, 1, 2, 3]), [None] * 4)
    assert math.isnan(s[1]) and torch.isfinite(s[[0, 2, 3]]).all()


def test_ensemble_weighted_sum_and_registry_members():
    from noisesearch.verifiers.ensemble import EnsembleVerifier

    a, b = Fixed({0: 0.0, 1: 1.0, 2: 2.0}), Fixed({0: 10.0, 1: 10.0, 2: 40.0})
    raw = EnsembleVerifier(members=[a, b], mode="weighted-sum", standardize=False)
    torch.testing.assert_close(raw(constant_images([0, 1, 2]), [None] * 3), torch.tensor([5.0, 5.5, 21.0]))
    assert not raw.batch_dependent
    z = EnsembleVerifier(members=[a, b], mode="weighted-sum")(constant_images([0, 1, 2]), [None] * 3)
    assert z.argmax() == 2 and abs(float(z.sum())) < 1e-5
    e = VERIFIERS["ensemble"](members="classifier,oracle-is")  # registry members, built by name
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    s = e(x, [1, 2, 3])
    assert s.shape == (3,) and ((0 <= s) & (s <= 1)).all()
    with pytest.raises(UserError, match="unknown member"):
        VERIFIERS["ensemble"](members="classifier,nope")
    with pytest.raises(UserError, match="weights"):
        VERIFIERS["ensemble"](members="classifier,oracle-is", weights="1")
    with pytest.raises(UserError, match="needs members"):
        VERIFIERS["ensemble"]()
    with pytest.raises(UserError, match="different sigmas"):
        EnsembleVerifier(members=[Fixed({}), _Previewed(0.5), _Previewed(0.4)])


class _Previewed(Fixed):
    def __init__(self, sigma):
        super().__init__({})
        self.preview_sigma = sigma


KEY = "sk-test-SECRET-4242"


@pytest.fixture
def grader_server():
    from _tiny_verifiers import Server

    server = Server(KEY, slow_timeout=1.0)
    yield server
    server.stop()


def grey_images(ids):
    return torch.stack([torch.full((3, 8, 8), k / 10) for k in ids])  # (B, 3, 8, 8)


def test_llm_grader_attaches_every_score_to_its_image(grader_server, tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("NS_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache"
    v = VERIFIERS["llm-grader"](
        url=grader_server.url,
        model="tiny-vlm",
        key_env="NS_TEST_KEY",
        cache_dir=str(cache),
        timeout=0.5,
        retries=2,
        backoff=0.01,
        workers=9,
        price_prompt=2.0,
        price_completion=8.0,
    )
    ids = [5, 8, 1, 0, 7, 2, 4, 3, 6]
    s = v(grey_images(ids), ["a grey square"] * len(ids))
    want = [float("nan") if k in (4, 8) else float(k) for k in ids]
    torch.testing.assert_close(s, torch.tensor(want), equal_nan=True)
    assert grader_server.attempts[4] == 3 and grader_server.attempts[8] == 1  # retried, then NaN; 400 not retried
    assert all(grader_server.attempts[k] == 2 for k in (2, 3, 5, 6, 7))  # 429, 500, drop, invalid, timeout: retried
    assert v.usage["completion_tokens"] > 0 and "tokens so far" in caplog.text
    expected = (2.0 * v.usage["prompt_tokens"] + 8.0 * v.usage["completion_tokens"]) / 1e6
    assert v.usage["cost"] == pytest.approx(expected) and f"cost {expected:.4f}" in caplog.text
    sent = sum(grader_server.attempts.values())
    again = v(grey_images(ids), ["a grey square"] * len(ids))  # valid gradings come from the cache
    torch.testing.assert_close(again, s, equal_nan=True)
    assert sum(grader_server.attempts.values()) - sent == 2 * 3 - 2 and v.usage["cached"] == 7
    files = list(cache.iterdir())
    assert len(files) == 7 and all(KEY not in f.read_text() for f in files)
    assert KEY not in caplog.text and all(KEY not in str(r.args) for r in caplog.records)
    assert "bad request with key ***" in caplog.text  # the server echoed the key: redacted


def test_llm_grader_errors(grader_server, monkeypatch):
    monkeypatch.setenv("NS_TEST_KEY", "sk-wrong-key-123")
    v = VERIFIERS["llm-grader"](url=grader_server.url, model="m", key_env="NS_TEST_KEY", retries=1, backoff=0.01)
    with pytest.raises(UserError, match="HTTP 401") as err:
        v(grey_images([0, 1]), ["a", "b"])
    assert "sk-wrong-key-123" not in str(err.value)
    with socket_closed() as url:
        dead = VERIFIERS["llm-grader"](url=url, model="m", key_env="NS_TEST_KEY", retries=1, backoff=0.01)
        with pytest.raises(UserError, match="cannot reach"):
            dead(grey_images([0]), ["a"])
    with pytest.raises(UserError, match="prompt must be a non-empty string"):
        v(grey_images([0]), [""])
    with pytest.raises(UserError, match="needs url"):
        VERIFIERS["llm-grader"]()
    with pytest.raises(UserError, match="metric"):
        VERIFIERS["llm-grader"](url="http://127.0.0.1:1", model="m", metric="beauty")


def socket_closed():
    """A URL on 127.0.0.1 where nothing listens (a port bound, then released)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def ctx():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        yield f"http://127.0.0.1:{port}/v1"

    return ctx()


def test_real_verifier_in_a_search(folders):
    """Built by name with --verifier-path/--verifier-param as the CLI does, scored inside run_search with previews."""
    from noisesearch.driver import run_search
    from noisesearch.generate import build

    model, verifier, algo = build(
        "digits",
        "feature-similarity-real",
        "random",
        verifier_path=str(folders["dino"]),
        verifier_options={"preview_sigma": 0.4},
        algorithm_params={},
    )
    (result,) = run_search(model, verifier, algo, [3], seeds=[0], budget=16, steps=4)
    scores = [c["score"] for c in result.candidates]
    lo, hi = verifier.value_range  # [-1, 1]: a cosine, clamped against rounding on every CPU
    assert (lo, hi) == (-1.0, 1.0) and len(scores) == 4 and all(lo <= s <= hi for s in scores)
    assert result.nfe_used == 16 and result.best_score == max(scores)
    with pytest.raises(UserError, match="takes no parameter 'heads'"):
        build("digits", "aesthetic", "random", verifier_path=str(folders["clip"]), verifier_options={"heads": "x"})
