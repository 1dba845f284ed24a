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
    # an algorithm may list its own budgets: {name: paths, budgets: [64, 256]} (default: `budgets`)
    baseline_budgets: null # the baseline's budgets if not `budgets` (e.g. [1, 2, 4, 8]: a step curve from 1 step)
    baseline_scored: true  # false: the baseline's samples are not scored by the verifier (best_score null)
    keep_images: false     # true / "best": each search's best image as PNG; "all": every finished candidate's
                           # (class-conditional sets always go to .npz)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from noisesearch._io import dumps
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

    @field_validator("budgets", "baseline_budgets")
    @classmethod
    def _positive_budgets(cls, budgets: list[int] | None) -> list[int] | None:
        bad = [b for b in budgets or () if b < 1]
        if bad:
            raise ValueError(f"budgets must be positive NFE counts, got {bad}")
        return budgets

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
        return data


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


MAX_YAML_NODES = 100_000  # YAML nodes after expanding aliases; a real sweep config has a few hundred


def _read_yaml(path: Path):
    """Parse a YAML file as UTF-8 with the safe loader, refusing alias expansions beyond ``MAX_YAML_NODES``."""
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save the config as UTF-8"
        ) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise UserError(
                f"{path}: anchors and aliases expand to {size:,} YAML nodes, more than the {MAX_YAML_NODES:,} a "
                "config may have; write the values out"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}:{where} not valid YAML ({problem})") from None
    finally:
        loader.dispose()


def _expanded_size(node, sizes: dict, open_: set) -> int:
    """Nodes in ``node`` with every alias expanded (counted, never built: memoised per node)."""
    import yaml

    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise UserError("the config has an alias inside its own anchor (a recursive structure)")
    open_.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes, open_) + _expanded_size(v, sizes, open_) for k, v in node.value)
    open_.discard(key)
    sizes[key] = min(size, MAX_YAML_NODES + 1)  # cap: the answer is only compared with the limit
    return sizes[key]


def load_config(path: Path | str) -> SweepConfig:
    """Read and validate a YAML sweep config; ``UserError`` with one line per mistake, each with its place.

    The config that comes back is canonical: algorithm parameters are normalised to their declared
    types (``1`` for a float parameter is ``1.0``), so one configuration always has one key.
    """
    path = Path(path)
    return validate_config(_read_yaml(path), path)


