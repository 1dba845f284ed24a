"""The digits world behaves as documented: search beats more steps, the verifiers mean something."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from noisesearch.algorithms import derive_seed
from noisesearch.algorithms.random import RandomSearch
from noisesearch.digits.train import load_data
from noisesearch.driver import run_search
from noisesearch.metrics import DigitsEvaluator
from noisesearch.verifiers import VERIFIERS

TARGETS = [c for c in range(10) for _ in range(20)]
SEEDS = [derive_seed(0, i) for i in range(len(TARGETS))]


def test_random_search_expected_best_score_rises_with_budget(digits, classifier):
    means = []
    for budget in (8, 16, 32, 64, 128):
        results = run_search(digits, classifier, RandomSearch(), TARGETS, seeds=SEEDS, budget=budget, steps=8)
        means.append(sum(r.best_score for r in results) / len(results))
    assert all(a < b for a, b in zip(means, means[1:])), means


@pytest.mark.numerics
def test_shared_seeds_make_the_first_candidate_the_no_search_sample(digits, classifier):
    """Common random numbers: candidate 0 of every search is the baseline sample for its seed."""
    (one,) = run_search(digits, classifier, RandomSearch(), [4], seeds=[9], budget=8, steps=8)
    (many,) = run_search(digits, classifier, RandomSearch(), [4], seeds=[9], budget=64, steps=8)
    first, alone = dict(many.candidates[0]), dict(one.candidates[0])
    assert first.pop("score") == pytest.approx(alone.pop("score"), abs=1e-5)  # batch size may change BLAS sums
    assert first == alone


def test_search_improves_fid_and_accuracy_over_the_baseline(digits, classifier):
    evaluator = DigitsEvaluator()

    def metrics(budget):
        rs = run_search(digits, classifier, RandomSearch(), TARGETS, seeds=SEEDS, budget=budget, steps=8)
        return evaluator(torch.stack([r.best_image for r in rs]), TARGETS)

    base, searched = metrics(8), metrics(128)
    assert searched["fid"] < base["fid"] - 5
    assert searched["is"] > base["is"] and searched["accuracy"] > base["accuracy"]


def test_real_digits_score_well_on_the_evaluator():
    """Real held-out digits are close to the reference; noise is far from it."""
    data = load_data().split(held_out=True)
    evaluator = DigitsEvaluator()
    real = evaluator((data.images + 1) / 2, data.labels)
    noise = evaluator(torch.rand(len(data.labels), 1, 8, 8, generator=torch.Generator().manual_seed(0)), data.labels)
    assert real["fid"] < 10 < 100 < noise["fid"]  # 359 real samples: FID's small-sample bias stays
    assert real["accuracy"] > 0.95 and real["is"] > 8


def test_classifier_verifier_prefers_the_right_class():
    data = load_data().split(held_out=True)
    verifier = VERIFIERS["classifier"]()
    images = (data.images + 1) / 2
    right = verifier(images, data.labels.tolist())
    wrong = verifier(images, ((data.labels + 1) % 10).tolist())
    assert (right > wrong).float().mean() > 0.9


def test_feature_similarity_uses_no_labels_and_prefers_consistent_previews():
    verifier = VERIFIERS["feature-similarity"]()
    images = (load_data().images[:50] + 1) / 2
    same = verifier(images, [0] * 50, previews=images)
    other = verifier(images, [0] * 50, previews=images.flip(0))
    torch.testing.assert_close(same, torch.ones(50), atol=1e-5, rtol=0)
    assert (other < same).all()
    # targets are ignored (same inputs and process: bit for bit)
    assert torch.equal(verifier(images, [3] * 50, previews=images.flip(0)), other)


@pytest.mark.parametrize("guidance", [1.0, 2.0, 0.0])
def test_guidance_is_the_cfg_combination_of_separate_network_calls(digits, guidance):
    """denoise = x - sigma * (v_uncond + g (v_cond - v_uncond)), v from separate calls of the network."""
    from noisesearch.digits.nets import NULL_LABEL

    cond = digits.encode([3, 5])
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((2,), 0.5)
    with torch.no_grad():
        v_cond = digits.net(x, sigma, cond)
        v_uncond = digits.net(x, sigma, torch.full_like(cond, NULL_LABEL))
    want = x - 0.5 * (v_uncond + guidance * (v_cond - v_uncond))
    got = digits.denoise(x, 0.5, cond, guidance=guidance)
    # the guided call runs both halves as one batch of 4: float32 rounding of a small MLP only
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert digits.nfe_per_call(guidance) == (1 if guidance == 1.0 else 2)
    assert (v_cond - v_uncond).abs().max() > 0.1, "the condition must matter, else guidance is untested"


def test_shipped_digits_are_scikit_learns():
    """The digits shipped in the package (read without scikit-learn) are ``load_digits()``, scaled to [-1, 1]."""
    from sklearn.datasets import load_digits

    from noisesearch.digits.train import load_data

    d, data = load_digits(), load_data()
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == torch.float32
    assert torch.equal(data.images, torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0)
    assert torch.equal(data.labels, torch.tensor(d.target, dtype=torch.int64))


@pytest.mark.parametrize("n", [4, 37, 200])
def test_precision_recall_equal_torch_fidelitys_with_the_reference_radii_cached(n):
    """The cached reference radii change no value: precision and recall are torch-fidelity's, exactly."""
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    evaluator = DigitsEvaluator()
    ref = evaluator.reference[0]
    g = torch.Generator().manual_seed(n)
    # Near the reference (some inside its balls, some not) and with duplicates, so both tests see ties.
    feats = ref[torch.randint(len(ref), (n,), generator=g)] + torch.randn(n, ref.shape[1], generator=g).double()
    feats[: n // 4] = ref[: n // 4]
    expected = calculate_precision_recall_full(feats.float(), ref.float(), neighborhood=3)
    for _ in range(2):  # the second call reads the cached radii
        assert evaluator.precision_recall(feats) == expected
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1


def test_fid_equals_torch_fidelitys_and_an_analytic_case():
    """FID from our statistics equals torch-fidelity's functions, and a closed form for diagonal Gaussians."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from noisesearch.metrics import frechet_distance, gaussian_statistics

    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=g, dtype=torch.float64) @ torch.randn(16, 16, generator=g, dtype=torch.float64)
    b = 0.5 + torch.randn(200, 16, generator=g, dtype=torch.float64)
    ours = frechet_distance(gaussian_statistics(a), gaussian_statistics(b))
    theirs = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), verbose=False)
    assert ours == theirs["frechet_inception_distance"]
    assert frechet_distance(gaussian_statistics(a), gaussian_statistics(a)) == pytest.approx(0, abs=1e-8)
    # N(m1, diag(v1)) vs N(m2, diag(v2)): |m1 - m2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    m1, m2, v1, v2 = np.zeros(3), np.array([1.0, 2.0, 0.0]), np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 5.0 + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # 5 + 1 + 1 + 0
    assert frechet_distance((m1, np.diag(v1)), (m2, np.diag(v2))) == pytest.approx(expected, abs=1e-12)


def test_a_digits_search_and_its_set_metrics_never_import_torch_dynamo():
    """Searching the digits world (with FLOPs counted) and scoring a set stay clear of ``torch._dynamo``, which
    the FLOP counter and torchvision (torch-fidelity) import: 2.4-2.7 s and ~130k objects per process."""
    code = (
        "import sys, torch\n"
        "from noisesearch.algorithms import ALGORITHMS\n"
        "from noisesearch.driver import run_search\n"
        "from noisesearch.models.digits import DigitsModel\n"
        "from noisesearch.metrics import DigitsEvaluator\n"
        "from noisesearch.verifiers import VERIFIERS\n"
        "for verifier in ('classifier', 'feature-similarity'):\n"
        "    (r,) = run_search(DigitsModel('digits-large'), VERIFIERS[verifier](), ALGORITHMS['random'](), [3],\n"
        "                      seeds=[0], budget=16, steps=8, guidance=2.0)\n"
        "    assert r.ledger['total_flops'] > 0\n"
        "DigitsEvaluator()(torch.rand(8, 1, 8, 8), list(range(8)))\n"
        "print(sorted(m for m in ('torch_fidelity', 'torchvision', 'torch._dynamo') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
