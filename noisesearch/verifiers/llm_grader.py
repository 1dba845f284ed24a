"""LLM grader: a multimodal chat model grades each image against its prompt (Ma et al. 2025, Sec. 5.1, Fig. 16).

The model scores five aspects (0-10 each) and an overall score, returned as JSON validated with
pydantic (``Grading``) and requested as structured output (``response_format`` json_schema). The
back end is any OpenAI-compatible chat-completions endpoint (``url``, ``model``; the key is read
from the environment variable named ``key_env`` at request time and never stored, logged,
cached or put in an error message). Images go as base64 PNG data URLs.

Robustness: requests run in threads, each score is written to its own image's index; timeouts,
dropped connections, 429 and 5xx are retried with exponential backoff; a response that fails
validation is retried, then recorded as NaN (a failed score, never a crash). Only when *no* image
of a call could be graded because the server is unreachable or refuses the request (401, 403,
404) is a ``UserError`` raised, since the whole search would otherwise be silently NaN. With
``cache_dir``, validated gradings are stored per request (key: SHA-256 of model, rubric, prompt and
PNG bytes) and identical requests are not sent again. The local back end (a transformers
vision-language model) is ``llm_local.py``; it shares the rubric, schema and cache helpers here.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from noisesearch.checks import check_positive_int
from noisesearch.errors import UserError
from noisesearch.keywords import bind, declare
from noisesearch.verifiers._hf import check_prompts, require
from noisesearch.verifiers.base import check_images

log = logging.getLogger(__name__)

ASPECTS = (
    "accuracy_to_prompt",
    "creativity_and_originality",
    "visual_quality_and_realism",
    "consistency_and_cohesion",
    "emotional_or_thematic_resonance",
)
METRICS = (*ASPECTS, "overall_score")
RUBRIC = """You judge images made by a text-to-image model. You get the text prompt and one image.
Grade the image on each aspect below with a number from 0 (very poor) to 10 (excellent) and one
short sentence that explains the grade:
- accuracy_to_prompt: are all objects, attributes, counts, relations and text from the prompt there, as described?
- creativity_and_originality: is the interpretation inventive rather than generic, while staying on the prompt?
- visual_quality_and_realism: is it sharp and well lit, with plausible anatomy, geometry and textures, free of artefacts?
- consistency_and_cohesion: do style, lighting, perspective and scale agree across the whole image?
- emotional_or_thematic_resonance: does it convey the mood or theme that the prompt asks for?
Then give overall_score (0-10): your overall judgement, about the mean of the five aspects unless
one flaw clearly dominates. Judge only what is visible. Answer with the JSON object only."""
FATAL_STATUS = (401, 403, 404)
RETRY_STATUS = (408, 409, 429)


def grading_model():
    """The pydantic model of a grading: five aspects and ``overall_score``, each {explanation, score in [0, 10]}."""
    pydantic = require("pydantic", "llm-grader")

    class Aspect(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        explanation: str
        score: float = pydantic.Field(ge=0, le=10)

    fields = {name: (Aspect, ...) for name in METRICS}
    return pydantic.create_model("Grading", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def png_bytes(image: torch.Tensor) -> bytes:
    """PNG encoding of one image (C, H, W) in [0, 1] as 8-bit (deterministic)."""
    from PIL import Image

    arr = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (C, H, W)
    arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)  # (H, W) or (H, W, C)
    buf = io.BytesIO()
    Image.fromarray(arr.numpy()).save(buf, format="PNG")
    return buf.getvalue()


class _Failure(Exception):
    """One attempt failed: ``kind`` is "retry", "invalid" or "fatal"; ``reason`` is safe to log."""

    def __init__(self, kind: str, reason: str, wait: float = 0.0):
        super().__init__(reason)
        self.kind, self.reason, self.wait = kind, reason, wait


@dataclass(frozen=True, kw_only=True)
class GraderSettings:
    """``LLMGrader``'s keywords (documented there), in the order its signature shows them."""

    url: str | None = None
    model: str | None = None
    key_env: str = "OPENAI_API_KEY"
    metric: str = "overall_score"
    cache_dir: str | Path | None = None
    workers: int = 8
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_tokens: int = 1024
    price_prompt: float | None = None
    price_completion: float | None = None

    def check(self) -> None:
        """Refuse a missing endpoint or model name, an unknown metric and a price that is not a number >= 0."""
        if not self.url or not self.model:
            raise UserError(
                "llm-grader needs url=<OpenAI-compatible endpoint> and model=<model name>, "
                "or backend=local with path=<VLM folder or hub id>"
            )
        if self.metric not in METRICS:
            raise UserError(f"llm-grader: unknown metric {self.metric!r}; accepted: {', '.join(METRICS)}")
        prices = (self.price_prompt, self.price_completion)
        if any(p is not None and not (isinstance(p, (int, float)) and p >= 0) for p in prices):
            raise UserError(f"llm-grader: prices per million tokens must be numbers >= 0, got {prices}")
        for name in ("workers", "max_tokens"):
            check_positive_int(getattr(self, name), what=f"llm-grader: {name}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise UserError(f"llm-grader: retries must be an integer >= 0, got {self.retries!r}")
        for name, low in (("timeout", 0.0), ("backoff", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < math.inf:
                raise UserError(f"llm-grader: {name} must be a finite number of seconds >= 0, got {value!r}")


class LLMGrader:
    """Scores images by a multimodal chat model's grading (0-10) of ``metric`` (Ma et al. 2025, Fig. 16).

    Args:
        url: the endpoint (".../v1" or ".../v1/chat/completions"); model: the model name it serves;
        key_env: the environment variable holding the API key ("" for none);
        metric: which grade is the score ("overall_score" or an aspect);
        cache_dir: folder for cached gradings (None: no cache); workers: concurrent requests;
        timeout: seconds per request; retries: extra attempts per image; backoff: first wait in seconds.
        price_prompt / price_completion: the endpoint's price per million prompt / completion tokens;
            with both, ``usage["cost"]`` adds up what the grading cost (logged and recorded).

    Range: [0, 10] (the grading schema refuses other values), NaN where no valid grading came back.
    """

    value_range = (0.0, 10.0)

    preview_sigma = None

    def __init__(self, **settings):
        o = bind(GraderSettings, settings, where="LLMGrader.__init__")
        self.name = "llm-grader"
        o.check()
        url = str(o.url).rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.key_env, self.metric = str(o.model), str(o.key_env or ""), o.metric
        self.workers, self.timeout, self.retries, self.backoff = (
            int(o.workers),
            float(o.timeout),
            int(o.retries),
            float(o.backoff),
        )
        self.max_tokens = int(o.max_tokens)
        self.cache_dir = Path(o.cache_dir).expanduser() if o.cache_dir else None
        self.Grading = grading_model()
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cached": 0}
        self.prices = (o.price_prompt, o.price_completion)  # per million tokens (the provider's currency)
        if all(p is not None for p in self.prices):
            self.usage["cost"] = 0.0
        self._lock = threading.Lock()

    # -- one request ------------------------------------------------------------------------
    def _key(self) -> str:
        return os.environ.get(self.key_env, "") if self.key_env else ""

    def _safe(self, text: str) -> str:
        """``text`` with the API key (if any) blanked out: every logged or raised string passes here."""
        key = self._key()
        return text.replace(key, "***") if key else text

    def payload(self, prompt: str, png: bytes) -> dict:
        """The chat-completions request body for one image."""
        image_url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": RUBRIC},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"Prompt: {prompt}"},
                        {"type": "image_url", "image_url": {"url": image_url}},
                    ],
                },
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "grading", "strict": True, "schema": self.Grading.model_json_schema()},
            },
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self._key():
            headers["Authorization"] = "Bearer " + self._key()
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = self._safe(e.read(300).decode("utf-8", "replace").strip().replace("\n", " "))
            if e.code in RETRY_STATUS or e.code >= 500:
                retry_after = e.headers.get("Retry-After", "") if e.headers else ""
                wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 0.0
                raise _Failure("retry", f"HTTP {e.code}", min(wait, 60.0)) from None
            kind = "fatal" if e.code in FATAL_STATUS else "invalid-final"
            raise _Failure(kind, f"HTTP {e.code}: {detail[:200]}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Failure("retry", "timeout") from None
            if isinstance(reason, (ConnectionRefusedError, socket.gaierror, str)):
                raise _Failure("unreachable", f"cannot reach the server ({type(reason).__name__})") from None
            raise _Failure("retry", f"connection dropped ({type(reason).__name__})") from None
        except TimeoutError:
            raise _Failure("retry", "timeout") from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            raise _Failure("retry", f"connection dropped ({type(e).__name__})") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Failure("invalid", "response is not JSON") from None

    def _parse(self, reply: dict):
        usage = reply.get("usage") or {} if isinstance(reply, dict) else {}
        with self._lock:
            self.usage["requests"] += 1
            prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            self.usage["prompt_tokens"] += prompt
            self.usage["completion_tokens"] += completion
            if "cost" in self.usage:
                self.usage["cost"] += (prompt * self.prices[0] + completion * self.prices[1]) / 1e6
        try:
            content = reply["choices"][0]["message"]["content"]
            return self.Grading.model_validate_json(content)
        except Exception as e:  # missing fields, bad JSON, scores out of range: all "invalid"
            raise _Failure("invalid", f"invalid grading ({type(e).__name__})") from None

    def grade(self, prompt: str, png: bytes):
        """(grading or None, failure reason or None) for one image, with retries and the cache."""
        cache = cache_file(self.cache_dir, self.model, RUBRIC, prompt, png)
        grading = read_cached(cache, self.Grading)
        if grading is not None:
            with self._lock:
                self.usage["cached"] += 1
            return grading, None
        body = json.dumps(self.payload(prompt, png)).encode("utf-8")
        failure = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(self.backoff * 2 ** (attempt - 1), failure.wait))
            try:
                grading = self._parse(self._post(body))
            except _Failure as f:
                failure = f
                if f.kind in ("fatal", "invalid-final"):
                    break
                continue
            if cache is not None:
                write_atomic(cache, grading.model_dump_json())
            return grading, None
        return None, failure

    # -- the verifier -----------------------------------------------------------------------
    def gradings(self, images: torch.Tensor, targets: list) -> list:
        """One grading (or None) per image, in image order."""
        check_images(images)
        prompts = check_prompts(targets, len(images), what=self.name)
        pngs = [png_bytes(im) for im in images]
        results: list = [None] * len(images)
        failures: list = [None] * len(images)

        def work(i: int) -> None:
            results[i], failures[i] = self.grade(prompts[i], pngs[i])  # each result lands at its own index

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(images)))) as pool:
            list(pool.map(work, range(len(images))))
        failed = [f for f in failures if f is not None]
        if failed and len(failed) == len(images) and all(f.kind in ("fatal", "unreachable") for f in failed):
            raise UserError(self._safe(f"llm-grader: {self.url}: {failed[0].reason} for every image"))
        for i, f in enumerate(failures):
            if f is not None:
                log.warning("llm-grader: image %d scored NaN after %s", i, self._safe(f.reason))
        log.info(
            "llm-grader: %d/%d graded; tokens so far: prompt %d, completion %d; requests %d, cached %d; cost %s",
            len(images) - len(failed),
            len(images),
            self.usage["prompt_tokens"],
            self.usage["completion_tokens"],
            self.usage["requests"],
            self.usage["cached"],
            f"{self.usage['cost']:.4f}" if "cost" in self.usage else "unknown (give price_prompt/price_completion)",
        )
        return results

    def __call__(self, images: torch.Tensor, targets: list, *, previews=None) -> torch.Tensor:
        """Scores (B,) in [0, 10]: the chosen grade; NaN where no valid grading was obtained."""
        return scores_of(self.gradings(images, targets), self.metric)


