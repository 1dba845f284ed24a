"""Faults around the files and folders a command reads and writes (issue 22), one test class per fault.

- Temporary files: a sweep removes only its own crash leftovers (``.<name>.noisesearch-XXXXXXXX.tmp`` in the
  folders it writes), never a user's ``.x.tmp`` anywhere under ``--out``, nor a user's file in its part folders.
- Config files: a FIFO, ``/dev/zero``, a folder, 50 MB, NUL bytes, YAML nested thousands deep (directly or
  through aliases) are each refused in one line before anything is parsed at length or written.
- Counts: every count a config can name has a ceiling, checked at validation (``per_class: 1000000000`` fails in
  well under a second, before a list of targets is built).
- Folders: ``sweep``, ``paper`` and ``report`` refuse ``''``; ``report`` refuses a ``report`` file or a folder it
  cannot write; a row nested 100,000 deep is one line naming its file and line.
- A full disk (or any other refusal to write) is one line naming the path, from any command; other OS errors
  keep their traceback (real bugs are not hidden).
- Wrote on error: a sweep refused for its cache options or for a config error found only when the model loads
  leaves the folder exactly as it found it (no folder, ``sweep.lock``, ``sweep.json`` or ``cache/``).

Every refusal: exit code 2, one line ``error: ...`` on stderr, no traceback, nothing written. Cases that hung
before the fix (a FIFO, ``/dev/zero``, a 50 MB config, a billion targets) run in a child process with a deadline
and a memory cap, so that a regression fails instead of hanging or exhausting the machine.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from _configs import GOOD_ROW, tiny_sweep, write_config
from test_bad_inputs import check_one_error_line, snapshot
from typer.testing import CliRunner

from noisesearch import _io
from noisesearch.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SMALL = {"benchmark": {"name": "digits", "subset": [0, 1]}, "budgets": [4]}  # 2 targets x 2 cells: seconds


def invoke(args: list[str]):
    """The CLI in this process; the result's exception must be none or the exit."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def refused(args: list[str], words: str) -> None:
    """``args`` fail in one line holding ``words``, exit 2, no traceback."""
    result = invoke(args)
    check_one_error_line(result.exit_code, result.stdout, result.stderr, words)


CHILD = """
import json, sys, time
from typer.testing import CliRunner
from noisesearch.cli import app
import noisesearch.sweep.config, noisesearch.sweep.run  # imported before the clock starts
started = time.perf_counter()
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
print(json.dumps({"code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                  "seconds": time.perf_counter() - started, "exception": repr(result.exception)}))
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))  # importing torch maps about 3 GiB


def invoke_child(args: list[str], cwd: Path, timeout: float = 90) -> dict:
    """The CLI in a child process with a deadline and a 6 GiB address-space cap: a hang or an endless read
    fails the test (``TimeoutExpired`` or a traceback) instead of stalling or exhausting the machine."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([str(a) for a in args])],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        preexec_fn=_cap_memory,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def child_refused(args: list[str], cwd: Path, words: str) -> dict:
    got = invoke_child(args, cwd)
    assert got["exception"] in ("None", "SystemExit(2)"), got
    check_one_error_line(got["code"], got["stdout"], got["stderr"], words)
    return got


def config(folder: Path, **overrides) -> Path:
    return write_config(folder, tiny_sweep(**overrides))


# ---------------------------------------------------------------------------------------------- temp files


def _slugs(path: Path) -> list[str]:
    from noisesearch.sweep.config import load_config
    from noisesearch.sweep.run import cells_of

    return [cell.slug for cell in cells_of(load_config(path))]


def test_a_sweep_removes_its_own_crash_leftovers_and_no_file_of_the_users(tmp_path):
    path = config(tmp_path, **SMALL)
    out = tmp_path / "out"
    slug = _slugs(path)[0]
    users = [
        ".x.tmp",
        "nested/deep/.y.tmp",
        "images/.z.tmp",
        f"images/{slug}/.u.tmp",
        f"images/{slug}/000000/.c.tmp",
        f"sets/{slug}/.w.tmp",
        f"sets/{slug}/notes.txt",  # the part folder is removed after the merge: only the parts may go
        "samples/.v.tmp",
        ".results.jsonl.abc123.tmp",  # the old temp pattern: it may be anyone's
        ".sweep.json.noisesearch-x.tmp",  # close to this program's pattern, but not it
    ]
    ours = [".sweep.json.noisesearch-killed01.tmp", f"images/{slug}/.000000.png.noisesearch-killed02.tmp"]
    for name in users + ours:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(f"data of {name}")
    result = invoke(["sweep", path, "--out", out, "--no-cache"])
    assert result.exit_code == 0, result.output
    for name in users:
        assert (out / name).read_text() == f"data of {name}", name
    for name in ours:
        assert not (out / name).exists(), name
    assert (out / "samples" / f"{slug}.npz").is_file()
    assert sorted(p.name for p in (out / "sets" / slug).iterdir()) == [".w.tmp", "notes.txt"]  # parts gone


