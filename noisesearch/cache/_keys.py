"""The content address of a job (``job_keys``), and which jobs have one (``cacheable``).

A key is a head (format, model identity, sampler, schedule, guidance, noise shape and dtype, target) followed by
the starting noise: its seed when it is a seeded draw, else the digest of its bytes that its record carries too
(``noisesearch.noise_identity``; see ``noisesearch.cache``).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import torch

from noisesearch import _io
from noisesearch.cache._packs import FORMAT
from noisesearch.noise_identity import EXACT_DTYPES, KEY_HEX, noise_digests


def _simple(value: Any) -> Any:
    """``value`` as stable JSON data, or None when it is not plain data (objects, tensors, paths)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        items = [_simple(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    if isinstance(value, dict):
        items = {str(k): _simple(v) for k, v in value.items()}
        return None if any(items[str(k)] is None and v is not None for k, v in value.items()) else items
    return None


def cacheable(jobs, problems) -> bool:
    """Whether the rows of ``jobs`` (a ``Jobs`` batch of the run ``problems``) are each a pure function of
    their key (see ``noisesearch.cache``)."""
    from noisesearch.samplers import get_sampler

    return (
        problems.starts_at_noise(jobs)
        and tuple(jobs.sigmas) == tuple(problems.sigmas)
        and jobs.sigmas[-1] == 0
        and jobs.noises is None
        and jobs.denoised is None
        and not jobs.grad
        and not jobs.score_end
        and not get_sampler(jobs.sampler or problems.sampler).stochastic
        and (jobs.x is None or jobs.x.dtype in EXACT_DTYPES)  # a noise named by its float32 bytes exactly
    )


@functools.lru_cache(maxsize=256)
def _sigmas_digest(sigmas: tuple[float, ...]) -> str:
    return hashlib.sha256(torch.tensor(sigmas, dtype=torch.float64).numpy().tobytes()).hexdigest()


def job_keys(model_id: str, jobs, problems, guidance: float) -> list[str]:
    """The content address of each row of a cacheable ``Jobs`` batch of the run ``problems``.

    A key is ``<head>s<seed>`` for a seeded noise and ``<head>h<hash>`` for any other (the first 32 hex
    digits of the SHA-256 of its bytes), where ``head`` is the first 32 hex digits of the SHA-256 of
    everything else (format, model, sampler, schedule, guidance, noise shape and dtype, then the target).
    The head is computed once per search in the batch, from a text serialised once per batch, so a
    seeded key costs no hash of its own."""
    x = jobs.x
    shape, dtype = (problems.noise_shape, torch.float32) if x is None else (tuple(x.shape[1:]), x.dtype)
    sampler = jobs.sampler or problems.sampler
    run = "\x1f".join(
        (
            FORMAT,
            model_id,
            sampler,
            _sigmas_digest(tuple(float(s) for s in jobs.sigmas)),
            repr(float(guidance)),
            f"{tuple(shape)}:{dtype}",
        )
    ).encode()
    heads: dict[int, str] = {}
    owners = jobs.owner.tolist()
    for i in set(owners):
        target = problems.targets[i]
        if type(target) is int:  # a class label: what _io.dumps writes, without its cost
            text = str(target)
        else:
            plain = _simple(target)
            text = _io.dumps(plain) if plain is not None or target is None else repr(target)
        heads[i] = hashlib.sha256(run + b"\x1f" + text.encode()).hexdigest()[:32]
    seeds = jobs.noise_seed or [None] * len(owners)
    if None not in seeds:
        return [f"{heads[i]}s{seed:d}" for i, seed in zip(owners, seeds)]
    x = problems.start_states(jobs)
    unseeded = x[torch.tensor([s is None for s in seeds], device=x.device)]
    digests = iter(noise_digests(unseeded))  # the one noise identity (noisesearch.noise_identity), as records have it
    return [
        f"{heads[i]}s{seed:d}" if seed is not None else f"{heads[i]}h{next(digests)[:KEY_HEX]}"
        for i, seed in zip(owners, seeds)
    ]


def job_key(model_id: str, jobs, problems, guidance: float) -> str:
    """The key of the first row of ``jobs`` (see ``job_keys``)."""
    return job_keys(model_id, jobs.rows(slice(0, 1)), problems, guidance)[0]
