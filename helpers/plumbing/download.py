"""Download a large file safely (unpacking it safely is :mod:`helpers.plumbing.archive`'s job).

The crack data set is a zip of a few hundred megabytes. Downloads that size fail in ordinary
ways: the Wi-Fi drops half-way, a server is briefly overloaded, a mirror serves an old version,
an address serves something else. This module handles those cases so that a learner can simply
run the cell again.

* **Nothing half-done gets the final name.** Bytes go to ``<dest>.part``, renamed to ``<dest>``
  (atomic within one folder) only once the file is complete and its SHA-256 matches.
* **One file per address.** :func:`download_first` keeps each address's file under a name with
  a short hash of the address (:func:`path_for`): a new address is really fetched, and a
  ``.part`` is only ever resumed from the address it came from.
* **Resume only the same version.** The ``ETag`` (else ``Last-Modified``) of the first answer is
  kept in ``<dest>.part.json``; a resume asks for the rest (``Range``) only if the file is still
  that version (``If-Range``), otherwise the server sends it whole and we start from zero. When
  the server gave neither, the ``.part`` cannot be checked: we start from zero, and say so.
* **Bounded sizes.** A download stops, deleting its ``.part``, once it goes past its announced
  size or ``max_bytes`` (2 GiB by default).
* **Retry what may pass, stop at once on what will not.** Dropped connections, time-outs and
  server errors (5xx, 429) are retried with exponential back-off (``backoff * 2**attempt``
  seconds); "not found" or "forbidden" will not change by waiting, so they fail straight away.
* **Say what happened.** A 404 is reported as a 404, a wrong SHA-256 as a wrong SHA-256, and
  "check your internet connection" only when nothing could be reached. Ctrl+C raises
  :class:`DownloadInterrupted` (a ``KeyboardInterrupt``) naming the ``.part`` kept for resuming.

A source may also be a local path or a ``file://`` address, so that a teacher can share one
copy of the data with a whole classroom.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests

from helpers.plumbing.files import exclusive_lock, file_digest, read_json, write_json_atomically
from helpers.plumbing.progress import tqdm

DEFAULT_MAX_BYTES = 2 * 1024**3  # the images archive is ~250 MB: a response past this is not it


class DownloadError(RuntimeError):
    """A file could not be fetched. ``reason`` holds a short description of why;
    ``unreachable`` is True when the address could not be reached at all."""

    def __init__(self, message: str, reason: str | None = None, unreachable: bool = False):
        super().__init__(message)
        self.reason = reason or message
        self.unreachable = unreachable


class ChecksumError(DownloadError):
    """The file arrived, but its SHA-256 is not the one expected."""


class DownloadInterrupted(KeyboardInterrupt):
    """Ctrl+C during a download. ``part`` is the partial file kept for resuming, or None."""

    def __init__(self, part: Path | None):
        super().__init__(
            f"Download interrupted; run it again to resume from {part}."
            if part
            else "Download interrupted; run it again."
        )
        self.part = part


class _RetryableError(Exception):
    """Internal: this attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, connection: bool = False):
        super().__init__(reason)
        self.connection = connection  # the network failed, rather than the server


def _local_source(url: str) -> Path | None:
    """The local file a source names (plain path or ``file://``), or None for http(s)."""
    if url.lower().startswith(("http://", "https://")):
        return None
    if url.lower().startswith("file://"):
        return Path(url2pathname(urlparse(url).path))  # also decodes %20 and the like
    return Path(url).expanduser()


def path_for(url: str, dest: str | Path) -> Path:
    """``dest`` with a short hash of ``url`` in its name (``data-1a2b3c4d5e6f.zip``)."""
    dest = Path(dest)
    return dest.with_name(f"{dest.stem}-{hashlib.sha256(url.encode()).hexdigest()[:12]}{dest.suffix}")