def test_atomic_writes_name_their_temporary_files_in_this_programs_pattern(tmp_path, monkeypatch):
    seen = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        seen.append(Path(name).name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    _io.atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert len(seen) == 1 and _io.is_own_temp(seen[0]) and seen[0].startswith(".a.json.noisesearch-")
    assert not any(_io.is_own_temp(n) for n in (".a.json.tmp", ".x.tmp", ".new-abc.tmp", ".a.noisesearch-x.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# ---------------------------------------------------------------------------------------------- config files


def _sweep(tmp: Path, config_path: Path) -> list:
    return ["sweep", config_path, "--out", tmp / "out"]


def _fifo(tmp: Path) -> list:
    os.mkfifo(tmp / "cfg" / "pipe.yaml")
    return _sweep(tmp, tmp / "cfg" / "pipe.yaml")


def _fifo_prompts(tmp: Path) -> list:
    os.mkfifo(tmp / "cfg" / "prompts.txt")
    data = tiny_sweep(model="toy", verifier={"name": "toy-distance"}, benchmark={"name": "file", "path": "x"})
    data["benchmark"]["path"] = str(tmp / "cfg" / "prompts.txt")
    return _sweep(tmp, write_config(tmp / "cfg", data, "prompts.yaml"))


def _big(tmp: Path) -> list:
    path = tmp / "cfg" / "big.yaml"
    path.write_bytes(yaml.safe_dump(tiny_sweep()).encode() + (b"# " + b"x" * 1000 + b"\n") * 50_000)
    return _sweep(tmp, path)


def _fifo_sweep_json(tmp: Path) -> list:
    (tmp / "out").mkdir()
    os.mkfifo(tmp / "out" / "sweep.json")  # read back on a resume
    return _sweep(tmp, config(tmp / "cfg"))


def _fifo_sets(tmp: Path) -> list:
    folder = _rows_folder(tmp, json.dumps(GOOD_ROW))
    os.mkfifo(folder / "sets.jsonl")
    return ["report", folder]


HANGS = {  # each blocked, read forever or ran a whole sweep before the fix: run in a child with a deadline
    "a FIFO": (_fifo, "is not a regular file (a FIFO)"),
    "/dev/zero": (lambda tmp: _sweep(tmp, Path("/dev/zero")), "'/dev/zero' is not a regular file"),
    "a 50 MB config": (_big, "MiB; a config may be at most 1 MiB"),
    "a FIFO as the prompt file": (_fifo_prompts, "benchmark: prompt file"),
    "a FIFO as OUT/sweep.json": (_fifo_sweep_json, "holds 'sweep.json', which is a FIFO"),
    "a FIFO as the sets.jsonl of report": (_fifo_sets, "sets.jsonl' is not a regular file (a FIFO)"),
}


@pytest.mark.parametrize("name", HANGS)
def test_a_file_that_hung_is_refused_at_once_in_a_child(tmp_path, name):
    make, words = HANGS[name]
    (tmp_path / "cfg").mkdir()
    args = make(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))  # names only: a FIFO is never read
    got = child_refused(args, tmp_path, words)
    assert got["seconds"] < 10, got
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def _deep(kind: str, depth: int) -> bytes:
    if kind == "seq":
        return b"model_options: {x: " + b"[" * depth + b"]" * depth + b"}\n"
    return b"model_options: " + b"{a: " * depth + b"1" + b"}" * depth + b"\n"


def _alias_chain(n: int) -> bytes:
    lines = ["a0: &a0 [1]"] + [f"a{k}: &a{k} [*a{k - 1}]" for k in range(1, n)]
    return ("\n".join(lines) + f"\nmodel_options: {{x: *a{n - 1}}}\n").encode()


FILES = {  # in this process
    "NUL bytes": (b"model: digits\x00\nbudgets: [4]\n", "holds a NUL byte at offset 13"),
    "a list 3000 deep": (_deep("seq", 3000), "is nested deeper than"),
    "a list 20000 deep": (_deep("seq", 20000), "is nested deeper than"),
    "a mapping 3000 deep": (_deep("map", 3000), "is nested deeper than"),
    "aliases 2000 deep": (_alias_chain(2000), "is nested deeper than"),
}


@pytest.mark.parametrize("name", FILES)
def test_a_config_file_of_the_wrong_content_is_one_line(tmp_path, name):
    data, words = FILES[name]
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    before = snapshot(tmp_path)
    refused(["sweep", path, "--out", tmp_path / "out"], words)
    assert snapshot(tmp_path) == before


def test_a_folder_or_an_empty_path_as_the_config_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.yaml").mkdir()
    before = snapshot(tmp_path)
    refused(["sweep", tmp_path / "folder.yaml", "--out", tmp_path / "out"], "is a folder; give a YAML config file")
    refused(["sweep", "", "--out", tmp_path / "out"], "the config path is empty")
    assert snapshot(tmp_path) == before


def test_every_config_reader_goes_through_the_one_checked_loader(tmp_path):
    from noisesearch.errors import UserError
    from noisesearch.sweep.config import _read_yaml

    (tmp_path / "deep.yaml").write_bytes(_deep("seq", 3000))
    with pytest.raises(UserError, match="nested deeper than"):
        _read_yaml(tmp_path / "deep.yaml")  # what paper and the studies read their shipped configs with
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="nested deeper than"):
        _io.read_json(tmp_path / "deep.json")


# ---------------------------------------------------------------------------------------------- counts


def test_a_billion_targets_per_class_fails_in_well_under_a_second_in_a_child(tmp_path):
    path = config(tmp_path, benchmark={"name": "digits", "per_class": 10**9})
    before = sorted(p.name for p in tmp_path.iterdir())
    got = child_refused(
        ["sweep", path, "--out", tmp_path / "out"], tmp_path, "per_class must be at most 10,000, got 1,000,000,000"
    )
    assert got["seconds"] < 0.5, got  # validation only: no list of a billion targets is ever built
    assert sorted(p.name for p in tmp_path.iterdir()) == before


COUNTS = {  # every count a config can name: (overrides, words)
    "subset 10**12": ({"benchmark": {"name": "digits", "subset": 10**12}}, "subset must be at most 1,000,000, got"),
    "300 budgets": ({"budgets": list(range(4, 1204, 4))}, "budgets: 300 listed; at most 256 are accepted"),
    "300 baseline budgets": ({"baseline_budgets": list(range(1, 301))}, "baseline_budgets: 300 listed; at most 256"),
    "300 budgets of one algorithm": (
        {"algorithms": [{"name": "random", "budgets": list(range(4, 1204, 4))}]},
        "algorithms.0.budgets: 300 listed; at most 256",
    ),
    "1001 seeds": ({"seeds": list(range(1001))}, "seeds: 1,001 listed; at most 1,000 are accepted"),
    "101 algorithms": (
        {"algorithms": [{"name": "random", "params": {"candidates": k}} for k in range(1, 102)]},
        "algorithms: 101 listed; at most 100 are accepted",
    ),
    "33 eval verifiers": ({"eval_verifiers": [{"name": "classifier"}] * 33}, "eval_verifiers: 33 listed; at most 32"),
    "33 splits": (
        {"benchmark": {"name": "t2i-compbench", "splits": ["color"] * 33}},
        "benchmark.splits: 33 listed; at most 32",
    ),
    "chunk 10**9": ({"chunk": 10**9}, "chunk must be at most 1,000,000, got 1,000,000,000"),
    "max_batch 10**9": ({"max_batch": 10**9}, "max_batch must be at most 1,048,576, got 1,000,000,000"),
}
HUGE = {  # these started a sweep that would never end before the fix: in a child with a deadline
    "400 million searches": (
        {"benchmark": {"name": "digits", "per_class": 10_000}, "seeds": list(range(1000)), "budgets": [4, 8]},
        "400,000,000 searches (100,000 targets x 4,000 configurations); at most 10,000,000",
    ),
    "ten million kept images": (
        {"benchmark": {"name": "digits", "per_class": 1000}, "budgets": [4096], "keep_images": "all"},
        "images; at most 1,000,000",
    ),
}


@pytest.mark.parametrize("name", COUNTS)
def test_every_count_a_config_names_has_a_ceiling(tmp_path, name):
    overrides, words = COUNTS[name]
    path = config(tmp_path, **overrides)
    before = snapshot(tmp_path)
    started = time.perf_counter()
    refused(["sweep", path, "--out", tmp_path / "out"], words)
    assert time.perf_counter() - started < 20  # validation only (a busy 2-core machine included)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", HUGE)
def test_a_sweep_too_large_to_ever_finish_is_refused_in_a_child(tmp_path, name):
    overrides, words = HUGE[name]
    path = config(tmp_path, **overrides)
    before = sorted(p.name for p in tmp_path.iterdir())
    got = child_refused(["sweep", path, "--out", tmp_path / "out"], tmp_path, words)
    assert got["seconds"] < 20, got
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---------------------------------------------------------------------------------------------- out folders


@pytest.mark.parametrize(
    "args,words",
    [
        (["sweep", "{config}", "--out", ""], "--out is empty"),
        (["paper", "--quick", "--figures", "fig14", "--out", ""], "--out is empty"),
        (["report", ""], "the sweep folder is empty"),
    ],
    ids=["sweep", "paper", "report"],
)
def test_an_empty_out_folder_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, args, words):
    path = config(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    refused([a.replace("{config}", str(path)) for a in args], words)
    assert snapshot(tmp_path) == before


def _rows_folder(tmp: Path, *lines: str) -> Path:
    folder = tmp / "sweep"
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def test_report_where_report_is_a_file_is_one_line(tmp_path):
    folder = _rows_folder(tmp_path, json.dumps(GOOD_ROW))
    (folder / "report").write_text("my notes")
    before = snapshot(tmp_path)
    refused(["report", folder], "is a file; give a folder")
    assert snapshot(tmp_path) == before


def test_report_into_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    folder = _rows_folder(tmp_path, json.dumps(GOOD_ROW))
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes into a 0555 folder anyway: answer as the kernel does for a user
        real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_mkstemp(*args, dir=dir, **kwargs)

        def no_mkdir(self, *args, **kwargs):
            if self.parent == folder:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        monkeypatch.setattr(Path, "mkdir", no_mkdir)
    try:
        before = snapshot(tmp_path)
        refused(["report", folder], "cannot be written")
        assert snapshot(tmp_path) == before
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    "line",
    [
        "[" * 100_000 + "]" * 100_000,
        json.dumps({**GOOD_ROW, "params": {"x": 1}})[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=["a list", "inside a row"],
)
def test_a_row_nested_100000_deep_is_one_line_naming_file_and_line(tmp_path, line):
    folder = _rows_folder(tmp_path, json.dumps(GOOD_ROW), line, json.dumps(GOOD_ROW))
    before = snapshot(tmp_path)
    refused(["report", folder], f"{str(folder / 'results.jsonl')!r} line 2 is nested deeper than")
    assert snapshot(tmp_path) == before


def test_a_lock_file_nested_deep_is_no_owner(tmp_path):
    from noisesearch.sweep.lock import FolderLock

    (tmp_path / "sweep.lock").write_text("[" * 4096)
    notes = []
    with FolderLock(tmp_path, note=notes.append):
        pass
    assert notes == [] and (tmp_path / "sweep.lock").read_text() == ""


# ---------------------------------------------------------------------------------------------- full disk


def _full_disk(monkeypatch) -> None:
    """Every fsync answers ENOSPC, as a full disk does (no file name: the writer must add it)."""

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_under_sweep_out_is_one_line_naming_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    path = config(tmp_path, **SMALL)
    before = snapshot(tmp_path)
    _full_disk(monkeypatch)
    words = f"cannot write {tmp_path / 'out' / 'sweep.lock'}: No space left on device; free some space"
    refused(["sweep", path, "--out", tmp_path / "out", "--no-cache"], words)
    assert snapshot(tmp_path) == before


def test_a_full_disk_under_report_is_one_line_naming_the_path(tmp_path, monkeypatch):
    folder = _rows_folder(tmp_path, json.dumps(GOOD_ROW))
    before = snapshot(tmp_path)
    _full_disk(monkeypatch)
    refused(["report", folder], f"error: cannot write {folder / 'report' / 'per_target.png'}: No space left on device")
    assert snapshot(tmp_path) == before


def test_a_full_disk_under_generate_is_one_line_from_the_root_handler(tmp_path, monkeypatch):
    _full_disk(monkeypatch)
    out = tmp_path / "out"
    result = invoke(["generate", "--target", "3", "--budget", "8", "--steps", "4", "--out", out])
    check_one_error_line(result.exit_code, result.stdout, result.stderr, f"cannot write {out}{os.sep}")


@pytest.mark.parametrize(
    "code,words",
    [(errno.EROFS, "cannot write"), (errno.EDQUOT, "cannot write"), (errno.EACCES, "cannot access")],
    ids=["EROFS", "EDQUOT", "EACCES"],
)
def test_the_root_handler_names_the_path_of_any_refused_write(tmp_path, monkeypatch, code, words):
    from noisesearch.sweep import report

    def refuse(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(report, "atomic_write_bytes", refuse)
    folder = _rows_folder(tmp_path, json.dumps(GOOD_ROW))
    refused(["report", folder], f"{words} {folder / 'report' / 'per_target.png'}: {os.strerror(code)}")


def test_a_full_disk_in_a_ray_actor_is_still_one_line_naming_the_path():
    """Ray re-raises an actor's OSError as ``RayTaskError(OSError)`` without its errno: the handler unwraps it."""
    exceptions = pytest.importorskip("ray.exceptions")
    from noisesearch.cli import environment_error

    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/cache/packs/x.safetensors")
    except OSError as e:
        wrapped = exceptions.RayTaskError("run", "traceback", e).as_instanceof_cause()
    assert isinstance(wrapped, OSError) and wrapped.errno is None
    line = environment_error(wrapped)
    assert line is not None and line.startswith("cannot write /data/cache/packs/x.safetensors: No space left")


def test_a_user_error_raised_in_a_ray_actor_is_its_one_line(capsys):
    """A config error found when an actor loads the model arrives as ``RayTaskError(UserError)``, whose text is
    Ray's traceback: the line printed is the original message."""
    import typer

    exceptions = pytest.importorskip("ray.exceptions")
    from noisesearch.cli import friendly
    from noisesearch.errors import UserError

    try:
        raise UserError("weights file 'x.safetensors' does not exist")
    except UserError as e:
        wrapped = exceptions.RayTaskError("run", "Traceback ...\n  File x\n", e).as_instanceof_cause()

    def command():
        raise wrapped

    with pytest.raises(typer.Exit):
        friendly(command)()
    assert capsys.readouterr().err == "error: weights file 'x.safetensors' does not exist\n"


def test_other_os_errors_keep_their_traceback(tmp_path, monkeypatch):
    from noisesearch.sweep import report

    def broken(path, data):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(report, "atomic_write_bytes", broken)
    result = runner.invoke(app, ["report", str(_rows_folder(tmp_path, json.dumps(GOOD_ROW)))])
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.EIO


# ---------------------------------------------------------------------------------------------- wrote on error


def _missing_weights(tmp: Path) -> list[str]:
    return [config(tmp, **SMALL, model_path=str(tmp / "missing.safetensors")), "does not exist"]


def _cache_file(tmp: Path) -> list[str]:
    (tmp / "cachefile").write_text("mine")
    return [config(tmp, **SMALL), "--cache", tmp / "cachefile", "is a file"]


LATE = {
    "--cache-max-mb 0": (lambda tmp: [config(tmp, **SMALL), "--cache-max-mb", "0", "positive number of MiB"]),
    "--cache-images half": (lambda tmp: [config(tmp, **SMALL), "--cache-images", "half", "'half' is unknown"]),
    "--cache ''": (lambda tmp: [config(tmp, **SMALL), "--cache", "", "--cache is empty"]),
    "--cache is a file": _cache_file,
    "a config error found when the model loads": _missing_weights,
}


@pytest.mark.parametrize("out_exists", [False, True], ids=["new out", "existing out"])
@pytest.mark.parametrize("name", LATE)
def test_a_late_refusal_leaves_the_tree_exactly_as_it_was(tmp_path, name, out_exists):
    *args, words = LATE[name](tmp_path)
    out = tmp_path / "a" / "b" / "out"
    if out_exists:
        out.mkdir(parents=True)
        (out / "mine.txt").write_text("mine")
    before = snapshot(tmp_path)
    refused(["sweep", args[0], "--out", out, *args[1:]], words)
    assert snapshot(tmp_path) == before
