"""Download a large file safely, and unpack a zip archive safely.

The crack data set is a zip of a few hundred megabytes. Downloads that size fail in
ordinary ways: the Wi-Fi drops half-way, a server is briefly overloaded, a mirror serves an
old version. This module handles those cases so that a learner can simply run the cell again.

* **Nothing half-done gets the final name.** Bytes are written to ``<dest>.part`` and renamed
  to ``<dest>`` with :func:`os.replace` only once the file is complete and its SHA-256 matches.
  A rename within one folder is atomic: other code sees either no file or the whole file.
* **Resume instead of restart.** If a ``.part`` file is already there, we ask the server for
  the rest only (HTTP ``Range: bytes=<size>-``). Servers that do not support this answer with
  the whole file, and we start again from zero.
* **Retry what may pass, stop at once on what will not.** Dropped connections, time-outs and
  server errors (5xx, 429) are retried with exponential back-off (``backoff * 2**attempt``
  seconds); "not found" or "forbidden" will not change by waiting, so they fail straight away.
* **Extract beside the target, then move into place.** :func:`extract_zip` checks every member
  name first (a malicious zip could write to ``../../.bashrc``), unpacks into a temporary
  sibling folder, and moves the result into place only when every member was read correctly.

A source may also be a local path or a ``file://`` address, so that a teacher can share one
copy of the data with a whole classroom.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests
from tqdm.auto import tqdm

from helpers.files import file_digest


class DownloadError(RuntimeError):
    """A file could not be fetched. ``reason`` holds a short description of why."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class ChecksumError(DownloadError):
    """The file arrived, but its SHA-256 is not the one expected."""


class ArchiveError(RuntimeError):
    """A zip archive could not be read: it is corrupt or incomplete."""


class UnsafeArchiveError(ArchiveError):
    """A zip member would be written outside the destination folder."""


class _RetryableError(Exception):
    """Internal: this attempt failed in a way that another attempt may fix."""


def _local_source(url: str) -> Path | None:
    """The local file a source names (plain path or ``file://``), or None for http(s)."""
    if url.lower().startswith(("http://", "https://")):
        return None
    if url.lower().startswith("file://"):
        return Path(url2pathname(urlparse(url).path))      # also decodes %20 and the like
    return Path(url).expanduser()


