"""ImageReward, PickScore, HPS v2 and the ImageNet Inception oracles on tiny random weights saved to tmp (offline)."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("open_clip")
pytest.importorskip("torchvision")

from _tiny_verifiers import (  # noqa: E402
    INCEPTION_SIZE,
    OPENCLIP_TINY,
    images,
    reference_npz,
    release_state,
    tiny_clip,
    tiny_imagereward,
    tiny_inception,
    tiny_openclip,
)
from safetensors.torch import load_file, save_file  # noqa: E402

from noisesearch.errors import UserError  # noqa: E402
from noisesearch.verifiers import VERIFIERS, Verifier  # noqa: E402

PROMPTS = ["a red cube", "a dog on the beach", "a photo of the blue sky"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("more")
    ir_folder, ir_model = tiny_imagereward(root / "imagereward")
    inception = tiny_inception(root / "inception.safetensors")
    torch.save(load_file(str(inception)), root / "inception.pth")
    return {
        "root": root,
        "imagereward": ir_folder,
        "ir_model": ir_model,
        "clip": tiny_clip(root / "pick"),
        "hps": tiny_openclip(root / "hps" / "HPS_tiny.pt"),
        "inception": inception,
        "inception_pth": root / "inception.pth",
        "reference": reference_npz(root / "ref.npz"),
    }


def build(name, files, **options):
    args = {
        "imagereward": {"path": files["imagereward"]},
        "pickscore": {"path": files["clip"]},
        "hpsv2": {"path": files["hps"], "arch": OPENCLIP_TINY},
        "oracle-is-imagenet": {"path": files["inception"], "size": INCEPTION_SIZE},
        "oracle-fid": {"path": files["inception"], "reference": files["reference"], "size": INCEPTION_SIZE},
    }[name]
    args = {**{k: str(v) if k in ("path", "reference") else v for k, v in args.items()}, **options}
    return VERIFIERS[name](**args)


def targets_for(name, n):
    return (PROMPTS * n)[:n] if name in ("imagereward", "pickscore", "hpsv2") else [i % 10 for i in range(n)]


NAMES = ["imagereward", "pickscore", "hpsv2", "oracle-is-imagenet", "oracle-fid"]


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, files):
    """Shapes, float32 on the CPU, finite, deterministic, batch-independent, differentiable; registry flags."""
    v = build(name, files)
    assert isinstance(v, Verifier) and VERIFIERS[name].domain is None and VERIFIERS[name].needs_setup
    x, t = images(3, seed=1), targets_for(name, 3)
    s = v(x, t)
    assert s.shape == (3,) and s.dtype == torch.float32 and s.device.type == "cpu" and torch.isfinite(s).all()
    assert torch.equal(s, v(x, t))  # same inputs, same process: bit for bit
    assert len(set(s.tolist())) == 3, "different images must score differently"
    lo, hi = v.value_range  # the range the class docstring states (tests/test_verifier_ranges.py)
    assert "Range:" in type(v).__doc__ and bool(((s >= lo) & (s <= hi)).all()), (s.tolist(), lo, hi)
    # batch of 1 vs batch of 3: other BLAS blocking. Float32 rounding of O(1) scores, except InceptionV3 (a deep
    # network: 1e-4 relative, the policy of docs/TESTING.md), whose FID score -(|d|^2 + tr) is ~1e7 here and
    # carries the relative error of |d|^2 (measured 1.2e-5 of the score on this machine under load)
    rtol = 1e-4 if name.startswith("oracle") else 1e-5
    torch.testing.assert_close(v(x[1:2], t[1:2]), s[1:2], atol=1e-4, rtol=rtol)
    xg = x.clone().requires_grad_(True)
    v.score(xg, t).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_refuses_missing_weights(name, files, tmp_path):
    with pytest.raises(UserError, match="needs"):
        VERIFIERS[name]()
    with pytest.raises(UserError, match="not found|no file or folder|no folder"):
        VERIFIERS[name](path=str(tmp_path / "absent.pt"))


def test_imagereward_release_key_mapping():
    from noisesearch.verifiers.imagereward import release_key

    assert release_key("blip.visual_encoder.cls_token") == "vision.embeddings.class_embedding"
    assert release_key("blip.visual_encoder.patch_embed.proj.weight") == "vision.embeddings.patch_embedding.weight"
    assert release_key("blip.visual_encoder.blocks.23.attn.qkv.bias") == "vision.encoder.layers.23.self_attn.qkv.bias"
    assert (
        release_key("blip.visual_encoder.blocks.0.attn.proj.weight")
        == "vision.encoder.layers.0.self_attn.projection.weight"
    )
    assert release_key("blip.visual_encoder.norm.weight") == "vision.post_layernorm.weight"
    assert (
        release_key("blip.text_encoder.encoder.layer.11.crossattention.self.key.weight")
        == "text.encoder.layer.11.crossattention.self.key.weight"
    )
    assert release_key("mlp.layers.7.bias") == "head.7.bias"
    assert (
        release_key("blip.text_proj.weight") is None
        and release_key("blip.text_encoder.embeddings.position_ids") is None
    )


def test_imagereward_equals_the_models_direct_output(files):
    """Loaded from release key names = the model that was exported; the release's normalisation constants."""
    v = build("imagereward", files)
    model = files["ir_model"]
    x = images(2, seed=5)
    got = v(x, PROMPTS[:2])
    with torch.no_grad():
        pixels = v.preprocess(x)  # (2, 3, 32, 32)
        tok = v.tokenizer(PROMPTS[:2], padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        assert tok["input_ids"].shape == (2, 35)
        img = model.vision(pixel_values=pixels).last_hidden_state  # (2, 17, 32)
        cls = model.text(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], encoder_hidden_states=img
        ).last_hidden_state[:, 0]  # (2, 32)
        want = (model.head(cls)[:, 0] - 0.16717362830052426) / 1.0333394966054072
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert "[UNK]" not in v.tokenizer.convert_ids_to_tokens(tok["input_ids"][0])  # the folder's vocabulary is used


