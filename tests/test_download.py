"""Tests for helpers.plumbing.download against a local HTTP server (127.0.0.1 only, no internet)."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import zipfile

import pytest

from helpers.plumbing.archive import ArchiveError, UnsafeArchiveError, extract_zip
from helpers.plumbing.download import ChecksumError, DownloadError, download_file, download_first
from helpers.plumbing.files import file_digest
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


def record_of(dest):
    """Where the validators of the first response are kept, for If-Range on resume."""
    return dest.with_name(dest.name + ".part.json")


def interrupted_download(server, dest, path="/data.bin", behaviour="drop_half"):
    """Start a download that the server cuts half-way; return the bytes kept in the .part."""
    server.script(path, behaviour)
    with pytest.raises(DownloadError):
        download_file(server.url(path), dest, retries=0, **FAST)
    return part_of(dest).read_bytes()


# --- file_digest -------------------------------------------------------------------------


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert file_digest(path, chunk_size=4096) == PAYLOAD_SHA


# --- download_file over HTTP -------------------------------------------------------------


def test_full_download_with_checksum(server, tmp_path):
    dest = tmp_path / "sub" / "dir" / "data.bin"  # parent folders are created
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
    assert record_of(dest).is_file()
    download_file(url, dest, sha256=PAYLOAD_SHA, retries=0, **FAST)
    assert server.requests[-1].headers.get("Range") == f"bytes={len(kept)}-"
    assert server.requests[-1].headers.get("If-Range") == FileServer.etag(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists() and not record_of(dest).exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "data.bin"
    kept = interrupted_download(server, dest)
    part_of(dest).write_bytes(b"x" * len(kept))  # must not stay at the front
    server.script("/data.bin", "ignore_range")
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2  # restarted within the same answer
    assert server.requests[1].headers.get("Range") == f"bytes={len(kept)}-"


def test_part_already_complete_is_accepted_after_416(server, tmp_path):
    dest = tmp_path / "data.bin"
    interrupted_download(server, dest)
    part_of(dest).write_bytes(PAYLOAD)  # e.g. cut just before the rename
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    assert server.requests[1].headers.get("Range") == f"bytes={len(PAYLOAD)}-"


def test_part_too_large_restarts_after_416(server, tmp_path):
    dest = tmp_path / "data.bin"
    interrupted_download(server, dest)
    part_of(dest).write_bytes(b"x" * (len(PAYLOAD) + 10))
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r.headers.get("Range") for r in server.requests[1:]] == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_resume_after_the_file_changed_fetches_the_new_version_whole(server, tmp_path):
    version_b = os.urandom(len(PAYLOAD))  # same size, other bytes, other ETag
    dest = tmp_path / "data.bin"
    kept = interrupted_download(server, dest)  # version A, cut half-way
    server.add_file("/data.bin", version_b)
    download_file(server.url("/data.bin"), dest, sha256=hashlib.sha256(version_b).hexdigest(), **FAST)
    assert dest.read_bytes() == version_b  # not A's head + B's tail
    resume = server.requests[-1]
    assert resume.headers.get("Range") == f"bytes={len(kept)}-"
    assert resume.headers.get("If-Range") == FileServer.etag(PAYLOAD)
    assert not part_of(dest).exists() and not record_of(dest).exists()


def test_resume_with_last_modified_only(server, tmp_path):
    dest = tmp_path / "data.bin"
    kept = interrupted_download(server, dest, behaviour="drop_half+no_etag")
    server.script("/data.bin", "no_etag")
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    resume = server.requests[-1]
    assert resume.headers.get("Range") == f"bytes={len(kept)}-"
    assert resume.headers.get("If-Range", "").endswith(" GMT")  # the Last-Modified date


@pytest.mark.parametrize("validators", ["no_validators", "weak_etag"])
def test_without_a_validator_the_part_is_not_resumed_blindly(server, tmp_path, capsys, validators):
    dest = tmp_path / "data.bin"
    kept = interrupted_download(server, dest, behaviour=f"drop_half+{validators}")
    server.script("/data.bin", validators)
    download_file(server.url("/data.bin"), dest, sha256=PAYLOAD_SHA, backoff=0.01, chunk_size=16_384)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1].headers.get("Range") is None  # restarted from byte 0
    err = capsys.readouterr().err
    assert (
        f"Downloading {dest.name} again from the start: no ETag or Last-Modified was "
        f"recorded to check that the {len(kept):,} bytes kept in {part_of(dest)} belong to "
        f"the same version of the file."
    ) in err


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
    assert len(server.requests) == 1  # no retries
    assert not dest.exists() and not part_of(dest).exists()
    assert list(tmp_path.iterdir()) == []


def test_response_longer_than_announced_is_stopped(server, tmp_path):
    server.script("/data.bin", "overlong")  # Content-Length: half, then all of it
    dest = tmp_path / "data.bin"
    url = server.url("/data.bin")
    with pytest.raises(DownloadError) as caught:
        download_file(url, dest, **FAST)
    assert str(caught.value) == (
        f"The server at {url} sent more than the {HALF:,} bytes it announced; the download was "
        f"stopped and the partial file {part_of(dest)} deleted. Try again later or use another "
        f"address."
    )
    assert len(server.requests) == 1  # not retried
    assert list(tmp_path.iterdir()) == []


def test_endless_response_is_stopped_at_max_bytes(server, tmp_path):
    server.script("/data.bin", "endless")
    dest = tmp_path / "data.bin"
    url = server.url("/data.bin")
    with pytest.raises(DownloadError) as caught:
        download_file(url, dest, max_bytes=1_000_000, **FAST)
    assert str(caught.value) == (
        f"The file at {url} is larger than 1,000,000 bytes, the most expected for it; the "
        f"download was stopped and the partial file {part_of(dest)} deleted. Check the address."
    )
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_announced_size_over_max_bytes_is_refused_before_downloading(server, tmp_path):
    dest = tmp_path / "data.bin"
    url = server.url("/data.bin")
    with pytest.raises(DownloadError) as caught:
        download_file(url, dest, max_bytes=100_000, **FAST)
    assert str(caught.value).startswith(
        f"The file at {url} is {len(PAYLOAD):,} bytes, more than 100,000 bytes, the most expected for it;"
    )
    assert len(server.requests) == 1
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
        download_file(server.url("/small.bin"), dest, retries=1, **FAST)  # 16 kB chunks
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
    assert download_file(server.url("/data.bin"), dest, **FAST) == dest  # no checksum given
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
    # The next call finds the file that came from urls[1], says so, and asks nobody.
    assert download_first(urls, tmp_path / "data.bin", sha256=PAYLOAD_SHA, **FAST) == (path, urls[1])
    assert len(server.requests) == 2


def test_download_first_reports_every_address_with_its_reason(server, tmp_path):
    server.add_file("/other.bin", b"another file")
    urls = [server.url("/missing.bin"), closed_port_url(), server.url("/other.bin")]
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as caught:
        download_first(urls, dest, sha256=PAYLOAD_SHA, retries=1, **FAST)
    lines = str(caught.value).splitlines()
    assert lines[0] == (
        "None of the 3 addresses gave the file; check the addresses, or download the file by hand and pass its path:"
    )
    assert lines[1] == f"  - {urls[0]}: the server answered 404 Not Found"
    assert lines[2].startswith(f"  - {urls[1]}: could not be reached (the connection failed (")
    assert lines[2].endswith("), 2 attempts)")
    other_sha = hashlib.sha256(b"another file").hexdigest()
    assert lines[3] == (
        f"  - {urls[2]}: the file does not have the expected SHA-256 (expected {PAYLOAD_SHA}, got {other_sha})"
    )
    assert "internet" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_download_first_says_check_your_connection_only_when_nothing_answered(tmp_path):
    urls = [closed_port_url(), closed_port_url().replace("/data.bin", "/other.bin")]
    with pytest.raises(DownloadError) as caught:
        download_first(urls, tmp_path / "data.bin", retries=0, **FAST)
    lines = str(caught.value).splitlines()
    assert lines[0] == (
        "None of the 2 addresses could be reached; check your internet connection, "
        "or download the file by hand and pass its path:"
    )
    assert len(lines) == 3 and all("could not be reached" in line for line in lines[1:])


def test_one_address_that_fails_gives_its_own_message(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(DownloadError) as caught:
        download_first([url], tmp_path / "data.bin", **FAST)
    assert str(caught.value) == (
        f"Could not download {url}: the server answered 404 Not Found. "
        f"Check the address, or download the file by hand and pass its path."
    )
    url = server.url("/data.bin")
    with pytest.raises(ChecksumError) as caught:
        download_first([url], tmp_path / "data.bin", sha256="0" * 64, **FAST)
    assert str(caught.value).startswith(f"The file from {url} does not have the expected SHA-256;")
    assert "internet" not in str(caught.value)


def test_server_errors_after_every_retry_do_not_blame_the_connection(server, tmp_path):
    server.script("/data.bin", "status:503", "status:503")
    url = server.url("/data.bin")
    with pytest.raises(DownloadError) as caught:
        download_file(url, tmp_path / "data.bin", retries=1, **FAST)
    assert str(caught.value) == (
        f"Could not download {url} after 2 attempts: the server answered 503 Service Unavailable, "
        f"a problem on the server's side; try again later or use another address."
    )


def test_connection_failures_after_every_retry_say_check_your_connection(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as caught:
        download_file(url, tmp_path / "data.bin", retries=1, **FAST)
    assert str(caught.value).startswith(
        f"Could not reach {url} after 2 attempts; check your internet connection and run this again."
    )


# --- one cached file per address ---------------------------------------------------------


def test_download_first_keeps_one_file_per_address(server, tmp_path):
    other = PAYLOAD[::-1]
    server.add_file("/other.bin", other)
    dest = tmp_path / "data.bin"
    first, _ = download_first([server.url("/data.bin")], dest, **FAST)
    second, used = download_first([server.url("/other.bin")], dest, **FAST)
    assert used == server.url("/other.bin") and second.read_bytes() == other
    assert first != second and first.read_bytes() == PAYLOAD
    assert first.parent == second.parent == tmp_path and first.suffix == second.suffix == ".bin"
    assert [r.path for r in server.requests] == ["/data.bin", "/other.bin"]
    assert download_first([server.url("/other.bin")], dest, **FAST) == (second, used)
    assert len(server.requests) == 2  # the second address's file is reused


def test_part_from_another_address_is_not_resumed(server, tmp_path):
    other = PAYLOAD[::-1]
    server.add_file("/other.bin", other)
    dest = tmp_path / "data.bin"
    server.script("/data.bin", "drop_half")
    with pytest.raises(DownloadError):
        download_first([server.url("/data.bin")], dest, retries=0, **FAST)
    path, _ = download_first([server.url("/other.bin")], dest, **FAST)
    assert path.read_bytes() == other
    assert server.requests[-1].headers.get("Range") is None


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

DATASET = {"Positive/00001.jpg": b"crack one", "Positive/00002.jpg": b"crack two", "Negative/00001.jpg": b"no crack"}


def make_zip(path, members, *, compression=zipfile.ZIP_DEFLATED):
    """Write a zip; ``members`` maps names (or ZipInfo objects) to contents."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def files_under(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def no_temp_folders(parent):
    return [p.name for p in parent.iterdir() if ".extracting-" in p.name] == []


