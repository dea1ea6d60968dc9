"""Tests for helpers.download against a local HTTP server (127.0.0.1 only, no internet)."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import zipfile

import pytest

from helpers.download import (ArchiveError, ChecksumError, DownloadError, UnsafeArchiveError,
                              download_file, download_first, extract_zip)
from helpers.files import file_digest
from http_server import FileServer

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
# Small chunks: when a connection drops, requests loses the chunk it was filling, so with the
# default 1 MiB chunks a 300 kB test file would leave nothing to resume.
FAST = {"backoff": 0.01, "progress": False, "timeout": (5.0, 5.0), "chunk_size": 16_384}
HALF = len(PAYLOAD) // 2


@pytest.fixture
def server():
    with FileServer({"/data.bin": PAYLOAD}) as running:
        yield running


def part_of(dest):
    return dest.with_name(dest.name + ".part")


# --- file_digest -------------------------------------------------------------------------

def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert file_digest(path, chunk_size=4096) == PAYLOAD_SHA


# --- download_file over HTTP -------------------------------------------------------------

def test_full_download_with_checksum(server, tmp_path):
    dest = tmp_path / "sub" / "dir" / "data.bin"      # parent folders are created
    result = download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA.upper(), **FAST)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert len(server.requests) == 1
    assert server.requests[0].headers.get("Range") is None


def test_full_download_with_progress_bar(server, tmp_path, capsys):
    dest = tmp_path / "data.bin"
    download_file(server.url("/data.bin"), dest, backoff=0.01, progress=True)
    assert dest.read_bytes() == PAYLOAD
    assert "data.bin" in capsys.readouterr().err


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.script("/data.bin", "drop_half")
    dest = tmp_path / "data.bin"
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    first, second = server.requests
    assert first.behaviour == "drop_half"
    assert first.headers.get("Range") is None
    # The resume starts where the kept bytes end: at most half (requests drops the chunk it
    # was filling when the connection broke), and more than nothing.
    range_header = second.headers.get("Range")
    assert range_header is not None and range_header.startswith("bytes=")
    resumed_from = int(range_header.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= HALF
    assert second.behaviour == "ok"
    assert not part_of(dest).exists()


def test_dropped_connection_with_no_retries_keeps_part_for_next_call(server, tmp_path):
    server.script("/data.bin", "drop_half")
    dest = tmp_path / "data.bin"
    url = server.url("/data.bin")
    with pytest.raises(DownloadError, match="after 1 attempt;"):
        download_file(url, dest, retries=0, **FAST)
    kept = part_of(dest).read_bytes()
    assert 0 < len(kept) <= HALF and kept == PAYLOAD[: len(kept)]
    download_file(url, dest, sha256=PAYLOAD_SHA, retries=0, **FAST)
    assert server.requests[-1].headers.get("Range") == f"bytes={len(kept)}-"
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(b"garbage that must not stay at the front")
    server.script("/data.bin", "ignore_range")
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1                      # restarted within the same answer
    assert server.requests[0].headers.get("Range") == "bytes=39-"


def test_part_already_complete_is_accepted_after_416(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(PAYLOAD)
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    assert server.requests[0].headers.get("Range") == f"bytes={len(PAYLOAD)}-"


def test_part_too_large_restarts_after_416(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(b"x" * (len(PAYLOAD) + 10))
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.headers.get("Range") for r in server.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]


@pytest.mark.parametrize("failure", ["status:503", "status:429", "status:500"])
def test_retryable_status_then_success(server, tmp_path, failure):
    server.script("/data.bin", failure)
    dest = tmp_path / "data.bin"
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_read_timeout_is_retried(server, tmp_path):
    server.script("/data.bin", "delay:0.6")
    dest = tmp_path / "data.bin"
    download_file(server.url("/data.bin"), dest, timeout=(2.0, 0.2), backoff=0.01, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_download_without_content_length(server, tmp_path):
    server.script("/data.bin", "no_length")
    dest = tmp_path / "data.bin"
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("code, words", [(404, "404 Not Found"), (403, "403 Forbidden")])
def test_client_error_fails_at_once_and_leaves_nothing(server, tmp_path, code, words):
    server.script("/data.bin", f"status:{code}")
    dest = tmp_path / "data.bin"
    url = server.url("/data.bin")
    with pytest.raises(DownloadError) as caught:
        download_file(url, dest, retries=4, **FAST)
    message = str(caught.value)
    assert message.startswith(f"Could not download {url}: the server answered {words}.")
    assert "download the file by hand" in message
    assert len(server.requests) == 1                      # no retries
    assert not dest.exists() and not part_of(dest).exists()
    assert list(tmp_path.iterdir()) == []


def test_retries_exhausted_keeps_part_and_next_call_resumes(server, tmp_path):
    server.script("/data.bin", "drop_half", "status:503", "status:503")
    dest = tmp_path / "data.bin"
    url = server.url("/data.bin")
    with pytest.raises(DownloadError) as caught:
        download_file(url, dest, retries=2, **FAST)
    assert not isinstance(caught.value, ChecksumError)
    assert "after 3 attempts" in str(caught.value)
    assert "503" in str(caught.value)
    assert len(server.requests) == 3
    assert not dest.exists()
    kept = part_of(dest).read_bytes()
    assert 0 < len(kept) <= HALF and kept == PAYLOAD[: len(kept)]
    assert "is kept" in str(caught.value)

    download_file(url, dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1].headers.get("Range") == f"bytes={len(kept)}-"
    assert server.requests[-1].behaviour == "ok"
    assert not part_of(dest).exists()


def test_failed_transfer_with_no_bytes_received_leaves_no_part(server, tmp_path):
    server.add_file("/small.bin", b"s" * 1000, "drop_half", "drop_half")
    dest = tmp_path / "small.bin"
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download_file(server.url("/small.bin"), dest, retries=1, **FAST)   # 16 kB chunks
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as caught:
        download_file(server.url("/data.bin"), dest, sha256=wrong, **FAST)
    message = str(caught.value)
    assert wrong in message and PAYLOAD_SHA in message
    assert "mirror serves another version" in message
    assert not dest.exists() and not part_of(dest).exists()


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    assert download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST) == dest
    assert download_file(server.url("/data.bin"), dest, **FAST) == dest   # no checksum given
    assert server.requests == []


def test_existing_file_with_wrong_checksum_is_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"an old, different version")
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


# --- download_first ----------------------------------------------------------------------

def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.bin"


def test_download_first_falls_back_to_the_next_address(server, tmp_path):
    urls = [server.url("/missing.bin"), server.url("/data.bin")]
    path, used = download_first(urls, tmp_path / "data.bin", sha256=PAYLOAD_SHA, **FAST)
    assert used == urls[1]
    assert path.read_bytes() == PAYLOAD
    assert [r.path for r in server.requests] == ["/missing.bin", "/data.bin"]


def test_download_first_reports_every_address_when_all_fail(server, tmp_path):
    urls = [server.url("/missing.bin"), closed_port_url()]
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as caught:
        download_first(urls, dest, retries=1, **FAST)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("None of the 2 addresses could be reached")
    assert urls[0] in lines[1] and "404" in lines[1]
    assert urls[1] in lines[2] and "2 attempts" in lines[2]
    assert not dest.exists()


# --- local sources -----------------------------------------------------------------------

@pytest.mark.parametrize("as_uri", [False, True], ids=["plain-path", "file-url"])
def test_local_source_is_copied_and_verified(tmp_path, as_uri):
    source = tmp_path / "mirror" / "my data.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "data.bin"
    url = source.as_uri() if as_uri else str(source)
    assert download_file(url, dest, sha256=PAYLOAD_SHA, **FAST) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()


def test_local_source_with_wrong_checksum_leaves_nothing(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "data.bin"
    with pytest.raises(ChecksumError):
        download_file(str(source), dest, sha256="f" * 64, **FAST)
    assert list(dest.parent.iterdir()) == []


def test_missing_local_source_names_the_file(tmp_path):
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(DownloadError, match="nowhere.zip"):
        download_file(str(missing), tmp_path / "out.zip", **FAST)
    with pytest.raises(DownloadError, match="nowhere.zip"):
        download_file(missing.as_uri(), tmp_path / "out.zip", **FAST)
    assert not (tmp_path / "out.zip").exists()


# --- extract_zip -------------------------------------------------------------------------

DATASET = {"Positive/00001.jpg": b"crack one", "Positive/00002.jpg": b"crack two",
           "Negative/00001.jpg": b"no crack"}


def make_zip(path, members, *, compression=zipfile.ZIP_DEFLATED):
    """Write a zip; ``members`` maps names (or ZipInfo objects) to contents."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def files_under(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def no_temp_folders(parent):
    return [p.name for p in parent.iterdir() if ".extracting-" in p.name] == []


