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
    final_steps: null      # search cheap, render once: each best noise denoised again with this many steps
                           # (outside the budget; random, zero-order, first-order, evolution; a deterministic sampler)
    nfe_convention: rows   # what one NFE is: rows (a guided step costs 2) or steps (1 per step, as the paper plots)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


MAX_YAML_NODES = 100_000  # YAML nodes after expanding aliases; a real sweep config has a few hundred
CONFIG_MAX_BYTES = 2**20  # a real sweep config is a few hundred bytes; a prompt list belongs in a prompt file
PROMPT_FILE_MAX_BYTES = 64 * 2**20
CONFIG_HINT = "give a YAML config file"


class _TooDeep(Exception):
    """A YAML document nested deeper than ``_io.MAX_DEPTH`` (with its aliases expanded when ``aliases``)."""

    def __init__(self, aliases: bool):
        self.aliases = aliases


def _read_yaml(path: Path | str):
    """Parse a YAML config with the safe loader, after every check that needs no parsing at length.

    The one reader of YAML configs (``sweep``, ``paper``, the studies): the file must be a regular
    file (never opened if a FIFO or a device) of at most ``CONFIG_MAX_BYTES``, UTF-8 without NUL
    bytes, nested at most ``_io.MAX_DEPTH`` levels (scanned event by event, without recursion, before
    the document is built; again with anchors and aliases expanded), with at most ``MAX_YAML_NODES``
    nodes once its aliases are expanded.
    """
    import yaml

    from noisesearch._io import MAX_DEPTH
    from noisesearch.checks import read_input_text

    text = read_input_text(path, what="config", max_bytes=CONFIG_MAX_BYTES, hint=CONFIG_HINT)
    loader = yaml.SafeLoader(text)
    try:
        _check_depth(text)
        node = loader.get_single_node()
        if node is None:
            return None
        size, _ = _expanded(node, {}, set(), 0)
        if size > MAX_YAML_NODES:
            raise UserError(
                f"{path}: anchors and aliases expand to {size:,} YAML nodes, more than the {MAX_YAML_NODES:,} a "
                "config may have; write the values out"
            )
        return loader.construct_document(node)
    except (_TooDeep, RecursionError) as e:
        aliases = " once its aliases are expanded" if getattr(e, "aliases", False) else ""
        raise UserError(
            f"{path}: the config is nested deeper than {MAX_DEPTH} levels{aliases}; a sweep config needs a few"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}:{where} not valid YAML ({problem})") from None
    finally:
        loader.dispose()


def _check_depth(text: str) -> None:
    """Raise ``_TooDeep`` if the YAML text nests deeper than ``MAX_DEPTH`` (the event parser does not recurse)."""
    import yaml

    from noisesearch._io import MAX_DEPTH

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(aliases=False)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _expanded(node, memo: dict, open_: set, outer: int) -> tuple[int, int]:
    """(nodes, nesting height) of ``node`` with every alias expanded; counted, never built, memoised per node.

    ``outer``: the collections around ``node``. Raises ``_TooDeep`` past ``MAX_DEPTH`` levels, so the
    recursion here stays as shallow as that.
    """
    import yaml

    from noisesearch._io import MAX_DEPTH

    key = id(node)
    if key in memo:
        size, height = memo[key]
    elif not isinstance(node, yaml.CollectionNode):
        return 1, 0
    else:
        if key in open_:
            raise UserError("the config has an alias inside its own anchor (a recursive structure)")
        if outer + 1 > MAX_DEPTH:
            raise _TooDeep(aliases=True)
        open_.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        size, height = 1, 1
        for child in children:
            child_size, child_height = _expanded(child, memo, open_, outer + 1)
            size, height = size + child_size, max(height, child_height + 1)
        open_.discard(key)
        size = min(size, MAX_YAML_NODES + 1)  # cap: the answer is only compared with the limit
        memo[key] = size, height
    if outer + height > MAX_DEPTH:
        raise _TooDeep(aliases=True)
    return size, height


def load_config(path: Path | str) -> SweepConfig:
    """Read and validate a YAML sweep config; ``UserError`` with one line per mistake, each with its place.

    The config that comes back is canonical: algorithm parameters are normalised to their declared
    types (``1`` for a float parameter is ``1.0``), so one configuration always has one key.
    """
    data = _read_yaml(path)  # the path as given: an empty one is refused, not read as "."
    return validate_config(data, Path(path))


