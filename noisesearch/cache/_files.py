"""The cache folder on disk: its own files by name, and reading, writing and opening them safely.

The cache's own files are the regular files named ``packs/<32 hex>.safetensors``, ``scores/<24 hex>/<32 hex>.json``
and its writers' temporary files ``.new-*.tmp`` in those folders; nothing else is read, followed or changed
(see ``noisesearch.cache``). A reader checks a name and ``lstat`` before opening, opens with ``O_NOFOLLOW |
O_NONBLOCK`` and checks again that it got a regular file; a writer writes a temporary file whole and renames it
to the digest of its bytes; opening a folder probes it before anything is made.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from noisesearch.checks import file_kind
from noisesearch.errors import UserError

_TEMP = r"\.new-[a-z0-9_]+\.tmp"  # what ``tempfile.mkstemp(prefix=".new-", suffix=".tmp")`` names
PACK_NAME = re.compile(r"[0-9a-f]{32}\.safetensors")
SCORE_NAME = re.compile(r"[0-9a-f]{32}\.json")
VERIFIER_NAME = re.compile(r"[0-9a-f]{24}")
_OWN_PACKS = re.compile(rf"{PACK_NAME.pattern}|{_TEMP}")
_OWN_SCORES = re.compile(rf"{SCORE_NAME.pattern}|{_TEMP}")
_NONBLOCKING_READ = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
)


def file_digest(data: bytes) -> str:
    """The name a cache file with these bytes has (without its suffix): 32 hex digits of their SHA-256."""
    return hashlib.sha256(data).hexdigest()[:32]


def _write(folder: Path, suffix: str, parts: list) -> str:
    """Write the concatenated ``parts`` (bytes-like) whole as ``folder/<digest><suffix>``; its name.

    The bytes go to a temporary file, hashed as they are written (no joined copy), which is then renamed
    into place (no fsync, see ``CandidateCache``). A name taken by anything but a regular file (a folder,
    a link, a FIFO: not the cache's) is never replaced: ``FileExistsError``. An ``OSError`` without a path
    (a full disk while writing) gets ``folder`` as its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-", suffix=".tmp")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                h.update(part)
                f.write(part)
        name = f"{h.hexdigest()[:32]}{suffix}"
        target = folder / name
        kind = _kind(target)
        if kind not in (None, "a file"):
            raise FileExistsError(errno.EEXIST, f"{kind} the cache did not write is in the way", str(target))
        os.replace(tmp, target)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(folder)
        raise
    return name


def _kind(path: Path) -> str | None:
    """What is at ``path`` without following a link ("a file", "a folder", "a symbolic link", ...); None: nothing."""
    try:
        return file_kind(os.lstat(path).st_mode)
    except OSError:  # missing, under a file, or not searchable: nothing this code could use
        return None


def _is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder itself (not a symbolic link to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _open_regular(path: Path):
    """``path`` opened for reading (a binary file object), or None unless it is a regular file: a link is
    not followed and a FIFO or device never opened for long (checked before and after a non-blocking open)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, _NONBLOCKING_READ)
    except OSError:
        return None
    f = os.fdopen(fd, "rb")
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return f
    except OSError:
        pass
    f.close()
    return None


def read_whole(path: Path) -> bytearray:
    """The bytes of the regular file ``path`` (``_open_regular``); ValueError when it is not one or reads short."""
    f = _open_regular(path)
    if f is None:
        raise ValueError("not the cache's file")
    with f:
        data = bytearray(os.fstat(f.fileno()).st_size)
        if f.readinto(data) != len(data):
            raise ValueError("short read")
    return data


def touch(path: Path) -> None:
    """Mark ``path`` as just used (its modification time: the LRU order), never through a link."""
    try:
        os.utime(path, follow_symlinks=False)
    except (OSError, NotImplementedError):  # evicted by another process meanwhile, or read-only: no matter
        pass


def make_folder(root: Path, *names: str) -> Path:
    """The cache's folder ``root/names...``, made if missing; NotADirectoryError when something else (a
    file, a link) has its name."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root
    for name in names:
        folder = folder / name
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        if not _is_folder(folder):
            kind = _kind(folder) or "nothing"
            raise NotADirectoryError(errno.ENOTDIR, f"{kind} is where the cache keeps a folder", str(folder))
    return folder


def _scan(folder: Path, names: re.Pattern) -> list[str]:
    """The regular files in ``folder`` (itself a folder, not a link to one) whose whole name matches ``names``;
    [] when it cannot be listed."""
    if not _is_folder(folder):
        return []
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if names.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def _own_folders(root: Path) -> list[tuple[Path, re.Pattern | None]]:
    """The cache's own folders under ``root`` that exist (``packs``, ``scores`` and ``scores/<verifier id>``,
    none through a link) with the names of the files it writes there (None: none)."""
    found: list[tuple[Path, re.Pattern | None]] = []
    if _is_folder(root / "packs"):
        found.append((root / "packs", _OWN_PACKS))
    if _is_folder(root / "scores"):
        found.append((root / "scores", None))
        try:
            with os.scandir(root / "scores") as entries:
                ids = [e.name for e in entries if VERIFIER_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
        except OSError:
            ids = []
        found += [(root / "scores" / i, _OWN_SCORES) for i in sorted(ids)]
    return found


def _own_files(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The cache's own regular files under ``root`` (see the module docstring) with their ``lstat``."""
    for folder, names in _own_folders(root):
        for name in _scan(folder, names) if names is not None else ():
            try:
                st = os.lstat(folder / name)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield folder / name, st


def _probe(folder: Path) -> None:
    """Make and remove one temporary file in ``folder``: OSError when it cannot be written."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)


def _check_folder(path: Path) -> None:
    """Refuse, in one ``UserError`` line and writing nothing, a cache folder that cannot work: ``path`` not a
    folder, ``packs`` or ``scores`` in it not real folders, or any of them (or, for a missing ``path``, its
    nearest existing parent, where it would be made) not writable."""
    text = str(path)
    if os.path.exists(path) and not os.path.isdir(path):  # the folder named may be a link to one
        raise UserError(f"cache {text!r} is {_kind(path) or 'not a folder'}; give a folder (it is created if missing)")
    probes = [path]
    for sub in ("packs", "scores"):
        kind = _kind(path / sub)
        if kind not in (None, "a folder"):
            raise UserError(
                f"cache {str(path / sub)!r} is {kind}, not a folder: the cache keeps its {sub} there; "
                "move it away or give another cache folder"
            )
        if kind is not None:
            probes.append(path / sub)
    while not os.path.lexists(probes[0]) and probes[0] != probes[0].parent:
        probes[0] = probes[0].parent
    for folder in probes:
        try:
            if not os.path.isdir(folder):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            _probe(folder)
        except OSError as e:
            shown = text if folder == probes[0] else str(folder)
            raise UserError(f"cannot write the cache folder {shown!r}: {e.strerror}; give a writable folder") from None
