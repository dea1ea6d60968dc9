"""Plumbing that no lesson teaches: names printed safely, files written so that nothing is ever half-written (under a
lock, with one sentence when the disk is full), one image file read with the data set's rules, a download never used
half-done (requests' streaming loop, as in rasbt's LLMs-from-scratch) and a zip unpacked without escaping its folder."""

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path

import requests
from filelock import FileLock
from PIL import Image
from tqdm.auto import tqdm

from helpers.settings import SOURCE_FILE

ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(\x07|\x1b\\)?|.?)", re.DOTALL)
TILE_SIZE = 227  # the images' width and height, and so the input size the model learns from
MAX_IMAGE_PIXELS = 40_000_000  # refused from the header: 120 MB to decode, for one tile
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
MAX_BYTES = 2 * 1024**3  # the images zip is about 250 MB and unpacks to about as much
MAX_RATIO = 10  # JPEGs barely compress: a zip that unpacks to 10 times its size holds no photos


def printable(text: object) -> str:
    """`text` (a file name) safe to print: escape sequences and control characters out, line breaks as spaces."""

    def shown(char: str) -> str:
        category = unicodedata.category(char)
        if char in "\t\n\r\v\f" or category in ("Zl", "Zp"):
            return " "
        if category == "Cs":  # a byte that is not UTF-8, kept by os.fsdecode as U+DC80..U+DCFF
            return f"\\x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else "?"
        return "" if category.startswith("C") else char

    return "".join(map(shown, ESCAPE_SEQUENCE.sub("", str(text))))


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
    """The re-entrant lock on `path`, freed even if its holder is killed; its file is in the temp folder, not beside."""
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
    """A new folder to fill, swapped in for `dest` (only one made from `source`) when the block succeeds; locked."""
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


class BadImageError(RuntimeError):
    """A file cannot be read as an image."""


def open_photo(path: str | Path) -> Image.Image:
    """The image at `path`, fully decoded, as RGB; FileNotFoundError or BadImageError start with the file's name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    try:
        with warnings.catch_warnings():  # PIL's warning about large images: refused below, in plainer words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
                if width * height <= MAX_IMAGE_PIXELS:
                    return image.convert("RGB")  # decodes the whole file, so damage shows here
        size = f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels)"
    except Image.DecompressionBombError:  # PIL's own refusal at open, of more than twice its MAX_IMAGE_PIXELS
        size = f"over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"
    except Exception as error:  # PIL raises several kinds of error for broken files
        reason = (str(error).splitlines() or [""])[0].replace(repr(str(path)), "").strip(" :")
        raise BadImageError(
            f"{path}: not readable as an image ({reason or type(error).__name__}); delete or replace the file."
        ) from error
    raise BadImageError(
        f"{path} is {size}, more than the {MAX_IMAGE_PIXELS // 1_000_000} megapixels an image may have here: "
        f"shrink it, or cut it into {TILE_SIZE}x{TILE_SIZE} tiles."
    )


def to_size(image: Image.Image, size: int = TILE_SIZE) -> Image.Image:
    """`image` as size x size (bilinear), or itself when it has that size already (no resize call)."""
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)


class DownloadError(RuntimeError):
    """A file could not be fetched, or a zip is corrupt, unsafe, huge or not the data set: the message says what to do."""


def download(url: str, path: Path, progress: bool = True) -> Path:
    """Stream `url` into `path` via `<path>.part`, unless `path` has the served file's size and mtime (``wget -N``)."""
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
    """Unpack the files of `folders` (at the zip's top, or all inside one folder) into the empty folder `root`; refused
    before anything is written: a member landing outside `root`, or in all over MAX_BYTES or MAX_RATIO x the zip."""
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
