"""Files the workbook writes and reads back: one atomic writer, content hashes, small JSON records.

Everything the workbook writes (checkpoints, feature caches, JSON records, figures, exported
models) goes through :func:`atomic_path`: the bytes go to a temporary file with a unique name
beside the target, which is renamed over the target only once it is complete. A rename within
one folder is atomic, so a reader sees the old file or the new one, never half of one, and two
writers of the same file do not trip over each other's temporary files.

:func:`content_hashes` is the one place that decides whether a data file is still the file it
was: the feature cache's key, the duplicate check and the "verified" record all ask it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from helpers.plumbing.progress import tqdm
from helpers.settings import data_dir, shared_dataset_dir

DIGEST_CACHE_NAME = ".content_hashes.json"  # one per data folder (in records_dir): every file's SHA-1 and its stat
DIGEST_CACHE_FORMAT = "concrete-crack-workbook/digests/1"
SETTLE_NS = 2_000_000_000  # a file changed less than 2 s before it was hashed is hashed again next time

# Windows refuses to replace a file that another program holds open (an antivirus scan or the search
# indexer looking at a file just written, a reader), where POSIX replaces it anyway: there the rename is
# tried again after each of these waits before the PermissionError counts. Elsewhere it is tried once.
REPLACE_WAITS_S: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8) if os.name == "nt" else ()

KEY_FILE_NAME = ".workbook_key"  # in the data folder: the secret that seals the workbook's own records
_live_temporaries: set[Path] = set()  # this process's temporary files, still being written
_held_locks: dict[Path, tuple[int, object]] = {}  # lock file -> (how many blocks hold it, its open file)


class BusyError(OSError):
    """Another process holds the lock on a file or folder: a download or an extraction into it is running."""


def lock_path(path: str | Path) -> Path:
    """The lock file of `path`: `.<name>.lock` beside it."""
    path = Path(path).absolute()
    return path.with_name(f".{path.name}.lock")


def _try_lock(file) -> bool:
    """Take the lock on the open `file` without waiting; False when another process holds it."""
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:  # EWOULDBLOCK (flock); EACCES or EDEADLOCK (msvcrt): another process holds it
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)):
            return False
        raise
    return True


def _unlock(file) -> None:
    """Release the lock taken by _try_lock (closing the file would release it too)."""
    if os.name == "nt":
        import msvcrt

        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[Path]:
    """Hold the one lock on `path` (a file or folder about to be written) for the block; yields the lock file.

    The lock is taken on `.<name>.lock` beside `path` with fcntl.flock (Linux, macOS) or
    msvcrt.locking (Windows), so the system releases it when the process ends, even when it is
    killed: no stale lock is ever left. Within one process the lock is re-entrant (a download
    that extracts holds it once). When another process holds it, BusyError says so at once
    instead of both writing the same files.
    """
    lock = lock_path(path)
    depth, file = _held_locks.get(lock, (0, None))
    if depth:
        _held_locks[lock] = (depth + 1, file)
    else:
        lock.parent.mkdir(parents=True, exist_ok=True)
        file = _acquire(lock)
        if file is None:
            raise BusyError(
                f"Another process is downloading or extracting into {Path(path).absolute()} "
                f"(it holds {lock}): wait for it to finish, then run this again."
            )
        _held_locks[lock] = (1, file)
    try:
        yield lock
    finally:
        depth, file = _held_locks.pop(lock)
        if depth > 1:
            _held_locks[lock] = (depth - 1, file)
        else:
            try:
                lock.unlink(missing_ok=True)  # first: whoever then locks the old file sees it is gone
            except OSError:
                pass  # Windows keeps an open file: it stays, and is reused next time
            try:
                _unlock(file)
            finally:
                file.close()


def _acquire(lock: Path):
    """The lock file, opened and locked by this process; None when another process holds it.

    The holder deletes the file when it is done; a process that opened it just before then
    holds a lock on a deleted file, so the lock counts only while the path still names it.
    """
    for _ in range(100):
        file = open(lock, "a+b")
        if not _try_lock(file):
            file.close()
            return None
        try:
            if os.path.samestat(os.fstat(file.fileno()), os.stat(lock)):
                return file
        except FileNotFoundError:
            pass
        file.close()  # it was deleted under us: open the new one
    raise BusyError(
        f"The lock {lock} keeps changing hands: wait for the other processes to finish, then run this again."
    )


def record_key(create: bool = False) -> bytes | None:
    """This data folder's secret (32 random bytes in data/.workbook_key), made when `create`; None without one.

    The workbook seals its own records with it (:func:`seal`), so a record that a downloaded
    archive brings along, whatever it holds, never passes for one the workbook wrote.
    """
    path = data_dir() / KEY_FILE_NAME
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except OSError:
        pass
    if not create:
        return None
    with atomic_path(path) as temp:  # OSError when the folder is read-only: the caller keeps no record
        temp.write_bytes(secrets.token_bytes(32))
        os.chmod(temp, 0o600)
    return path.read_bytes()


def records_dir(root: str | Path) -> Path:
    """Where the workbook keeps its own files about the data folder `root` (digests, the verified record).

    `root` itself, except for the class's shared data set (WORKBOOK_DATASET) and the folders in it,
    which learners only read: their records go to data/cache/datasets/<name>-<12 hex>/, in the
    learner's own data folder, so that nothing is ever written beside the shared images.
    """
    root = Path(root)
    shared = shared_dataset_dir()
    if shared is None:
        return root
    resolved = root.resolve()
    if resolved != shared and shared not in resolved.parents:
        return root
    tag = hashlib.sha256(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return data_dir() / "cache" / "datasets" / f"{resolved.name}-{tag}"


def folder_hashes(root: str | Path, paths: Sequence[Path], progress: bool = False) -> list[str]:
    """content_hashes of `paths`, files of the data folder `root`, with its digest cache in records_dir(root)."""
    return content_hashes(paths, records_dir(root) / DIGEST_CACHE_NAME, progress, base=root)


def seal(record: dict, key: bytes) -> str:
    """An HMAC-SHA256 of `record` (as sorted JSON) under `key`: only who holds the key can make it."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _temporary_pattern(path: Path) -> re.Pattern:
    """What atomic_path names the temporary files of `path`: .<name>.<pid>-<8 hex>.tmp<suffix>."""
    return re.compile(rf"\.{re.escape(path.name)}\.\d+-[0-9a-f]{{8}}\.tmp{re.escape(path.suffix)}")


