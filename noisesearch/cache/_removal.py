"""What the cache removes, and only its own files: the least recently used ones over a size cap (``evict``), and
those a failed run made (``remove_created``); folders only when empty (``os.rmdir``), never through a link."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from noisesearch.cache._files import _own_files, _own_folders


def holds_entries(root) -> bool:
    """Whether the cache folder ``root`` holds any file of the cache's own (a pack, a score file)."""
    return any(not p.name.endswith(".tmp") for p, _ in _own_files(Path(root)))


def cache_entries(root) -> set[Path]:
    """The cache's own files and folders in the cache folder ``root`` now (``root`` itself included when it
    is a folder): what ``remove_created`` keeps."""
    root = Path(root)
    found = {p for p, _ in _own_files(root)} | {folder for folder, _ in _own_folders(root)}
    return found | ({root} if os.path.isdir(root) else set())


def remove_created(root, before: set[Path]) -> None:
    """Remove from the cache folder ``root`` the cache's own files that are not in ``before``
    (``cache_entries`` taken earlier), then its own folders not in ``before`` that are left empty.

    Anything that is not the cache's own (a user's file put there, even while the run wrote) stays,
    and so do the folders holding it; a file that cannot be removed stays too."""
    root = Path(root)
    for path, _ in list(_own_files(root)):
        if path not in before:
            try:
                path.unlink()
            except OSError:
                pass
    folders = [folder for folder, _ in _own_folders(root)] + [root]
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        if folder not in before:
            try:
                os.rmdir(folder)  # only an empty folder, never a link
            except OSError:
                pass


def evict(root: Path, cap_bytes: float, removed: Callable[[Path], None]) -> int:
    """Remove the least recently used files (packs and score files) of the cache folder ``root`` until they hold
    at most ``cap_bytes``, telling ``removed`` of each; the bytes left.

    Also removes its own temporary files older than an hour (left by a killed writer). Only the cache's own
    files are ever removed; an ``OSError`` other than a file already gone is raised.
    """
    files = []
    for p, st in _own_files(root):
        if p.name.endswith(".tmp"):
            if time.time() - st.st_mtime > 3600:
                p.unlink(missing_ok=True)
        else:
            files.append((st.st_mtime_ns, p.name, p, st.st_size))
    total = sum(f[3] for f in files)
    for _, _, p, size in sorted(files):
        if total <= cap_bytes:
            break
        p.unlink(missing_ok=True)
        total -= size
        removed(p)
    return total
