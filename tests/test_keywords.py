"""Keyword options declared once (``noisesearch.keywords``), and the entrances that take them as ``**options``.

``search``, ``generate``, ``run_search``, ``WanModel`` and ``LLMGrader`` take their many keywords as ``**options``
bound to a frozen dataclass (issue 24: no function over 8 parameters). What users see stays: each signature lists
the same keywords, kinds and defaults in the same order as when they were spelled out; an unknown keyword is
Python's ``TypeError`` (now also listing the accepted ones); a missing required one too; ``search``'s other
keywords are still the algorithm's parameters. The command line split into a package keeps ``python -m
noisesearch.cli`` and the order ``--help`` lists the commands in.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import dataclass

import pytest

import noisesearch as ns
from noisesearch.algorithms import ALGORITHMS
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.generate import generate
from noisesearch.keywords import bind, declare, split

E = inspect.Parameter.empty
# The signatures as they were spelled out before the keywords moved into dataclasses: (name, kind, default).
PK, KW, VK = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY", "VAR_KEYWORD"
SEARCH = [("model", PK, E), ("targets", PK, E), ("verifier", KW, E), ("algorithm", KW, "random"), ("budget", KW, E)]
SEARCH += [("steps", KW, None), ("seed", KW, 0), ("guidance", KW, None), ("sampler", KW, "euler")]
SEARCH += [("pipeline_kwargs", KW, None), ("verifier_options", KW, None), ("max_batch", KW, 4096)]
SEARCH += [("keep_images", KW, False), ("progress", KW, None), ("cache", KW, None), ("final_steps", KW, None)]
SEARCH += [("nfe_convention", KW, "rows"), ("algorithm_params", VK, E)]
GENERATE = [("model", KW, "digits"), ("target", KW, E), ("verifier", KW, "classifier"), ("algorithm", KW, "random")]
GENERATE += [("algorithm_params", KW, None), ("budget", KW, E), ("steps", KW, None), ("sampler", KW, "euler")]
GENERATE += [("guidance", KW, None), ("seed", KW, 0), ("model_path", KW, None), ("verifier_path", KW, None)]
GENERATE += [("model_options", KW, None), ("verifier_options", KW, None), ("out", KW, None), ("max_batch", KW, 4096)]
GENERATE += [("progress", KW, None), ("cache", KW, None), ("cache_max_mb", KW, None), ("cache_images", KW, "exact")]
GENERATE += [("final_steps", KW, None), ("nfe_convention", KW, "rows")]
RUN_SEARCH = [(name, PK, E) for name in ("model", "verifier", "algorithm", "targets")]
RUN_SEARCH += [("seeds", KW, E), ("budget", KW, E), ("steps", KW, E), ("sampler", KW, "euler")]
RUN_SEARCH += [("guidance", KW, None), ("max_batch", KW, 4096), ("progress", KW, None), ("keep_images", KW, False)]
RUN_SEARCH += [("cache", KW, None), ("final_steps", KW, None), ("nfe_convention", KW, "rows")]
WAN = [("pipe", PK, E), ("height", KW, None), ("width", KW, None), ("num_frames", KW, None)]
WAN += [("max_sequence_length", KW, None), ("decode_batch", KW, None), ("release_text_encoders", KW, False)]
WAN += [("vae_tiling", KW, False), ("guidance_2", KW, None), ("negative_prompt", KW, "")]
GRADER = [("url", KW, None), ("model", KW, None), ("key_env", KW, "OPENAI_API_KEY"), ("metric", KW, "overall_score")]
GRADER += [("cache_dir", KW, None), ("workers", KW, 8), ("timeout", KW, 60.0), ("retries", KW, 3)]
GRADER += [("backoff", KW, 1.0), ("max_tokens", KW, 1024), ("price_prompt", KW, None), ("price_completion", KW, None)]


def _shape(fn) -> list[tuple]:
    return [(p.name, p.kind.name, p.default) for p in inspect.signature(fn).parameters.values()]


def _wan():
    from noisesearch.models.wan import WanModel

    return WanModel


def _grader():
    from noisesearch.verifiers.llm_grader import LLMGrader

    return LLMGrader


@pytest.mark.parametrize(
    ("fn", "expected"),
    [(lambda: ns.search, SEARCH), (lambda: generate, GENERATE), (lambda: run_search, RUN_SEARCH)]
    + [(_wan, WAN), (_grader, GRADER)],
    ids=["search", "generate", "run_search", "WanModel", "LLMGrader"],
)
def test_signatures_list_every_keyword_as_before(fn, expected):
    """``help()`` and ``inspect.signature`` (what ``from_pipeline`` and ``MODELS["wan"]`` check options against)
    show every keyword, in the order and with the defaults they had when spelled out."""
    assert _shape(fn()) == expected


@dataclass(frozen=True, kw_only=True)
class _Options:
    budget: int
    steps: int | None = None
    sampler: str = "euler"


def test_bind_refuses_an_unknown_or_missing_keyword_as_python_words_it():
    """An unknown keyword: Python's words for ``where()``, then the accepted ones; a missing one: Python's words."""
    assert bind(_Options, {"budget": 4}, where="f") == _Options(budget=4)
    with pytest.raises(TypeError) as unknown:
        bind(_Options, {"budget": 4, "stpes": 2}, where="f")
    assert str(unknown.value) == "f() got an unexpected keyword argument 'stpes'; accepted: budget, steps, sampler"
    with pytest.raises(TypeError, match=r"^f\(\) missing 1 required keyword-only argument: 'budget'$"):
        bind(_Options, {"steps": 2}, where="f")
    options, rest = split(_Options, {"budget": 4, "candidates": 3}, where="f")
    assert options == _Options(budget=4) and rest == {"candidates": 3}


def test_declare_replaces_the_keywords_parameter_by_the_fields():
    """The declared signature: the callable's own parameters, the fields keyword-only, then ``rest``."""

    def f(a, **options):
        return a

    declare(f, _Options, rest="extra")
    assert (
        str(inspect.signature(f))
        == "(a, *, budget: 'int', steps: 'int | None' = None, sampler: 'str' = 'euler', **extra)"
    )


