"""helpers.plumbing: a download never leaves a partial file under its name, a zip never escapes its folder.

Downloads go to a real HTTP server on 127.0.0.1 (tests/http_server.py), never to the internet.
"""

from __future__ import annotations

import errno
import os
import re
import zipfile
from pathlib import Path

import pytest
from http_server import FileServer

from helpers.plumbing import DownloadError, download, extract_folders

PAYLOAD = os.urandom(300_000)
FOLDERS = ("Negative", "Positive")
DATASET = {"Positive/00001.jpg": b"crack one", "Positive/00002.jpg": b"crack two", "Negative/00001.jpg": b"no crack"}


@pytest.fixture
def server():
    with FileServer({"/data.bin": PAYLOAD}) as running:
        yield running


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_download_arrives_whole_and_is_not_fetched_again_while_the_servers_file_is_the_same(server, tmp_path):
    dest = tmp_path / "data.bin"
    assert download(server.url("/data.bin"), dest, progress=False).read_bytes() == PAYLOAD
    first = dest.stat()
    download(server.url("/data.bin"), dest, progress=False)
    assert dest.stat().st_ino == first.st_ino and leftovers(tmp_path) == ["data.bin"]  # not written again


def test_a_changed_file_at_the_same_address_is_fetched_again(server, tmp_path):
    """Issue 29, item 6: the size and Last-Modified tell a new version, without a record of our own."""
    dest = download(server.url("/data.bin"), tmp_path / "data.bin", progress=False)
    server.add_file("/data.bin", PAYLOAD[::-1])  # a new version, with a new Last-Modified
    assert download(server.url("/data.bin"), dest, progress=False).read_bytes() == PAYLOAD[::-1]


@pytest.mark.parametrize("behaviour", ["drop_half", "drop_half+no_validators"])
def test_a_dropped_connection_leaves_nothing_under_the_name(server, tmp_path, behaviour):
    server.script("/data.bin", behaviour)
    with pytest.raises(DownloadError, match=r"^The connection to .* broke during the download: run this again\.$"):
        download(server.url("/data.bin"), tmp_path / "data.bin", progress=False)
    assert leftovers(tmp_path) == []


def test_ctrl_c_during_a_download_leaves_nothing(server, tmp_path, monkeypatch):
    def interrupted(self, chunk_size):
        yield PAYLOAD[:1000]
        raise KeyboardInterrupt

    monkeypatch.setattr("requests.Response.iter_content", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download(server.url("/data.bin"), tmp_path / "data.bin", progress=False)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("path, words", [("/missing.zip", "answered 404 Not Found: check the address")])
def test_an_error_status_is_one_sentence(server, tmp_path, path, words):
    with pytest.raises(DownloadError) as caught:
        download(server.url(path), tmp_path / "x.zip", progress=False)
    assert str(caught.value) == f"{server.url(path)} {words}, or download the file by hand and pass its path."
    assert leftovers(tmp_path) == []


def test_an_address_that_cannot_be_reached_says_check_your_connection(tmp_path):
    with pytest.raises(
        DownloadError, match=r"^Could not reach http://127.0.0.1:9/x.zip \(ConnectionError\): check your"
    ):
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", progress=False)  # the discard port: refused


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_names_the_folder_and_the_room_needed_and_leaves_nothing(server, tmp_path):
    (tmp_path / "data.bin.part").symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(OSError) as caught:
        download(server.url("/data.bin"), tmp_path / "data.bin", progress=False)
    message = str(caught.value)
    assert message.startswith(f"The disk holding {tmp_path} is full: this needs about 300.0 kB for data.bin and ")
    assert message.endswith("free some space, or choose a folder on a larger disk.") and message.count(". ") == 0
    assert caught.value.errno == errno.ENOSPC and leftovers(tmp_path) == []


# --- extract_folders ---------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("prefix", ["", "concrete_crack_images/"])
def test_the_class_folders_are_unpacked_from_the_top_or_from_one_wrapping_folder(tmp_path, prefix):
    members = {prefix + name: data for name, data in DATASET.items()}
    archive = make_zip(
        tmp_path / "data.zip", {**members, "__MACOSX/Positive/._00001.jpg": b"", prefix + "notes.txt": b""}
    )
    (tmp_path / "out").mkdir()
    extract_folders(archive, tmp_path / "out", FOLDERS)
    assert files_under(tmp_path / "out") == DATASET


@pytest.mark.parametrize("bad_name", ["../evil.txt", "Positive/../../evil.txt", "/tmp/evil.txt"])
def test_a_member_that_would_land_outside_is_refused_before_anything_is_written(tmp_path, bad_name):
    archive = make_zip(tmp_path / "data.zip", {**DATASET, bad_name: b"evil"})
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError) as caught:
        extract_folders(archive, tmp_path / "out", FOLDERS)
    assert str(caught.value).startswith(f"Refusing {archive}: {bad_name!r} would land outside {tmp_path / 'out'}; ")
    assert leftovers(tmp_path / "out") == [] and not (tmp_path / "evil.txt").exists()


