"""The folder scaffold of a sweep run: what it creates before its first search result (``sweep.json``, the lock
file, the output and cache folders), to remove again if it fails before then, so that the tree is as before."""

from __future__ import annotations

import os
from pathlib import Path

from noisesearch.checks import check_out_dir
from noisesearch.sweep.lock import LOCK_NAME


def cache_dir_of(cache) -> Path | None:
    """The cache folder a ``cache`` argument names (checked like an output folder), or None."""
    if isinstance(cache, (str, os.PathLike)):
        return check_out_dir(cache, what="cache folder")
    return None  # off (None, False) or a CandidateCache object (its folder exists)


def _missing(path: Path) -> list[Path]:
    """``path`` and each of its parents that does not exist yet (what ``mkdir(parents=True)`` would make)."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


class Scaffold:
    """What a run creates before its first search result, to remove again if it fails before then.

    Only paths that did not exist when the run began: its ``sweep.json`` and lock file, and the
    folders it made (the output folder and its missing parents, the cache folder and its two
    subfolders), each removed only if empty (``rmdir`` never deletes a file).
    """

    def __init__(self, out: Path, cache_dir: Path | None):
        folders = _missing(out)
        if cache_dir is not None:
            folders += _missing(cache_dir / "packs") + _missing(cache_dir / "scores")
        self.folders = sorted(set(folders), key=lambda p: len(p.parts), reverse=True)  # deepest first
        self.files = [p for p in (out / "sweep.json", out / LOCK_NAME) if not os.path.lexists(p)]
        self.started = False  # set when the first search result arrives: from then on, a rerun resumes

    def remove_files(self) -> None:
        """Remove the files this run created, unless a search result has arrived."""
        if not self.started:
            for path in self.files:
                path.unlink(missing_ok=True)

    def remove_folders(self) -> None:
        """Remove the folders this run created if empty, unless a search result has arrived."""
        if not self.started:
            for folder in self.folders:
                try:
                    folder.rmdir()
                except OSError:  # not empty (or gone): left as it is
                    pass
