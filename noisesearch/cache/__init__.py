"""The replay cache: a content-addressed store of finished candidates, so no candidate is paid twice.

A *cacheable* job is a pure function of its key: it starts at the schedule's first sigma from a
noise, runs with a deterministic sampler to sigma = 0, takes no per-step injected noises, no
gradient and no known x0-prediction (``cacheable``). Its key (``job_key``) is a head, a SHA-256 of

- the model's identity (``model_identity``): its class, name, public options (size, guidance form,
  pipeline arguments, tensors and images in them by their bytes' hash) and a hash of every weight
  tensor's bytes, computed once per model object and again when an option or a weight changes
  (torch's version counters see an in-place edit);
- the sampler's name, the exact sigma schedule (its float64 bytes), the guidance scale, the target
  and the noise's shape and dtype;

followed by the starting noise: its seed when it is a seeded draw (``Jobs.noise_seed``), else the
SHA-256 of its exact bytes.

An entry holds the end state (the latent, exact), the decoded image (exact, or uint8 with
``images="uint8"``), the decoded x0-previews a verifier used (by step), and the FLOPs the ledger
needs to charge a replay as if computed. Scores are kept apart, per verifier identity
(``verifier_identity``: class, name, simple options and weights hash, or a declared ``cache_key``);
a verifier without a stable identity (a callable without ``cache_key``) or whose scores depend on
the batch (``batch_dependent``: the rank ensemble) never gets a cached score.

Files: one pack per batch of computed candidates (``DIR/packs/<digest>.safetensors``) and one score
file per batch and verifier (``DIR/scores/<verifier id>/<digest>.json``), each written whole and renamed
into place, named by the digest of its bytes (checked on read). Two processes (Ray actors) or a
``kill -9`` can leave at most an orphaned ``.tmp`` file, never a partial pack in use; a reader treats an
unreadable, torn or missing file as a miss. With ``max_mb`` the least recently used files (by
modification time, touched on every hit) are removed once the folder exceeds the cap.

What the cache touches, and what it never does:

- *Its own files* are the regular files (never a symbolic link, FIFO, socket, device or folder) named
  ``packs/<32 hex>.safetensors``, ``scores/<24 hex>/<32 hex>.json`` and its writers' temporary files
  ``.new-*.tmp`` in those folders. Nothing else in the folder is read, followed, changed or removed:
  a reader checks a name and ``lstat`` before opening, opens with ``O_NOFOLLOW | O_NONBLOCK`` and checks
  again (``fstat``) that it got a regular file, so a FIFO never blocks it; anything else there is a miss.
- *A hit* is a key found in one of its own packs whose bytes match the digest in its name, of this
  ``FORMAT``, holding the preview the run needs, and stored in a mode the run accepts: an entry stored
  with ``images="uint8"`` (its image quantised) is a miss for a run in ``"exact"`` mode; an exact entry
  is replayed as it is in either mode (it is the run's own image, as a fresh run would score it). Scores
  are only ever stored for images a run computed or replayed exactly: scores a ``"uint8"`` run takes of
  quantised replays are used in that run only, so a stored score is always the score of the exact image.
- *Opening* checks before it writes anything (one temporary file is made and removed at once to probe
  each folder that exists): the folder is a folder (or can be made), ``packs`` and ``scores`` are real
  folders if present, and each can be written; otherwise one ``UserError`` naming the path, and nothing
  is made. Only then are the missing folders made.
- *Storing* is an optimisation, so it never fails a run: any ``OSError`` while storing or evicting
  (a full disk or quota, a read-only folder, something that is not the cache's in the way of a file it
  writes, which is never replaced) prints one ``warning:`` line naming the path, once per cache object,
  and the run goes on without storing (``CandidateCache._storing``, the one place this is decided).
- *Eviction* (``max_mb``) and ``remove_created`` remove only the cache's own files, and folders only when
  empty (``os.rmdir``), never through a symbolic link.

The package: the identities are here (``model_identity``, ``verifier_identity``; what they hash in
``_hashing``); ``_keys`` derives a job's key; ``_files`` names, reads and writes the cache's own files safely;
``_packs`` is their layout; ``_removal`` is all it ever deletes; ``_store`` is ``CandidateCache``, the API.
The declared identities (``Identity``, ``declared_identity``) are ``noisesearch.contracts``'s.
"""

from __future__ import annotations

import hashlib

from noisesearch import _io
from noisesearch.cache._files import PACK_NAME, SCORE_NAME, VERIFIER_NAME, file_digest
from noisesearch.cache._hashing import _identity, public_options
from noisesearch.cache._keys import cacheable, job_key, job_keys
from noisesearch.cache._packs import FORMAT, MEMO_BYTES, Hits
from noisesearch.cache._removal import cache_entries, holds_entries, remove_created
from noisesearch.cache._store import IMAGE_MODES, CandidateCache, check_settings, open_cache
from noisesearch.contracts import declared_identity

__all__ = [
    "FORMAT",
    "IMAGE_MODES",
    "MEMO_BYTES",
    "PACK_NAME",
    "REHASH_BYTES",
    "SCORE_NAME",
    "VERIFIER_NAME",
    "CandidateCache",
    "Hits",
    "cache_entries",
    "cacheable",
    "check_settings",
    "file_digest",
    "holds_entries",
    "job_key",
    "job_keys",
    "model_identity",
    "open_cache",
    "remove_created",
    "verifier_identity",
]

REHASH_BYTES = 64 * 2**20  # weights up to this size are kept as bytes and compared on every identity call


def model_identity(model) -> str | None:
    """A hash of the model's weights and output-changing options; None when it has no readable weights.

    A model may declare ``cache_key`` (a string) instead, e.g. one whose weights live elsewhere.
    """
    declared = declared_identity(model).cache_key
    if declared is not None:
        return hashlib.sha256(f"model:{declared}".encode()).hexdigest()
    return _identity(model, "model", REHASH_BYTES)


def verifier_identity(verifier) -> str | None:
    """A short identity of the verifier's scores, or None when its scores must never be replayed.

    None for a batch-dependent verifier (``batch_dependent``: the rank ensemble) and for one that declares
    ``needs_cache_key`` (a callable wrapped by ``verifiers.custom``: nothing but a key can name what its code
    computes) without a declared ``cache_key``; a declared ``cache_key`` wins.
    """
    declared = declared_identity(verifier)
    if declared.batch_dependent:
        return None
    if declared.cache_key:
        return hashlib.sha256(f"verifier:{declared.cache_key}".encode()).hexdigest()[:24]
    if declared.needs_cache_key:
        return None
    ids = [verifier_identity(m) for m in declared.members]  # an ensemble: its members' identities too
    if any(i is None for i in ids):
        return None
    own = _identity(verifier, "verifier", REHASH_BYTES)
    if own is None:  # no weights: class, name and options only
        options = public_options(verifier)
        own = hashlib.sha256(_io.dumps({"class": type(verifier).__qualname__, **options}).encode()).hexdigest()
    return hashlib.sha256(_io.dumps([own, ids]).encode()).hexdigest()[:24]
