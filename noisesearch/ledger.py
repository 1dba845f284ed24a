"""FLOPs of one call, measured once per (network, input shape) and cached: the ledger's unit costs.

The accountant (``accounting.py``) keeps each search's ledger: NFEs and denoiser FLOPs, decodes and
their FLOPs, verifier calls and their FLOPs (``None`` for an API grader, which reports tokens and
cost in its ``usage`` instead), and wall seconds split into denoise / decode / verify / other.
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions
and attention; element-wise operations count 0) on the *real* first call of a network at an input
shape, divided by its rows: no extra forward, no NFE charged, no result changed (the counter only
watches the operators). Later calls at that shape read the cache. A model may instead declare
``flops_per_nfe()``, an analytic count, which is used as is; and any owner may declare
``flops_per_row(key)``, the analytic count of its call ``key`` (None where it has none), which the
accountant passes here as ``analytic`` (read from ``ModelInfo`` / ``VerifierInfo``). The
built-in digits networks do (exact, tested equal to the counter's): the counter's first use imports
``torch._dynamo``, 2.4 s and a few hundred thousand objects in every process.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

# owner object (model, verifier) -> {call key (kind, row shape, ...) -> FLOPs per row}
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple, float]] = weakref.WeakKeyDictionary()
_UNCACHEABLE: dict[tuple, float] = {}  # for owners that cannot be weakly referenced (keyed by id too)


def _table(owner: Any) -> tuple[dict[tuple, float], tuple]:
    try:
        return _CACHE.setdefault(owner, {}), ()
    except TypeError:
        return _UNCACHEABLE, (id(owner),)


def cached(owner: Any, key: tuple) -> float | None:
    """FLOPs per row of ``owner``'s call ``key`` if already measured."""
    table, prefix = _table(owner)
    return table.get(prefix + key)


def counted(
    owner: Any, key: tuple, rows: int, call: Callable[[], Any], analytic: Callable[[tuple], Any] | None = None
) -> tuple[Any, float]:
    """Run ``call()`` (the real call over ``rows`` rows), counting its FLOPs the first time for ``key``.

    ``analytic``: the owner's declared ``flops_per_row`` (None: none), asked before anything is measured.
    Returns the call's result and the FLOPs per row (from the cache when already measured).
    """
    known = cached(owner, key)
    if known is None and analytic is not None:
        known = analytic(key)
        if known is not None:
            table, prefix = _table(owner)
            table[prefix + key] = float(known)
    if known is not None:
        return call(), known
    from torch.utils.flop_counter import FlopCounterMode  # imported when first needed (most of a second)

    counter = FlopCounterMode(display=False)
    with counter:
        result = call()
    per_row = counter.get_total_flops() / max(rows, 1)
    table, prefix = _table(owner)
    table[prefix + key] = per_row
    return result, per_row


def clear() -> None:
    """Forget every measured count (tests)."""
    _CACHE.clear()
    _UNCACHEABLE.clear()


SECONDS = ("wall_time_s", "seconds_denoise", "seconds_decode", "seconds_verify", "seconds_other", "seconds_total")


def drop_seconds(row: dict) -> dict:
    """``row`` without its wall times (removed in place, returned): what two equal runs must agree on."""
    for key in SECONDS:
        row.pop(key, None)
    return row


COMPUTED = ("nfe_computed", "replayed", "decode_computed", "verify_computed")


def drop_computed(row: dict) -> dict:
    """``row`` without what the replay cache changes (removed in place, returned): the calls actually
    computed and the candidates replayed. A run with the cache and one without agree on the rest
    apart from wall times (``drop_seconds``)."""
    for key in COMPUTED:
        row.pop(key, None)
    return row
