"""Tiny random-config verifier backbones and heads for the tests, built offline and saved to folders.

Each builder writes what ``save_pretrained`` writes for a real checkpoint (config.json,
model.safetensors, preprocessor_config.json, tokenizer files), so the tests load them through
``noisesearch.verifiers._hf.load`` exactly like downloaded weights. ``Server`` is a local
chat-completions server for the LLM-grader tests.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

IMAGE = 32  # model input size; test images are other sizes so that resize and crop are exercised


def _build(cls, config, seed: int):
    """``cls(config)`` in eval mode, initialised from ``seed`` in a forked RNG (the global one is left untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return cls(config).eval()


def byte_vocab() -> dict[str, int]:
    """A byte-level BPE vocabulary (256 bytes, each also as word end) + start/end tokens: 514 entries."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    chars, extra = [], 0
    for b in range(256):  # the usual byte -> printable-unicode map of byte-level BPE
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    return vocab


def tiny_clip(folder: Path, *, seed: int = 0, dim: int = 16, as_processor: bool = False) -> Path:
    """A 2-layer CLIP (projection ``dim``) with a byte-level tokenizer and a 32-px image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    text = dict(
        vocab_size=514,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=dim,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=8,
        projection_dim=dim,
    )
    model = _build(CLIPModel, CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim), seed)
    model.save_pretrained(folder)
    tokenizer = CLIPTokenizer(vocab=byte_vocab(), merges=[])
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    if as_processor:
        CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    else:
        tokenizer.save_pretrained(folder)
        images.save_pretrained(folder)
    return Path(folder)


def tiny_dinov2(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer DINOv2 (hidden 32, 16 patches) with a resize-36 / crop-32 image processor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    model = _build(
        Dinov2Model,
        Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=IMAGE, patch_size=8
        ),
        seed,
    )
    model.save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": IMAGE, "width": IMAGE},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return Path(folder)


def tiny_siglip(folder: Path, *, seed: int = 0) -> Path:
    """A 1-layer SigLIP with an image processor only (feature similarity needs no tokenizer)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    text = dict(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=IMAGE, patch_size=8
    )
    model = _build(SiglipModel, SiglipConfig(text_config=text, vision_config=vision), seed)
    model.save_pretrained(folder)
    SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE}).save_pretrained(folder)
    return Path(folder)


def aesthetic_head(dim: int, *, seed: int = 0, widths=(1024, 128, 64, 16)) -> dict[str, torch.Tensor]:
    """Random weights in the LAION predictor's key layout: ``layers.{0,2,4,6,7}`` (dropouts at 1, 3, 5)."""
    gen = torch.Generator().manual_seed(seed)
    sizes, indices = [dim, *widths, 1], [0, 2, 4, 6, 7]
    head = {}
    for i, (n_in, n_out) in zip(indices, zip(sizes[:-1], sizes[1:])):
        head[f"layers.{i}.weight"] = torch.randn(n_out, n_in, generator=gen) / n_in**0.5
        head[f"layers.{i}.bias"] = torch.randn(n_out, generator=gen) * 0.1
    return head


def linear_head(features: int, classes: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random linear classification head ``weight`` (K, F), ``bias`` (K,)."""
    gen = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(classes, features, generator=gen), "bias": torch.randn(classes, generator=gen)}


def images(n: int, *, seed: int = 0, size=(40, 48), channels: int = 3) -> torch.Tensor:
    """Smooth random images (n, C, H, W) in [0, 1] (upsampled noise, so resizing is meaningful)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 5, 6, generator=gen)  # (n, C, 5, 6)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


# A local OpenAI-compatible chat-completions server for the LLM-grader tests (127.0.0.1 only).
#
# The image's mean grey level (x10, rounded) is its id; the server grades image k with k and
# misbehaves per id: 1 slow, 2 one 429, 3 one 500, 4 always malformed JSON, 5 one dropped
# connection, 6 one schema-invalid grading, 7 one reply slower than the client's timeout, 8 a 400
# whose body echoes the API key.

ASPECTS = (
    "accuracy_to_prompt",
    "creativity_and_originality",
    "visual_quality_and_realism",
    "consistency_and_cohesion",
    "emotional_or_thematic_resonance",
    "overall_score",
)


def grading(score: float) -> str:
    """A valid grading JSON with every aspect and the overall score equal to ``score``."""
    return json.dumps({k: {"explanation": "fine", "score": score} for k in ASPECTS})