def test_imagereward_bad_checkpoints(files, tmp_path):
    import shutil

    state = release_state(files["ir_model"])

    def folder_with(tensors, name):
        f = tmp_path / name
        shutil.copytree(files["imagereward"], f)
        torch.save(tensors, f / "ImageReward.pt")
        return str(f)

    wrong = dict(state, **{"blip.visual_encoder.blocks.0.attn.qkv.weight": torch.zeros(5, 32)})
    with pytest.raises(UserError, match=r"blip\.visual_encoder\.blocks\.0\.attn\.qkv\.weight has shape \(5, 32\)"):
        VERIFIERS["imagereward"](path=folder_with(wrong, "wrong"))
    missing = {k: v for k, v in state.items() if k != "mlp.layers.7.bias"}
    with pytest.raises(UserError, match=r"missing: mlp\.layers\.7\.bias"):
        VERIFIERS["imagereward"](path=folder_with(missing, "missing"))
    extra = dict(state, **{"blip.visual_encoder.head.weight": torch.zeros(2)})
    with pytest.raises(UserError, match=r"unexpected: blip\.visual_encoder\.head\.weight"):
        VERIFIERS["imagereward"](path=folder_with(extra, "extra"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no ImageReward.pt"):
        VERIFIERS["imagereward"](path=str(empty))
    no_vocab = folder_with(state, "novocab")
    (tmp_path / "novocab" / "vocab.txt").unlink()
    with pytest.raises(UserError, match="tokenizer"):
        VERIFIERS["imagereward"](path=no_vocab)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights"):
        VERIFIERS["imagereward"](path=str(tmp_path / "garbage.pt"))


@pytest.mark.parametrize("name", ["imagereward", "pickscore", "hpsv2"])
def test_prompts_must_be_non_empty(name, files):
    v = build(name, files)
    with pytest.raises(UserError, match="prompt must be a non-empty string"):
        v(images(2), ["a cat", ""])
    with pytest.raises(UserError, match="targets"):
        v(images(2), ["a cat"])


def test_pickscore_is_the_clip_logit(files):
    """exp(logit_scale) * cosine, computed by hand from the saved weights and the model's embeddings."""
    v = build("pickscore", files)
    logit_scale = load_file(str(files["clip"] / "model.safetensors"))["logit_scale"]
    x = images(2, seed=3)
    got = v(x, PROMPTS[:2])
    model, tok = v.loaded.model, v.loaded.tokenizer
    with torch.no_grad():
        img = model.get_image_features(pixel_values=v.loaded.preprocess(x)).pooler_output.double()  # (2, D)
        txt = torch.cat(
            [model.get_text_features(**tok([p], return_tensors="pt")).pooler_output for p in PROMPTS[:2]]
        ).double()  # (2, D)
    for i in range(2):
        want = math.exp(float(logit_scale)) * float(img[i] @ txt[i] / (img[i].norm() * txt[i].norm()))
        assert math.isclose(float(got[i]), want, rel_tol=1e-5, abs_tol=1e-5)


def test_hpsv2_is_the_raw_cosine_of_open_clip_embeddings(files):
    """Same numbers as the tiny model loaded by open_clip itself (pretrained=<file>), padding as the release."""
    import open_clip

    from noisesearch.verifiers.hpsv2 import resize_longest_and_pad

    v = build("hpsv2", files)
    x = images(2, seed=4, size=(40, 48))
    padded = resize_longest_and_pad(x, 32)  # (2, 3, 32, 32): 27 rows of image, 2 black rows on top, 3 below
    assert padded.shape == (2, 3, 32, 32) and padded[:, :, :2].abs().max() == 0 and padded[:, :, -3:].abs().max() == 0
    assert (padded[:, :, 2:29].abs().amax(dim=(0, 1, 3)) > 0).all()  # every image row has content
    reference = open_clip.create_model(OPENCLIP_TINY, pretrained=str(files["hps"])).eval()
    tokens = open_clip.get_tokenizer(OPENCLIP_TINY)(PROMPTS[:2])  # (2, 77), from the vocabulary in the package
    assert tokens.shape == (2, 77) and (tokens[0] != tokens[1]).any()
    with torch.no_grad():
        img = reference.encode_image(v.pixels(x), normalize=True)  # (2, D)
        txt = reference.encode_text(tokens, normalize=True)  # (2, D)
    torch.testing.assert_close(v(x, PROMPTS[:2]), (img * txt).sum(-1), atol=1e-5, rtol=1e-5)
    assert "raw cosine" in v.scale


def test_hpsv2_bad_inputs(files, tmp_path):
    state = torch.load(files["hps"], weights_only=True)["state_dict"]
    state["visual.conv1.weight"] = torch.zeros(7, 3, 8, 8)
    torch.save({"state_dict": state}, tmp_path / "wrong.pt")
    with pytest.raises(UserError, match=r"visual\.conv1\.weight has shape \(7, 3, 8, 8\)"):
        VERIFIERS["hpsv2"](path=str(tmp_path / "wrong.pt"), arch=OPENCLIP_TINY)
    with pytest.raises(UserError, match="unknown OpenCLIP architecture"):
        VERIFIERS["hpsv2"](path=str(files["hps"]), arch="ViT-Nope-1")


def _direct_inception(files):
    """The saved Inception loaded the ordinary torchvision way, with a hook on its pool features."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=10)
    net.load_state_dict(load_file(str(files["inception"])))
    pools = []
    net.avgpool.register_forward_hook(lambda m, i, o: pools.append(o.flatten(1)))
    return net.eval(), pools


def _network_input(x):
    x = torch.nn.functional.interpolate(
        x, size=(INCEPTION_SIZE,) * 2, mode="bilinear", antialias=True, align_corners=False
    )  # (B, 3, 75, 75)
    return x * 2 - 1


def test_oracle_is_is_the_log_probability_of_the_target(files):
    v = build("oracle-is-imagenet", files)
    pth = VERIFIERS["oracle-is-imagenet"](path=str(files["inception_pth"]), size=INCEPTION_SIZE)
    net, _ = _direct_inception(files)
    x, labels = images(3, seed=6), [4, 0, 9]
    with torch.no_grad():
        want = net(_network_input(x)).log_softmax(-1)[torch.arange(3), torch.tensor(labels)]
    torch.testing.assert_close(v(x, labels), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pth(x, labels), want, atol=1e-5, rtol=1e-5)
    assert (v(x, labels) <= 0).all()
    with pytest.raises(UserError, match="out of range"):
        v(x, [1, 2, 10])
    with pytest.raises(UserError, match="class ids"):
        v(x, ["cat", 1, 2])


def test_oracle_fid_is_minus_the_one_sample_fid(files):
    """fid1 = -(|f - mu|^2 + tr sigma) = -FID({f}, N(mu, sigma)); mahalanobis = -(f - mu)^T sigma^-1 (f - mu)."""
    ref = np.load(files["reference"])
    mu, sigma = ref["mu"], ref["sigma"]
    net, pools = _direct_inception(files)
    x = images(2, seed=7)
    with torch.no_grad():
        net(_network_input(x))
    f = pools[-1].double().numpy()  # (2, 2048)
    d = f - mu
    fid1 = -((d * d).sum(1) + np.trace(sigma))
    torch.testing.assert_close(  # default tolerance: float64 statistics in another order
        build("oracle-fid", files)(x, [0, 0]), torch.tensor(fid1, dtype=torch.float32), rtol=1e-5, atol=1e-3
    )
    maha = -np.einsum("bi,bi->b", d, np.linalg.solve(sigma + 1e-6 * np.eye(2048), d.T).T)
    torch.testing.assert_close(  # default tolerance: float64 statistics in another order
        build("oracle-fid", files, metric="mahalanobis")(x, [0, 0]),
        torch.tensor(maha, dtype=torch.float32),
        rtol=1e-4,
        atol=1e-2,
    )


def test_oracle_bad_inputs(files, tmp_path):
    with pytest.raises(UserError, match="reference"):
        VERIFIERS["oracle-fid"](path=str(files["inception"]))
    np.savez(tmp_path / "small.npz", mu=np.zeros(16), sigma=np.eye(16))
    with pytest.raises(UserError, match=r"need \(2048,\)"):
        VERIFIERS["oracle-fid"](path=str(files["inception"]), reference=str(tmp_path / "small.npz"))
    np.savez(tmp_path / "keys.npz", mean=np.zeros(2048))
    with pytest.raises(UserError, match="'mu' and 'sigma'"):
        VERIFIERS["oracle-fid"](path=str(files["inception"]), reference=str(tmp_path / "keys.npz"))
    with pytest.raises(UserError, match="metric"):
        build("oracle-fid", files, metric="kid")
    with pytest.raises(UserError, match="size"):
        build("oracle-is-imagenet", files, size=32)
    state = load_file(str(files["inception"]))
    state["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(192, 2048, 3, 3)
    save_file(state, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(UserError, match=r"Mixed_7c\.branch_pool\.conv\.weight has shape \(192, 2048, 3, 3\)"):
        VERIFIERS["oracle-is-imagenet"](path=str(tmp_path / "wrong.safetensors"))
    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="fc.weight"):
        VERIFIERS["oracle-is-imagenet"](path=str(tmp_path / "other.safetensors"))