def test_extract_zip_layout_and_contents(tmp_path):
    archive = make_zip(tmp_path / "data.zip", {"Positive/": b"", **DATASET, "__MACOSX/Positive/._00001.jpg": b"junk"})
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


@pytest.mark.parametrize("bad_name", ["/tmp/evil.txt", "C:\\evil.txt", "C:/evil.txt", "\\evil.txt"])
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
    assert str(caught.value) == (
        f"{archive} is not a valid zip archive (corrupt or incomplete download): delete it and download again."
    )
    assert not dest.exists()
    assert no_temp_folders(tmp_path)


def test_crc_error_while_reading_a_member_gives_archive_error(tmp_path):
    archive = make_zip(
        tmp_path / "data.zip",
        {"Positive/a.jpg": b"A" * 1000, "Negative/b.jpg": b"B" * 1000},
        compression=zipfile.ZIP_STORED,
    )
    data = bytearray(archive.read_bytes())
    data[data.index(b"B" * 1000) + 500] ^= 0xFF  # flip one byte inside the second member
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
    other = tmp_path / ".other.extracting-cafe"  # belongs to another folder: kept
    other.mkdir()
    archive = make_zip(tmp_path / "data.zip", DATASET)
    extract_zip(archive, tmp_path / "real", progress=False)
    assert not stale.exists()
    assert other.exists()
    assert files_under(tmp_path / "real") == DATASET