def _is_complete(path: Path, sha256: str | None) -> bool:
    return path.is_file() and (not sha256 or file_digest(path) == sha256.strip().lower())


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    timeout: tuple[float, float] = (10.0, 60.0),
    retries: int = 4,
    backoff: float = 1.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    session: requests.Session | None = None,
) -> Path:
    """Fetch ``url`` (http(s), ``file://`` or a local path) to ``dest`` and return ``dest``.

    If ``dest`` already exists (and matches ``sha256`` when given), nothing is fetched.
    Raises :class:`DownloadError`, :class:`ChecksumError` when the digest does not match, or
    :class:`DownloadInterrupted` on Ctrl+C.
    """
    dest = Path(dest)
    expected = sha256.strip().lower() if sha256 else None
    if _is_complete(dest, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")  # same folder, so the rename is atomic

    with exclusive_lock(dest):  # one process at a time writes this .part (BusyError for the second)
        _fetch_to(
            url,
            part,
            dest,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            chunk_size=chunk_size,
            progress=progress,
            max_bytes=max_bytes,
            session=session,
        )
        _check_and_rename(url, part, dest, expected)
    return dest


def _fetch_to(
    url: str,
    part: Path,
    dest: Path,
    *,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
    chunk_size: int,
    progress: bool,
    max_bytes: int,
    session: requests.Session | None,
) -> None:
    """Bring the bytes of ``url`` (http(s) or local) into ``part``."""
    source = _local_source(url)
    if source is not None:
        _copy_local(source, part, chunk_size=chunk_size, progress=progress, label=dest.name)
        return
    try:
        _fetch_with_retries(
            url,
            part,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            chunk_size=chunk_size,
            progress=progress,
            session=session,
            max_bytes=max_bytes,
        )
    except KeyboardInterrupt:
        _remove_if_empty(part)
        raise DownloadInterrupted(part if part.exists() else None) from None


def _check_and_rename(url: str, part: Path, dest: Path, expected: str | None) -> None:
    """Rename a complete ``part`` to ``dest`` once its SHA-256 is the one expected (ChecksumError if not)."""
    if expected is not None:
        actual = file_digest(part)
        if actual != expected:
            _discard(part)
            raise ChecksumError(
                f"The file from {url} does not have the expected SHA-256; the file may be "
                f"corrupt or the mirror serves another version, so try another address.\n"
                f"  expected: {expected}\n  actual:   {actual}",
                reason=f"the file does not have the expected SHA-256 (expected {expected}, got {actual})",
            )
    os.replace(part, dest)
    _record_of(part).unlink(missing_ok=True)


def _copy_local(source: Path, part: Path, *, chunk_size: int, progress: bool, label: str) -> None:
    """Copy a local file into ``part`` in chunks, with a progress bar."""
    if not source.is_file():
        raise DownloadError(
            f"Could not copy {source}: there is no such file. Check the path, or download "
            f"the file by hand and pass its path.",
            reason="no such local file",
        )
    with (
        open(source, "rb") as reader,
        open(part, "wb") as writer,
        tqdm(
            total=source.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress
        ) as bar,
    ):
        while chunk := reader.read(chunk_size):
            writer.write(chunk)
            bar.update(len(chunk))


def _fetch_with_retries(
    url: str,
    part: Path,
    *,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
    chunk_size: int,
    progress: bool,
    max_bytes: int,
    session: requests.Session | None,
) -> None:
    """Call :func:`_fetch_once` until it succeeds, waiting longer after each failure."""
    own_session = session is None
    session = session or requests.Session()
    attempts = max(retries, 0) + 1
    try:
        for attempt in range(attempts):
            if attempt > 0:  # wait 1 s, 2 s, 4 s... (with backoff=1)
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(
                    url,
                    part,
                    session=session,
                    timeout=timeout,
                    chunk_size=chunk_size,
                    progress=progress,
                    max_bytes=max_bytes,
                )
                return
            except _RetryableError as error:
                last = error
    except DownloadError:
        _remove_if_empty(part)
        raise
    finally:
        if own_session:
            session.close()
    _remove_if_empty(part)
    tries = f"{attempts} attempt" if attempts == 1 else f"{attempts} attempts"
    kept = f" The partial file {part} is kept, so the next run resumes." if part.exists() else ""
    if last.connection:
        raise DownloadError(
            f"Could not reach {url} after {tries}; check your internet connection and run "
            f"this again.\nLast error: {last}.{kept}",
            reason=f"could not be reached ({last}, {tries})",
            unreachable=True,
        )
    raise DownloadError(
        f"Could not download {url} after {tries}: {last}, a problem on the server's side; "
        f"try again later or use another address.{kept}",
        reason=f"{last} ({tries})",
    )


def _record_of(part: Path) -> Path:
    """``<part>.json``: the address, ETag and Last-Modified of the answer that started ``part``."""
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _record_of(part).unlink(missing_ok=True)


def _remove_if_empty(part: Path) -> None:
    """Delete a ``.part`` file that holds no bytes: there is nothing in it to resume."""
    if part.exists() and part.stat().st_size == 0:
        _discard(part)


def _validators(response: requests.Response) -> dict:
    """The ETag (a strong one: If-Range may not use a weak ``W/`` one) and Last-Modified."""
    etag = response.headers.get("ETag")
    return {
        "etag": etag if etag and not etag.startswith("W/") else None,
        "last_modified": response.headers.get("Last-Modified"),
    }


def _total_from_content_range(header: str | None) -> int | None:
    """The full size in ``Content-Range: bytes 0-99/1234`` (or ``bytes */1234``), if given."""
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def _resume_point(url: str, part: Path, progress: bool) -> tuple[int, dict]:
    """How many bytes of ``part`` to keep, and the record of the answer that started it. Without
    an ETag or Last-Modified recorded for ``url``, nothing shows that those bytes belong to the
    version served now, so ``part`` is deleted and the download starts again from zero."""
    size = part.stat().st_size if part.exists() else 0
    record = read_json(_record_of(part)) if size else {}
    if record.get("url") == url and (record.get("etag") or record.get("last_modified")):
        return size, record
    if size and progress:
        tqdm.write(
            f"Downloading {part.stem} again from the start: no ETag or Last-Modified was "
            f"recorded to check that the {size:,} bytes kept in {part} belong to the same "
            f"version of the file.",
            file=sys.stderr,
        )
    _discard(part)
    return 0, {}


def _fetch_once(
    url: str,
    part: Path,
    *,
    session: requests.Session,
    timeout: tuple[float, float],
    chunk_size: int,
    progress: bool,
    max_bytes: int,
) -> None:
    """One request: resume ``part`` if it is still the same version, stream the body into it
    (never past the announced size or ``max_bytes``), check its size."""
    resume_from, record = _resume_point(url, part, progress)

    def request(resume_from: int) -> requests.Response:
        headers = {"Accept-Encoding": "identity"}  # the raw bytes, so sizes add up
        if resume_from:  # the rest, if it is still the same version
            headers["Range"] = f"bytes={resume_from}-"
            headers["If-Range"] = record.get("etag") or record["last_modified"]
        return session.get(url, headers=headers, stream=True, timeout=timeout)

    try:
        response = request(resume_from)
        if response.status_code == 416:  # "range not satisfiable": nothing after that byte
            full_size = _total_from_content_range(response.headers.get("Content-Range"))
            response.close()
            if full_size == resume_from:
                return  # the .part was already complete
            _discard(part)  # it is bigger than the file, or unknown: restart
            resume_from = 0
            response = request(0)
        with response:
            _check_status(url, response)
            if response.status_code == 206:  # the rest; from the right byte, of the right version?
                content_range = response.headers.get("Content-Range", "")
                now = _validators(response)
                if not content_range.startswith(f"bytes {resume_from}-") or any(
                    now[key] and record.get(key) and now[key] != record[key] for key in now
                ):
                    _discard(part)
                    raise _RetryableError("the server resumed from the wrong byte or version")
                total = _total_from_content_range(content_range)
            else:  # 200: the server sent the whole file from byte 0
                resume_from = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if total is not None and total > max_bytes:
                _discard(part)
                raise DownloadError(
                    f"The file at {url} is {total:,} bytes, more than {max_bytes:,} bytes, the "
                    f"most expected for it; it was not downloaded. Check the address.",
                    reason=f"it is {total:,} bytes, more than the {max_bytes:,} expected",
                )
            if resume_from == 0:
                write_json_atomically({"url": url, **_validators(response)}, _record_of(part))
            size = _write_body(response, part, resume_from, total, max_bytes, chunk_size=chunk_size, progress=progress)
    except requests.Timeout as error:
        raise _RetryableError("the server did not answer in time", connection=True) from error
    except requests.exceptions.ChunkedEncodingError as error:
        raise _RetryableError("the connection dropped during the transfer", connection=True) from error
    except requests.ConnectionError as error:
        raise _RetryableError(f"the connection failed ({_short_reason(error)})", connection=True) from error
    except requests.RequestException as error:
        raise DownloadError(f"Could not download {url}: {error}. Check the address.", reason=str(error)) from error

    if size is None:  # it went on past the limit: nothing more was written
        _discard(part)
        stopped = f"the download was stopped and the partial file {part} deleted."
        if total is None:
            raise DownloadError(
                f"The file at {url} is larger than {max_bytes:,} bytes, the most expected for "
                f"it; {stopped} Check the address.",
                reason=f"larger than {max_bytes:,} bytes",
            )
        raise DownloadError(
            f"The server at {url} sent more than the {total:,} bytes it announced; {stopped} "
            f"Try again later or use another address.",
            reason=f"it sent more than the {total:,} bytes it announced",
        )
    if total is not None and size < total:
        raise _RetryableError(f"the connection closed after {size} of {total} bytes", connection=True)


def _write_body(
    response: requests.Response,
    part: Path,
    start: int,
    total: int | None,
    max_bytes: int,
    *,
    chunk_size: int,
    progress: bool,
) -> int | None:
    """Write the body to ``part`` (appended after ``start`` bytes); its size then, or None as
    soon as the body goes past ``total`` (or ``max_bytes`` when no size was announced)."""
    limit, size = (max_bytes if total is None else total), start
    with (
        open(part, "ab" if start else "wb") as file,
        tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.stem,
            disable=not progress,
        ) as bar,
    ):  # the name without .part
        for chunk in response.iter_content(chunk_size=chunk_size):
            if size + len(chunk) > limit:
                return None
            file.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return size


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
            reason=f"the server answered {answer}",
        )


