"""Unpack a zip archive safely: every member checked first, nothing half-written, bounded in size.

* **No member escapes.** Every member name is checked before anything is written: an absolute
  path, a ``..`` or a symbolic link could write to ``../../.bashrc``.
* **Bounded sizes.** An archive whose members add up to more than ``max_bytes`` (a "zip bomb")
  is refused before writing anything, and a member that holds more bytes than its header
  declares is stopped while it is written.
* **Extract beside the target, then move into place.** Members are unpacked into a temporary
  sibling folder, which replaces the target only once every member was read correctly; a
  folder left by an interrupted run is removed on the next one.
* **One extraction per folder at a time.** The destination's lock
  (:func:`helpers.plumbing.files.exclusive_lock`) is held throughout, so a second process is told
  that another one is running instead of removing its temporary folder.
* **The archive brings data, not records.** Members named in ``ignore`` (the workbook's own
  records, such as ``.verified.json``) are never written, at any depth.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from collections.abc import Collection, Sequence
from pathlib import Path

from helpers.plumbing.files import exclusive_lock
from helpers.plumbing.progress import tqdm

DEFAULT_MAX_BYTES = 2 * 1024**3  # the images archive is ~250 MB, and unpacks to about as much


class ArchiveError(RuntimeError):
    """A zip archive could not be read: it is corrupt or incomplete."""


class UnsafeArchiveError(ArchiveError):
    """A zip member would be written outside the destination folder."""


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


def extract_zip(
    zip_path: str | Path,
    dest_dir: str | Path,
    *,
    progress: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    folders: Sequence[str] | None = None,
    ignore: Collection[str] = (),
) -> Path:
    """Unpack ``zip_path`` into ``dest_dir`` (created if needed) and return ``dest_dir``.

    ``folders``: the top-level folders to take from the archive (at its top, or all inside one
    wrapping folder, which is removed); they replace ``dest_dir``'s folders of those names, and
    the rest of the archive is left out. An archive without them raises ArchiveError.
    ``ignore``: file names never written, at any depth (records the archive must not bring).
    Raises :class:`ArchiveError` for a corrupt archive or one that would unpack to more than
    ``max_bytes``, :class:`UnsafeArchiveError` for a member that would land outside
    ``dest_dir``, and :class:`~helpers.plumbing.files.BusyError` while another process extracts
    into ``dest_dir``; in every case nothing is left half-written.
    """
    zip_path, dest_dir = Path(zip_path).absolute(), Path(dest_dir)
    not_valid = f"{zip_path} is not a valid zip archive (corrupt or incomplete download): delete it and download again."
    if not zip_path.is_file():
        raise ArchiveError(f"{zip_path} does not exist: download it first.")
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as error:
        raise ArchiveError(not_valid) from error

    with archive:
        members = [
            m
            for m in archive.infolist()
            if not m.filename.startswith("__MACOSX/") and m.filename.rstrip("/").rsplit("/", 1)[-1] not in ignore
        ]
        for member in members:  # check everything before writing anything
            reason = _unsafe_reason(member)
            if reason:
                raise UnsafeArchiveError(
                    f"Refusing to extract {zip_path.name}: member '{member.filename}' would "
                    f"be written outside {dest_dir} because {reason}; use an archive from a "
                    f"trusted source."
                )
        files = [m for m in members if not m.is_dir()]
        declared = sum(m.file_size for m in files)
        if declared > max_bytes:
            raise ArchiveError(
                f"Refusing to extract {zip_path}: its {len(files)} files would take "
                f"{declared:,} bytes, more than {max_bytes:,} bytes, the most expected; it is "
                f"not the expected data set."
            )

        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(dest_dir):  # no other process extracts here: what is left is stale
            for stale in dest_dir.parent.glob(f".{glob.escape(dest_dir.name)}.extracting-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run
            temp_dir = dest_dir.parent / f".{dest_dir.name}.extracting-{uuid.uuid4().hex[:8]}"
            temp_dir.mkdir()
            try:
                for member in tqdm(members, desc=f"Extracting {zip_path.name}", unit="file", disable=not progress):
                    _extract_member(archive, member, temp_dir, zip_path)
                if folders is not None:
                    _keep_only(temp_dir, folders, zip_path)
                _move_into_place(temp_dir, dest_dir)
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                shutil.rmtree(temp_dir, ignore_errors=True)
                raise ArchiveError(not_valid) from error
            except BaseException:  # also Ctrl+C: leave nothing half-written
                shutil.rmtree(temp_dir, ignore_errors=True)
                raise
    return dest_dir


def _keep_only(root: Path, folders: Sequence[str], zip_path: Path) -> None:
    """Leave in ``root`` only ``folders``, moved up first when the archive wrapped them in one folder."""
    if not all((root / name).is_dir() for name in folders):
        wrappers = [
            entry for entry in root.iterdir() if entry.is_dir() and all((entry / name).is_dir() for name in folders)
        ]
        if len(wrappers) != 1:
            raise ArchiveError(
                f"{zip_path} holds no {'/, '.join(folders)}/ folders (at its top or in one folder): "
                "it is not the expected data set, so check the address."
            )
        wrapper = root / f".wrapper-{uuid.uuid4().hex[:8]}"  # renamed first: it may be called like one of them
        os.replace(wrappers[0], wrapper)
        for name in folders:
            if (root / name).exists():
                _remove(root / name)
            os.replace(wrapper / name, root / name)
    for entry in list(root.iterdir()):
        if entry.name not in folders:
            _remove(entry)


def _remove(path: Path) -> None:
    """Delete a file, a link or a whole folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path, zip_path: Path) -> None:
    """Write one (already checked) member under ``root``, stopping if it holds more bytes than
    its header declares (zipfile cuts such a member short itself, then fails its CRC)."""
    target = root.joinpath(*[part for part in member.filename.split("/") if part not in ("", ".")])
    if member.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(member) as source, open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > member.file_size:
                raise ArchiveError(
                    f"Refusing to extract {zip_path}: its member '{member.filename}' holds more "
                    f"than the {member.file_size:,} bytes its header declares; it is corrupt or "
                    f"malicious, so delete it and download again."
                )
            out.write(chunk)


def _move_into_place(temp_dir: Path, dest_dir: Path) -> None:
    """Rename ``temp_dir`` to ``dest_dir``, or move its top-level entries into an existing one."""
    if not dest_dir.exists():
        os.replace(temp_dir, dest_dir)
        return
    for entry in temp_dir.iterdir():
        target = dest_dir / entry.name
        if target.exists() or target.is_symlink():
            _remove(target)
        os.replace(entry, target)
    temp_dir.rmdir()
