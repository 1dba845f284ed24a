"""Mutation testing of the core modules: does the suite notice when the code is subtly wrong?

An AST-based mutator (no third-party tool). Each mutant changes one thing in one file:

- a comparison operator (``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``, ``is`` <-> ``is not``, ``in`` <-> ``not in``);
- an arithmetic operator (``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``/``, ``%`` -> ``*``, ``**`` -> ``*``);
- ``and`` <-> ``or``; an ``if``/``while``/ternary condition negated; ``not x`` -> ``x``;
- a number constant ``n`` -> ``n + 1`` (and 0 <-> 1), ``True`` <-> ``False``;
- ``return value`` -> ``return None``;
- one statement removed (replaced by ``pass``).

Annotations and docstrings are never mutated. Each mutant is written into a temporary copy of the
package (``noisesearch/`` and ``tests/``; the working tree is never touched), and the tests that
exercise that file run with ``-x -q -p no:randomly -m "not slow"`` under a per-mutant timeout. A
mutant is *killed* when a test fails, *survived* when all pass, *timeout* when it runs past the
limit (counted as killed: the suite noticed), *error* when it does not even import (also killed).

Reproduce the numbers in docs/TESTING.md (about 30 minutes on 2 cores)::

    python tools/mutate.py --max-mutants 60 --seed 0

One file, a quick sample, and the surviving mutants printed as diffs::

    python tools/mutate.py --file noisesearch/accounting.py --max-mutants 10 --seed 1 --show-survivors
    python tools/mutate.py --file noisesearch/accounting.py --list        # enumerate mutants only

``--max-mutants N`` draws a sample of N mutants per file (reproducibly from ``--seed``); without it
every mutant runs. ``--tests`` overrides the test files run for every mutant.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Test files that exercise each core file and run in seconds (slow tests are deselected); the fast exact-value
# file first, so that most mutants are killed (-x) before the longer files start.
TESTS: dict[str, list[str]] = {
    "noisesearch/accounting.py": [
        "tests/test_core_exact.py",
        "tests/test_core_whole.py",
        "tests/test_budget.py",
        "tests/test_ledger.py",
    ],
    "noisesearch/driver.py": [
        "tests/test_core_exact.py",
        "tests/test_core_whole.py",
        "tests/test_budget.py",
        "tests/test_analytic.py::test_ideal_denoiser_flow_lands_on_the_point_of_the_noise_sign",
    ],
    "noisesearch/engine/executors.py": ["tests/test_core_exact.py", "tests/test_engine_executors.py"],
    "noisesearch/engine/table.py": ["tests/test_core_exact.py", "tests/test_budget.py"],
    "noisesearch/samplers.py": ["tests/test_core_exact.py", "tests/test_samplers.py"],
    "noisesearch/algorithms/base.py": ["tests/test_core_exact.py", "tests/test_budget.py", "tests/test_samplers.py"],
    "noisesearch/algorithms/_jobs.py": ["tests/test_core_exact.py", "tests/test_budget.py"],
    "noisesearch/algorithms/_draws.py": ["tests/test_core_exact.py", "tests/test_budget.py", "tests/test_samplers.py"],
    "noisesearch/algorithms/_ranking.py": ["tests/test_core_exact.py", "tests/test_faithful.py"],
    "noisesearch/algorithms/random.py": [
        "tests/test_core_exact.py",
        "tests/test_budget.py",
        "tests/test_analytic.py::test_random_search_success_rate_is_one_minus_two_to_minus_k",
    ],
    "noisesearch/algorithms/zero_order.py": [
        "tests/test_core_exact.py",
        "tests/test_budget.py",
        "tests/test_analytic.py::test_zero_order_neighbours_stay_standard_normal",
        "tests/test_faithful.py",
    ],
    "noisesearch/algorithms/smc.py": [
        "tests/test_core_exact.py",
        "tests/test_smc_and_step_greedy.py",
        "tests/test_smc_source.py",
        "tests/test_faithful.py",
    ],
    "noisesearch/algorithms/_smc_weights.py": ["tests/test_smc_source.py", "tests/test_faithful.py"],
    "noisesearch/algorithms/_smc_particles.py": ["tests/test_smc_and_step_greedy.py", "tests/test_smc_source.py"],
}

CMP_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
BIN_SWAP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.Mult,
    ast.Pow: ast.Mult,
}


@dataclass
class Mutant:
    file: str
    node: int  # index of the node in ast.walk order
    kind: str
    line: int
    detail: str


def _skipped_ids(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: annotations, docstrings and everything below them."""
    skip: set[int] = set()

    def mark(n: ast.AST | None) -> None:
        if n is not None:
            skip.update(id(m) for m in ast.walk(n))

    for n in ast.walk(tree):
        if isinstance(n, ast.arg):
            mark(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(n.returns)
        elif isinstance(n, ast.AnnAssign):
            mark(n.annotation)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body:
            first = n.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                mark(first)
    return skip


def _in_function(tree: ast.AST) -> set[int]:
    """ids of statements directly inside a function body (candidates for removal)."""
    out: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(n):
                for field in ("body", "orelse", "finalbody"):
                    block = getattr(sub, field, None)
                    for s in block if isinstance(block, list) else []:
                        if isinstance(s, ast.stmt):
                            out.add(id(s))
    return out


def _variants(node: ast.AST, removable: bool) -> list[tuple[str, str]]:
    """(kind, detail) of every mutation possible at ``node``."""
    out: list[tuple[str, str]] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in CMP_SWAP:
                out.append((f"cmp:{i}", f"{type(op).__name__} -> {CMP_SWAP[type(op)].__name__}"))
    elif isinstance(node, ast.BinOp) and type(node.op) in BIN_SWAP:
        out.append(("binop", f"{type(node.op).__name__} -> {BIN_SWAP[type(node.op)].__name__}"))
    elif isinstance(node, ast.AugAssign) and type(node.op) in BIN_SWAP:
        out.append(("augop", f"{type(node.op).__name__}= -> {BIN_SWAP[type(node.op)].__name__}="))
    elif isinstance(node, ast.BoolOp):
        out.append(("boolop", "and -> or" if isinstance(node.op, ast.And) else "or -> and"))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("dropnot", "not x -> x"))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        v = node.value
        if isinstance(v, bool):
            out.append(("const", f"{v} -> {not v}"))
        else:
            out.append(("const", f"{v} -> {v + 1}"))
            if v in (0, 1):
                out.append(("const01", f"{v} -> {1 - v}"))
    if isinstance(node, (ast.If, ast.While, ast.IfExp)):
        out.append(("negate", "condition negated"))
    if (
        isinstance(node, ast.Return)
        and node.value is not None
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
    ):
        out.append(("return", "return value -> None"))
    if removable and isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.Return)):
        if not (isinstance(node, ast.AnnAssign) and node.value is None):
            out.append(("remove", "statement removed"))
    return out