def test_entrances_refuse_unknown_keywords_naming_the_accepted_ones(tmp_path, digits, classifier):
    """``generate`` and ``run_search`` refuse a misspelt keyword before any work (nothing written); ``search``
    hands it to the algorithm, whose factory refuses it in one line as before."""
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=r"^generate\(\) got an unexpected keyword argument 'sed'; accepted: model,"):
        generate(target=3, budget=8, steps=4, sed=1, out=out)
    assert not out.exists()
    with pytest.raises(TypeError, match=r"^run_search\(\) got an unexpected keyword argument 'budgett'"):
        run_search(digits, classifier, ALGORITHMS["random"](), [3], seeds=[0], budgett=8, steps=4)
    with pytest.raises(TypeError, match=r"^search\(\) missing 1 required keyword-only argument: 'budget'$"):
        ns.search(digits, 3, verifier="classifier")
    with pytest.raises(UserError, match="algorithm 'random' takes no parameter 'sed'"):
        ns.search(digits, 3, verifier="classifier", budget=8, steps=4, sed=1)
    (result,) = ns.search(digits, 3, verifier="classifier", budget=8, steps=4, candidates=2)
    assert result.record["algorithm_params"]["candidates"] == 2


def test_the_command_line_runs_as_a_module_and_lists_its_commands_in_order():
    """``python -m noisesearch.cli`` (the package's ``__main__``) and the commands in their registration order."""
    shown = subprocess.run(
        [sys.executable, "-m", "noisesearch.cli", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    order = ["generate", "demo", "compare", "sweep", "report", "paper", "list", "train"]
    positions = [shown.find(f"\n  {name} ") for name in order]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), shown
