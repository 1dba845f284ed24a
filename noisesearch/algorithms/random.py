"""Random search (best-of-N): N independent noises, keep the one the verifier likes best.

Ma et al. 2025, Sec. 3.2 "Random Search". With ``candidates=None`` N is as many full candidates
as the budget pays for.
"""

from __future__ import annotations

from dataclasses import dataclass

from noisesearch.algorithms.base import CostModel, Jobs, Outcomes, Problems, is_count
from noisesearch.errors import UserError


@dataclass
class RandomState:
    problems: Problems
    candidates: int
    asked: bool = False


class RandomSearch:
    """Best-of-N over independent Gaussian noises (candidate k uses the draw ``(k,)``)."""

    name = "random"
    renders_from_noise = True  # final_steps: every candidate is a full trajectory from its drawn noise
    full_candidates_only = True  # it only picks starting noises of full candidates: whole-trajectory models run it

    def __init__(self, *, candidates: int | None = None):
        if candidates is not None and (not is_count(candidates) or candidates < 1):
            raise UserError(f"candidates must be a positive integer, got {candidates!r}")
        self.candidates = candidates

    def params(self) -> dict:
        return {"candidates": self.candidates}

    def _count(self, costs: CostModel, budget: int) -> int:
        """N: ``candidates``, or as many full candidates as ``budget`` pays for (0 when it pays for none)."""
        return self.candidates if self.candidates is not None else budget // costs.cost()

    def budget_needed(self, costs: CostModel, budget: int) -> tuple[int, str]:
        n = max(self._count(costs, budget), 1)
        return n * costs.cost(), f"{n} candidate(s)"

    def init(self, problems: Problems) -> RandomState:
        problems.require_budget(*self.budget_needed(problems.costs, problems.budget))
        return RandomState(problems, self._count(problems.costs, problems.budget))

    def ask(self, state: RandomState) -> list[Jobs]:
        if state.asked:
            return []
        # every search's candidates 0..N-1 in one batch; their noises are drawn by the driver when computed
        return [state.problems.fresh(state.candidates, deferred=True)]

    def tell(self, state: RandomState, outcomes: list[Outcomes]) -> None:
        state.asked = True  # the driver keeps each search's best finished candidate; nothing to adapt
