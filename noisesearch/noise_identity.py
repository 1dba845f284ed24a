"""The identity of a starting noise that is not a seeded draw: the SHA-256 of its float32 bytes, computed here only.

A candidate's noise is named by its seed when it is a seeded draw, else by this digest: its record's
``noise_sha256`` (and a search's ``best_noise_sha256``) is the first ``RECORD_HEX`` hex digits, the replay cache's
key ends with the first ``KEY_HEX`` (``noisesearch.cache``), so the two agree by construction. The digest is taken
over float32 bytes, which name float16, bfloat16 and float32 noises exactly; a wider noise is not cached
(``cache.cacheable``), since two of them may share their float32 bytes.
"""

from __future__ import annotations

import hashlib

import torch

RECORD_HEX = 16  # hex digits of the digest in a record's noise_sha256
KEY_HEX = 32  # hex digits of the digest in a replay-cache key
EXACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # noises whose float32 bytes name them exactly


def noise_digests(x: torch.Tensor) -> list[str]:
    """The SHA-256 hex digest of the float32 bytes of each row of ``x`` (B, ...): one copy of the batch to the host."""
    rows = x.detach().to(torch.float32).reshape(len(x), -1).contiguous().cpu().numpy()
    return [hashlib.sha256(row).hexdigest() for row in rows]


def noise_identity(seed: int | None, x: torch.Tensor) -> str:
    """One noise's identity as the cache keys it: ``s<seed>`` for a seeded draw, else ``h<digest[:KEY_HEX]>``
    (``x``: the noise, one row, read only without a seed); its record's ``noise_sha256`` is ``digest[:RECORD_HEX]``."""
    if seed is not None:
        return f"s{seed:d}"
    return f"h{noise_digests(x[None])[0][:KEY_HEX]}"