def test_a_zip_bomb_is_refused_by_the_ratio_of_unpacked_to_packed_bytes(tmp_path):
    """Issue 29, item 8: a small zip that unpacks to far more than photos would is refused, nothing written."""
    archive = make_zip(
        tmp_path / "bomb.zip", {**DATASET, "Positive/00003.jpg": bytes(20 * 2**20)}, zipfile.ZIP_DEFLATED
    )
    assert archive.stat().st_size < 2**20
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match=r"would unpack to 20,971,5\d\d bytes, not photos; use an archive"):
        extract_folders(archive, tmp_path / "out", FOLDERS)
    assert leftovers(tmp_path / "out") == []


def test_a_member_whose_header_understates_its_size_is_not_unpacked_past_it(tmp_path):
    name = b"Positive/00003.jpg"
    archive = make_zip(tmp_path / "liar.zip", {**DATASET, name.decode(): bytes(5 * 2**20)}, zipfile.ZIP_DEFLATED)
    data = bytearray(archive.read_bytes())
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):  # both headers
        start = data.index(signature)
        while data[start + name_at : start + name_at + len(name)] != name:
            start = data.index(signature, start + 4)
        data[start + size_at : start + size_at + 4] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match="is not a valid zip archive"):
        extract_folders(archive, tmp_path / "out", FOLDERS)
    assert sum(len(data) for data in files_under(tmp_path / "out").values()) < 2**20


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_a_corrupt_zip_is_one_sentence(tmp_path, kind):
    whole = make_zip(tmp_path / "whole.zip", DATASET).read_bytes()
    archive = tmp_path / "data.zip"
    archive.write_bytes({"random": os.urandom(5000), "truncated": whole[:-40], "empty": b""}[kind])
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError) as caught:
        extract_folders(archive, tmp_path / "out", FOLDERS)
    assert str(caught.value) == f"{archive} is not a valid zip archive (corrupt or incomplete): get it again."


def test_an_archive_without_both_class_folders_is_not_the_data_set(tmp_path):
    for members in ({"cats/1.jpg": b"x"}, {"Positive/1.jpg": b"x"}, {"a/Positive/1.jpg": b"", "b/Negative/1.jpg": b""}):
        archive = make_zip(tmp_path / "other.zip", members)
        with pytest.raises(DownloadError, match="holds no Negative/ and Positive/ folders .* it is not the data set"):
            extract_folders(archive, tmp_path, FOLDERS)


def test_a_full_disk_while_unpacking_names_the_folder_and_the_room_needed(tmp_path, monkeypatch):
    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("shutil.copyfileobj", full)
    archive = make_zip(tmp_path / "data.zip", DATASET)
    (tmp_path / "out").mkdir()
    with pytest.raises(
        OSError,
        match=rf"^The disk holding {re.escape(str(tmp_path))} is full: this needs about \d+\.0 bytes for the images",
    ):
        extract_folders(archive, tmp_path / "out", FOLDERS)
