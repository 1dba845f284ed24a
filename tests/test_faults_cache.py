"""The replay cache's fault suite: it never opens, follows or deletes what it did not write.

Each test puts one kind of trouble where the cache keeps its files (a FIFO, a folder, a file, a symbolic
link, a read-only or full disk, a user's own file, entries of the other image mode) and checks that the
run either refuses in one ``error:`` line before any work with nothing written (exit 2), or goes on with
the results of a run without the cache: a miss, at most one ``warning:`` line, never a hang or a
traceback. Results are compared within a tolerance (``close``): a candidate computed in a smaller batch
than before can move a score's last bits on some kernels.

Searches run in this process on the digits model (a few seconds each); a FIFO read would block forever,
so those run under ``deadline`` (SIGALRM), which turns a hang into a failure.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from _cache_runs import STEPS, TARGETS, plain
from _cache_runs import search as _search
from _configs import tiny_sweep
from _records import close  # floats within a tolerance, also inside candidate records
from typer.testing import CliRunner

from noisesearch import ledger
from noisesearch.cache import CandidateCache, verifier_identity
from noisesearch.cli import app
from noisesearch.verifiers import VERIFIERS

runner = CliRunner()
BUDGET = 16  # digits: 1 NFE per step at STEPS = 4, so 4 candidates per target
CANDIDATES = len(TARGETS) * BUDGET // STEPS
GENERATE = ["generate", "--model", "digits", "--target", "3", "--verifier", "classifier", "--algorithm", "random"]
GENERATE += ["--budget", "16", "--steps", "4", "--seed", "0"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same bits in every run of a test (pack names are digests of them)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def oracle():
    return VERIFIERS["oracle-is"]()


class _Hung(BaseException):
    """Raised by SIGALRM in ``deadline``: not an ``OSError`` nor an ``Exception``, which the cache would take for a miss."""


@contextlib.contextmanager
def deadline(seconds: int = 30):
    """Fail instead of hanging: a blocked ``open`` of a FIFO is interrupted by SIGALRM after ``seconds``."""

    def expire(signum, frame):
        raise _Hung

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    except _Hung:
        pytest.fail(f"still running after {seconds} s: the cache blocked on a file", pytrace=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def search(model, verifier, cache, *, keep_images: bool = False):
    return _search(model, verifier, cache, budget=BUDGET, keep_images=keep_images)


def same_results(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        close(plain(g), plain(w))


def computed(results) -> int:
    return sum(r.ledger["nfe_computed"] for r in results)


def replayed(results) -> int:
    return sum(r.ledger["replayed"] for r in results)


def warnings_in(err: str) -> list[str]:
    lines = err.splitlines()
    assert all(line.startswith("warning: ") for line in lines), err
    assert "Traceback" not in err
    return lines


def packs(cache: Path) -> list[Path]:
    return sorted((cache / "packs").glob("*.safetensors"))


def score_files(cache: Path) -> list[Path]:
    return sorted((cache / "scores").glob("*/*.json"))


def filled(tmp_path: Path, digits, classifier, name: str = "filled") -> Path:
    """A cache folder holding one run's pack and score file."""
    path = tmp_path / name
    search(digits, classifier, CandidateCache(path))
    assert len(packs(path)) == 1 and len(score_files(path)) == 1
    return path


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (not following links) and what it is."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            mode = os.lstat(p).st_mode
            kind = (
                "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "fifo" if stat.S_ISFIFO(mode) else ""
            )
            out[str(p.relative_to(folder))] = kind or p.read_bytes().hex()
    return out


# -- things that are not the cache's regular files, where it reads -------------------------------------------


def test_a_fifo_named_as_a_pack_is_a_miss_never_a_hang(tmp_path, digits, classifier, capsys):
    path = filled(tmp_path, digits, classifier)
    (pack,) = packs(path)
    pack.unlink()
    os.mkfifo(pack)
    os.mkfifo(path / "packs" / ("ab" * 16 + ".safetensors"))  # one more, at a name no run writes
    want = search(digits, classifier, None)
    with deadline():
        got = search(digits, classifier, CandidateCache(path))
    same_results(got, want)
    assert computed(got) == computed(want) and replayed(got) == 0
    assert stat.S_ISFIFO(os.lstat(pack).st_mode)  # left as it was: not the cache's own file
    warnings_in(capsys.readouterr().err)