def remove_stale_temporaries(path: str | Path, older_than_s: float = 60) -> list[Path]:
    """Delete the temporary files an interrupted atomic_path left beside `path`; return those deleted.

    A save killed outright (SIGKILL, a power cut) cannot clean up after itself, so its
    `.<name>.<pid>-<hex>.tmp<suffix>` file would stay forever. One untouched for `older_than_s`
    seconds is taken to be such a leftover (a save in progress keeps writing to its file, so its
    modification time stays fresh); this process's own saves in progress are never touched.
    Errors are ignored: this only tidies up.
    """
    path = Path(path)
    pattern = _temporary_pattern(path)
    removed: list[Path] = []
    cutoff = time.time() - older_than_s
    try:
        candidates = [entry for entry in path.parent.iterdir() if pattern.fullmatch(entry.name)]
    except OSError:
        return removed
    for entry in candidates:
        try:
            if entry not in _live_temporaries and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


class DiskFullError(OSError):
    """A file could not be written because its disk is full; the message names the folder and the space needed."""


# What torch.save's zip writer raises (as RuntimeError, not OSError) when a write comes up short.
_TORCH_SHORT_WRITE = re.compile(r"unexpected pos|PytorchStreamWriter failed|file write failed")


def is_disk_full(error: BaseException) -> bool:
    """True for an OSError with ENOSPC or EDQUOT, and for torch.save's RuntimeError of a short write."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return isinstance(error, RuntimeError) and bool(_TORCH_SHORT_WRITE.search(str(error)))


def _size(count: float) -> str:
    """A number of bytes for people: 1.5 GB, 300 MB, 12 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def disk_full_error(path: Path, temp: Path, size_hint: int | None) -> DiskFullError:
    """The one sentence for a full disk: the folder, the space the file needs, the space that is free."""
    try:
        written = temp.stat().st_size
    except OSError:
        written = 0
    try:
        free = f", and {_size(shutil.disk_usage(path.parent).free)} is free"
    except OSError:
        free = ""
    needed = f"about {_size(size_hint)}" if size_hint else f"more than the {_size(written)} written before it filled up"
    error = DiskFullError(
        f"The disk holding {path.parent} is full: {path.name} needs {needed}{free}; "
        "free some space, or set WORKBOOK_DATA_DIR to a folder on a larger disk."
    )
    error.errno = errno.ENOSPC  # set after: OSError(errno, text) would print "[Errno 28]" before the sentence
    return error


def replace_file(source: Path, target: Path) -> None:
    """os.replace(source, target), tried again after each of REPLACE_WAITS_S while it raises PermissionError."""
    for wait in REPLACE_WAITS_S:
        try:
            os.replace(source, target)
            return
        except PermissionError:
            time.sleep(wait)
    os.replace(source, target)


