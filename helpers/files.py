"""Files the workbook writes and reads back: one atomic writer, one hashing helper, small JSON records.

Everything the workbook writes (checkpoints, feature caches, JSON records, figures, exported
models) goes through :func:`atomic_path`: the bytes go to a temporary file with a unique name
beside the target, which is renamed over the target only once it is complete. A rename within
one folder is atomic, so a reader sees the old file or the new one, never half of one, and two
writers of the same file do not trip over each other's temporary files.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path beside `path` to write to; renamed over `path` when the block succeeds.

    The temporary file keeps `path`'s suffix (matplotlib and torch.export read it) and is removed
    whatever happens in the block::

        with atomic_path("data/checkpoints/model.pt") as temp:
            torch.save(payload, temp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomically(data: dict, path: str | Path) -> None:
    """Write `data` as JSON to `path` through :func:`atomic_path` (raises OSError when it cannot)."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> dict:
    """A JSON object from `path`, or an empty dict when the file is missing, damaged or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_digest(path: str | Path, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """The hex digest of a file's bytes ("sha256" or "sha1"), read in chunks: equal digests, equal bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def relative_name(path: Path, base: Path) -> str:
    """`path` relative to `base` when it lies inside it (else absolute), with / separators."""
    try:
        return path.absolute().relative_to(base.absolute()).as_posix()
    except ValueError:
        return path.absolute().as_posix()


def content_hashes(paths: Sequence[Path], cache_file: Path | None = None, progress: bool = False) -> list[str]:
    """SHA-1 of each file, in order. With `cache_file`, earlier results are reused.

    The cache maps "<relative name>|<size>|<mtime_ns>" to a hash, so a file that changes
    (new size or modification time) gets a new key and is hashed again. The cache only saves
    time: when it cannot be written (a read-only folder), the hashes are still returned.
    """
    cache = read_json(cache_file) if cache_file is not None else {}
    base = Path(cache_file).parent if cache_file is not None else Path.cwd()
    hashes, changed = [], False
    for path in tqdm(paths, desc="Hashing files", disable=not progress):
        stat = Path(path).stat()
        key = f"{relative_name(Path(path), base)}|{stat.st_size}|{stat.st_mtime_ns}"
        if not isinstance(cache.get(key), str):
            cache[key] = file_digest(path, "sha1")
            changed = True
        hashes.append(cache[key])
    if cache_file is not None and changed:
        try:
            write_json_atomically(cache, cache_file)
        except OSError:
            pass  # hashed again next time
    return hashes