def test_extract_zip_layout_and_contents(tmp_path):
    archive = make_zip(tmp_path / "data.zip",
                       {"Positive/": b"", **DATASET, "__MACOSX/Positive/._00001.jpg": b"junk"})
    dest = tmp_path / "real"
    assert extract_zip(archive, dest, progress=False) == dest
    assert files_under(dest) == DATASET
    assert sorted(p.name for p in dest.iterdir()) == ["Negative", "Positive"]
    assert no_temp_folders(tmp_path)


@pytest.mark.parametrize("bad_name", ["../evil.txt", "Positive/../../evil.txt", "..\\evil.txt"])
def test_member_with_dotdot_is_refused_before_writing(tmp_path, bad_name):
    archive = make_zip(tmp_path / "data.zip", {**DATASET, bad_name: b"evil"})
    dest = tmp_path / "out" / "real"
    with pytest.raises(UnsafeArchiveError) as caught:
        extract_zip(archive, dest, progress=False)
    assert bad_name in str(caught.value)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not (tmp_path / "out").exists() or no_temp_folders(tmp_path / "out")


@pytest.mark.parametrize("bad_name", ["/tmp/evil.txt", "C:\\evil.txt", "C:/evil.txt",
                                      "\\evil.txt"])
def test_absolute_member_is_refused(tmp_path, bad_name):
    archive = make_zip(tmp_path / "data.zip", {**DATASET, bad_name: b"evil"})
    dest = tmp_path / "real"
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        extract_zip(archive, dest, progress=False)
    assert not dest.exists()
    assert no_temp_folders(tmp_path)