@contextmanager
def atomic_path(path: str | Path, size_hint: int | None = None) -> Iterator[Path]:
    """A unique temporary path beside `path` to write to; renamed over `path` when the block succeeds.

    The temporary file keeps `path`'s suffix (matplotlib and torch.export read it) and is removed
    whatever happens in the block; leftovers of earlier saves that were killed are removed first
    (:func:`remove_stale_temporaries`)::

        with atomic_path("data/checkpoints/model.pt") as temp:
            torch.save(payload, temp)

    A full disk (ENOSPC, or the RuntimeError torch.save raises for a short write) becomes
    DiskFullError, an OSError whose one sentence names the folder and the space needed
    (`size_hint` bytes when the caller knows it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    _live_temporaries.add(temp)
    try:
        yield temp
        replace_file(temp, path)
    except (OSError, RuntimeError) as error:
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise disk_full_error(path, temp, size_hint) from error
        raise
    finally:
        _live_temporaries.discard(temp)
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


def _relative_names(base: Path):
    """A fast relative_name(path, base) for many paths (a warm check of 40,000 files is mostly this and stat)."""
    prefix = os.path.join(os.path.abspath(base), "")
    cwd = os.getcwd()

    def name_of(path: str) -> str:
        text = path if os.path.isabs(path) else os.path.join(cwd, path)
        if text.startswith(prefix) and os.sep + ".." not in text and os.sep + "." + os.sep not in text:
            return text[len(prefix) :].replace(os.sep, "/")
        return relative_name(Path(path), base)

    return name_of


def _stat_key(stat: os.stat_result) -> list[int]:
    """What must stay equal for a stored digest to be reused: size, mtime, inode and ctime (ns)."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]


def _read_digest_cache(cache_file: Path) -> dict[str, list]:
    """{relative name: [size, mtime_ns, inode, ctime_ns, sha1]} from a digest cache ({} if missing or old)."""
    data = read_json(cache_file)
    entries = data.get("files") if data.get("format") == DIGEST_CACHE_FORMAT else None
    return entries if isinstance(entries, dict) else {}


def _hash_file(path: Path, before: os.stat_result) -> tuple[str, bool]:
    """(SHA-1 of the file, whether it may be stored): not when the file changed while being read,
    nor when it changed less than SETTLE_NS before (a second change within the file system's
    timestamp resolution would leave the same stat behind)."""
    started = time.time_ns()
    digest = file_digest(path, "sha1")
    settled = started - max(before.st_mtime_ns, before.st_ctime_ns) >= SETTLE_NS
    return digest, settled and _stat_key(os.stat(path)) == _stat_key(before)


def content_hashes(
    paths: Sequence[Path], cache_file: Path | None = None, progress: bool = False, base: str | Path | None = None
) -> list[str]:
    """SHA-1 of each file's bytes, in order. With `cache_file` (one per data folder), digests are reused.

    The cache names each file relative to `base` (default: the cache file's folder), so that a
    data folder's cache may live elsewhere (records_dir) and stay valid when the folder moves.

    Each file is read and hashed once; its digest is stored with the file's size, modification
    time, inode and change time (ctime) and reused only while all four are unchanged. A file edited
    in place gets a new ctime, which, unlike the modification time, no user can set back (os.utime
    cannot), and a file replaced by another gets a new inode; either way it is hashed again. So a
    same-size edit whose modification time was set back is still seen, and a warm check costs one
    stat per file. What stays metadata-based, and why: reading 40,000 files at every check would
    cost seconds to minutes, while the stat fields only miss an edit made behind the file system's
    back (changing the clock, or raw writes to the disk) or on a file system without real inodes
    or ctimes (FAT, some network shares; Windows reports the creation time as ctime); files changed
    within SETTLE_NS of being hashed are hashed again, as their timestamps may not have ticked yet.
    The cache only saves time: when it cannot be written (a read-only folder), every check hashes
    every file again, and the hashes are still returned.
    """
    cache_file = Path(cache_file) if cache_file is not None else None
    stored = _read_digest_cache(cache_file) if cache_file is not None else {}
    base = Path(base) if base is not None else cache_file.parent if cache_file is not None else Path.cwd()
    name_of = _relative_names(base)
    hashes, new = [], {}
    for path in tqdm(paths, desc="Hashing files", disable=not progress):
        path = os.fspath(path)
        stat = os.stat(path)
        name = name_of(path)
        entry = stored.get(name)
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == _stat_key(stat):
            hashes.append(entry[4])
            continue
        digest, keep = _hash_file(Path(path), stat)
        if keep:
            new[name] = [*_stat_key(stat), digest]
        hashes.append(digest)
    if cache_file is not None and new:
        _update_digest_cache(cache_file, new, base)
    return hashes


def _update_digest_cache(cache_file: Path, new: dict[str, list], base: Path) -> None:
    """Add `new` entries to the digest cache (read again first: another process may have added some)
    and drop the entries of files that no longer exist (names are relative to `base`)."""
    entries = _read_digest_cache(cache_file)
    entries = {name: entry for name, entry in entries.items() if name not in new and (base / name).exists()}
    entries.update(new)
    text = json.dumps({"format": DIGEST_CACHE_FORMAT, "algorithm": "sha1", "files": entries}, separators=(",", ":"))
    try:
        with atomic_path(cache_file) as temp:
            temp.write_text(text + "\n", encoding="utf-8")
    except OSError:
        pass  # hashed again next time
