"""The replay cache: exact replays, exact savings, keys that see every change, bounded and crash-safe storage."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _cache_runs import STEPS, plain, search
from _configs import DROP, tiny_sweep, write_config
from _records import close  # floats within a tolerance, also inside candidate records (see tests/_records.py)
from typer.testing import CliRunner

from noisesearch import ledger
from noisesearch.algorithms import ALGORITHMS
from noisesearch.algorithms.base import Jobs, Problems
from noisesearch.algorithms.zero_order import ZeroOrderSearch
from noisesearch.cache import (
    FORMAT,
    CandidateCache,
    file_digest,
    job_key,
    job_keys,
    model_identity,
    verifier_identity,
)
from noisesearch.cli import app
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.models import MODELS
from noisesearch.verifiers import VERIFIERS
from noisesearch.verifiers.custom import CallableVerifier

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def counts(result) -> tuple[int, int, int, int]:
    led = result.ledger
    return led["nfe_computed"], led["replayed"], led["decode_computed"], led["verify_computed"]


@pytest.mark.numerics
def test_a_first_cached_run_equals_an_uncached_one_and_a_rerun_replays_it_bit_for_bit(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    uncached = search(digits, classifier, None, keep_images=True)
    first = search(digits, classifier, cache, keep_images=True)
    again = search(digits, classifier, cache, keep_images=True)
    for u, f, a in zip(uncached, first, again):
        assert plain(u) == plain(f) == plain(a)  # exact: the misses ran in the same batch, the replays are stored bits
        assert counts(u) == counts(f) == (32, 0, 8, 8)
        assert counts(a) == (0, 8, 0, 0) and a.nfe_used == 32  # the budget is still charged in full
        assert torch.equal(a.best_image, u.best_image) and torch.equal(a.best_noise, u.best_noise)
        assert all(torch.equal(a.images[k], u.images[k]) for k in u.images)
        assert a.ledger["total_flops"] == u.ledger["total_flops"] > 0


@pytest.mark.numerics
def test_a_budget_sweep_computes_the_largest_budget_once(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    computed = []
    for budget in (8, 16, 32, 64):
        got = search(digits, classifier, cache, budget=budget)
        want = search(digits, classifier, None, budget=budget)
        for g, w in zip(got, want):
            # the misses ran in a smaller batch than without the cache: scores may differ in their last bits
            close(plain(g), plain(w))
        computed.append([counts(g) for g in got])
    n = [(c // STEPS) for c in (8, 16, 32, 64)]  # candidates per target: 2, 4, 8, 16
    assert computed == [
        [(8, 0, 2, 2)] * 2,
        [(8, n[0], 2, 2)] * 2,
        [(16, n[1], 4, 4)] * 2,
        [(32, n[2], 8, 8)] * 2,
    ]
    assert sum(c[0][0] for c in computed) == 64  # per target: the largest budget, once


@pytest.mark.numerics
def test_a_new_verifier_costs_only_its_calls(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    search(digits, classifier, cache)
    oracle = VERIFIERS["oracle-is"]()
    added = search(digits, oracle, cache)
    uncached = search(digits, oracle, None)
    for a, u in zip(added, uncached):
        assert counts(a) == (0, 8, 0, 8)  # no denoiser call, no decode, 8 new verifier calls
        # exact (same process, same machine): the replayed images are the bits a batch of the same 16 rows
        # computed, and the new verifier scores them in the same batch as without the cache
        assert plain(a) == plain(u)
    assert [counts(r) for r in search(digits, oracle, cache)] == [(0, 8, 0, 0)] * 2  # its scores are kept now


def test_a_verifier_on_previews_recomputes_candidates_stored_without_them(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    search(digits, classifier, cache)
    fs = VERIFIERS["feature-similarity"]()
    assert [counts(r) for r in search(digits, fs, cache)] == [(32, 0, 16, 8)] * 2  # final + preview decodes
    assert [counts(r) for r in search(digits, fs, cache)] == [(0, 8, 0, 0)] * 2
    assert [counts(r) for r in search(digits, classifier, cache)] == [(0, 8, 0, 0)] * 2


@pytest.mark.numerics
def test_zero_order_reruns_from_the_cache_and_stepwise_searches_are_computed(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    zo = ALGORITHMS["zero-order"](neighbours=3)
    search(digits, classifier, cache, algorithm=zo)
    again = search(digits, classifier, cache, algorithm=zo)
    assert [counts(r) for r in again] == [(0, 8, 0, 0)] * 2  # neighbours are keyed by their noise's bytes
    paths = ALGORITHMS["paths"]()
    got = search(digits, classifier, cache, algorithm=paths, budget=64)
    want = search(digits, classifier, None, algorithm=paths, budget=64)
    for g, w in zip(got, want):
        # its full candidates replay what the zero-order run computed in other batches: within rounding
        close(plain(g), plain(w))
        assert g.ledger["nfe_computed"] == g.nfe_used - 4 * g.ledger["replayed"]  # only its full candidates replay


def _problem(sigmas=(1.0, 0.5, 0.0), sampler="euler", target=3) -> Problems:
    return Problems([target], [0], 64, (1, 8, 8), sigmas, sampler, 1)


def _key(model_id, noise, problems, guidance=1.0, *, seed=None, sigmas=None, sampler=None) -> str:
    """The key of one row (search 0) starting from ``noise``."""
    jobs = Jobs(torch.tensor([0]), noise[None], sigmas or problems.sigmas, noise_seed=[seed], sampler=sampler)
    return job_key(model_id, jobs, problems, guidance)


def test_the_key_sees_every_input():
    problem = _problem()
    (seed,), (noise,) = problem.noise([0], [(0,)])
    base = _key("m", noise, problem, seed=seed)
    assert _key("m", noise.clone(), problem, seed=seed) == base
    # the format written out by hand: head (format, model, sampler, schedule, guidance, shape:dtype, target), seed
    run = "\x1f".join(
        (
            FORMAT,
            "m",
            "euler",
            hashlib.sha256(torch.tensor([1.0, 0.5, 0.0]).double().numpy().tobytes()).hexdigest(),
            "1.0",
            "(1, 8, 8):torch.float32",
        )
    )
    assert base == hashlib.sha256((run + "\x1f3").encode()).hexdigest()[:32] + f"s{seed}"
    other_noise = noise.clone()
    other_noise.view(-1)[5] += 1e-6
    tweaked_sigmas = (1.0, math.nextafter(0.5, 1.0), 0.0)
    changed = [
        _key("m2", noise, problem, seed=seed),  # other weights
        _key("m", noise, problem, sampler="heun"),
        _key("m", noise, _problem(sampler="heun"), seed=seed),
        _key("m", noise, _problem(tweaked_sigmas), seed=seed),  # one ulp
        _key("m", noise, problem, 1.5, seed=seed),  # guidance
        _key("m", noise, _problem(target=4), seed=seed),
        _key("m", noise, problem, seed=seed + 1),
        _key("m", noise, problem),  # keyed by bytes, not by seed
        _key("m", other_noise, problem),
    ]
    assert len({base, *changed}) == 1 + len(changed)


def test_a_batch_of_keys_is_each_job_s_own_key():
    problems = Problems([3, 4], [0, 0], 64, (1, 8, 8), (1.0, 0.5, 0.0), "euler", 1)
    owners = [n % 2 for n in range(6)]
    seeds, noise = problems.noise(owners, [(n // 2,) for n in range(6)])
    seeds = [seed if n < 4 else None for n, seed in enumerate(seeds)]  # two keyed by bytes
    keys = job_keys("m", Jobs(torch.tensor(owners), noise, problems.sigmas, noise_seed=seeds), problems, 1.0)
    alone = [_key("m", noise[n], _problem(target=3 + owners[n]), seed=seeds[n]) for n in range(6)]
    assert keys == alone
    assert len(set(keys)) == 6
    assert keys[0][:32] == keys[2][:32] != keys[1][:32]  # a search's seeded keys share everything but the seed
    assert _key("m", noise[0].double(), _problem(), seed=seeds[0]) != keys[0]  # the noise's dtype is part of the key


def test_a_pack_is_a_safetensors_file_and_a_replay_never_aliases_it(tmp_path):
    from safetensors import safe_open

    cache = CandidateCache(tmp_path / "c")
    xs = torch.randn(3, 1, 8, 8).transpose(2, 3)  # not contiguous: stored as its values
    images = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    previews = {"preview@2": torch.rand(3, 1, 28, 28, dtype=torch.float64)}
    cache.put(["a", "b", "c"], xs, images, previews, flops_per_nfe=5.0, decode_flops=None)
    (pack,) = (tmp_path / "c" / "packs").glob("*.safetensors")
    assert file_digest(pack.read_bytes()) == pack.name.removesuffix(".safetensors")
    with safe_open(str(pack), framework="pt") as f:
        assert json.loads(f.metadata()["keys"]) == ["a", "b", "c"]
        assert torch.equal(f.get_tensor("x"), xs) and torch.equal(f.get_tensor("image"), images)
        assert torch.equal(f.get_tensor("preview@2"), previews["preview@2"])
    got = cache.get(["c", "z", "a"], 2)
    assert got[1] is None and got[0]["flops_per_nfe"] == 5.0 and got[0]["decode_flops"] is None
    assert torch.equal(got[0]["x"], xs[2]) and torch.equal(got[2]["image"], images[0])
    assert torch.equal(got[2]["preview"], previews["preview@2"][0]) and got[2]["image"].dtype == torch.float64
    for entry in (got[0], got[2]):
        for t in (entry["x"], entry["image"], entry["preview"]):
            t.add_(1)  # a caller editing what it got in place
    again = cache.get(["c", "a"], 2)
    assert torch.equal(again[0]["x"], xs[2]) and torch.equal(again[1]["preview"], previews["preview@2"][0])
    assert cache.get(["a"], 3) == [None]  # no preview at step 3 in that pack


def test_a_batch_of_a_dtype_without_a_safetensors_code_is_not_cached(tmp_path):
    cache = CandidateCache(tmp_path / "c")
    image = torch.zeros(1, 4, dtype=torch.complex64)
    cache.put(["a"], torch.zeros(1, 4), image, {}, flops_per_nfe=None, decode_flops=None)
    assert cache.get(["a"], None) == [None] and not list((tmp_path / "c" / "packs").iterdir())


def test_a_well_named_but_malformed_pack_is_a_miss(tmp_path):
    cache = CandidateCache(tmp_path / "c")
    cache.put(["a"], torch.zeros(1, 4), torch.zeros(1, 4), {}, flops_per_nfe=None, decode_flops=None)
    (pack,) = (tmp_path / "c" / "packs").glob("*.safetensors")
    data = pack.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["image"]["data_offsets"] = [16, 48]  # past the end of the file
    text = json.dumps(header).encode()
    bad = len(text).to_bytes(8, "little") + text + data[8 + n :]
    pack.unlink()
    (tmp_path / "c" / "packs" / f"{file_digest(bad)}.safetensors").write_bytes(bad)
    assert CandidateCache(tmp_path / "c").get(["a"], None) == [None]


def test_one_changed_weight_is_a_miss(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    search(digits, classifier, cache)
    other = copy.deepcopy(digits)
    assert model_identity(other) == model_identity(digits)
    assert [counts(r)[:2] for r in search(other, classifier, cache)] == [(0, 8)] * 2  # a copy: same weights
    with torch.no_grad():
        next(other.net.parameters()).view(-1)[0] += 1e-3  # in place: the identity notices (version counters)
    assert model_identity(other) != model_identity(digits)
    assert [counts(r)[:2] for r in search(other, classifier, cache)] == [(32, 0)] * 2


def test_a_weight_edited_through_data_changes_the_identity(digits, monkeypatch):
    from noisesearch import cache

    model = copy.deepcopy(digits)
    before = model_identity(model)
    weight = next(model.net.parameters())
    weight.data.view(-1)[0] += 1e-3  # bumps no version counter: a small model's bytes are compared
    assert model_identity(model) != before
    monkeypatch.setattr(cache, "REHASH_BYTES", 0)  # as for a large model: version counters and data pointers
    seen = model_identity(model)
    assert model_identity(model) == seen
    weight.data = weight.data.clone() + 1e-3  # a new tensor: its data pointer moves
    assert model_identity(model) != seen
    seen = model_identity(model)
    with torch.no_grad():
        weight.view(-1)[1] -= 1e-3  # in place: its version counter moves
    assert model_identity(model) != seen


def test_another_sampler_or_schedule_is_a_miss(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    search(digits, classifier, cache)
    assert [counts(r)[:2] for r in search(digits, classifier, cache, sampler="heun", budget=56)] == [(56, 0)] * 2
    assert [counts(r)[:2] for r in search(digits, classifier, cache, steps=2, budget=16)] == [(16, 0)] * 2


@pytest.mark.numerics
def test_batch_dependent_and_anonymous_verifiers_never_replay_scores(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    rank = VERIFIERS["ensemble"](members="classifier,oracle-is", mode="rank")
    raw = VERIFIERS["ensemble"](members="classifier,oracle-is", mode="weighted-sum", standardize=False)
    anonymous = CallableVerifier(lambda images, prompts: images.mean(dim=(1, 2, 3)), name="brightness")
    keyed = CallableVerifier(lambda images, prompts: images.mean(dim=(1, 2, 3)), name="brightness", cache_key="b1")
    assert verifier_identity(rank) is None and verifier_identity(anonymous) is None
    assert verifier_identity(raw) is not None and verifier_identity(keyed) is not None
    assert verifier_identity(classifier) == verifier_identity(VERIFIERS["classifier"]())  # stable across objects
    search(digits, classifier, cache)
    for v, verified in ((rank, 8), (anonymous, 8), (raw, 8), (keyed, 8)):
        assert [counts(r) for r in search(digits, v, cache)] == [(0, 8, 0, verified)] * 2
    for v, verified in ((rank, 8), (anonymous, 8), (raw, 0), (keyed, 0)):  # only stable identities were stored
        assert [counts(r) for r in search(digits, v, cache)] == [(0, 8, 0, verified)] * 2
    plain_rank = search(digits, rank, None)
    for a, b in zip(search(digits, rank, cache), plain_rank):
        assert plain(a) == plain(b)  # exact: stored images of the same batch, scored over it as without the cache


@pytest.mark.numerics
def test_uint8_images_are_quantised_and_scores_replayed(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c", images="uint8")
    first = search(digits, classifier, cache, keep_images=True)
    again = search(digits, classifier, cache, keep_images=True)
    for f, a in zip(first, again):
        assert [c["score"] for c in a.candidates] == [c["score"] for c in f.candidates]  # stored scores
        for k, image in f.images.items():
            want = (image.clamp(0, 1) * 255).round() / 255
            assert a.images[k].dtype == image.dtype and torch.allclose(a.images[k], want, atol=1e-7)
            assert (a.images[k] - image).abs().max() <= 0.5 / 255 + 1e-7
    oracle = VERIFIERS["oracle-is"]()
    scored = search(digits, oracle, cache, keep_images=True)
    for s in scored:  # a new verifier scores the quantised images
        images = torch.stack([s.images[k] for k in sorted(s.images)])
        want = oracle(images, [s.target] * len(images)).tolist()
        assert [c["score"] for c in s.candidates] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_the_size_cap_evicts_the_least_recently_used(tmp_path):
    cache = CandidateCache(tmp_path / "c", max_mb=0.1)
    image = torch.rand(1, 64, 64)  # 16 KiB, and as much again for the end state: a pack of one entry is ~32 KiB
    keys = [f"{n:02d}" + "0" * 62 for n in range(5)]
    now = time.time()
    for n, key in enumerate(keys[:3]):
        cache.put([key], image[None], image[None], {}, flops_per_nfe=None, decode_flops=None)
        (pack,) = [p for p in (tmp_path / "c" / "packs").glob("*.safetensors") if p.stat().st_mtime > now - 50]
        os.utime(pack, (now - 100 + n, now - 100 + n))  # pack n used at time n
    assert cache.size_bytes() <= 0.1 * 2**20 and all(e is not None for e in cache.get(keys[:3], None))
    for p in (tmp_path / "c" / "packs").glob("*.safetensors"):  # get() touched them: set the order again
        os.utime(p, (now - 100, now - 100))
    cache.get([keys[0]], None)  # 0 is now the most recently used
    cache.put([keys[3]], image[None], image[None], {}, flops_per_nfe=None, decode_flops=None)  # over the cap: one goes
    assert cache.size_bytes() <= 0.1 * 2**20
    fresh = CandidateCache(tmp_path / "c")
    hits = [e is not None for e in fresh.get(keys[:4], None)]
    assert hits.count(True) == 3 and hits[0] and hits[3]  # 0 was used last and 3 is new: 1 or 2 went


def test_a_torn_pack_is_a_miss(tmp_path, digits, classifier):
    cache = CandidateCache(tmp_path / "c")
    search(digits, classifier, cache)
    (pack,) = (tmp_path / "c" / "packs").glob("*.safetensors")
    data = bytearray(pack.read_bytes())
    data[-1] ^= 1  # one flipped bit: the digest in its name no longer matches
    pack.write_bytes(bytes(data))
    again = search(digits, classifier, CandidateCache(tmp_path / "c"))
    assert [counts(r)[:2] for r in again] == [(32, 0)] * 2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"max_mb": -1}, "cache size cap must be a positive number of MiB, got -1"),
        ({"max_mb": float("nan")}, "cache size cap must be a positive number of MiB, got nan"),
        ({"images": "png"}, "cache images mode 'png' is unknown; accepted: exact, uint8"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tmp_path, kwargs, message):
    with pytest.raises(UserError) as e:
        CandidateCache(tmp_path / "c", **kwargs)
    assert str(e.value) == message


def test_an_unwritable_cache_folder_is_refused_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"^cache '.*file' is a file; give a folder"):
        CandidateCache(blocker)
    with pytest.raises(UserError, match=r"^cannot write the cache folder '.*file/c': Not a directory; give a writable"):
        CandidateCache(blocker / "c")
    result = runner.invoke(
        app, ["generate", "--out", str(tmp_path / "o"), "--budget", "8", "--target", "3", "--cache-max-mb", "-2"]
    )
    assert (
        result.exit_code == 2 and result.stderr == "error: cache size cap must be a positive number of MiB, got -2.0\n"
    )
    assert not (tmp_path / "o").exists()


def test_generate_and_search_take_a_cache(tmp_path):
    import noisesearch as ns

    args = ["generate", "--budget", "16", "--steps", "4", "--target", "3", "--cache", str(tmp_path / "c")]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert first.exit_code == again.exit_code == 0, first.output
    a, b = (json.loads((tmp_path / d / "record.json").read_text()) for d in "ab")
    assert (a["nfe_computed"], a["replayed"], b["nfe_computed"], b["replayed"]) == (16, 0, 0, 4)
    assert ledger.drop_computed(ledger.drop_seconds(a)) == ledger.drop_computed(ledger.drop_seconds(b))
    (r,) = ns.search(MODELS["digits"](), 3, verifier="classifier", budget=16, steps=4, cache=tmp_path / "c")
    assert (r.record["nfe_computed"], r.record["replayed"], r.record["nfe_used"]) == (0, 4, 16)


SWEEP = tiny_sweep(
    benchmark={"name": "digits", "per_class": 1, "subset": 4},
    budgets=[8, 16, 32],
    chunk=4,
    baseline=False,
    keep_images=DROP,
)


def _sweep(tmp_path, folder, *extra, config=SWEEP):
    path = write_config(tmp_path, config)
    result = runner.invoke(app, ["sweep", str(path), "--out", str(folder), *extra])
    assert result.exit_code == 0, result.output
    return sorted(
        (json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()),
        key=lambda r: (r["budget"], r["target_index"]),
    )


@pytest.mark.numerics
def test_a_sweep_caches_in_its_folder_and_a_rerun_computes_nothing(tmp_path):
    out = tmp_path / "out"
    rows = _sweep(tmp_path, out)
    assert [(r["budget"], r["nfe_computed"], r["replayed"]) for r in rows] == [
        (8, 0, 2),
        (8, 0, 2),
        (8, 0, 2),
        (8, 0, 2),
        (16, 0, 4),
        (16, 0, 4),
        (16, 0, 4),
        (16, 0, 4),
        (32, 32, 0),
        (32, 32, 0),
        (32, 32, 0),
        (32, 32, 0),
    ]  # fmt: skip  (the largest budget runs first: the smaller budgets' candidates are its first ones)
    assert len(list((out / "cache" / "packs").glob("*.safetensors"))) == 1  # one per batch computed
    (out / "results.jsonl").unlink()
    again = _sweep(tmp_path, out)
    assert [(r["nfe_computed"], r["verify_computed"]) for r in again] == [(0, 0)] * 12
    assert [ledger.drop_computed(ledger.drop_seconds(r)) for r in again] == [
        ledger.drop_computed(ledger.drop_seconds(r)) for r in rows
    ]
    off = _sweep(tmp_path, tmp_path / "off", "--no-cache")
    assert not (tmp_path / "off" / "cache").exists()
    assert [(r["nfe_computed"], r["replayed"]) for r in off] == [(r["nfe_used"], 0) for r in off]
    for a, b in zip(off, again):
        close(ledger.drop_computed(ledger.drop_seconds(a)), ledger.drop_computed(ledger.drop_seconds(b)))


KILLED = tiny_sweep(
    benchmark={"name": "digits", "per_class": 2}, budgets=[8, 16, 32, 64], chunk=2, baseline=False, keep_images=DROP
)


def plain_row(row: dict) -> dict:
    return ledger.drop_computed(ledger.drop_seconds(dict(row)))


@pytest.mark.slow
def test_kill_9_of_a_cached_sweep_leaves_a_consistent_cache_and_a_rerun_gives_the_same_rows(tmp_path):
    from safetensors import safe_open

    config = write_config(tmp_path, KILLED, "killed.yaml")
    out, shared = tmp_path / "out", tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "noisesearch.cli", "sweep", str(config), "--out", str(out), "--cache", str(shared)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len(list(shared.glob("packs/*.safetensors"))) < 4 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    packs = list(shared.glob("packs/*.safetensors"))
    assert len(packs) >= 4  # killed while the largest budget (run first, 10 chunks) was computed
    for path in packs:  # every finished file is whole: its digest, readable, an end state and image per key
        assert file_digest(path.read_bytes()) == path.name.removesuffix(".safetensors")
        with safe_open(str(path), framework="pt") as f:
            keys = json.loads(f.metadata()["keys"])
            assert set(f.keys()) == {"x", "image"}
            assert len(f.get_tensor("x")) == len(f.get_tensor("image")) == len(keys) > 0
    for path in shared.glob("scores/*/*.json"):
        assert file_digest(path.read_bytes()) == path.name.removesuffix(".json")
        doc = json.loads(path.read_text())
        assert len(doc["keys"]) == len(doc["scores"]) > 0
    result = runner.invoke(app, ["sweep", str(config), "--out", str(out), "--cache", str(shared)])
    assert result.exit_code == 0, result.output
    rows = {
        (r["cell"], r["target_index"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }
    result = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "ref"), "--no-cache"])
    assert result.exit_code == 0, result.output
    ref = {
        (r["cell"], r["target_index"]): r
        for r in map(json.loads, (tmp_path / "ref" / "results.jsonl").read_text().splitlines())
    }
    assert rows.keys() == ref.keys() and len(rows) == 4 * 20
    for k in ref:
        close(plain_row(rows[k]), plain_row(ref[k]))
    assert sum(r["replayed"] for r in rows.values()) > 0
    # and the cache it left replays everything now
    (out / "results.jsonl").unlink()
    result = runner.invoke(app, ["sweep", str(config), "--out", str(out), "--cache", str(shared)])
    assert result.exit_code == 0, result.output
    again = {
        (r["cell"], r["target_index"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }
    assert all(r["nfe_computed"] == 0 for r in again.values())
    for k in ref:
        assert plain_row(again[k]) == plain_row(rows[k])  # replayed: exact


@pytest.mark.slow
def test_two_processes_writing_one_cache_at_once_leave_it_whole(tmp_path):
    shared = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def start(out: str, budget: int) -> subprocess.Popen:
        args = ["generate", "--target", "3", "--steps", "4", "--budget", str(budget), "--cache", str(shared)]
        return subprocess.Popen(
            [sys.executable, "-m", "noisesearch.cli", *args, "--out", str(tmp_path / out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    procs = [start("a", 256), start("b", 128)]  # the same first 32 candidates, written by both
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    for path in shared.glob("packs/*"):
        assert not path.name.endswith(".tmp")
        assert file_digest(path.read_bytes()) == path.name.removesuffix(".safetensors")
    a, b = (json.loads((tmp_path / d / "record.json").read_text()) for d in "ab")
    result = runner.invoke(
        app,
        [
            "generate",
            "--target",
            "3",
            "--steps",
            "4",
            "--budget",
            "256",
            "--cache",
            str(shared),
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code == 0, result.output
    c = json.loads((tmp_path / "c" / "record.json").read_text())
    assert (c["nfe_computed"], c["replayed"]) == (0, 64)
    close(plain_row(c), plain_row(a))
    close(plain_row(b)["candidates"], plain_row(a)["candidates"][:32])
    for cand in c["candidates"]:  # each replay is exactly what one of the two writers computed
        k = cand["index"]
        assert cand["score"] in {a["candidates"][k]["score"], *([b["candidates"][k]["score"]] if k < 32 else [])}


class _Tiny:
    """A model-like object: one network and options that change its outputs."""

    def __init__(self, **options):
        self.net = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(self.net.weight, 0.5)
        torch.nn.init.constant_(self.net.bias, 0.0)
        self.path = Path("/somewhere") / str(len(options))  # where weights came from is not an identity
        self.__dict__.update(options)


def test_the_model_identity_sees_options_tensors_and_images_in_them():
    from PIL import Image

    def image(value: int):
        return Image.new("RGB", (4, 4), (value, 0, 0))

    control = torch.zeros(1, 3, 4, 4)
    base = model_identity(_Tiny(height=32, pipeline_kwargs={"image": control, "strength": 0.5}))
    assert base == model_identity(_Tiny(height=32, pipeline_kwargs={"image": control.clone(), "strength": 0.5}))
    changed = [
        _Tiny(height=64, pipeline_kwargs={"image": control, "strength": 0.5}),
        _Tiny(height=32, pipeline_kwargs={"image": control + 1e-3, "strength": 0.5}),
        _Tiny(height=32, pipeline_kwargs={"image": control, "strength": 0.6}),
        _Tiny(height=32, pipeline_kwargs={"image": image(1), "strength": 0.5}),
    ]
    ids = [model_identity(m) for m in changed]
    assert len({base, *ids}) == 5
    assert (
        model_identity(_Tiny(image=image(1)))
        == model_identity(_Tiny(image=image(1)))
        != model_identity(_Tiny(image=image(2)))
    )
    same = _Tiny(height=32)
    first = model_identity(same)
    same.height = 64  # an option changed on the same object is seen too
    assert model_identity(same) != first
    assert model_identity(object()) is None  # no weights: not cacheable


@pytest.mark.parametrize("model_name", ["digits", "digits-large"])
@pytest.mark.parametrize("verifier_name", ["classifier", "feature-similarity"])
def test_using_a_model_or_verifier_never_changes_its_identity(model_name, verifier_name):
    """What a model or verifier keeps on itself while it works (a memo, a counted FLOP figure) must not move its
    cache identity: a put and the next get would then disagree and nothing would ever replay."""
    model, verifier = MODELS[model_name](), VERIFIERS[verifier_name]()
    before = (model_identity(model), verifier_identity(verifier))
    run_search(model, verifier, ZeroOrderSearch(neighbours=2), [3], seeds=[0], budget=16, steps=STEPS, guidance=2.0)
    assert (model_identity(model), verifier_identity(verifier)) == before
    assert before[0] is not None and before[1] is not None