class Server:
    """Runs in a daemon thread; ``stop()`` (or 60 s) shuts it down. ``attempts`` counts requests per image id."""

    def __init__(self, key: str, *, slow_timeout: float = 1.0):
        self.key, self.slow_timeout = key, slow_timeout
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                outer.handle(self)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # the dropped connection is on purpose
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(60, self.stop)
        self.timer.daemon = True
        self.timer.start()

    def stop(self):
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def reply(self, h, status, body: bytes, headers=()):
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h):
        from PIL import Image

        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        if h.headers.get("Authorization") != f"Bearer {self.key}":
            return self.reply(h, 401, b'{"error": "bad key"}')
        assert body["response_format"]["type"] == "json_schema"
        url = body["messages"][1]["content"][1]["image_url"]["url"]
        png = base64.b64decode(url.split(",", 1)[1])
        k = round(float(np.asarray(Image.open(io.BytesIO(png)).convert("L")).mean()) / 255 * 10)
        with self.lock:
            self.attempts[k] += 1
            n = self.attempts[k]
        content = grading(float(k))
        if k == 1:
            time.sleep(0.4)  # finishes after the others
        elif k == 2 and n == 1:
            return self.reply(h, 429, b'{"error": "slow down"}', [("Retry-After", "0")])
        elif k == 3 and n == 1:
            return self.reply(h, 500, b'{"error": "oops"}')
        elif k == 4:
            content = '{"overall_score": {"score": 4'  # truncated JSON, always
        elif k == 5 and n == 1:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)  # drop the connection without an answer
            return None
        elif k == 6 and n == 1:
            content = grading(11.0)  # out of the 0-10 range: fails validation
        elif k == 7 and n == 1:
            time.sleep(self.slow_timeout)  # longer than the client's timeout
        elif k == 8:
            return self.reply(h, 400, json.dumps({"error": f"bad request with key {self.key}"}).encode())
        reply = {
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10},
        }
        return self.reply(h, 200, json.dumps(reply).encode())


# Builders for the verifiers with released checkpoints (ImageReward, HPS v2, Inception oracles).

WORDS = ["a", "red", "cube", "dog", "on", "the", "beach", "cat", "blue", "sky", "photo", "of", "##s"]


def bert_tokenizer(folder: Path):
    """A BERT vocabulary (special tokens + ``WORDS``, 18 entries) written to ``folder/vocab.txt``, as bert-base-uncased ships it."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    return BertTokenizer.from_pretrained(str(folder), local_files_only=True)


IMAGEREWARD_TINY = {
    "vision": dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=8,
        layer_norm_eps=1e-6,
    ),
    "text": dict(
        vocab_size=24,
        hidden_size=32,
        encoder_hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=40,
        pad_token_id=0,
        bos_token_id=2,
        sep_token_id=3,
        eos_token_id=3,
    ),
}

# Our module names -> the released ImageReward.pt names, written out independently of the loader's
# mapping so that the round trip checks it (BLIP's ViT uses timm's names; the text encoder and MLP
# keep theirs under blip.text_encoder. and mlp.layers.).
_RELEASE_VISION = [
    (r"embeddings\.class_embedding$", "cls_token"),
    (r"embeddings\.position_embedding$", "pos_embed"),
    (r"embeddings\.patch_embedding\.", "patch_embed.proj."),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
    (r"encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"post_layernorm\.", "norm."),
]


def release_state(model) -> dict[str, torch.Tensor]:
    """``ImageRewardModel``'s weights under the released key names, plus tensors the loader must skip."""
    import re

    out = {}
    for key, value in model.state_dict().items():
        part, rest = key.split(".", 1)
        if part == "vision":
            for pattern, name in _RELEASE_VISION:
                m = re.match(pattern, rest)
                if m:
                    out["blip.visual_encoder." + m.expand(name) + rest[m.end() :]] = value.clone()
                    break
            else:
                raise AssertionError(f"no release name for {key}")
        elif part == "text":
            out["blip.text_encoder." + rest] = value.clone()
        else:
            out["mlp.layers." + rest] = value.clone()
    out["blip.text_encoder.embeddings.position_ids"] = torch.arange(40)[None]  # a buffer in the release
    out["blip.vision_proj.weight"] = torch.zeros(4, 32)  # BLIP's contrastive projection: unused by the score
    return out


