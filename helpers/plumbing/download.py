"""Download a file (requests' streaming loop, as in rasbt's LLMs-from-scratch) and unpack a zip, safely."""

from __future__ import annotations

import os
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
from tqdm.auto import tqdm

from helpers.plumbing.files import disk_full, size_text

MAX_BYTES = 2 * 1024**3  # the images zip is about 250 MB and unpacks to about as much
MAX_RATIO = 10  # JPEGs barely compress: a zip that unpacks to 10 times its size holds no photos


class DownloadError(RuntimeError):
    """A file could not be fetched, or a zip is corrupt, unsafe, huge or not the data set: the message says what to do."""


def download(url: str, path: Path, progress: bool = True) -> Path:
    """Stream `url` into `path` through `<path>.part`, unless `path` already holds the file served there now
    (judged as ``wget -N`` does: the server's Content-Length and Last-Modified are the file's size and mtime)."""
    by_hand = "or download the file by hand and pass its path."
    try:
        response = requests.get(url, stream=True, timeout=(10, 60), headers={"Accept-Encoding": "identity"})
        response.raise_for_status()
    except requests.HTTPError as error:
        answer = f"{error.response.status_code} {error.response.reason}"
        raise DownloadError(f"{url} answered {answer}: check the address, {by_hand}") from None
    except requests.RequestException as error:
        why = type(error).__name__
        raise DownloadError(f"Could not reach {url} ({why}): check your internet connection, {by_hand}") from None
    with response:
        size = int(response.headers.get("Content-Length") or 0) or None
        modified = response.headers.get("Last-Modified")
        stamp = parsedate_to_datetime(modified).timestamp() if modified else None
        if path.is_file() and stamp is not None and (path.stat().st_size, path.stat().st_mtime) == (size, stamp):
            return path
        part = path.with_name(path.name + ".part")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with (
                open(part, "wb") as file,
                tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress) as bar,
            ):
                for chunk in response.iter_content(1 << 20):
                    bar.update(file.write(chunk))
            if size is not None and part.stat().st_size != size:
                raise requests.ConnectionError()
        except BaseException as error:  # Ctrl+C too: a partial file is never used
            part.unlink(missing_ok=True)
            if isinstance(error, requests.RequestException):
                raise DownloadError(f"The connection to {url} broke during the download: run this again.") from None
            if full := disk_full(error, path.parent, f"about {size_text(size or 0)} for {path.name}"):
                raise full from error
            raise
    if stamp is not None:
        os.utime(part, (stamp, stamp))
    os.replace(part, path)
    return path


def extract_folders(archive: Path, root: Path, folders: Sequence[str]) -> None:
    """Unpack the files of `folders` (at the zip's top, or all inside one folder) into the empty folder `root`.

    Refused before anything is written: a member that would land outside `root`, and members adding
    up to more than MAX_BYTES or MAX_RATIO times the archive's size."""
    total, trusted = 0, "use an archive from a trusted source, or check the address."
    try:
        with zipfile.ZipFile(archive) as zip_file:
            members = [m for m in zip_file.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
            for member in members:
                if not (root / member.filename).resolve().is_relative_to(root.resolve()):
                    raise DownloadError(f"Refusing {archive}: {member.filename!r} would land outside {root}; {trusted}")
            total = sum(m.file_size for m in members)
            if total > min(MAX_BYTES, MAX_RATIO * archive.stat().st_size):
                raise DownloadError(f"Refusing {archive}: it would unpack to {total:,} bytes, not photos; {trusted}")
            wanted = [(m, m.filename.split("/")) for m in members]
            wanted = [
                (m, p) for m, p in wanted if len(p) in (2, 3) and p[-2] in folders and Path(p[-1]).name == p[-1] != ".."
            ]
            if len({tuple(p[:-2]) for _, p in wanted}) != 1 or {p[-2] for _, p in wanted} != set(folders):
                where = f"no {'/ and '.join(folders)}/ folders (at its top or inside one folder)"
                raise DownloadError(f"{archive} holds {where}: it is not the data set; check the address.")
            for member, parts in wanted:
                (root / parts[-2]).mkdir(exist_ok=True)
                with zip_file.open(member) as source, open(root / parts[-2] / parts[-1], "wb") as target:
                    shutil.copyfileobj(source, target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DownloadError(f"{archive} is not a valid zip archive (corrupt or incomplete): get it again.") from error
    except OSError as error:
        if full := disk_full(error, root.parent, f"about {size_text(total)} for the images"):
            raise full from error
        raise
