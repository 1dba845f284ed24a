"""Checks of user-given numbers, made before any work: each failure is one ``UserError`` line.

Used by ``generate``, ``compare``, ``sweep`` and the Python API alike, so that a value is accepted
or refused the same way everywhere.

The ceilings on budgets and steps are derived from this machine's memory: a search keeps one record
per candidate and a schedule of ``steps + 1`` sigmas, so a budget or a step count that would need
more memory than the machine has can never finish and is refused with the number in the message.
"""

from __future__ import annotations

import math
import os

from noisesearch.errors import UserError

SEED_MAX = 2**63 - 1
# Memory one candidate costs the driver at the least (its record, its outcome, its slot in a
# batch); and one schedule step (a Python float in a tuple and a list).
CANDIDATE_BYTES = 2048
STEP_BYTES = 64


def memory_bytes() -> int:
    """This machine's physical memory in bytes (16 GiB where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 16 * 2**30


def check_seed(seed, *, what: str = "seed") -> int:
    """``seed`` as an int in 0..2**63-1 (what ``torch.Generator.manual_seed`` accepts everywhere)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UserError(f"{what} must be an integer from 0 to 2**63-1 = {SEED_MAX}, got {seed!r}")
    return seed


def check_guidance(guidance, *, what: str = "guidance") -> float | None:
    """``guidance`` as a finite float (None: the model's default)."""
    if guidance is None:
        return None
    try:
        value = float(guidance)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a finite number, got {guidance!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{what} must be a finite number, got {guidance!r}")
    return value


def max_steps(memory: int | None = None) -> int:
    """The most sampling steps a schedule may have on a machine with ``memory`` bytes."""
    return max(1, (memory_bytes() if memory is None else memory) // (4 * STEP_BYTES))


def max_budget(memory: int | None = None) -> int:
    """The most NFEs a search may be budgeted: at worst one candidate (and its record) per NFE."""
    return max(1, (memory_bytes() if memory is None else memory) // (2 * CANDIDATE_BYTES))


def check_steps(steps, *, what: str = "steps", memory: int | None = None) -> int:
    """``steps`` as a positive int below the memory ceiling."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"{what} must be a positive integer, got {steps!r}")
    ceiling = max_steps(memory)
    if steps > ceiling:
        raise UserError(f"{what} {steps} is more than this machine's memory could ever hold (at most {ceiling:,})")
    return steps


def check_budget(budget, *, what: str = "budget", memory: int | None = None) -> int:
    """``budget`` as a positive int of NFEs below the memory ceiling."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UserError(f"{what} must be a positive integer number of NFEs, got {budget!r}")
    ceiling = max_budget(memory)
    if budget > ceiling:
        raise UserError(
            f"{what} {budget:,} NFEs is more than this machine's memory could ever hold as candidates "
            f"(at most {ceiling:,}: one record of about {CANDIDATE_BYTES} bytes per NFE at worst)"
        )
    return budget