def validate_config(data, path) -> SweepConfig:
    """``load_config`` on data already read (``path`` names the source in messages): checked and canonical."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of settings, got {type(data).__name__}")
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: {_where(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise UserError("\n".join(lines)) from None
    check_counts(config, path)
    check_numbers(config, path)
    config = normalise(config)
    check_names(config, path)
    check_duplicates(config, path)
    return config


# Ceilings on every count a config names (checked before any list of targets is built); each far above a real
# study: the paper's largest sweeps have tens of thousands of targets, a dozen budgets and a few seeds.
MAX_PER_CLASS = 10_000
MAX_TARGETS = 1_000_000
MAX_SEARCHES = 10_000_000  # targets x configurations: rows the folder holds and a resume reads back
MAX_KEPT_IMAGES = 1_000_000  # PNG files of keep_images
MAX_BATCH = 2**20
MAX_LISTED = {"budgets": 256, "seeds": 1000, "algorithms": 100, "eval_verifiers": 32, "splits": 32}


def check_counts(config: SweepConfig, path) -> None:
    """The ceiling of every count the config names (list lengths, per_class, subset, chunk, max_batch).

    Checked first, from the numbers alone: ``per_class: 1000000000`` is refused before a list of a
    billion targets is built. The totals (searches, kept images) follow in ``check_names``, once the
    benchmark's targets are counted.
    """
    from noisesearch.checks import check_list_length, check_positive_int

    b = config.benchmark
    lists = [
        (config.budgets, "budgets", MAX_LISTED["budgets"]),
        (config.baseline_budgets, "baseline_budgets", MAX_LISTED["budgets"]),
        *((spec.budgets, f"algorithms.{k}.budgets", MAX_LISTED["budgets"]) for k, spec in enumerate(config.algorithms)),
        (config.seeds, "seeds", MAX_LISTED["seeds"]),
        (config.algorithms, "algorithms", MAX_LISTED["algorithms"]),
        (config.eval_verifiers, "eval_verifiers", MAX_LISTED["eval_verifiers"]),
        (b.splits, "benchmark.splits", MAX_LISTED["splits"]),
        (b.subset if isinstance(b.subset, list) else None, "benchmark.subset", MAX_TARGETS),
    ]
    problems = []
    for values, where, most in lists:
        try:
            check_list_length(values, what=where, most=most)
        except UserError as e:
            problems.append(f"{path}: {e}")
    numbers = [
        (b.per_class, "benchmark.per_class", "per_class", MAX_PER_CLASS),
        (config.chunk, "chunk", "chunk", MAX_TARGETS),
        (config.max_batch, "max_batch", "max_batch", MAX_BATCH),
    ]
    for value, where, what, most in numbers:
        try:
            check_positive_int(value, what=what, most=most)
        except UserError as e:
            problems.append(f"{path}: {where}: {e}")
    if isinstance(b.subset, int) and b.subset > MAX_TARGETS:  # a count (a list of indices is checked above)
        problems.append(f"{path}: benchmark.subset: subset must be at most {MAX_TARGETS:,}, got {b.subset:,}")
    if problems:
        raise UserError("\n".join(problems))


def cell_count(config: SweepConfig) -> int:
    """Configurations x seeds: the cells of ``run.cells_of``, counted without listing them."""
    per_seed = len(config.step_budgets) + sum(
        len(config.budgets if spec.budgets is None else spec.budgets) for spec in config.algorithms
    )
    return per_seed * len(config.seeds)


def kept_images(config: SweepConfig, targets: int) -> int:
    """About how many PNG files ``keep_images`` writes: one per search, and with "all" one per candidate too.

    A search's candidates are estimated as its budget over the NFEs of one plain sample (``steps``).
    """
    if not config.keep_images:
        return 0
    every = config.keep_images == "all"
    per_seed = sum(2 if every else 1 for _ in config.step_budgets)  # the baseline has one candidate
    for spec in config.algorithms:
        for budget in config.budgets if spec.budgets is None else spec.budgets:
            per_seed += 1 + (max(1, budget // (config.steps * guided_nfe_per_call(config))) if every else 0)
    return per_seed * len(config.seeds) * targets


def _check_totals(config: SweepConfig, path) -> list[str]:
    """Targets, searches and kept images against their ceilings; the benchmark is counted before it is built whole."""
    from noisesearch.benchmarks import BENCHMARKS

    b = config.benchmark
    options = {"splits": b.splits} if b.splits else {}
    try:
        once = len(BENCHMARKS[b.name](subset=b.subset, per_class=1, path=b.path, **options))
        if once * b.per_class > MAX_TARGETS:  # at most this many: a per_class benchmark repeats each item
            return [
                f"{path}: benchmark: {once:,} targets x per_class {b.per_class:,} is more than the "
                f"{MAX_TARGETS:,} targets a sweep may have"
            ]
        targets = len(BENCHMARKS[b.name](subset=b.subset, per_class=b.per_class, path=b.path, **options))
    except UserError as e:
        return [f"{path}: benchmark: {e}"]
    cells, images = cell_count(config), kept_images(config, targets)
    if targets * cells > MAX_SEARCHES:
        return [
            f"{path}: the sweep has {targets * cells:,} searches ({targets:,} targets x {cells:,} configurations); "
            f"at most {MAX_SEARCHES:,} are accepted: split it into several sweeps"
        ]
    if images > MAX_KEPT_IMAGES:
        return [
            f"{path}: keep_images: {config.keep_images} keeps about {images:,} images; at most "
            f"{MAX_KEPT_IMAGES:,} are accepted (keep_images: best keeps one per search, false none)"
        ]
    return []


def check_numbers(config: SweepConfig, path) -> None:
    """Budgets, steps, seeds and guidance, each checked as every run's are (``spec.check_value``: memory
    ceilings, seed range, finite), named by its place in the config."""
    from noisesearch.spec import check_value

    problems = []

    def run(name, value, where):
        try:
            check_value(name, value)
        except UserError as e:
            problems.append(f"{path}: {where}: {e}")

    for i, budget in enumerate(config.budgets):
        run("budget", budget, f"budgets.{i}")
    for i, budget in enumerate(config.baseline_budgets or ()):
        run("budget", budget, f"baseline_budgets.{i}")
    for k, spec in enumerate(config.algorithms):
        for i, budget in enumerate(spec.budgets or ()):
            run("budget", budget, f"algorithms.{k}.budgets.{i}")
    for i, seed in enumerate(config.seeds):
        run("seed", seed, f"seeds.{i}")
    if config.baseline_budgets is not None and not config.baseline:
        problems.append(f"{path}: baseline_budgets: given with baseline: false; drop one of them")
    run("steps", config.steps, "steps")
    run("final_steps", config.final_steps, "final_steps")
    run("guidance", config.guidance, "guidance")
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
    from noisesearch.models import MODELS
    from noisesearch.registry import check_options
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
        problems += _check_final(config, path)
    if not problems and config.benchmark.path is not None:
        from noisesearch.checks import check_input_file

        try:
            check_input_file(
                config.benchmark.path,
                what="prompt file",
                max_bytes=PROMPT_FILE_MAX_BYTES,
                hint="give a text file of prompts, one a line",
            )
        except UserError as e:
            problems.append(f"{path}: benchmark: {e}")
    if not problems:
        problems += _check_totals(config, path) + _check_budgets(config, path)
    if problems:
        raise UserError("\n".join(problems))


def _check_final(config: SweepConfig, path) -> list[str]:
    """``final_steps`` against every algorithm and the sampler (``driver.check_final_steps``), one line each."""
    from noisesearch.driver import check_final_steps

    if config.final_steps is None:
        return []
    problems = []
    try:
        check_final_steps(config.final_steps, None, config.sampler)
    except UserError as e:
        problems.append(f"{path}: final_steps (sampler): {e}")
    for i, spec in enumerate(config.algorithms):
        try:
            check_final_steps(config.final_steps, spec.name, None)
        except UserError as e:
            problems.append(f"{path}: final_steps (algorithms.{i}): {e}")
    return problems


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
    """NFEs per denoiser call as the config's check sees it: 2 with classifier-free guidance (not 1 or None)
    under ``nfe_convention: rows``, always 1 under ``steps`` (one NFE per denoising step).

    The real number is ``accounting.nfe_per_call`` of the model (a guidance-distilled model pays 1);
    the sweep uses that one when it runs (``baseline_steps`` again) and refuses a mismatch there.
    """
    return 1 if config.nfe_convention == "steps" or config.guidance in (None, 1.0) else 2


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
