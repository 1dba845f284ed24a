"""Checks of a parsed sweep config: counts and their ceilings, numbers, registry names and parameters, totals and
duplicates; each problem is one line naming its place in the file. ``normalise`` gives parameters their types."""

from __future__ import annotations

from noisesearch._io import dumps
from noisesearch.errors import UserError
from noisesearch.sweep.costs import budget_problems, cell_count, kept_images
from noisesearch.sweep.reader import PROMPT_FILE_MAX_BYTES
from noisesearch.sweep.schema import AlgorithmSpec, SweepConfig

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
    from noisesearch.registry import factory_of

    specs = []
    for spec in config.algorithms:
        if spec.name not in ALGORITHMS:  # check_names names it
            specs.append(spec)
            continue
        hints = typing.get_type_hints(factory_of(ALGORITHMS[spec.name]).__init__)  # the algorithm class's types
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
        problems += _check_totals(config, path) + budget_problems(config, path)
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