# --- extraction limits -------------------------------------------------------------------

BOMB = 50 * 2**20  # 50 MiB of zeros: about 50 kB zipped


def test_zip_bomb_is_refused_before_writing(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {**DATASET, "Positive/00003.jpg": bytes(BOMB)})
    assert archive.stat().st_size < 2**20
    dest = tmp_path / "real"
    with pytest.raises(ArchiveError) as caught:
        extract_zip(archive, dest, progress=False, max_bytes=10 * 2**20)
    total = BOMB + sum(len(content) for content in DATASET.values())
    assert str(caught.value) == (
        f"Refusing to extract {archive}: its 4 files would take {total:,} bytes, more than "
        f"{10 * 2**20:,} bytes, the most expected; it is not the expected data set."
    )
    assert not dest.exists() and no_temp_folders(tmp_path)


def test_member_whose_header_understates_its_size_is_not_extracted(tmp_path):
    archive = make_zip(tmp_path / "liar.zip", {**DATASET, "Positive/00003.jpg": bytes(BOMB)})
    data, name = bytearray(archive.read_bytes()), b"Positive/00003.jpg"
    # Its uncompressed size, in the local header (at byte 22) and the central directory (24).
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = data.index(signature)
        while data[start + name_at : start + name_at + len(name)] != name:
            start = data.index(signature, start + 4)
        data[start + size_at : start + size_at + 4] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    assert zipfile.ZipFile(archive).getinfo(name.decode()).file_size == 1000
    dest = tmp_path / "real"
    with pytest.raises(ArchiveError, match="not a valid zip archive"):
        extract_zip(archive, dest, progress=False, max_bytes=10 * 2**20)
    assert not dest.exists() and no_temp_folders(tmp_path)


def test_member_larger_than_declared_is_stopped_while_extracting(tmp_path, monkeypatch):
    # zipfile itself stops at the declared size; a reader that does not is simulated, so that
    # the byte count of extract_zip is what stops it.
    archive = make_zip(tmp_path / "data.zip", DATASET)
    real_open = zipfile.ZipFile.open

    def open_too_much(self, member, *args, **kwargs):
        name = getattr(member, "filename", member)
        if name == "Positive/00002.jpg":
            return io.BytesIO(b"x" * 5_000_000)
        return real_open(self, member, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", open_too_much)
    dest = tmp_path / "real"
    with pytest.raises(ArchiveError) as caught:
        extract_zip(archive, dest, progress=False)
    assert str(caught.value) == (
        f"Refusing to extract {archive}: its member 'Positive/00002.jpg' holds more than the "
        f"{len(DATASET['Positive/00002.jpg'])} bytes its header declares; it is corrupt or "
        f"malicious, so delete it and download again."
    )
    assert not dest.exists() and no_temp_folders(tmp_path)
