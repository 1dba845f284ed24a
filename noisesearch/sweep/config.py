"""The sweep configuration file (YAML), validated with pydantic; every mistake names its place.

Example (``examples/digits-sweep.yaml``)::

    model: digits
    benchmark: {name: digits, per_class: 20}
    verifier: {name: classifier}
    eval_verifiers: [{name: oracle-is}]
    algorithms:
      - {name: random}
      - {name: zero-order, params: {neighbours: 4, step_size: 1.0}}
    budgets: [16, 64, 256]
    seeds: [0, 1, 2]
    steps: 8
    baseline: true         # also spend each budget on more denoising steps
    keep_images: false     # true / "best": each search's best image as PNG; "all": every finished candidate's
                           # (class-conditional sets always go to .npz)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from noisesearch.errors import UserError


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
    keep_images: bool | Literal["best", "all"] = False
    max_batch: int = Field(4096, ge=1)
    chunk: int = Field(256, ge=1, description="targets searched together and appended together")

    @field_validator("budgets")
    @classmethod
    def _positive_budgets(cls, budgets: list[int]) -> list[int]:
        bad = [b for b in budgets if b < 1]
        if bad:
            raise ValueError(f"budgets must be positive NFE counts, got {bad}")
        return budgets

    def canonical(self) -> dict:
        """The config as plain JSON data (what is stored beside the results and compared on resume)."""
        return json.loads(self.model_dump_json())


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_config(path: Path | str) -> SweepConfig:
    """Read and validate a YAML sweep config; ``UserError`` with one line per mistake, each with its place."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of settings, got {type(data).__name__}")
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: {_where(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise UserError("\n".join(lines)) from None
    check_names(config, path)
    return config


def check_names(config: SweepConfig, path) -> None:
    """Registry names and algorithm parameters, checked before any work (``path`` for the messages)."""
    from noisesearch.algorithms import ALGORITHMS
    from noisesearch.benchmarks import BENCHMARKS
    from noisesearch.generate import check_options
    from noisesearch.models import MODELS
    from noisesearch.samplers import SAMPLERS
    from noisesearch.verifiers import VERIFIERS

    problems = []

    def known(value, registry, where, what):
        if value not in registry:
            problems.append(f"{path}: {where}: unknown {what} {value!r}; accepted: {', '.join(registry)}")
            return False
        return True

    known(config.model, MODELS, "model", "model")
    known(config.benchmark.name, BENCHMARKS, "benchmark.name", "benchmark")
    known(config.sampler, SAMPLERS, "sampler", "sampler")
    known(config.verifier.name, VERIFIERS, "verifier.name", "verifier")
    for i, spec in enumerate(config.eval_verifiers):
        known(spec.name, VERIFIERS, f"eval_verifiers.{i}.name", "verifier")
    for i, spec in enumerate(config.algorithms):
        if known(spec.name, ALGORITHMS, f"algorithms.{i}.name", "algorithm"):
            try:
                check_options(ALGORITHMS[spec.name], spec.params, "algorithm", spec.name)
                ALGORITHMS[spec.name](**spec.params)
            except UserError as e:
                problems.append(f"{path}: algorithms.{i}.params: {e}")
    if not problems:
        problems += _check_budgets(config, path)
        try:
            b = config.benchmark
            BENCHMARKS[b.name](
                subset=b.subset, per_class=b.per_class, path=b.path, **({"splits": b.splits} if b.splits else {})
            )
        except UserError as e:
            problems.append(f"{path}: benchmark: {e}")
    if problems:
        raise UserError("\n".join(problems))


def _check_budgets(config: SweepConfig, path) -> list[str]:
    """Every algorithm must be able to spend every budget (checked on the plain schedule of ``steps``)."""
    from noisesearch.algorithms import ALGORITHMS, Problem
    from noisesearch.samplers import schedule

    nfe_per_call = 1 if config.guidance in (None, 1.0) else 2
    problems = []
    for i, spec in enumerate(config.algorithms):
        for j, budget in enumerate(config.budgets):
            problem = Problem(0, 0, budget, (1, 8, 8), schedule(config.steps), config.sampler, nfe_per_call)
            try:
                ALGORITHMS[spec.name](**spec.params).init(problem)
            except UserError as e:
                problems.append(f"{path}: budgets.{j}: {spec.name} (algorithms.{i}): {e}")
                break
    return problems