def test_a_fifo_named_as_a_score_file_is_a_miss_never_a_hang(tmp_path, digits, classifier, capsys):
    path = filled(tmp_path, digits, classifier)
    (scores,) = score_files(path)
    scores.unlink()
    os.mkfifo(scores)
    want = search(digits, classifier, None)
    with deadline():
        got = search(digits, classifier, CandidateCache(path))
    same_results(got, want)
    assert replayed(got) == CANDIDATES  # the pack is the cache's: replayed; the scores are computed again
    assert sum(r.ledger["verify_computed"] for r in got) == CANDIDATES
    assert stat.S_ISFIFO(os.lstat(scores).st_mode)
    warnings_in(capsys.readouterr().err)


@pytest.mark.parametrize("which", ["pack", "score file"])
def test_a_symbolic_link_named_as_a_cache_file_is_never_followed(tmp_path, digits, classifier, which):
    path = filled(tmp_path, digits, classifier)
    (own,) = packs(path) if which == "pack" else score_files(path)
    elsewhere = tmp_path / "elsewhere"
    own.rename(elsewhere)
    own.symlink_to(elsewhere)  # a link to a valid file of the right digest: still not one the cache wrote
    kept = elsewhere.read_bytes()
    want = search(digits, classifier, None)
    got = search(digits, classifier, CandidateCache(path))
    same_results(got, want)
    if which == "pack":
        assert computed(got) == computed(want) and replayed(got) == 0
    else:
        assert replayed(got) == CANDIDATES and sum(r.ledger["verify_computed"] for r in got) == CANDIDATES
    assert own.is_symlink() and elsewhere.read_bytes() == kept


# -- a folder where a file goes, a file where a folder goes ---------------------------------------------------


@pytest.mark.parametrize("where", ["pack", "score file", "verifier folder"])
def test_something_in_the_way_of_a_cache_file_is_left_alone_and_the_run_goes_on(
    tmp_path, digits, classifier, capsys, where
):
    names = filled(tmp_path, digits, classifier, "first")  # the same run writes the same names (digests)
    path = tmp_path / "c"
    if where == "pack":
        (pack,) = packs(names)
        blocker = path / "packs" / pack.name
        blocker.mkdir(parents=True)
        (blocker / "mine.txt").write_text("mine")
    elif where == "score file":
        (scores,) = score_files(names)
        blocker = path / scores.relative_to(names)
        blocker.mkdir(parents=True)
        (blocker / "mine.txt").write_text("mine")
    else:
        blocker = path / "scores" / verifier_identity(classifier)
        blocker.parent.mkdir(parents=True)
        blocker.write_text("mine")
    before = tree(blocker) if blocker.is_dir() else blocker.read_text()
    want = search(digits, classifier, None)
    capsys.readouterr()
    got = search(digits, classifier, CandidateCache(path))
    same_results(got, want)
    (line,) = warnings_in(capsys.readouterr().err)  # one line, naming what is in the way
    assert str(blocker) in line and "results are unaffected" in line
    assert (tree(blocker) if blocker.is_dir() else blocker.read_text()) == before