def test_symlink_member_is_refused(tmp_path):
    link = zipfile.ZipInfo("Positive/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(tmp_path / "data.zip", {**DATASET, link: b"/etc/passwd"})
    dest = tmp_path / "real"
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_zip(archive, dest, progress=False)
    assert not dest.exists()
    assert no_temp_folders(tmp_path)


def real_zip_bytes() -> bytes:
    buffer = io.BytesIO()
    make_zip(buffer, DATASET)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_zip_gives_archive_error(tmp_path, kind):
    data = {"random": os.urandom(5000), "truncated": real_zip_bytes()[:-40], "empty": b""}[kind]
    archive = tmp_path / "data.zip"
    archive.write_bytes(data)
    dest = tmp_path / "real"
    with pytest.raises(ArchiveError) as caught:
        extract_zip(archive, dest, progress=False)
    assert not isinstance(caught.value, UnsafeArchiveError)
    assert str(caught.value).startswith("data.zip is not a valid zip archive (corrupt or "
                                        "incomplete download): delete it and download again.")
    assert not dest.exists()
    assert no_temp_folders(tmp_path)


def test_crc_error_while_reading_a_member_gives_archive_error(tmp_path):
    archive = make_zip(tmp_path / "data.zip", {"Positive/a.jpg": b"A" * 1000,
                                               "Negative/b.jpg": b"B" * 1000},
                       compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    data[data.index(b"B" * 1000) + 500] ^= 0xFF          # flip one byte inside the second member
    archive.write_bytes(bytes(data))
    dest = tmp_path / "real"
    with pytest.raises(ArchiveError, match="not a valid zip archive"):
        extract_zip(archive, dest, progress=False)
    assert not dest.exists()
    assert no_temp_folders(tmp_path)


def test_missing_zip_gives_archive_error(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        extract_zip(tmp_path / "nothing.zip", tmp_path / "real", progress=False)


def test_extract_into_existing_folder_replaces_entries(tmp_path):
    dest = tmp_path / "real"
    (dest / "Positive").mkdir(parents=True)
    (dest / "Positive" / "half-written.jpg").write_bytes(b"from an interrupted run")
    (dest / "Negative").write_bytes(b"a file where a folder belongs")
    (dest / "README.txt").write_bytes(b"keep me")
    archive = make_zip(tmp_path / "data.zip", DATASET)
    extract_zip(archive, dest, progress=False)
    assert files_under(dest) == {**DATASET, "README.txt": b"keep me"}
    assert no_temp_folders(tmp_path)


def test_stale_temp_folder_is_removed(tmp_path):
    stale = tmp_path / ".real.extracting-deadbeef"
    (stale / "Positive").mkdir(parents=True)
    (stale / "Positive" / "00001.jpg").write_bytes(b"half")
    other = tmp_path / ".other.extracting-cafe"          # belongs to another folder: kept
    other.mkdir()
    archive = make_zip(tmp_path / "data.zip", DATASET)
    extract_zip(archive, tmp_path / "real", progress=False)
    assert not stale.exists()
    assert other.exists()
    assert files_under(tmp_path / "real") == DATASET