def enumerate_mutants(file: str) -> list[Mutant]:
    tree = ast.parse((ROOT / file).read_text())
    skip, removable = _skipped_ids(tree), _in_function(tree)
    out = []
    for k, n in enumerate(ast.walk(tree)):
        if id(n) in skip:
            continue
        for kind, detail in _variants(n, id(n) in removable):
            out.append(Mutant(file, k, kind, getattr(n, "lineno", 0), detail))
    return out


def apply(source: str, m: Mutant) -> str:
    tree = ast.parse(source)
    node = next(n for k, n in enumerate(ast.walk(tree)) if k == m.node)
    if m.kind.startswith("cmp:"):
        i = int(m.kind[4:])
        node.ops[i] = CMP_SWAP[type(node.ops[i])]()
    elif m.kind in ("binop", "augop"):
        node.op = BIN_SWAP[type(node.op)]()
    elif m.kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif m.kind == "dropnot":
        _replace(tree, node, node.operand)
    elif m.kind == "const":
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif m.kind == "const01":
        node.value = 1 - node.value
    elif m.kind == "negate":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif m.kind == "return":
        node.value = None
    elif m.kind == "remove":
        _replace(tree, node, ast.Pass())
    else:
        raise ValueError(m.kind)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for i, v in enumerate(value):
                    if v is old:
                        value[i] = new
                        return
    raise LookupError("node not found")


PRELOAD = ("torch", "numpy", "pytest", "safetensors.torch", "typer", "PIL.Image")


def preload() -> None:
    """Import the heavy third-party modules once in this process; each mutant runs in a fork of it.

    Nothing from ``noisesearch`` is imported here: every fork imports the (mutated) package afresh
    from the temporary copy. This saves the interpreter start and torch's import per mutant.
    """
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _pytest_args(tests: list[str]) -> list[str]:
    return ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-m", "not slow", *tests]


