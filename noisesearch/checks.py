"""Checks of user-given numbers, files and folders, made before any work: each failure is one ``UserError`` line.

Used by ``generate``, ``compare``, ``sweep`` and the Python API alike, so that a value is accepted
or refused the same way everywhere.

An input file (a config) is checked with ``os.stat`` before it is opened: it must be a regular file
(a FIFO would block the read forever, ``/dev/zero`` never ends) of at most a given size;
``read_input_text`` then reads it as UTF-8 text without NUL bytes. An output folder is checked
without creating anything (``check_out_dir``).

The ceilings on budgets and steps are derived from this machine's memory: a search keeps one record
per candidate and a schedule of ``steps + 1`` sigmas, so a budget or a step count that would need
more memory than the machine has can never finish and is refused with the number in the message.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
from pathlib import Path

from noisesearch.errors import UserError

SEED_MAX = 2**63 - 1
# Memory one candidate costs the driver at the least (its record, its outcome, its slot in a
# batch); and one schedule step (a Python float in a tuple and a list).
CANDIDATE_BYTES = 2048
STEP_BYTES = 64


def memory_bytes() -> int:
    """This machine's physical memory in bytes (16 GiB where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 16 * 2**30


def check_seed(seed, *, what: str = "seed") -> int:
    """``seed`` as an int in 0..2**63-1 (what ``torch.Generator.manual_seed`` accepts everywhere)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UserError(f"{what} must be an integer from 0 to 2**63-1 = {SEED_MAX}, got {seed!r}")
    return seed


def check_guidance(guidance, *, what: str = "guidance") -> float | None:
    """``guidance`` as a finite float (None: the model's default)."""
    if guidance is None:
        return None
    try:
        value = float(guidance)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a finite number, got {guidance!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{what} must be a finite number, got {guidance!r}")
    return value


def max_steps(memory: int | None = None) -> int:
    """The most sampling steps a schedule may have on a machine with ``memory`` bytes."""
    return max(1, (memory_bytes() if memory is None else memory) // (4 * STEP_BYTES))


def max_budget(memory: int | None = None) -> int:
    """The most NFEs a search may be budgeted: at worst one candidate (and its record) per NFE."""
    return max(1, (memory_bytes() if memory is None else memory) // (2 * CANDIDATE_BYTES))


def check_steps(steps, *, what: str = "steps", memory: int | None = None) -> int:
    """``steps`` as a positive int below the memory ceiling."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"{what} must be a positive integer, got {steps!r}")
    ceiling = max_steps(memory)
    if steps > ceiling:
        raise UserError(f"{what} {steps} is more than this machine's memory could ever hold (at most {ceiling:,})")
    return steps


def check_budget(budget, *, what: str = "budget", memory: int | None = None) -> int:
    """``budget`` as a positive int of NFEs below the memory ceiling."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UserError(f"{what} must be a positive integer number of NFEs, got {budget!r}")
    ceiling = max_budget(memory)
    if budget > ceiling:
        raise UserError(
            f"{what} {budget:,} NFEs is more than this machine's memory could ever hold as candidates "
            f"(at most {ceiling:,}: one record of about {CANDIDATE_BYTES} bytes per NFE at worst)"
        )
    return budget


PROMPT_MAX_CHARS = 2000  # T5 reads at most 512 tokens (about 2,000 characters); CLIP reads 77


def check_prompt(prompt, *, what: str = "prompt") -> str:
    """A text prompt: non-empty, at most ``PROMPT_MAX_CHARS`` characters.

    Text encoders cut longer prompts anyway (CLIP after 77 tokens, T5 after 512) and log the whole
    cut-off text as a warning on every encoding: a 100 KB prompt made megabytes of warnings.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"{what} must be a non-empty string; give the text to generate")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise UserError(
            f"{what} is {len(prompt):,} characters long; at most {PROMPT_MAX_CHARS:,} are accepted "
            "(text encoders read at most 512 tokens)"
        )
    return prompt


def check_positive_int(value, *, what: str, most: int | None = None) -> int:
    """``value`` as an int >= 1 (and <= ``most`` when given)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    if most is not None and value > most:
        raise UserError(f"{what} must be at most {most:,}, got {value:,}")
    return value


def check_list_length(values, *, what: str, most: int) -> None:
    """Refuse a list of more than ``most`` entries, naming how many were given."""
    if values is not None and len(values) > most:
        raise UserError(f"{what}: {len(values):,} listed; at most {most:,} are accepted")


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words ("a file" for a regular one; ``os.lstat``'s mode may
    also say "a symbolic link")."""
    for test, name in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_input_file(path, *, what: str, max_bytes: int, hint: str) -> Path:
    """Refuse an input file that is empty as a path, missing, not a regular file, or over ``max_bytes``.

    Only ``os.stat`` looks at it (nothing is opened, so a FIFO never blocks). ``what`` names the file
    in messages ("config"), ``hint`` says what to give instead ("give a YAML config file").
    """
    text = str(path) if path is not None else ""
    if not text.strip():
        raise UserError(f"the {what} path is empty; {hint}")
    try:
        st = os.stat(text)
    except OSError as e:
        raise UserError(f"cannot read {what} {text!r}: {e.strerror or e}; {hint}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {text!r} is a folder; {hint}")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {text!r} is not a regular file ({file_kind(st.st_mode)}); {hint}")
    if st.st_size > max_bytes:
        raise UserError(
            f"{what} {text!r} is {st.st_size / 2**20:,.1f} MiB; a {what} may be at most {max_bytes / 2**20:g} MiB"
        )
    return Path(text)


def read_input_bytes(path, *, what: str, max_bytes: int, hint: str) -> bytes:
    """The bytes of an input file that ``check_input_file`` accepts (at most ``max_bytes``, read once).

    Opened without blocking and checked again on the open file, so a path swapped for a FIFO or a
    device after the check is refused too.
    """
    path = check_input_file(path, what=what, max_bytes=max_bytes, hint=hint)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UserError(f"{what} {str(path)!r} is not a regular file; {hint}")
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UserError(f"cannot read {what} {str(path)!r}: {e.strerror or e}; {hint}") from None
    if len(data) > max_bytes:  # it grew after the check
        raise UserError(f"{what} {str(path)!r} is more than {max_bytes / 2**20:g} MiB; a {what} may be at most that")
    return data


def read_input_text(path, *, what: str, max_bytes: int, hint: str) -> str:
    """An input file as text: ``read_input_bytes``, then UTF-8 without NUL bytes (one line naming the offset)."""
    raw = read_input_bytes(path, what=what, max_bytes=max_bytes, hint=hint)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save the {what} as UTF-8"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        raise UserError(f"{path}: holds a NUL byte at offset {nul}; a {what} is text")
    return text


def check_out_dir(path, *, what: str = "--out", files: tuple[str, ...] = ()) -> Path:
    """Refuse an output folder that could not be written, without creating anything.

    Checked before any work, so a search never runs only to fail at its last write: the path must
    not be empty, a file, or under a file; the folder (or, if missing, its nearest existing parent,
    where it would be created) must take a new file (one is created and removed at once); and each
    of ``files`` (names the command writes in it) that exists must be a regular file (not a folder,
    a FIFO or a device).
    """
    text = str(path) if path is not None else ""
    if not text.strip():
        raise UserError(f"{what} is empty; give a folder (it is created if missing)")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"{what} {text!r} is a file; give a folder (it is created if missing)")
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise UserError(
                f"{what} {text!r} is under {str(probe)!r}, which is a file; give a folder "
                "(cannot create the output folder inside a file)"
            )
        for name in files:
            if (path / name).is_dir():
                raise UserError(f"{what} {text!r} holds a folder named {name!r} where a file is written; move it")
            if (path / name).exists() and not (path / name).is_file():
                kind = file_kind(os.stat(path / name).st_mode)
                raise UserError(f"{what} {text!r} holds {name!r}, which is {kind}, where a file is written; move it")
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".noisesearch-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{what} {text!r} cannot be written ({e.strerror or e}); give a writable folder") from None
    return path
