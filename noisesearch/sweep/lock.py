"""One folder, one writer: ``sweep.lock`` in a sweep's output folder, held with ``fcntl.flock``.

The lock file holds its owner's PID and host as JSON. The kernel releases a ``flock`` when its
process dies (``kill -9`` included), so a lock is held exactly while its owner runs: a second
sweep into a live folder is refused naming the owner; a lock file left by a dead process is taken
over with a message. On a clean exit the file is emptied (it stays, so the lock is never deleted
under another process that just opened it). The one exception: a lock file this run created, while
it is still held, when the run fails before its first result (``scaffold.Scaffold``: the folder is left
as it was found) or when writing the owner fails (a full disk).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from noisesearch._io import dumps
from noisesearch.errors import UserError

LOCK_NAME = "sweep.lock"


class FolderLock:
    """Exclusive lock on ``folder`` for this process (a context manager).

    Args:
        folder: an existing folder.
        note: receives a one-line message when a stale lock of a dead process is taken over.
    """

    def __init__(self, folder: Path, *, note: Callable[[str], None] = print):
        self.path = Path(folder) / LOCK_NAME
        self.note = note
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock (a ``UserError`` naming the owner if a live sweep holds it).

        A failure after this call created the lock file (writing the owner on a full disk) removes the
        file again; an ``OSError`` names the lock file.
        """
        try:
            fd, created = _open(self.path)
        except OSError as e:
            raise UserError(
                f"cannot write into the output folder {str(self.path.parent)!r}: {e.strerror}; "
                "give a folder you can write to"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise UserError(
                f"{str(self.path.parent)!r} is being written by another sweep (PID {owner.get('pid', '?')} on host "
                f"{owner.get('host', '?')}); wait for it to finish or use another --out folder"
            ) from None
        try:
            old = _owner(fd)
            if old and (old.get("pid"), old.get("host")) != (os.getpid(), socket.gethostname()):
                self.note(
                    f"taking over the lock of a sweep that is gone (PID {old.get('pid', '?')} on host "
                    f"{old.get('host', '?')}); resuming its rows"
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
            os.fsync(fd)
        except BaseException as e:
            if created:  # still held: nobody else can be using the file this call made
                self.path.unlink(missing_ok=True)
            os.close(fd)
            if isinstance(e, OSError) and e.errno is not None:
                raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(self.path)) from None
            raise
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a clean exit leaves no owner behind
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _open(path: Path) -> tuple[int, bool]:
    """The lock file opened for reading and writing, created if missing; and whether this call created it."""
    for _ in range(3):  # another process may remove the file between the two calls: try again
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            try:
                return os.open(path, os.O_RDWR), False
            except FileNotFoundError:
                continue
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), False


def _owner(fd: int) -> dict:
    """The PID and host written in an open lock file ({} if empty, unreadable or not an owner record)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError, RecursionError):  # RecursionError: 4096 bytes of "[" are no owner either
        return {}
    return data if isinstance(data, dict) else {}
