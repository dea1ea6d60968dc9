"""Files and folders written so that nothing is ever half-written, and one sentence when the disk is full."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from helpers.settings import SOURCE_FILE


def size_text(count: float) -> str:
    """A number of bytes for people: 1.5 GB, 300.0 MB, 12.0 kB, 80.0 bytes."""
    unit, scale = next((u, s) for u, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("bytes", 1)) if count >= s or s == 1)
    return f"{count / scale:.1f} {unit}"


def disk_full(error: BaseException, folder: Path, needed: str) -> OSError | None:
    """For a full disk (ENOSPC, EDQUOT, or torch.save's short write) the one sentence naming the folder; else None."""
    full = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if not (isinstance(error, OSError) and error.errno in full or "unexpected pos" in str(error)):
        return None
    free = shutil.disk_usage(folder).free if folder.is_dir() else 0
    message = f"The disk holding {folder} is full: this needs {needed} and {size_text(free)} is free; "
    full = OSError(message + "free some space, or choose a folder on a larger disk.")
    full.errno = errno.ENOSPC  # set after: OSError(errno, text) would print "[Errno 28]" first
    return full


@contextmanager
def atomic_path(path: str | Path, size_hint: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write to, renamed over `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield temp
        os.replace(temp, path)
    except (OSError, RuntimeError) as error:
        needed = f"about {size_text(size_hint)}" if size_hint else "more room"
        if full := disk_full(error, path.parent, f"{needed} for {path.name}"):
            raise full from error
        raise
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomically(data: dict, path: str | Path) -> None:
    """Write `data` as JSON to `path` through :func:`atomic_path`."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> dict:
    """A JSON object from `path`; {} when the file is missing, damaged or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes ("sha256" or "sha1"), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(paths: Sequence[Path], progress: bool = False) -> list[str]:
    """The SHA-1 of each file's bytes, in order: equal digests, equal bytes."""
    return [file_digest(path, "sha1") for path in tqdm(paths, desc="Hashing files", disable=not progress)]


def lock(path: Path) -> FileLock:
    """The lock on `path` for a `with` block: re-entrant, released by the system even when its holder is killed, and
    kept in the system's temporary folder (named by a hash of `path`), so that nothing is left beside `path`."""
    name = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:16]
    return FileLock(Path(tempfile.gettempdir()) / f"workbook-{name}.lock", mode=0o666, is_singleton=True)


def check_replaceable(dest: Path, source: str) -> None:
    """Refuse, in one sentence, a `dest` under a file, or a non-empty folder whose record does not say `source`."""
    file = next((folder for folder in (dest, *dest.parents) if folder.exists() and not folder.is_dir()), None)
    if file is not None:
        raise FileExistsError(f"{dest} cannot be a data folder: {file} is a file; choose another folder.")
    entries = sorted(dest.iterdir(), key=lambda p: (p.is_dir(), p.name)) if dest.is_dir() else []
    if entries and read_json(dest / SOURCE_FILE).get("source") != source:
        raise FileExistsError(
            f"{dest} holds files the workbook did not make (e.g. {entries[0].name}); choose an empty or new folder."
        )


@contextmanager
def replacing(dest: Path, source: str) -> Iterator[Path]:
    """A new folder beside `dest` to fill, swapped in for `dest` (only one made from `source`) when the block succeeds;
    its lock is held throughout, so what a killed run left beside it is removed first."""
    check_replaceable(dest, source)
    temp, old = dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")
    with lock(dest):
        for leftover in (temp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        temp.mkdir(parents=True)
        try:
            yield temp
            if dest.exists():
                os.replace(dest, old)
            os.replace(temp, dest)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