def download_first(urls: Sequence[str], dest: str | Path, **kwargs) -> tuple[Path, str]:
    """Try each address in turn with :func:`download_file` (which gets ``kwargs``), each into its
    own ``path_for(url, dest)``, and return ``(path, url that worked)``.

    A file already fetched from one of the addresses (and matching ``sha256`` when given) is
    returned without asking anyone. When every address fails, a single address's own error is
    raised; for several, one :class:`DownloadError` lists each address with its reason.
    """
    if not urls:
        raise ValueError("download_first needs at least one address")
    for url in urls:
        if _is_complete(path_for(url, dest), kwargs.get("sha256")):
            return path_for(url, dest), url
    failures: list[tuple[str, DownloadError]] = []
    for url in urls:
        try:
            return download_file(url, path_for(url, dest), **kwargs), url
        except DownloadError as error:
            failures.append((url, error))
    if len(failures) == 1:
        raise failures[0][1]
    unreachable = all(error.unreachable for _, error in failures)
    advice = (
        "could be reached; check your internet connection," if unreachable else "gave the file; check the addresses,"
    )
    raise DownloadError(
        f"None of the {len(urls)} addresses {advice} or download the file by hand and pass its "
        f"path:" + "".join(f"\n  - {url}: {error.reason}" for url, error in failures),
        reason="no address worked",
        unreachable=unreachable,
    )
