"""The sweep configuration's schema: pydantic models of the YAML file (``config.py`` reads and checks it)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BenchmarkSpec(_Strict):
    """Which targets: a registered benchmark, a subset of it (a count or indices), or a prompt file."""

    name: str
    subset: int | list[int] | None = None
    per_class: int = Field(1, ge=1)
    path: str | None = None
    splits: list[str] | None = None  # T2I-CompBench only


class VerifierSpec(_Strict):
    name: str
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class AlgorithmSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    budgets: list[int] | None = Field(None, min_length=1)  # this algorithm's budgets if not the sweep's


class SweepConfig(_Strict):
    """A benchmark x budgets x algorithms x seeds study with one search verifier."""

    model: str = "digits"
    model_path: str | None = None
    model_options: dict[str, Any] = Field(default_factory=dict)
    benchmark: BenchmarkSpec
    verifier: VerifierSpec
    eval_verifiers: list[VerifierSpec] = Field(default_factory=list)
    algorithms: list[AlgorithmSpec] = Field(min_length=1)
    budgets: list[int] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    steps: int = Field(8, ge=1)
    sampler: str = "euler"
    guidance: float | None = None
    baseline: bool = True
    baseline_budgets: list[int] | None = Field(None, min_length=1)
    baseline_scored: bool = True
    keep_images: bool | Literal["best", "all"] = False
    max_batch: int = Field(4096, ge=1)
    chunk: int = Field(256, ge=1, description="targets searched together and appended together")
    final_steps: int | None = None  # the best noise of every search denoised again with this many steps
    nfe_convention: Literal["rows", "steps"] = "rows"  # what one NFE is (accounting.NFE_CONVENTIONS)

    @property
    def step_budgets(self) -> list[int]:
        """The budgets the more-steps baseline spends: none without a baseline, else ``baseline_budgets`` or ``budgets``."""
        if not self.baseline:
            return []
        return list(self.budgets if self.baseline_budgets is None else self.baseline_budgets)

    def canonical(self) -> dict:
        """The config as plain JSON data (what is stored beside the results and compared on resume).

        The baseline settings added later are left out at their defaults, so a folder written
        before they existed resumes with the same config.
        """
        data = json.loads(self.model_dump_json())
        for spec in data["algorithms"]:
            if spec["budgets"] is None:
                del spec["budgets"]
        if data["baseline_budgets"] is None:
            del data["baseline_budgets"]
        if data["baseline_scored"]:
            del data["baseline_scored"]
        if data["final_steps"] is None:
            del data["final_steps"]
        if data["nfe_convention"] == "rows":
            del data["nfe_convention"]
        return data
