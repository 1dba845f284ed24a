"""Every verifier's scores stay inside the range its docstring states, on every machine.

Cosines and log-probabilities are bounded by their maths but not by floating point: the cosine of
identical or near-parallel features computes to 1 + a few ULPs on some CPUs (vector width, BLAS
kernel, thread count), more in float16/bfloat16. The verifiers clamp those; these tests feed the
inputs that round past the bound and check it, and check every registry entry that can be built
offline (tiny random weights from tests/_tiny_verifiers.py) against its ``value_range``.
"""

import math

import pytest
import torch

from noisesearch.verifiers import VERIFIERS
from noisesearch.verifiers.clip import cosine


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [3, 64, 768, 1024])
def test_cosine_of_identical_and_near_parallel_features_stays_in_bounds(dtype, dim):
    gen = torch.Generator().manual_seed(dim)
    a = torch.randn(64, dim, generator=gen).to(dtype) * torch.logspace(-3, 3, 64)[:, None].to(dtype)  # (64, D)
    near = a + (1e-3 * torch.randn(64, dim, generator=gen)).to(dtype) * a.abs()  # (64, D) a few ULPs away
    for b in (a, near, a.clone() * 3):
        c = cosine(a, b)
        assert c.dtype == dtype and bool((c <= 1).all()) and bool((c >= -1).all()), float(c.max())
        c = cosine(a, -b)
        assert bool((c >= -1).all()) and bool((c <= 1).all()), float(c.min())
    # the bound is met, not just respected: identical features give 1 up to the dtype's rounding
    torch.testing.assert_close(cosine(a, a).float(), torch.ones(64), atol=1e-2, rtol=0)  # bfloat16: 8-bit mantissa


@pytest.mark.numerics
def test_digits_verifiers_stay_in_range_on_identical_previews():
    from noisesearch.digits.train import load_data

    data = load_data()
    images = (data.images[:64] + 1) / 2  # (64, 1, 8, 8) in [0, 1]
    fs = VERIFIERS["feature-similarity"]()
    s = fs(images, [0] * 64, previews=images.clone())
    lo, hi = fs.value_range
    assert bool(((s >= lo) & (s <= hi)).all()) and (lo, hi) == (-1.0, 1.0)
    for name in ("classifier", "oracle-is"):
        v = VERIFIERS[name]()
        s = v(images, [int(t) for t in data.labels[:64]])
        assert bool((s <= 0).all()) and v.value_range == (-math.inf, 0.0)


def test_rank_ensemble_stays_in_zero_one_with_weights_that_do_not_sum_exactly():
    from noisesearch.verifiers.ensemble import EnsembleVerifier

    class Const:
        name, preview_sigma = "const", None

        def __init__(self, sign):
            self.sign = sign

        def __call__(self, images, targets, *, previews=None):
            return self.sign * images.reshape(len(images), -1).mean(1)

    images = torch.linspace(0, 1, 5)[:, None, None, None].expand(5, 3, 2, 2)
    e = EnsembleVerifier(members=[Const(1), Const(1), Const(1)], weights="0.1,0.2,0.7")  # 0.1 + 0.2 != 0.3 in floats
    s = e(images, [None] * 5)
    assert e.value_range == (0.0, 1.0) and bool(((s >= 0) & (s <= 1)).all())
    torch.testing.assert_close(s, torch.linspace(0, 1, 5), atol=1e-6, rtol=0)  # float32 cast of float64 ranks


# --- the range contract over the registry ------------------------------------------------------------


HEAVY = "range checked in tests/test_verifiers_more.py::test_contract, which builds its tiny weights anyway"
NOT_BUILT_HERE = {
    **{name: HEAVY for name in ("imagereward", "pickscore", "hpsv2", "oracle-is-imagenet", "oracle-fid")},
    "llm-grader": "needs a chat server; its [0, 10] range is enforced by the grading schema "
    "(tests/test_verifiers_real.py::test_llm_grader_* score through a local fake server)",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every registry entry that can be built offline -> (verifier, images, targets, previews)."""
    pytest.importorskip("transformers")
    from _tiny_verifiers import aesthetic_head, images, linear_head, tiny_clip, tiny_dinov2
    from safetensors.torch import save_file

    from noisesearch.models import MODELS

    root = tmp_path_factory.mktemp("ranges")
    clip, dino = tiny_clip(root / "clip"), tiny_dinov2(root / "dino")
    save_file(linear_head(32, 5, seed=1), str(dino / "linear_head.safetensors"))
    save_file(aesthetic_head(16), str(root / "aesthetic.safetensors"))
    options = {
        "clipscore": {"path": clip},
        "clip-zeroshot": {"path": clip, "classes": ["a", "b", "c", "d"], "templates": "imagenet7"},
        "feature-similarity-real": {"path": dino},
        "dino-linear": {"path": dino},
        "aesthetic": {"path": clip, "head": root / "aesthetic.safetensors"},
        "ensemble": {"members": "classifier,oracle-is", "weights": "0.1,0.9"},
    }
    digits_images = MODELS["digits"]().decode(torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    rgb = images(3, seed=7)
    out = {}
    for name, factory in VERIFIERS.items():
        if name in NOT_BUILT_HERE:
            continue
        kwargs = {k: str(v) if hasattr(v, "is_dir") else v for k, v in options.get(name, {}).items()}
        v = factory(**kwargs)
        if name == "toy-distance":
            x, targets = torch.tensor([0.0, 0.5, 1.0])[:, None, None, None], [0, 1, 1]
        elif factory.domain == "digits" or name == "ensemble":
            x, targets = digits_images, [1, 2, 3]
        elif name == "clipscore":
            x, targets = rgb, ["a red cube", "a dog", "a red cube"]
        else:
            x, targets = rgb, [0, 1, 2]
        out[name] = (v, x, targets, x.clone() if v.preview_sigma is not None else None)  # identical previews
    return out


def test_every_registry_entry_is_range_checked_or_says_why_not(built):
    assert set(built) | set(NOT_BUILT_HERE) == set(VERIFIERS)


@pytest.mark.parametrize("name", [n for n in VERIFIERS if n not in NOT_BUILT_HERE])
def test_scores_land_in_the_stated_range(built, name):
    v, x, targets, previews = built[name]
    lo, hi = v.value_range
    assert lo < hi and "Range:" in (type(v).__doc__ or ""), f"{name}: state the range in the class docstring"
    kw = {"previews": previews} if previews is not None else {}
    s = v(x, targets, **kw)
    assert s.shape == (len(x),) and bool(torch.isfinite(s).all())
    assert bool(((s >= lo) & (s <= hi)).all()), f"{name}: {s.tolist()} outside [{lo}, {hi}]"


def test_bounded_low_precision_verifiers_stay_in_range(built, tmp_path):
    """Cosine verifiers in bfloat16 with identical previews (feature similarity of a sample with itself)."""
    dino = built["dino-linear"][0].loaded.model.name_or_path
    fs = VERIFIERS["feature-similarity-real"](path=str(dino), dtype="bfloat16")
    x = built["clipscore"][1]
    s = fs(x, [None] * len(x), previews=x.clone())
    assert bool((s <= 1).all()) and bool((s >= -1).all())
    torch.testing.assert_close(s, torch.ones(len(x)), atol=1e-2, rtol=0)  # identical features: cosine 1 (bfloat16)
