"""Searches run with and without the replay cache, and what the two must agree on (test_cache, test_faults_cache)."""

from __future__ import annotations

from noisesearch import ledger
from noisesearch.algorithms.random import RandomSearch
from noisesearch.driver import run_search

TARGETS = [3, 5]
STEPS = 4  # digits: 1 NFE per step without guidance, so a candidate costs 4 NFEs


def search(model, verifier, cache, *, budget=32, algorithm=None, sampler="euler", steps=STEPS, keep_images=False):
    """``run_search`` of ``TARGETS`` (seed 0 each) with ``cache`` (None: without one)."""
    return run_search(
        model,
        verifier,
        algorithm or RandomSearch(),
        TARGETS,
        seeds=[0] * len(TARGETS),
        budget=budget,
        steps=steps,
        sampler=sampler,
        cache=cache,
        keep_images=keep_images,
    )


def plain(result) -> dict:
    """What a run with the cache and one without must agree on (no wall times, no computed counts)."""
    return ledger.drop_computed(ledger.drop_seconds(dict(result.ledger))) | {
        "candidates": result.candidates,
        "best_index": result.best_index,
        "best_score": result.best_score,
        "nfe_used": result.nfe_used,
        "verifier_calls": result.verifier_calls,
    }
