"""LLM grader, local back end: a transformers vision-language model grades each image (Ma et al. 2025, Fig. 16).

It asks for the rubric of the API back end (``llm_grader.RUBRIC`` plus a line giving the JSON
layout, since a local model has no structured-output mode) and validates the answer with the same
pydantic schema (``llm_grader.grading_model``). The model and its processor load with
``AutoModelForImageTextToText`` and ``AutoProcessor`` from a folder written by ``save_pretrained``
or a hub id, ``trust_remote_code`` off. The chat goes through the processor's chat template when
it has one (else ``USER: <image>\\n... ASSISTANT:``, the Llava-1.5 layout); images are the 8-bit PNG
round trip of our [0, 1] tensors, as the API back end sends them.

Decoding is greedy and one image at a time (no padding, so a score does not depend on the batch).
The grading is the first JSON object in the generated text that validates (code fences and text
around it are tolerated). Output that does not validate is recorded as NaN at once, without
retries: greedy decoding of the same input would produce the same text again. With ``cache_dir``,
validated gradings are stored like the API back end's (key: SHA-256 of "local", the model source,
dtype, instruction, prompt and PNG bytes); invalid outputs are not cached.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import torch

from noisesearch.errors import UserError
from noisesearch.verifiers._hf import _weights_problems, check_prompts, require, resolve_device, resolve_dtype, source
from noisesearch.verifiers.base import check_images
from noisesearch.verifiers.llm_grader import (
    METRICS,
    RUBRIC,
    cache_file,
    grading_model,
    png_bytes,
    read_cached,
    scores_of,
    write_atomic,
)

log = logging.getLogger(__name__)

WHAT = "llm-grader (local)"
EXAMPLE = "llava-hf/llava-1.5-7b-hf"
LAYOUT = (
    "The JSON object has exactly these keys: " + ", ".join(METRICS) + "; each maps to "
    '{"explanation": "<one sentence>", "score": <number from 0 to 10>}.'
)


def instruction(prompt: str) -> str:
    """The text of the user turn for one image: the rubric, the JSON layout and the prompt."""
    return f"{RUBRIC}\n{LAYOUT}\n\nPrompt: {prompt}"


def _no_constants(name: str):
    raise ValueError(f"{name} is not a valid score")


def parse_grading(text: str, Grading):
    """The first JSON object in ``text`` that validates as ``Grading``, or None (fences and text around it allowed)."""
    decoder = json.JSONDecoder(parse_constant=_no_constants)  # NaN / Infinity are not JSON scores
    start = text.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:  # not JSON from here (prose brace, truncated object): try the next brace
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            try:
                return Grading.model_validate(obj)
            except Exception:  # missing keys, extra keys, scores out of range: look further on
                pass
        start = text.find("{", end)
    return None


def _load(path, *, device, dtype):
    """(source, model in eval mode on ``device``, processor) for a vision-language model at ``path``."""
    src, local = source(path, what=WHAT, example=EXAMPLE)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    transformers = require("transformers", WHAT)
    common = {"trust_remote_code": False, "local_files_only": local}
    try:
        processor = transformers.AutoProcessor.from_pretrained(src, **common)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{WHAT}: no processor in {src}: {_first_line(e)}") from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise UserError(
            f"{WHAT}: the processor in {src} lacks an image processor or a tokenizer; expected a vision-language model"
        )
    auto = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_kw = {"dtype": dt} if (major, minor) >= (4, 56) else {"torch_dtype": dt}  # renamed in 4.56
    try:
        model, info = auto.from_pretrained(
            src, ignore_mismatched_sizes=True, output_loading_info=True, **dtype_kw, **common
        )
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{WHAT}: cannot load an image-text-to-text model from {src}: {_first_line(e)}") from None
    problems = _weights_problems(info)
    if problems:
        raise UserError(f"{WHAT}: the weights in {src} do not fit its config.json: {problems}")
    src = str(Path(src).resolve()) if local else src
    return src, model.to(dev).eval().requires_grad_(False), processor


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class LocalLLMGrader:
    """Scores images by a local vision-language model's grading (0-10) of ``metric`` (Ma et al. 2025, Fig. 16).

    Args:
        path: a folder written by ``save_pretrained`` (model + processor) or a hub id;
        device, dtype: where and how the model runs; metric: which grade is the score
        ("overall_score" or an aspect); cache_dir: folder for cached gradings (None: no cache);
        max_new_tokens: the longest answer generated per image.

    Range: [0, 10] (the grading schema refuses other values), NaN where no valid grading came back.
    """

    preview_sigma = None
    value_range = (0.0, 10.0)

    def __init__(
        self, *, path=None, device="cpu", dtype="float32", metric="overall_score", cache_dir=None, max_new_tokens=512
    ):
        self.name = "llm-grader"
        if metric not in METRICS:
            raise UserError(f"llm-grader: unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
        if int(max_new_tokens) < 1:
            raise UserError(f"llm-grader: max_new_tokens must be at least 1, got {max_new_tokens}")
        self.metric, self.max_new_tokens = metric, int(max_new_tokens)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.Grading = grading_model()
        self.source, self.model, self.processor = _load(path, device=device, dtype=dtype)
        self.device, self.dtype = resolve_device(device), resolve_dtype(dtype)
        self.usage = {"generations": 0, "new_tokens": 0, "invalid": 0, "cached": 0}

    def chat(self, prompt: str) -> str:
        """The model's input text for one image and its prompt (chat template when the processor has one)."""
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}, {"type": "text", "text": instruction(prompt)}]
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        token = getattr(self.processor, "image_token", None) or "<image>"
        return f"USER: {token}\n{instruction(prompt)}\nASSISTANT:"

    @torch.inference_mode()
    def generate(self, prompt: str, image) -> str:
        """The model's greedy answer (text, special tokens dropped) for one PIL image and its prompt."""
        try:
            inputs = self.processor(images=[image], text=[self.chat(prompt)], return_tensors="pt")
        except Exception as e:  # a template or processor that does not fit the model: same for every image
            raise UserError(
                f"{WHAT}: cannot build the model input with the processor of {self.source}: {_first_line(e)}"
            ) from None
        inputs = {
            k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        tok = self.processor.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = self.model.generate(
            **inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens, pad_token_id=pad
        )
        new = out[0, inputs["input_ids"].shape[1] :]  # (T,): the generated tokens only
        self.usage["generations"] += 1
        self.usage["new_tokens"] += int(new.numel())
        return self.processor.decode(new, skip_special_tokens=True)

    def grade(self, prompt: str, png: bytes):
        """The grading of one image (PNG bytes) from the cache or the model, or None when the answer is invalid."""
        from PIL import Image

        cache = cache_file(self.cache_dir, "local", self.source, str(self.dtype), instruction(prompt), png)
        grading = read_cached(cache, self.Grading)
        if grading is not None:
            self.usage["cached"] += 1
            return grading
        grading = parse_grading(self.generate(prompt, Image.open(io.BytesIO(png)).convert("RGB")), self.Grading)
        if grading is None:
            self.usage["invalid"] += 1
        elif cache is not None:
            write_atomic(cache, grading.model_dump_json())
        return grading

    def gradings(self, images: torch.Tensor, targets: list) -> list:
        """One grading (or None) per image, in image order."""
        check_images(images)
        prompts = check_prompts(targets, len(images), what=self.name)
        results = [self.grade(prompt, png_bytes(im)) for prompt, im in zip(prompts, images)]
        for i, g in enumerate(results):
            if g is None:
                log.warning("llm-grader: image %d scored NaN: the model's answer is not a valid grading", i)
        log.info(
            "llm-grader (local): %d/%d graded; generations %d, new tokens %d, invalid %d, cached %d",
            sum(g is not None for g in results),
            len(results),
            self.usage["generations"],
            self.usage["new_tokens"],
            self.usage["invalid"],
            self.usage["cached"],
        )
        return results

    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Scores (B,) in [0, 10]: the chosen grade; NaN where the answer was not a valid grading."""
        return scores_of(self.gradings(images, targets), self.metric)
