"""LLM grader, local back end: a tiny random-config Llava saved to a folder, loaded through the factory (offline)."""

import json
import math

import pytest
import torch

pytest.importorskip("transformers")

from _tiny_verifiers import byte_vocab, images  # noqa: E402

from noisesearch.cli import parse_params  # noqa: E402
from noisesearch.errors import UserError  # noqa: E402
from noisesearch.verifiers import VERIFIERS  # noqa: E402
from noisesearch.verifiers.llm_grader import METRICS, RUBRIC  # noqa: E402
from noisesearch.verifiers.llm_local import LocalLLMGrader, parse_grading  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def tiny_llava(folder, *, seed=0, template=True):
    """A 2-layer CLIP vision tower + 2-layer Llama, byte-level tokenizer with ``<image>``; model and processor saved."""
    from transformers import (
        CLIPImageProcessor,
        CLIPTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=4096)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tok.convert_tokens_to_ids("<image>")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=TEMPLATE if template else None,
    )
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    text = dict(
        model_type="llama",
        vocab_size=520,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    return {"chat": tiny_llava(root / "chat"), "plain": tiny_llava(root / "plain", template=False)}


def grading(score, **scores):
    """A grading JSON with every grade ``score`` except those given by name."""
    return json.dumps({k: {"explanation": "fine", "score": scores.get(k, score)} for k in METRICS})


def canned(v, answers, monkeypatch):
    """Replace the model's generation by ``answers[prompt]``; returns the list of prompts generated for."""
    calls = []

    def generate(prompt, image):
        assert image.mode == "RGB" and image.size == (48, 40)
        calls.append(prompt)
        return answers[prompt]

    monkeypatch.setattr(v, "generate", generate)
    return calls


def test_random_model_scores_nan_for_every_image_and_is_deterministic(folders):
    v = VERIFIERS["llm-grader"](path=folders["chat"], max_new_tokens=6)
    assert isinstance(v, LocalLLMGrader) and v.preview_sigma is None
    x, prompts = images(3, seed=1), ["a red cube", "a dog on the beach", "a red cube"]
    s = v(x, prompts)
    assert s.shape == (3,) and s.dtype == torch.float32 and torch.isnan(s).all()
    assert v.usage["generations"] == 3 and v.usage["invalid"] == 3 and 0 < v.usage["new_tokens"] <= 18
    from PIL import Image

    pil = Image.new("RGB", (48, 40), (200, 10, 10))
    first = v.generate("a red cube", pil)
    assert isinstance(first, str) and v.generate("a red cube", pil) == first  # greedy: the same answer


def test_chat_uses_the_template_else_the_llava_layout(folders):
    chat = VERIFIERS["llm-grader"](path=folders["chat"], max_new_tokens=2)
    text = chat.chat("a red cube")
    assert text.startswith("user: <image>") and text.endswith("assistant:")
    assert RUBRIC in text and "Prompt: a red cube" in text and all(m in text for m in METRICS)
    plain = VERIFIERS["llm-grader"](path=folders["plain"], max_new_tokens=2)
    text = plain.chat("a red cube")
    assert text.startswith("USER: <image>\n") and text.endswith("\nASSISTANT:") and RUBRIC in text
    assert torch.isnan(plain(images(1), ["a red cube"])).all()  # runs end to end without a template


def test_each_image_gets_its_own_parsed_score_or_nan(folders, monkeypatch):
    v = VERIFIERS["llm-grader"](path=folders["chat"])
    answers = {
        "valid": grading(7),
        "fenced": "```json\n" + grading(3) + "\n```",
        "around": "Sure! I {think} this is my grading: " + grading(9) + " Hope it helps {:)}",
        "truncated": '{"overall_score": {"explanation": "ok", "score": 4',
        "out of range": grading(11),
        "negative": grading(5, overall_score=-1),
        "missing key": json.dumps({"overall_score": {"explanation": "x", "score": 5}}),
        "nan": grading(5).replace("5", "NaN"),
        "two objects": grading(12) + "\nCorrected: " + grading(2),
        "no json": "I cannot grade this image.",
    }
    calls = canned(v, answers, monkeypatch)
    prompts = list(answers)
    s = v(images(len(prompts), seed=2), prompts)
    want = [7, 3, 9, math.nan, math.nan, math.nan, math.nan, math.nan, 2, math.nan]
    # parsed grades: exact decimals, default tolerance
    torch.testing.assert_close(s, torch.tensor(want, dtype=torch.float32), equal_nan=True)
    assert calls == prompts and v.usage["invalid"] == 6  # invalid answers: NaN at once, never generated again


def test_metric_picks_the_aspect(folders, monkeypatch):
    v = VERIFIERS["llm-grader"](path=folders["chat"], metric="accuracy_to_prompt")
    canned(v, {"a": grading(5, accuracy_to_prompt=8.5)}, monkeypatch)
    assert v(images(1), ["a"]).tolist() == [8.5]
    assert parse_grading(grading(5), v.Grading).overall_score.score == 5


def test_cache_hits_generate_nothing(folders, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    v = VERIFIERS["llm-grader"](path=folders["chat"], cache_dir=str(cache))
    answers = {"a": grading(1), "b": grading(2), "c": grading(3), "bad": "no"}
    calls = canned(v, answers, monkeypatch)
    x = images(4, seed=3)
    s = v(x, ["a", "b", "c", "bad"])
    # parsed grades: exact decimals, default tolerance
    torch.testing.assert_close(s, torch.tensor([1.0, 2.0, 3.0, math.nan]), equal_nan=True)
    assert len(calls) == 4 and len(list(cache.iterdir())) == 3  # invalid answers are not cached
    calls.clear()
    again = v(x[[2, 0, 1]], ["c", "a", "b"])  # shuffled: each score still follows its image
    assert again.tolist() == [3.0, 1.0, 2.0] and calls == [] and v.usage["cached"] == 3
    v(x[:1], ["b"])  # another prompt for the same image: a new request
    assert calls == ["b"]
    other = VERIFIERS["llm-grader"](path=folders["plain"], cache_dir=str(cache))  # another model: not shared
    other_calls = canned(other, answers, monkeypatch)
    other(x[:1], ["a"])
    assert other_calls == ["a"]


def test_factory_options_and_errors(folders, tmp_path):
    options = parse_params(["backend=local", "max_new_tokens=3", "dtype=float32"], "--verifier-param")
    v = VERIFIERS["llm-grader"](path=folders["chat"], **options)
    assert isinstance(v, LocalLLMGrader) and v.max_new_tokens == 3
    cases = [
        (dict(path=str(tmp_path / "missing")), "no folder"),
        (dict(path=folders["chat"], metric="beauty"), "unknown metric"),
        (dict(path=folders["chat"], max_new_tokens=0), "max_new_tokens"),
        (dict(path=folders["chat"], backend="onnx"), "unknown backend"),
        (dict(path=folders["chat"], backend="local", url="http://127.0.0.1:1"), "not url"),
        (dict(path=folders["chat"], url="http://127.0.0.1:1", model="m"), "path=... is for backend=local"),
        (dict(backend="local"), "needs weights"),
        (dict(), "needs url"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message) as err:
            VERIFIERS["llm-grader"](**kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="prompt must be a non-empty string"):
        v(images(1), [""])
    with pytest.raises(UserError, match="targets for"):
        v(images(2), ["a"])
    model_only = tmp_path / "model_only"
    tiny_llava(model_only)
    (model_only / "processor_config.json").unlink()
    (model_only / "tokenizer_config.json").unlink()
    (model_only / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="llm-grader") as err:
        VERIFIERS["llm-grader"](path=str(model_only))
    assert "\n" not in str(err.value)
