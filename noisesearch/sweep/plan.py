"""Planning a sweep: its cells (configuration x seed), its targets in fixed chunks, the config stored beside the
rows, and which (cell, chunk) tasks a run (or a resume) still has to search."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from noisesearch import _io
from noisesearch.errors import UserError
from noisesearch.sweep.config import SweepConfig


@dataclass(frozen=True)
class Cell:
    """One configuration at one seed (``algorithm == "none"``: the budget spent on more steps)."""

    algorithm: str
    steps: int
    budget: int
    seed: int
    params: dict = field(default_factory=dict)

    @cached_property
    def key(self) -> str:
        """The cell as canonical JSON: its identity in rows, ``sets.jsonl`` and the resume check."""
        return _io.dumps(asdict(self))  # computed once: the resume check asks it for every target

    @property
    def slug(self) -> str:
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:8]
        return f"{self.algorithm}_b{self.budget}_s{self.steps}_seed{self.seed}_{digest}"


def cells_of(config: SweepConfig) -> list[Cell]:
    """Every (configuration, seed) of the sweep, baseline first."""
    cells = []
    for seed in config.seeds:
        cells += [Cell("none", budget, budget, seed) for budget in config.step_budgets]
        for spec in config.algorithms:
            budgets = config.budgets if spec.budgets is None else spec.budgets
            cells += [Cell(spec.name, config.steps, budget, seed, dict(spec.params)) for budget in budgets]
    return cells


def load_items(config: SweepConfig) -> list:
    """The benchmark's targets (``Item``s) the config names."""
    from noisesearch.benchmarks import BENCHMARKS

    b = config.benchmark
    options = {"splits": b.splits} if b.splits else {}
    return BENCHMARKS[b.name](subset=b.subset, per_class=b.per_class, path=b.path, **options)


def chunks_of(targets: int, size: int) -> list[list[int]]:
    """Target indices in fixed chunks of ``size`` (target ``i`` is always in chunk ``i // size``)."""
    return [list(range(k, min(k + size, targets))) for k in range(0, targets, size)]


def part_path(out: Path, cell: Cell, chunk: list[int]) -> Path:
    """Where a class-conditional chunk's sample part is written (``sets/<cell>/chunk-<first target>.npz``)."""
    return out / "sets" / cell.slug / f"chunk-{chunk[0]:06d}.npz"


def plan_tasks(
    out: Path, cells: list[Cell], chunks: list[list[int]], done: set, sets_done: set, class_conditional: bool
) -> list[tuple[Cell, list[int]]]:
    """The (cell, chunk) pairs still to search: a chunk missing any row, or (class-conditional) its sample part.

    A chunk is always searched whole: the same batch gives the same bits.
    """
    tasks = []
    for cell in cells:
        for chunk in chunks:
            missing = any((cell.key, i) not in done for i in chunk)
            no_part = class_conditional and cell.key not in sets_done and not part_path(out, cell, chunk).is_file()
            if missing or no_part:
                tasks.append((cell, chunk))
    return tasks


def snapshot_check(out: Path, config: SweepConfig, *, has_rows: bool, note: Callable[[str], None]) -> None:
    """Store the config beside the results, or refuse a folder that holds another config's results.

    A folder without any row (a first run that stopped before its first row) takes the new config,
    with a message.
    """
    path = out / "sweep.json"
    new = config.canonical()
    if not path.exists():
        _io.write_json(path, new)
        return
    try:
        old = _io.read_json(path)
    except UserError:
        old = None
    if old == new:
        return
    if not has_rows:
        note(f"{path} held another config but no rows were written with it; replacing it")
        _io.write_json(path, new)
        return
    diff = (
        [
            f"{k}: {_io.dumps(old.get(k))} -> {_io.dumps(new.get(k))}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        if isinstance(old, dict)
        else ["sweep.json is not a config"]
    )
    raise UserError(
        f"{out} holds results of a different config ({'; '.join(diff)}); "
        "use another --out folder, or the original config to resume"
    )