def validate_config(data, path) -> SweepConfig:
    """``load_config`` on data already read (``path`` names the source in messages): checked and canonical."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of settings, got {type(data).__name__}")
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: {_where(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise UserError("\n".join(lines)) from None
    check_numbers(config, path)
    config = normalise(config)
    check_names(config, path)
    check_duplicates(config, path)
    return config


def check_numbers(config: SweepConfig, path) -> None:
    """Budgets, steps, seeds and guidance through ``noisesearch.checks`` (memory ceilings, seed range, finite)."""
    from noisesearch.checks import check_budget, check_guidance, check_seed, check_steps

    problems = []

    def run(check, value, where, what):
        try:
            check(value, what=what)
        except UserError as e:
            problems.append(f"{path}: {where}: {e}")

    for i, budget in enumerate(config.budgets):
        run(check_budget, budget, f"budgets.{i}", "budget")
    for i, budget in enumerate(config.baseline_budgets or ()):
        run(check_budget, budget, f"baseline_budgets.{i}", "budget")
    for k, spec in enumerate(config.algorithms):
        for i, budget in enumerate(spec.budgets or ()):
            run(check_budget, budget, f"algorithms.{k}.budgets.{i}", "budget")
    for i, seed in enumerate(config.seeds):
        run(check_seed, seed, f"seeds.{i}", "seed")
    if config.baseline_budgets is not None and not config.baseline:
        problems.append(f"{path}: baseline_budgets: given with baseline: false; drop one of them")
    run(check_steps, config.steps, "steps", "steps")
    run(check_guidance, config.guidance, "guidance", "guidance")
    if problems:
        raise UserError("\n".join(problems))


def _normal(value, hint):
    """``value`` in the type ``hint`` declares: an int for a float-only parameter becomes a float, and back."""
    import types
    import typing

    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, list):
        for a in args:  # e.g. tuple[float, ...] | list[float]
            if typing.get_origin(a) in (list, tuple):
                return [_normal(v, typing.get_args(a)[0]) for v in value]
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and float in args and int not in args:
        return float(value)
    if isinstance(value, float) and value.is_integer() and int in args and float not in args:
        return int(value)
    return value


def normalise(config: SweepConfig) -> SweepConfig:
    """The config with every algorithm parameter in its declared type (``1`` and ``1.0`` are one key)."""
    import typing

    from noisesearch.algorithms import ALGORITHMS

    specs = []
    for spec in config.algorithms:
        if spec.name not in ALGORITHMS:  # check_names names it
            specs.append(spec)
            continue
        hints = typing.get_type_hints(ALGORITHMS[spec.name].__init__)
        params = {k: _normal(v, hints[k]) if k in hints else v for k, v in spec.params.items()}
        specs.append(AlgorithmSpec(name=spec.name, params=params, budgets=spec.budgets))
    return config.model_copy(update={"algorithms": specs})


def check_duplicates(config: SweepConfig, path) -> None:
    """Refuse an algorithm (same name and parameters), budget or seed listed twice, naming both places."""
    problems = []
    for field_name, values in (
        ("algorithms", [dumps(a.model_dump(exclude={"budgets"})) for a in config.algorithms]),
        ("budgets", config.budgets),
        ("baseline_budgets", config.baseline_budgets or []),
        ("seeds", config.seeds),
    ):
        first: dict = {}
        for i, value in enumerate(values):
            if value in first:
                what = config.algorithms[i].name if field_name == "algorithms" else value
                problems.append(
                    f"{path}: {field_name}.{i}: {what} is already {field_name}.{first[value]}; "
                    "each would write the same rows twice"
                )
            first.setdefault(value, i)
    if problems:
        raise UserError("\n".join(problems))


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
    nfe_per_call = guided_nfe_per_call(config)
    problems = []
    if config.baseline:
        where = "budgets" if config.baseline_budgets is None else "baseline_budgets"
        for j, budget in enumerate(config.step_budgets):
            if baseline_steps(budget, config.sampler, nfe_per_call) is None:
                problems.append(
                    f"{path}: {where}.{j}: the step baseline cannot spend budget {budget} exactly with "
                    f"{config.sampler} at {nfe_per_call} NFEs per model call (guidance {config.guidance}); use budgets "
                    f"it can (multiples of {nfe_per_call} for Euler), or baseline: false"
                )
    for i, spec in enumerate(config.algorithms):
        where = "budgets" if spec.budgets is None else f"algorithms.{i}.budgets"
        for j, budget in enumerate(config.budgets if spec.budgets is None else spec.budgets):
            reason = cannot_spend(spec.name, spec.params, budget, config.steps, config.sampler, nfe_per_call)
            if reason is not None:
                problems.append(f"{path}: {where}.{j}: {spec.name} (algorithms.{i}): {reason}")
                break
    return problems


def cannot_spend(name: str, params: dict, budget: int, steps: int, sampler: str, nfe_per_call: int) -> str | None:
    """Why algorithm ``name`` cannot spend ``budget`` (planned on the plain schedule of ``steps``), or None."""
    from noisesearch.algorithms import ALGORITHMS, Problems
    from noisesearch.samplers import schedule

    problems = Problems([0], [0], budget, (1, 8, 8), schedule(steps), sampler, nfe_per_call)
    try:
        ALGORITHMS[name](**params).init(problems)
    except UserError as e:
        return str(e)
    return None


def guided_nfe_per_call(config: SweepConfig) -> int:
    """NFEs per denoiser call as the config's check sees it: 2 with classifier-free guidance (not 1 or None).

    The real number is the model's ``nfe_per_call(guidance)`` (a guidance-distilled model pays 1);
    the sweep uses that one when it runs (``baseline_steps`` again) and refuses a mismatch there.
    """
    return 1 if config.guidance in (None, 1.0) else 2


def baseline_steps(budget: int, sampler: str, nfe_per_call: int) -> int | None:
    """Steps of the more-steps baseline that spend exactly ``budget`` NFEs (None if no step count does).

    Euler without guidance: ``budget`` steps; with CFG (2 NFEs per call): ``budget / 2`` steps, and
    an odd budget has none. A sampler's cost is linear in its steps (``a * steps + b``).
    """
    from noisesearch.samplers import SAMPLERS

    def cost(steps: int) -> int:
        return SAMPLERS[sampler].nfe((1.0,) * steps + (0.0,)) * nfe_per_call  # only length and end matter

    a, b = cost(2) - cost(1), 2 * cost(1) - cost(2)
    steps, rest = divmod(budget - b, a)
    if rest or steps < 1 or cost(steps) != budget:
        return None
    return steps