def run_tests(workdir: Path, tests: list[str], timeout: float, *, fork: bool) -> tuple[str, float]:
    """'passed' | 'failed' | 'timeout' and the seconds taken."""
    start = time.perf_counter()
    if not fork:
        env = dict(os.environ, PYTHONPATH=str(workdir), PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1")
        cmd = [sys.executable, "-m", "pytest", *_pytest_args(tests)]
        try:
            r = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - start
        return ("passed" if r.returncode == 0 else "failed"), time.perf_counter() - start
    pid = os.fork()
    if pid == 0:  # child: a fresh import of the package from the copy, output discarded
        code = 3
        try:
            os.chdir(workdir)
            os.environ.update(PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1")
            sys.dont_write_bytecode = True
            sys.path.insert(0, str(workdir))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            code = int(pytest.main(_pytest_args(tests)))
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return ("passed" if code == 0 else "failed"), time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "timeout", time.perf_counter() - start
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file", action="append", help="core file to mutate (repeatable; default: all seven)")
    p.add_argument("--max-mutants", type=int, default=None, help="sample this many mutants per file")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--timeout", type=float, default=None, help="seconds per mutant (default: 4x baseline + 30)")
    p.add_argument("--tests", nargs="+", default=None, help="test files to run (default: the file's own list)")
    p.add_argument("--list", action="store_true", help="only list the mutants")
    p.add_argument("--only", nargs="+", default=None, help="run only mutants LINE:KIND (e.g. 51:const), as listed")
    p.add_argument("--show-survivors", action="store_true", help="print a diff of each surviving mutant")
    p.add_argument("--json", type=Path, default=None, help="write every result to this JSON file")
    p.add_argument("--no-fork", action="store_true", help="one fresh interpreter per mutant (slower; no os.fork)")
    args = p.parse_args(argv)
    fork = hasattr(os, "fork") and not args.no_fork
    if fork and not args.list:
        preload()

    files = args.file or list(TESTS)
    results: list[dict] = []
    summary: list[tuple[str, int, int, int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        work = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "noisesearch", work / "noisesearch", ignore=ignore)
        shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
        shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
        for file in files:
            mutants = enumerate_mutants(file)
            total = len(mutants)
            if args.only:
                mutants = [m for m in mutants if f"{m.line}:{m.kind}" in args.only]
            elif args.max_mutants is not None and args.max_mutants < total:
                mutants = sorted(
                    random.Random(f"{args.seed}:{file}").sample(mutants, args.max_mutants), key=lambda m: m.node
                )
            if args.list:
                for m in mutants:
                    print(f"{file}:{m.line}: {m.kind} {m.detail}")
                print(f"{file}: {len(mutants)} of {total} mutants")
                continue
            tests = [t for t in (args.tests or TESTS.get(file, [])) if (work / t.split("::")[0]).exists()]
            if not tests:
                print(f"{file}: no test files to run", file=sys.stderr)
                return 2
            original = (ROOT / file).read_text()
            target = work / file
            target.write_text(ast.unparse(ast.parse(original)) + "\n")  # same printer as the mutants
            status, base = run_tests(work, tests, timeout=900, fork=fork)
            if status != "passed":
                print(f"{file}: the unmutated suite does not pass ({status}); fix that first", file=sys.stderr)
                return 2
            timeout = args.timeout or 4 * base + 30  # generous: a busy machine must not turn survivors into timeouts
            print(
                f"{file}: {len(mutants)} of {total} mutants, baseline {base:.1f}s, timeout {timeout:.0f}s", flush=True
            )
            counts = {"killed": 0, "survived": 0, "timeout": 0, "error": 0}
            for m in mutants:
                try:
                    src = apply(original, m)
                    compile(src, file, "exec")
                except (SyntaxError, ValueError, LookupError, TypeError):
                    counts["error"] += 1
                    continue
                target.write_text(src)
                status, secs = run_tests(work, tests, timeout, fork=fork)
                outcome = {"failed": "killed", "passed": "survived", "timeout": "timeout"}[status]
                counts[outcome] += 1
                results.append({**m.__dict__, "outcome": outcome, "seconds": round(secs, 1)})
                mark = "SURVIVED" if outcome == "survived" else outcome
                print(f"  {file}:{m.line} {m.kind} {m.detail}: {mark} ({secs:.0f}s)", flush=True)
                if outcome == "survived" and args.show_survivors:
                    base_src = ast.unparse(ast.parse(original)).splitlines()
                    diff = difflib.unified_diff(base_src, src.splitlines(), lineterm="", n=1)
                    print("\n".join("    " + d for d in list(diff)[2:]))
            target.write_text(original)
            ran = counts["killed"] + counts["survived"] + counts["timeout"]
            summary.append((file, total, ran, counts["killed"], counts["timeout"], counts["survived"]))
    if args.list:
        return 0
    print("\nfile | mutants (all) | run | killed | timeout | survived | kill rate")
    for file, total, ran, killed, tout, surv in summary:
        rate = (killed + tout) / ran if ran else float("nan")
        print(f"{file} | {total} | {ran} | {killed} | {tout} | {surv} | {rate:.0%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
