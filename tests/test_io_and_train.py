"""Files that must never lose data, and the digits world retrained from scratch."""

import json

import pytest
import torch

from noisesearch._io import append_jsonl, dumps, load_weights, read_jsonl_tolerant, save_weights, write_json
from noisesearch.errors import UserError


def test_half_written_last_line_is_cut_and_earlier_rows_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2})
    with open(path, "a") as f:
        f.write('{"a": 3, "b"')  # a crash in the middle of an append
    assert read_jsonl_tolerant(path) == [{"a": 1}, {"a": 2}]
    append_jsonl(path, {"a": 3})
    assert read_jsonl_tolerant(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_broken_line_in_the_middle_is_an_error_not_a_silent_drop(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_jsonl_tolerant(path)
    assert path.read_text() == '{"a": 1}\nnot json\n{"a": 2}\n'


def test_write_json_is_atomic_and_stable(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"b": 1, "a": [1.5]})
    first = path.read_bytes()
    write_json(path, {"a": [1.5], "b": 1})
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_dumps_writes_non_finite_floats_as_null_and_sorts_keys():
    """Both paths of ``dumps``: finite rows as they are, rows with NaN/inf (even nested) with null there."""
    assert dumps({"b": 1.5, "a": [1, (2, 3)]}) == '{"a": [1, [2, 3]], "b": 1.5}'
    row = {"b": float("nan"), "a": {"x": [1.0, float("-inf")], "y": (float("inf"),)}, "c": "nan"}
    assert dumps(row) == '{"a": {"x": [1.0, null], "y": [null]}, "b": null, "c": "nan"}'
    assert row["b"] != row["b"]  # the caller's row is not changed
    with pytest.raises(TypeError):
        dumps({"a": object()})


def test_weights_round_trip_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, {"w": torch.arange(3.0)}, {"kind": "flow"})
    tensors, meta = load_weights(path)
    assert torch.equal(tensors["w"], torch.arange(3.0)) and meta["kind"] == "flow"


def test_weights_with_missing_keys_name_them(tmp_path):
    from noisesearch.digits.train import WEIGHTS_DIR
    from noisesearch.models.digits import load_net

    tensors, meta = load_weights(WEIGHTS_DIR / "flow.safetensors")
    del tensors["out.bias"]
    save_weights(tmp_path / "f.safetensors", tensors, meta)
    with pytest.raises(UserError, match=r"missing keys \['out.bias'\]"):
        load_net(tmp_path / "f.safetensors", "flow")


def test_shipped_weights_are_small_safetensors():
    from noisesearch.digits.train import WEIGHTS_DIR, WORLD

    for name, (kind, config, _, _) in WORLD.items():
        path = WEIGHTS_DIR / name
        assert path.stat().st_size < 4_000_000
        _, meta = load_weights(path)
        assert meta["kind"] == kind and json.loads(meta["config"]) == config


@pytest.mark.slow
def test_retrained_flow_model_reaches_the_documented_quality():
    """`noisesearch train digits` from seed 0 gives a model as good as the shipped one.

    Documented (docs/ARCHITECTURE.md): FID about 35-40 at 8 Euler steps on 300 samples, and random
    search with 16 candidates cuts it by more than a third. Checked here on a retrained network.
    """
    from noisesearch.algorithms import RandomSearch, derive_seed
    from noisesearch.digits.train import train_network
    from noisesearch.driver import run_search
    from noisesearch.metrics import DigitsEvaluator
    from noisesearch.models.digits import DigitsModel
    from noisesearch.verifiers import VERIFIERS

    model = DigitsModel("digits")
    model.net = train_network("flow.safetensors", seed=0).requires_grad_(False)
    targets = [c for c in range(10) for _ in range(30)]
    seeds = [derive_seed(0, i) for i in range(len(targets))]
    evaluator, verifier = DigitsEvaluator(), VERIFIERS["classifier"]()

    def fid(budget):
        rs = run_search(model, verifier, RandomSearch(), targets, seeds=seeds, budget=budget, steps=8)
        return evaluator(torch.stack([r.best_image for r in rs]), targets)["fid"]

    base, searched = fid(8), fid(128)
    assert base < 50
    assert searched < base * 2 / 3


@pytest.mark.slow
def test_retrained_classifier_reaches_the_documented_accuracy():
    from noisesearch.digits.train import accuracy, load_data, train_network

    net = train_network("classifier.safetensors", seed=0)
    assert accuracy(net, load_data().split(held_out=True)) > 0.9
