"""Crash-safe file writes: whole files appear atomically, result lines are appended in one write,
and advisory locks keep two processes from doing the same work at once."""

from __future__ import annotations

import fcntl
import io
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


class NoiseattackWarning(UserWarning):
    """Something recovered from (a torn line, an unreadable checkpoint); the CLI prints it as one line."""


class TornLineWarning(NoiseattackWarning):
    """A line of a JSONL file that does not parse (a write torn by a crash) was skipped."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write to a temp file in the same directory, fsync it, rename it over `path`, fsync the dir.
    A reader (or a crash) sees either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are for everyone to read
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write(2) on an O_APPEND descriptor, then fsync.
    The file is never truncated or rewritten. If a previous writer was killed mid-line, the new
    line starts on a line of its own, and readers skip the torn fragment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, allow_nan=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as r:
                r.seek(size - 1)
                if r.read(1) != b"\n":
                    line = b"\n" + line
        view = memoryview(line)
        while view:  # one write(2) in practice; the loop only guards against a short write
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file. A line that does not parse (a write torn by a
    kill) is skipped with a warning; the run it belonged to is then not done and runs again."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                records.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                warnings.warn(f"{path}:{lineno}: ignoring a torn or corrupt line ({len(raw)} bytes); "
                              f"the run it belonged to counts as not done", TornLineWarning, stacklevel=2)
    return records


@contextmanager
def locked(path: Path, *, block: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` (created empty, never removed); yields False, without the lock,
    when another process holds it and not `block`. The kernel drops the lock when its holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Whether a process (here or, on a shared file system, elsewhere) holds the lock on `path`."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