@pytest.mark.parametrize("sub", ["packs", "scores"])
def test_a_file_where_the_cache_keeps_a_folder_is_refused_before_any_work(tmp_path, sub):
    path = tmp_path / "c"
    path.mkdir()
    (path / sub).write_text("mine")
    result = runner.invoke(app, [*GENERATE, "--out", str(tmp_path / "o"), "--cache", str(path)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and repr(str(path / sub)) in line and "not a folder" in line
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists() and tree(path) == {sub: b"mine".hex()}  # nothing written


# -- a folder that cannot be written ----------------------------------------------------------------------


def refuse_writes_under(monkeypatch, folder: Path, code: int) -> None:
    """Make every new file under ``folder`` fail with ``code`` (as a read-only folder, or file system, does)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(code, os.strerror(code), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_scores_folder_that_turns_read_only_during_a_run_costs_one_warning(
    tmp_path, digits, classifier, capsys, monkeypatch, code
):
    path = tmp_path / "c"
    cache = CandidateCache(path)
    refuse_writes_under(monkeypatch, path / "scores", code)
    want = search(digits, classifier, None)
    capsys.readouterr()
    got = search(digits, classifier, cache)
    same_results(got, want)
    (line,) = warnings_in(capsys.readouterr().err)
    assert str(path / "scores") in line and os.strerror(code) in line
    assert score_files(path) == [] and list(path.rglob("*.tmp")) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_read_only_scores_folder_is_refused_before_any_work(tmp_path, monkeypatch, code):
    path = tmp_path / "c"
    (path / "scores").mkdir(parents=True)
    refuse_writes_under(monkeypatch, path / "scores", code)
    result = runner.invoke(app, [*GENERATE, "--out", str(tmp_path / "o"), "--cache", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot write the cache folder ") and repr(str(path / "scores")) in line
    assert not (tmp_path / "o").exists() and tree(path) == {"scores": "dir"}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_really_read_only_scores_folder_is_refused_before_any_work(tmp_path):
    path = tmp_path / "c"
    (path / "scores").mkdir(parents=True)
    (path / "scores").chmod(0o555)
    try:
        result = runner.invoke(app, [*GENERATE, "--out", str(tmp_path / "o"), "--cache", str(path)])
    finally:
        (path / "scores").chmod(0o755)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot write the cache folder ") and repr(str(path / "scores")) in line
    assert not (tmp_path / "o").exists()


# -- a full disk ------------------------------------------------------------------------------------------


class _Full:
    """A file whose writes fail with ``code`` (a full disk, a quota, a file size limit)."""

    def __init__(self, f, code: int):
        self.f, self.code = f, code

    def write(self, data) -> int:
        raise OSError(self.code, os.strerror(self.code))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def record(folder: Path) -> dict:
    return ledger.drop_computed(ledger.drop_seconds(json.loads((folder / "record.json").read_text())))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_disk_under_the_cache_costs_one_warning_naming_it(tmp_path, monkeypatch, code):
    path = tmp_path / "c"
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        return _Full(f, code) if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)) else f

    plain_run = runner.invoke(app, [*GENERATE, "--out", str(tmp_path / "a")])
    monkeypatch.setattr(os, "fdopen", fdopen)
    result = runner.invoke(app, [*GENERATE, "--out", str(tmp_path / "b"), "--cache", str(path)])
    assert plain_run.exit_code == result.exit_code == 0, result.output
    (line,) = warnings_in(result.stderr)
    assert str(path / "packs") in line and os.strerror(code) in line
    close(record(tmp_path / "b"), record(tmp_path / "a"))
    assert packs(path) == [] and [p for p in path.rglob("*") if p.is_file()] == []  # no temporary file left


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no file size limit here")
def test_a_real_file_size_limit_under_the_cache_costs_one_warning(tmp_path):
    """A real EFBIG: the process may write files up to 12000 bytes: the record of 32 candidates is ~8 kB, their
    pack ~18 kB."""
    args = [sys.executable, "-m", "noisesearch.cli", *GENERATE[:-6], "--budget", "128", "--steps", "4", "--seed", "0"]

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (12000, 12000))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plain_run = subprocess.run([*args, "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    done = subprocess.run(
        [*args, "--out", str(tmp_path / "b"), "--cache", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limited,
        timeout=300,
    )
    assert plain_run.returncode == done.returncode == 0, done.stderr
    (line,) = warnings_in(done.stderr)
    assert str(tmp_path / "c" / "packs") in line and os.strerror(errno.EFBIG) in line
    close(record(tmp_path / "b"), record(tmp_path / "a"))
    assert [p for p in (tmp_path / "c").rglob("*") if p.is_file()] == []


# -- eviction --------------------------------------------------------------------------------------------


def test_eviction_removes_only_the_cache_s_own_files_and_never_through_a_link(tmp_path):
    path = tmp_path / "c"
    (path / "packs").mkdir(parents=True)
    (path / "scores" / ("0" * 24)).mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "scores").mkdir(parents=True)
    (outside / "mine.txt").write_bytes(b"m" * 50_000)
    (outside / "scores" / ("2" * 32 + ".json")).write_bytes(b"s" * 50_000)
    foreign = {
        "packs/notes.txt": lambda p: p.write_bytes(b"n" * 50_000),
        "packs/" + "ab" * 16 + ".safetensors": lambda p: p.symlink_to(outside / "mine.txt"),
        "packs/" + "cd" * 16 + ".safetensors": lambda p: (p.mkdir(), (p / "x").write_text("x")),
        "packs/" + "ef" * 16 + ".safetensors": os.mkfifo,
        "packs/old.tmp": lambda p: p.write_bytes(b"t" * 50_000),
        "scores/notes.json": lambda p: p.write_bytes(b"j" * 50_000),
        "scores/" + "0" * 24 + "/notes.txt": lambda p: p.write_bytes(b"n" * 50_000),
        "scores/" + "1" * 24: lambda p: p.symlink_to(outside / "scores"),
    }
    for name, make in foreign.items():
        make(path / name)
    orphan = path / "packs" / ".new-abcd1234.tmp"  # the cache's own temporary file, left by a killed writer
    orphan.write_bytes(b"o" * 1000)
    hours_ago = time.time() - 7200
    for p in (orphan, path / "packs" / "old.tmp"):
        os.utime(p, (hours_ago, hours_ago))
    before = {name: tree(path)[name] for name in foreign}
    cache = CandidateCache(path, max_mb=0.05)  # 51 KiB: room for one entry of the three
    image = torch.rand(3, 1, 64, 64)  # an entry is 32 KiB (end state and image)
    for n in range(3):
        cache.put(
            [f"{n:02d}" + "0" * 62], image[n : n + 1], image[n : n + 1], {}, flops_per_nfe=None, decode_flops=None
        )
    assert len([p for p in packs(path) if p.is_file() and not p.is_symlink()]) == 1  # its own newest pack
    assert {name: tree(path)[name] for name in foreign} == before  # every foreign thing as it was
    assert not orphan.exists()
    assert (outside / "mine.txt").read_bytes() == b"m" * 50_000
    assert (outside / "scores" / ("2" * 32 + ".json")).read_bytes() == b"s" * 50_000


# -- the image mode ----------------------------------------------------------------------------------------


def test_uint8_entries_are_never_replayed_as_exact_images(tmp_path, digits, classifier, oracle):
    path = tmp_path / "c"
    first = search(digits, classifier, CandidateCache(path, images="uint8"), keep_images=True)
    quantised = search(digits, classifier, CandidateCache(path, images="uint8"), keep_images=True)
    assert replayed(quantised) == CANDIDATES
    for f, q in zip(first, quantised):  # replayed as intended under uint8: the quantised images
        for k, image in f.images.items():
            assert torch.allclose(q.images[k], (image.clamp(0, 1) * 255).round() / 255, atol=1e-7)
            assert not torch.equal(q.images[k], image)
    want = search(digits, oracle, None, keep_images=True)
    got = search(digits, oracle, CandidateCache(path), keep_images=True)  # exact: a new verifier
    assert computed(got) == computed(want) and replayed(got) == 0  # the uint8 entries miss
    same_results(got, want)
    for g, w in zip(got, want):
        assert all(torch.equal(g.images[k], w.images[k]) for k in w.images)


def test_scores_of_quantised_images_are_never_replayed_under_exact(tmp_path, digits, classifier, oracle):
    path = tmp_path / "c"
    search(digits, classifier, CandidateCache(path, images="uint8"))
    search(digits, oracle, CandidateCache(path, images="uint8"))  # the oracle scores quantised replays
    search(digits, classifier, CandidateCache(path))  # exact entries beside the uint8 ones
    got = search(digits, oracle, CandidateCache(path))
    assert replayed(got) == CANDIDATES and sum(r.ledger["verify_computed"] for r in got) == CANDIDATES
    same_results(got, search(digits, oracle, None))


def test_exact_entries_are_replayed_exactly_under_uint8(tmp_path, digits, classifier):
    """The uint8 mode is how new entries are stored; an exact entry is already the run's own image, so it is
    replayed as it is (a fresh uint8 run would also have scored and returned the exact image)."""
    path = tmp_path / "c"
    exact = search(digits, classifier, CandidateCache(path), keep_images=True)
    again = search(digits, classifier, CandidateCache(path, images="uint8"), keep_images=True)
    assert replayed(again) == CANDIDATES
    for e, a in zip(exact, again):
        close(plain(a), plain(e))
        assert all(torch.equal(a.images[k], e.images[k]) for k in e.images)


# -- compare and demo --------------------------------------------------------------------------------------


def tiny_study(tmp_path: Path):
    from noisesearch.studies import Study
    from noisesearch.sweep.config import validate_config

    return Study([(validate_config(tiny_sweep(), tmp_path / "tiny.yaml"), ".")])


def test_a_study_leaves_a_cache_folder_it_did_not_make_as_it_was(tmp_path):
    from noisesearch.studies import run_study

    out = tmp_path / "out"
    (out / "cache" / "packs").mkdir(parents=True)
    (out / "cache" / "notes.txt").write_text("mine")
    (out / "cache" / "packs" / ("ab" * 16 + ".safetensors")).write_bytes(b"an earlier run's entry")
    before = tree(out / "cache")
    run_study(tiny_study(tmp_path), out)
    assert (out / "results.jsonl").exists()
    assert tree(out / "cache") == before  # all it held, as it was; what this run wrote there is gone


@pytest.mark.parametrize("user_file", [False, True])
def test_a_study_removes_only_what_it_wrote_in_a_cache_folder_it_made(tmp_path, user_file):
    from noisesearch.studies import run_study

    out = tmp_path / "out"
    mine = out / "cache" / "packs" / "mine.txt"

    def progress(done, total, note):
        if user_file and not mine.exists():
            mine.write_text("mine")  # placed by the user while the study runs

    run_study(tiny_study(tmp_path), out, progress=progress)
    assert (out / "results.jsonl").exists()
    if user_file:
        assert tree(out / "cache") == {"packs": "dir", "packs/mine.txt": b"mine".hex()}
    else:
        assert not (out / "cache").exists()


def own_files(cache: Path) -> list[Path]:
    return packs(cache) + score_files(cache)


def test_a_study_s_kept_cache_is_removed_by_its_next_run_but_a_user_file_in_it_stays(tmp_path):
    from noisesearch.studies import STUDY_MARK, run_study

    out = tmp_path / "out"
    study = tiny_study(tmp_path)
    run_study(study, out, keep_cache=True)
    assert own_files(out / "cache") and (out / "cache" / STUDY_MARK).is_file()  # the study's, and said so
    (out / "cache" / "notes.txt").write_text("mine")
    run_study(study, out)
    assert tree(out / "cache") == {"notes.txt": b"mine".hex()}


class _Stop(Exception):
    pass


def test_a_study_stopped_early_keeps_its_cache_for_the_resume_which_removes_it(tmp_path):
    from noisesearch.studies import run_study

    out = tmp_path / "out"
    study = tiny_study(tmp_path)

    def stop(done, total, note):
        raise _Stop

    with pytest.raises(_Stop):
        run_study(study, out, progress=stop)
    assert own_files(out / "cache")  # kept: the resume replays it
    run_study(study, out)
    assert not (out / "cache").exists()


def test_compare_keeps_a_user_file_in_an_existing_cache_folder(tmp_path):
    out = tmp_path / "out"
    (out / "cache").mkdir(parents=True)
    (out / "cache" / "notes.txt").write_text("mine")
    args = ["compare", "--quick", "--seeds", "1", "--algorithms", "random", "--budgets", "64", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "cache" / "notes.txt").read_text() == "mine"


def test_a_study_refused_before_it_cached_anything_leaves_no_cache_folder(tmp_path, monkeypatch):
    from noisesearch import studies
    from noisesearch.errors import UserError
    from noisesearch.sweep import run as sweep_run

    def refused(config, out, **kwargs):  # a refusal found once the sweep has opened its cache
        CandidateCache(out / "cache")
        raise UserError("refused")

    monkeypatch.setattr(sweep_run, "run_sweep", refused)
    out = tmp_path / "out"
    with pytest.raises(UserError):
        studies.run_study(tiny_study(tmp_path), out)
    assert not (out / "cache").exists()


@pytest.mark.parametrize("keys", ["[[1, 2]]", "{}", "7", '["ok", {"a": 1}]'])
def test_a_pack_whose_keys_are_not_a_list_of_strings_is_a_miss(tmp_path, digits, classifier, keys):
    """A well-formed safetensors file under a pack's name whose header ``keys`` are foreign: a miss, no traceback."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = filled(tmp_path, digits, classifier)
    (pack,) = packs(path)
    with safe_open(str(pack), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    save_file(tensors, str(pack), metadata={**meta, "keys": keys})
    want = search(digits, classifier, None)
    got = search(digits, classifier, CandidateCache(path))
    same_results(got, want)
    assert computed(got) == computed(want) and replayed(got) == 0


def test_a_video_verifier_around_a_keyless_callable_is_never_replayed():
    """Scoring frames with a callable that declares no ``cache_key`` must not give the wrapper an identity: the
    callable's code could change between runs and its old scores would be replayed."""
    from noisesearch.verifiers.custom import CallableVerifier
    from noisesearch.verifiers.video import FrameVerifier

    def fn(images, prompts):
        return images.mean(dim=(1, 2, 3))

    assert verifier_identity(FrameVerifier(CallableVerifier(fn), 5)) is None
    keyed = FrameVerifier(CallableVerifier(fn, cache_key="mean-v1"), 5)
    assert verifier_identity(keyed) is not None
    assert verifier_identity(keyed) != verifier_identity(FrameVerifier(CallableVerifier(fn, cache_key="mean-v2"), 5))
