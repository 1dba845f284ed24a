"""Size limits of the package (issue 24): no file over 400 lines, no function over 60 lines or 8 parameters.

A function's length is ``end_lineno - lineno + 1`` from its ``def`` line (decorators not counted, the
docstring counted); its parameters are the positional and keyword-only ones, less a method's ``self`` or
``cls``, ``*args`` and ``**kwargs``. The command-line commands (functions decorated ``@<app>.command(...)``)
are exempt from the parameter limit, since each of their options is a parameter, and their length is
counted from the first line of the body, below the option list.

What still exceeds a limit is listed in ``EXCEPTIONS`` with its reason; an entry that no longer exceeds any
limit fails the test, so the dict only shrinks. Run ``python tests/test_sizes.py`` to print every excess.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "noisesearch"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8

# "path" (a file over the line limit) or "path:qualified.name" (a function over a limit) -> why it may be. Empty:
# every package file and function is within the limits; a new excess needs a reason here (and can only shrink).
EXCEPTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class Excess:
    """One thing over a limit: its key (as in ``EXCEPTIONS``) and what was measured."""

    key: str
    measured: str


def _is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``node`` is a command-line command: decorated ``@<something>.command(...)``."""
    for decorator in node.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(call, ast.Attribute) and call.attr == "command":
            return True
    return False


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> int:
    """Positional and keyword-only parameters, less a method's first (``self``/``cls``); ``*args``/``**kwargs``
    are not counted (``ast.arguments`` keeps them apart)."""
    positional = [*node.args.posonlyargs, *node.args.args]
    if method and positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    return len(positional) + len(node.args.kwonlyargs)


def _function_excesses(tree: ast.Module, rel: str) -> list[Excess]:
    """Every function or method of a module over the length or parameter limit, by qualified name."""
    found: list[Excess] = []

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                command = _is_command(child)
                first = child.body[0].lineno if command else child.lineno
                lines = child.end_lineno - first + 1  # type: ignore[operator]
                params = _parameters(child, in_class)
                too_many = params > MAX_PARAMETERS and not command
                if lines > MAX_FUNCTION_LINES or too_many:
                    found.append(Excess(f"{rel}:{prefix}{child.name}", f"{lines} lines, {params} parameters"))
                visit(child, f"{prefix}{child.name}.", False)
            else:
                visit(child, prefix, in_class)

    visit(tree, "", False)
    return found


def measure(package: Path = PACKAGE) -> list[Excess]:
    """Every file of ``package`` over the line limit and every function over a limit (keys relative to the
    package's parent folder)."""
    found: list[Excess] = []
    for file in sorted(package.rglob("*.py")):
        rel = file.relative_to(package.parent).as_posix()
        text = file.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            found.append(Excess(rel, f"{lines} lines"))
        found += _function_excesses(ast.parse(text, filename=str(file)), rel)
    return found


def test_package_stays_within_the_size_limits():
    """Nothing outside ``EXCEPTIONS`` is over a limit."""
    over = [f"{e.key} ({e.measured})" for e in measure() if e.key not in EXCEPTIONS]
    assert not over, "over the size limits (split along a real seam):\n" + "\n".join(over)


def test_every_exception_is_still_needed():
    """An entry of ``EXCEPTIONS`` that is within the limits now must be removed (the dict only shrinks)."""
    over = {e.key for e in measure()}
    stale = sorted(key for key in EXCEPTIONS if key not in over)
    assert not stale, "within the limits now; remove from EXCEPTIONS:\n" + "\n".join(stale)


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture
def injected(tmp_path) -> Path:
    """A package with one of each excess, and the same things just within the limits."""
    pkg = tmp_path / "pkg"
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    _write(pkg, "long.py", f"def long():\n{body}    return 0\n\n\ndef fits():\n{body}")
    _write(pkg, "big.py", "x = 1\n" * (MAX_FILE_LINES + 1))
    _write(pkg, "ok.py", "x = 1\n" * MAX_FILE_LINES)
    params = ", ".join(f"p{i}" for i in range(9))
    sub = pkg / "sub"
    _write(sub, "wide.py", f"def wide(*, {params}):\n    pass\n\n\ndef star(a, *args, b, **kwargs):\n    pass\n")
    eight = ", ".join(f"p{i}" for i in range(8))
    _write(
        sub,
        "methods.py",
        f"class A:\n    def __init__(self, {eight}):\n        def inner({params}):\n            pass\n",
    )
    command = f"@app.command()\ndef cmd({params}):\n" + "    x = 1\n" * 60 + "\n\n@app.command()\ndef cmd2(a):\n"
    _write(pkg, "cli.py", command + "    x = 1\n" * 61)
    return pkg


def test_the_measure_finds_each_kind_of_excess(injected):
    """The check can fail: a 61-line function, a 401-line file, 9 parameters (also nested in a method), a long
    command body; and it passes what is just within the limits (60 lines, 400 lines, 8 parameters besides
    ``self``, ``*args``/``**kwargs``, a command's option list)."""
    found = {e.key: e.measured for e in measure(injected)}
    assert found == {
        "pkg/long.py:long": "61 lines, 0 parameters",
        "pkg/big.py": "401 lines",
        "pkg/sub/wide.py:wide": "2 lines, 9 parameters",
        "pkg/sub/methods.py:A.__init__.inner": "2 lines, 9 parameters",
        "pkg/cli.py:cmd2": "61 lines, 1 parameters",
    }


if __name__ == "__main__":  # print every excess, listed or not
    for excess in measure():
        print(f"{excess.key}: {excess.measured}{'' if excess.key not in EXCEPTIONS else '  [listed]'}")