declare(LLMGrader.__init__, GraderSettings)


def scores_of(gradings: list, metric: str) -> torch.Tensor:
    """Scores (B,) from validated gradings, by index: ``metric``'s grade, NaN where a grading is missing."""
    out = torch.full((len(gradings),), float("nan"))
    for i, g in enumerate(gradings):
        if g is not None:
            out[i] = float(getattr(g, metric).score)
    return out


def cache_file(cache_dir: Path | None, *parts: str | bytes) -> Path | None:
    """The cache file for a request made of ``parts`` (SHA-256 of the length-prefixed parts); None: no cache."""
    if cache_dir is None:
        return None
    h = hashlib.sha256()
    for part in parts:
        part = part.encode() if isinstance(part, str) else part
        h.update(len(part).to_bytes(8, "little") + part)
    return cache_dir / f"{h.hexdigest()}.json"


def read_cached(path: Path | None, Grading):
    """The grading stored at ``path`` (validated with ``Grading``), or None when absent or unreadable."""
    if path is None or not path.is_file():
        return None
    try:
        return Grading.model_validate_json(path.read_text(encoding="utf-8"))
    except Exception:  # truncated or edited by hand: grade again and overwrite
        log.warning("llm-grader: ignoring unreadable cache file %s", path.name)
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (safe with concurrent writers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
