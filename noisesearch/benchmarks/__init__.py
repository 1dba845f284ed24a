"""Benchmark registry: name -> ``Entry`` (a declared record, called as its loader ``(*, subset=None,
per_class=..., path=None) -> list[Item]``).

An ``Item`` is one target of a sweep: the class id or prompt the model is conditioned on, and the
category a report groups it by. The prompt sets ship inside the package (``data/``, sources and
licences in ``data/SOURCES.md``); ``file`` reads a prompt file of the user's.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from noisesearch.errors import UserError
from noisesearch.registry import Entry, registry_of

DATA = Path(__file__).parent / "data"
T2I_COMPBENCH_SPLITS = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "3d_spatial", "numeracy")


@dataclass(frozen=True)
class Item:
    """One target of a benchmark: ``target`` (class id or prompt) and its ``category``."""

    target: int | str
    category: str


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _select(items: list[Item], subset, name: str) -> list[Item]:
    """All items, the first ``subset`` items (an int), or the items at the listed indices."""
    if subset is None:
        return items
    if isinstance(subset, int):
        if subset < 1:
            raise UserError(f"benchmark {name!r}: subset must be a positive count or a list of indices, got {subset}")
        return items[:subset]
    bad = [i for i in subset if not isinstance(i, int) or not 0 <= i < len(items)]
    if bad:
        raise UserError(f"benchmark {name!r}: subset indices {bad} are outside 0..{len(items) - 1}")
    return [items[i] for i in subset]


def digits(*, subset=None, per_class: int = 10, path=None) -> list[Item]:
    """The 10 digit classes, ``per_class`` targets each (for the built-in digits models)."""
    items = [Item(c, str(c)) for c in range(10) for _ in range(per_class)]
    return _select(items, subset, "digits")


def imagenet(*, subset=None, per_class: int = 1, path=None) -> list[Item]:
    """The 1000 ImageNet-1k classes in checkpoint order (``subset``: a count or class ids)."""
    classes = json.loads((DATA.parents[1] / "data" / "imagenet_classes.json").read_text())  # noisesearch/data
    items = _select([Item(c["index"], c["name"]) for c in classes], subset, "imagenet")
    return [item for item in items for _ in range(per_class)]


def drawbench(*, subset=None, per_class: int = 1, path=None) -> list[Item]:
    """DrawBench (Saharia et al. 2022): 200 prompts in 11 categories."""
    with open(DATA / "drawbench.csv", encoding="utf-8", newline="") as f:
        items = [Item(r["Prompts"].strip(), r["Category"].strip()) for r in csv.DictReader(f)]
    return _select(items, subset, "drawbench")


def t2i_compbench(
    *,
    subset=None,
    per_class: int = 1,
    path=None,
    splits=("color", "shape", "texture", "spatial", "non_spatial", "complex"),
) -> list[Item]:
    """T2I-CompBench validation splits (Huang et al. 2023; 300 prompts each, split = category)."""
    items = []
    for split in splits:
        if split not in T2I_COMPBENCH_SPLITS:
            raise UserError(f"unknown T2I-CompBench split {split!r}; accepted: {', '.join(T2I_COMPBENCH_SPLITS)}")
        items += [Item(p, split) for p in _lines(DATA / "t2i_compbench" / f"{split}_val.txt")]
    return _select(items, subset, "t2i-compbench")


def geneval(*, subset=None, per_class: int = 1, path=None) -> list[Item]:
    """GenEval (Ghosh et al. 2023): 553 prompts; category = the task tag."""
    rows = [json.loads(line) for line in _lines(DATA / "geneval_metadata.jsonl")]
    return _select([Item(r["prompt"], r["tag"]) for r in rows], subset, "geneval")


def partiprompts(*, subset=None, per_class: int = 1, path=None) -> list[Item]:
    """PartiPrompts (Yu et al. 2022): 1632 prompts in 12 categories."""
    with open(DATA / "parti_prompts.tsv", encoding="utf-8", newline="") as f:
        items = [Item(r["Prompt"].strip(), r["Category"].strip()) for r in csv.DictReader(f, delimiter="\t")]
    return _select(items, subset, "partiprompts")


def prompt_file(*, subset=None, per_class: int = 1, path=None) -> list[Item]:
    """A prompt file of the user's: one prompt per line, or ``prompt<TAB>category`` per line."""
    if path is None:
        raise UserError("benchmark 'file' needs a path: benchmark: {name: file, path: prompts.txt}")
    try:
        lines = _lines(Path(path))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read prompt file {str(path)!r}: {e.__class__.__name__}: {e}") from None
    if not lines:
        raise UserError(f"prompt file {str(path)!r} has no prompts")
    items = [Item(*(line.split("\t", 1) if "\t" in line else (line, "prompts"))) for line in lines]
    return _select(items, subset, "file")


BENCHMARKS: dict[str, Entry] = registry_of(
    Entry("digits", digits),
    Entry("imagenet", imagenet),
    Entry("drawbench", drawbench),
    Entry("t2i-compbench", t2i_compbench),
    Entry("geneval", geneval),
    Entry("partiprompts", partiprompts),
    Entry("file", prompt_file),
)