def tiny_imagereward(folder: Path, *, seed: int = 0):
    """(folder, model): a tiny ImageReward saved as ImageReward.pt (release key names) + config.json + BERT vocab."""
    from noisesearch.verifiers.imagereward import ImageRewardModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ImageRewardModel(**IMAGEREWARD_TINY).eval()
        for p in model.head.parameters():  # larger head weights, so that scores differ visibly between images
            p.data.normal_(0, 0.3)
    torch.save(release_state(model), folder / "ImageReward.pt")
    (folder / "config.json").write_text(json.dumps(IMAGEREWARD_TINY), encoding="utf-8")
    bert_tokenizer(folder)
    return folder, model


OPENCLIP_TINY = "noisesearch-tiny-hps"


def tiny_openclip(path: Path, *, seed: int = 0) -> Path:
    """A tiny OpenCLIP (registered as ``OPENCLIP_TINY``) saved like HPS v2's checkpoint: {"state_dict": ...}."""
    import open_clip

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": IMAGE, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    }
    cfg_file = path.parent / f"{OPENCLIP_TINY}.json"
    cfg_file.write_text(json.dumps(cfg), encoding="utf-8")
    open_clip.add_model_config(cfg_file)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(OPENCLIP_TINY, pretrained=None).eval()
    torch.save({"state_dict": model.state_dict()}, path)
    return path


INCEPTION_SIZE = 75  # the smallest input InceptionV3 takes: the oracle tests run at this size


def tiny_inception(path: Path, *, seed: int = 0, classes: int = 10) -> Path:
    """Random torchvision InceptionV3 weights (``classes`` outputs, aux head) saved to ``path`` (.safetensors or .pth)."""
    from torchvision.models import inception_v3

    path = Path(path)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = inception_v3(weights=None, aux_logits=True, init_weights=True, num_classes=classes)
        for m in net.modules():  # batch-norm statistics from one batch, so that activations stay O(1)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        aux, net.AuxLogits = net.AuxLogits, None  # the aux head (unused by the verifiers) needs 299-px inputs
        with torch.no_grad():
            net.train()(images(4, seed=seed, size=(INCEPTION_SIZE, INCEPTION_SIZE)) * 2 - 1)
        net.AuxLogits = aux
        net.eval()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def reference_npz(path: Path, *, dim: int = 2048, seed: int = 0) -> Path:
    """Reference statistics ``mu`` (dim,), ``sigma`` (dim, dim) (positive definite) in an .npz."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, 64)) * 0.1
    np.savez(path, mu=rng.standard_normal(dim) * 0.1, sigma=a @ a.T + 0.01 * np.eye(dim))
    return Path(path)


class Brightness:
    """Mean brightness of each image (B, C, H, W), in [0, 1] (tests only); differentiable for first-order search.

    ``calls`` keeps the shapes of the images and previews of every call. It checks that it is given frames
    (4-D images, never videos) and one target per image.
    """

    name = "brightness"
    preview_sigma = None
    value_range = (0.0, 1.0)

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, images, targets, *, previews=None):
        self.calls.append((tuple(images.shape), None if previews is None else tuple(previews.shape)))
        return self.score(images, targets).detach()

    def score(self, images, targets, *, previews=None):
        assert images.dim() == 4 and len(targets) == len(images)  # frames, never videos
        return images.mean(dim=(1, 2, 3))


def every_image(images, targets):
    """A ``FailingVerifier`` mask: every image fails."""
    return torch.ones(len(images), dtype=torch.bool)


class FailingVerifier:
    """The scores of ``inner`` (default: ``Brightness``) with a failed score (NaN) wherever ``fails(images,
    targets)``, a bool mask (B,), is true (default: on every image), as a grader that times out would give.
    Differentiable where ``inner`` is."""

    preview_sigma = None

    def __init__(self, inner=None, fails=every_image, *, name: str = "failing"):
        self.inner = Brightness() if inner is None else inner
        self.fails, self.name = fails, name
        if getattr(self.inner, "score", None) is not None:
            self.score = self._score

    def __call__(self, images, targets, *, previews=None):
        return self._failed(self.inner(images, targets, previews=previews), images, targets)

    def _score(self, images, targets, *, previews=None):
        return self._failed(self.inner.score(images, targets, previews=previews), images, targets)

    def _failed(self, scores, images, targets):
        return torch.where(self.fails(images, targets).to(scores.device), torch.nan, scores)


def register_verifier(monkeypatch, name: str, make, *, domain: str | None = None) -> None:
    """Put a factory of ``make()`` in the verifier registry as ``name`` (undone by ``monkeypatch``)."""
    from noisesearch.verifiers import VERIFIERS

    def factory(**_):
        return make()

    factory.domain = domain
    monkeypatch.setitem(VERIFIERS, name, factory)