def download_file(url: str, dest: str | Path, *, sha256: str | None = None,
                  timeout: tuple[float, float] = (10.0, 60.0), retries: int = 4,
                  backoff: float = 1.0, chunk_size: int = 1 << 20, progress: bool = True,
                  session: requests.Session | None = None) -> Path:
    """Fetch ``url`` (http(s), ``file://`` or a local path) to ``dest`` and return ``dest``.

    If ``dest`` already exists (and matches ``sha256`` when given), nothing is fetched.
    Raises :class:`DownloadError`, or :class:`ChecksumError` when the digest does not match.
    """
    dest = Path(dest)
    expected = sha256.strip().lower() if sha256 else None
    if dest.is_file() and (expected is None or file_digest(dest) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")       # same folder, so the rename is atomic

    source = _local_source(url)
    if source is not None:
        _copy_local(source, part, chunk_size=chunk_size, progress=progress, label=dest.name)
    else:
        _fetch_with_retries(url, part, timeout=timeout, retries=retries, backoff=backoff,
                            chunk_size=chunk_size, progress=progress, session=session)

    if expected is not None:
        actual = file_digest(part)
        if actual != expected:
            part.unlink()
            raise ChecksumError(
                f"The file from {url} does not have the expected SHA-256; the file may be "
                f"corrupt or the mirror serves another version, so try another address.\n"
                f"  expected: {expected}\n  actual:   {actual}",
                reason=f"SHA-256 mismatch (expected {expected}, got {actual})")
    os.replace(part, dest)
    return dest


def _copy_local(source: Path, part: Path, *, chunk_size: int, progress: bool, label: str) -> None:
    """Copy a local file into ``part`` in chunks, with a progress bar."""
    if not source.is_file():
        raise DownloadError(
            f"Could not copy {source}: there is no such file. Check the path, or download "
            f"the file by hand and pass its path.", reason="no such local file")
    with open(source, "rb") as reader, open(part, "wb") as writer, \
            tqdm(total=source.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                 disable=not progress) as bar:
        while chunk := reader.read(chunk_size):
            writer.write(chunk)
            bar.update(len(chunk))


def _fetch_with_retries(url: str, part: Path, *, timeout: tuple[float, float], retries: int,
                        backoff: float, chunk_size: int, progress: bool,
                        session: requests.Session | None) -> None:
    """Call :func:`_fetch_once` until it succeeds, waiting longer after each failure."""
    own_session = session is None
    session = session or requests.Session()
    attempts = max(retries, 0) + 1
    try:
        for attempt in range(attempts):
            if attempt > 0:                   # wait 1 s, 2 s, 4 s... (with backoff=1)
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(url, part, session=session, timeout=timeout,
                            chunk_size=chunk_size, progress=progress)
                return
            except _RetryableError as error:
                last_reason = str(error)
    except DownloadError:
        _remove_if_empty(part)
        raise
    finally:
        if own_session:
            session.close()
    _remove_if_empty(part)
    tries = f"{attempts} attempt" if attempts == 1 else f"{attempts} attempts"
    kept = f" The partial file {part} is kept, so the next run resumes." if part.exists() else ""
    raise DownloadError(
        f"Could not download {url} after {tries}; check your internet connection and run "
        f"this again.\nLast error: {last_reason}.{kept}",
        reason=f"{last_reason} (after {tries})")


def _remove_if_empty(part: Path) -> None:
    """Delete a ``.part`` file that holds no bytes: there is nothing in it to resume."""
    if part.exists() and part.stat().st_size == 0:
        part.unlink()


def _total_from_content_range(header: str | None) -> int | None:
    """The full size in ``Content-Range: bytes 0-99/1234`` (or ``bytes */1234``), if given."""
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def _fetch_once(url: str, part: Path, *, session: requests.Session,
                timeout: tuple[float, float], chunk_size: int, progress: bool) -> None:
    """One request: resume ``part`` if it exists, stream the body into it, check its size."""
    def request(resume_from: int) -> requests.Response:
        headers = {"Accept-Encoding": "identity"}   # the raw bytes, so sizes add up
        if resume_from:
            headers["Range"] = f"bytes={resume_from}-"
        return session.get(url, headers=headers, stream=True, timeout=timeout)

    resume_from = part.stat().st_size if part.exists() else 0
    try:
        response = request(resume_from)
        if response.status_code == 416:     # "range not satisfiable": nothing after that byte
            full_size = _total_from_content_range(response.headers.get("Content-Range"))
            response.close()
            if full_size == resume_from:
                return                       # the .part was already complete
            part.unlink()                    # it is bigger than the file, or unknown: restart
            resume_from = 0
            response = request(0)
        with response:
            _check_status(url, response)
            if response.status_code == 206:
                content_range = response.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {resume_from}-"):
                    part.unlink()
                    raise _RetryableError("the server resumed from the wrong byte")
                total = _total_from_content_range(content_range)
                mode = "ab"
            else:                            # 200: the server sent the whole file from byte 0
                resume_from = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                mode = "wb"
            with open(part, mode) as file, \
                    tqdm(total=total, initial=resume_from, unit="B", unit_scale=True,
                         unit_divisor=1024, desc=part.stem,   # the name without .part
                         disable=not progress) as bar:
                for chunk in response.iter_content(chunk_size=chunk_size):
                    file.write(chunk)
                    bar.update(len(chunk))
    except requests.Timeout as error:
        raise _RetryableError("the server did not answer in time") from error
    except requests.exceptions.ChunkedEncodingError as error:
        raise _RetryableError("the connection dropped during the transfer") from error
    except requests.ConnectionError as error:
        raise _RetryableError(f"the connection failed ({_short_reason(error)})") from error
    except requests.RequestException as error:
        raise DownloadError(f"Could not download {url}: {error}. Check the address.",
                            reason=str(error)) from error

    size = part.stat().st_size
    if total is not None and size < total:
        raise _RetryableError(f"the connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink()
        raise _RetryableError(f"received {size} bytes but {total} were announced")


def _short_reason(error: Exception) -> str:
    """The useful end of requests' long messages, such as ``[Errno 111] Connection refused``."""
    match = re.search(r"\[Errno -?\d+\][^'\")]*", str(error))
    return match.group(0).strip() if match else str(error).rsplit(": ", 1)[-1]


def _check_status(url: str, response: requests.Response) -> None:
    """Raise for an error status: retryable for 5xx and 429, final for other 4xx."""
    code = response.status_code
    answer = f"{code} {response.reason or ''}".strip()
    if code == 429 or code >= 500:
        raise _RetryableError(f"the server answered {answer}")
    if code not in (200, 206):
        raise DownloadError(
            f"Could not download {url}: the server answered {answer}. Check the address, "
            f"or download the file by hand and pass its path.",
            reason=f"the server answered {answer}")


def download_first(urls: Sequence[str], dest: str | Path, **kwargs) -> tuple[Path, str]:
    """Try each address in turn with :func:`download_file` (which gets ``kwargs``) and return
    ``(path, url that worked)``; if ``dest`` is already there and verified, that is ``urls[0]``."""
    if not urls:
        raise ValueError("download_first needs at least one address")
    failures = []
    for url in urls:
        try:
            return download_file(url, dest, **kwargs), url
        except DownloadError as error:
            failures.append(f"  - {url}: {error.reason}")
    raise DownloadError(
        f"None of the {len(urls)} addresses could be reached; check your internet connection, "
        f"or download the file by hand and pass its path.\n" + "\n".join(failures),
        reason="no address worked")


def _unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    """Why this member could escape the destination folder, or None if it is safe."""
    name = member.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "it has an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "its path contains '..'"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "it is a symbolic link"
    return None


def extract_zip(zip_path: str | Path, dest_dir: str | Path, *, progress: bool = True) -> Path:
    """Unpack ``zip_path`` into ``dest_dir`` (created if needed) and return ``dest_dir``.

    Raises :class:`ArchiveError` for a corrupt archive and :class:`UnsafeArchiveError` for a
    member that would land outside ``dest_dir``; in both cases nothing is left half-written.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    not_valid = (f"{zip_path.name} is not a valid zip archive (corrupt or incomplete "
                 f"download): delete it and download again.")
    if not zip_path.is_file():
        raise ArchiveError(f"{zip_path} does not exist: download it first.")
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as error:
        raise ArchiveError(not_valid) from error

    with archive:
        members = [m for m in archive.infolist() if not m.filename.startswith("__MACOSX/")]
        for member in members:                # check everything before writing anything
            reason = _unsafe_reason(member)
            if reason:
                raise UnsafeArchiveError(
                    f"Refusing to extract {zip_path.name}: member '{member.filename}' would "
                    f"be written outside {dest_dir} because {reason}; use an archive from a "
                    f"trusted source.")

        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in dest_dir.parent.glob(f".{glob.escape(dest_dir.name)}.extracting-*"):
            shutil.rmtree(stale, ignore_errors=True)     # left by an interrupted run
        temp_dir = dest_dir.parent / f".{dest_dir.name}.extracting-{uuid.uuid4().hex[:8]}"
        temp_dir.mkdir()
        try:
            for member in tqdm(members, desc=f"Extracting {zip_path.name}", unit="file",
                               disable=not progress):
                archive.extract(member, temp_dir)
            _move_into_place(temp_dir, dest_dir)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise ArchiveError(not_valid) from error
        except BaseException:                 # also Ctrl+C: leave nothing half-written
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
    return dest_dir


def _move_into_place(temp_dir: Path, dest_dir: Path) -> None:
    """Rename ``temp_dir`` to ``dest_dir``, or move its top-level entries into an existing one."""
    if not dest_dir.exists():
        os.replace(temp_dir, dest_dir)
        return
    for entry in temp_dir.iterdir():
        target = dest_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)
    temp_dir.rmdir()
