"""helpers.data and `python -m helpers data`: the download-or-synthesise path, verification, the teachers' commands.

Downloads go to a real HTTP server on 127.0.0.1 (tests/http_server.py) serving small zips.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import FileServer
from PIL import Image, ImageFile

from helpers.data import DataChoice, download_dataset, is_verified, locate_dataset, prepare_data
from helpers.data import QUICK_PER_CLASS, record_path, verify_dataset
from helpers.plumbing import DownloadError, read_json
from helpers.settings import SOURCE_FILE, synthetic_dir
from helpers.synthetic_dataset import generate_dataset
from helpers.commands import data_main as main

ROOT = Path(__file__).resolve().parent.parent


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def image_folder(root: Path, per_class: int) -> Path:
    """root/Positive and root/Negative with `per_class` small JPEGs each."""
    for class_index, class_name in enumerate(("Positive", "Negative")):
        (root / class_name).mkdir(parents=True)
        for i in range(per_class):
            (root / class_name / f"{i:05d}.jpg").write_bytes(jpeg_bytes(10 * class_index + i))
    return root


def zip_bytes(per_class: int = 4, prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    """A small archive with the real set's layout: Positive/00001.jpg ..., Negative/00001.jpg ..."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for class_index, class_name in enumerate(("Positive", "Negative")):
            for i in range(1, per_class + 1):
                archive.writestr(f"{prefix}{class_name}/{i:05d}.jpg", jpeg_bytes(100 * class_index + i))
        for name, data in (extra or {}).items():
            archive.writestr(prefix + name, data)
    return buffer.getvalue()


@pytest.fixture
def file_server():
    with FileServer() as server:
        yield server


@pytest.fixture
def workbook_env(tmp_path, monkeypatch):
    """A private data folder, full mode, a tiny synthetic stand-in."""
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "data"))
    for name in ("WORKBOOK_QUICK", "WORKBOOK_OFFLINE", "WORKBOOK_DATASET"):
        monkeypatch.delenv(name, raising=False)
    generate_dataset(synthetic_dir(), per_class=6, seed=0, progress=False)  # a tiny stand-in, reused as it is
    return tmp_path / "data"


# --- downloading -------------------------------------------------------------------------


def test_a_download_is_unpacked_verified_and_recorded_in_the_learners_own_cache(workbook_env, file_server):
    archive = zip_bytes(per_class=4, extra={".verified.json": b"{}", "Positive/.verified.json": b"{}"})
    file_server.add_file("/concrete.zip", archive)
    report = download_dataset(url=file_server.url("/concrete.zip"), progress=False)
    dest = workbook_env / "concrete_crack_images"
    assert report.ok and report.root == dest and report.counts == {"Positive": 4, "Negative": 4}
    assert sorted(os.listdir(dest)) == ["Negative", "Positive", "workbook_source.json"]
    source = read_json(dest / SOURCE_FILE)
    assert source["url"] == file_server.url("/concrete.zip")
    assert source["archive_sha256"] == hashlib.sha256(archive).hexdigest()
    assert is_verified(dest) and workbook_env / "cache" / "verified" in record_path(dest).parents


def test_a_second_address_whose_archive_is_wrapped_replaces_the_images(workbook_env, file_server):
    second = zip_bytes(per_class=3, prefix="concrete_crack_images/")
    file_server.add_file("/first.zip", zip_bytes(per_class=4))
    file_server.add_file("/second.zip", second)
    download_dataset(url=file_server.url("/first.zip"), progress=False)
    dest = download_dataset(url=file_server.url("/second.zip"), progress=False).root
    with zipfile.ZipFile(io.BytesIO(second)) as archive:
        expected = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*.jpg")} == expected
    assert read_json(dest / SOURCE_FILE)["url"] == file_server.url("/second.zip") and is_verified(dest)


def test_a_wrong_sha256_is_one_sentence_and_the_images_stay_as_they_were(workbook_env, tmp_path):
    first, second = tmp_path / "first.zip", tmp_path / "second.zip"
    first.write_bytes(zip_bytes(per_class=2))
    second.write_bytes(zip_bytes(per_class=3))
    dest = download_dataset(url=str(first), progress=False).root
    with pytest.raises(DownloadError) as caught:
        download_dataset(url=str(second), sha256="0" * 64, progress=False)
    digest = hashlib.sha256(second.read_bytes()).hexdigest()
    assert str(caught.value) == f"{second} (from {second}) has the SHA-256 {digest}, not the one given: check both."
    assert verify_dataset(dest, progress=False).counts == {"Positive": 2, "Negative": 2} and is_verified(dest)
    assert download_dataset(url=str(second), sha256=digest.upper(), progress=False).counts["Positive"] == 3


def test_two_downloads_at_once_never_verify_a_partial_set(workbook_env, tmp_path):
    archive = tmp_path / "set.zip"
    archive.write_bytes(zip_bytes(per_class=100))
    code = f"import sys\nfrom helpers.commands import data_main\nsys.exit(data_main(['download', '--url', {str(archive)!r}]))"
    env = {**os.environ, "WORKBOOK_DATA_DIR": str(workbook_env)}
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0 and b"100 Positive, 100 Negative" in run.stdout.read()
    assert is_verified(workbook_env / "concrete_crack_images")


# --- the offline fallback ----------------------------------------------------------------


def test_offline_the_fallback_to_synthetic_is_said_in_one_sentence(workbook_env, monkeypatch, capsys):
    monkeypatch.setenv("WORKBOOK_OFFLINE", "1")
    choice = prepare_data(progress=False)
    assert capsys.readouterr().out == (
        "The real dataset cannot be downloaded, so this run uses synthetic crack images instead: WORKBOOK_OFFLINE is set\n"
    )
    assert choice.source == "synthetic" and choice.path == workbook_env / "synthetic_cracks"
    assert verify_dataset(choice.path, progress=False).counts == {"Positive": 6, "Negative": 6}
    assert "python -m helpers data download" in locate_dataset(progress=False).reason  # later notebooks say how


def test_an_address_that_cannot_be_reached_falls_back_to_synthetic(workbook_env, capsys):
    choice = prepare_data(url="http://127.0.0.1:9/concrete.zip", progress=False)  # the discard port: refused
    out = capsys.readouterr().out
    assert "instead: Could not reach http://127.0.0.1:9/concrete.zip (ConnectionError): check your internet" in out
    assert choice.source == "synthetic" and len(out.splitlines()) == 1


def test_a_corrupt_archive_falls_back_and_leaves_no_images(workbook_env, file_server, capsys):
    file_server.add_file("/broken.zip", b"PK\x03\x04 this is not really a zip")
    choice = prepare_data(url=file_server.url("/broken.zip"), progress=False)
    assert choice.source == "synthetic" and "is not a valid zip archive" in capsys.readouterr().out
    assert sorted(p.name for p in workbook_env.iterdir() if not p.name.startswith(".")) == [
        "downloads",
        "synthetic_cracks",
    ]


def test_prepare_data_downloads_once_and_later_notebooks_find_the_real_set(workbook_env, file_server):
    file_server.add_file("/mirror.zip", zip_bytes(per_class=3))
    choice = prepare_data(url=file_server.url("/mirror.zip"), progress=False)
    assert choice == DataChoice(workbook_env / "concrete_crack_images", "real", "downloaded and verified.")
    assert locate_dataset(progress=False).is_real and prepare_data(progress=False).is_real
    assert len(file_server.requests) == 1


def test_quick_mode_uses_the_tiny_synthetic_set(workbook_env, monkeypatch):
    monkeypatch.setenv("WORKBOOK_QUICK", "1")
    choice = locate_dataset(progress=False)
    assert choice.path == workbook_env / "synthetic_quick"
    per_class = QUICK_PER_CLASS
    assert verify_dataset(choice.path, progress=False).counts == {"Positive": per_class, "Negative": per_class}


# --- verifying ---------------------------------------------------------------------------


def test_verify_names_each_problem(workbook_env, tmp_path):
    root = tmp_path / "set"
    (root / "Positive").mkdir(parents=True)
    (root / "Positive" / "00001.jpg").write_bytes(jpeg_bytes(1))
    (root / "Positive" / "00002.jpg").write_bytes(b"not a jpeg")
    report = verify_dataset(root, progress=False)
    assert not report.ok and not is_verified(root)
    assert any(p.startswith("Class folder") and "Negative does not exist" in p for p in report.problems)
    assert any(p.startswith(f"{root / 'Positive' / '00002.jpg'}: not readable as an image") for p in report.problems)
    (root / "Negative").mkdir()
    assert any("holds no images" in p for p in verify_dataset(root, progress=False).problems)


def test_an_enormous_image_is_refused_from_its_header_without_decoding(workbook_env, tmp_path, monkeypatch):
    root = image_folder(tmp_path / "set", 2)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (10_000).to_bytes(2, "big") * 2  # 10000x10000 in its header
    (root / "Positive" / "00003.jpg").write_bytes(bytes(data))
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    report = verify_dataset(root, progress=False)
    assert (10_000, 10_000) not in decoded
    assert report.problems == [
        f"{root / 'Positive' / '00003.jpg'} is 10000x10000 pixels (100 megapixels), more than the 40 megapixels "
        "an image may have here: shrink it, or cut it into 227x227 tiles."
    ]


def test_a_verified_folder_is_no_longer_verified_after_any_change(workbook_env, tmp_path):
    root = image_folder(tmp_path / "set", 3)
    assert verify_dataset(root, progress=False).ok and is_verified(root)
    edited = root / "Negative" / "00001.jpg"
    os.utime(edited, ns=(edited.stat().st_atime_ns, edited.stat().st_mtime_ns + 1))
    assert not is_verified(root)
    assert verify_dataset(root, progress=False).ok and is_verified(root)
    (root / "Negative" / "00009.jpg").write_bytes(jpeg_bytes(9))
    assert not is_verified(root)


def test_no_record_beside_the_images_counts_only_the_learners_own(workbook_env, tmp_path):
    """Issue 29, item 11: the record lives in the learner's cache, so nothing in a data folder can pass for one."""
    root = image_folder(tmp_path / "set", 2)
    (root / "Positive" / "00000.jpg").write_bytes(b"not an image")
    assert not verify_dataset(root, progress=False).ok
    for name in (".verified.json", ".content_hashes.json", "workbook_source.json"):
        (root / name).write_text(json.dumps({"fingerprint": "0" * 64, "files_sha256": "0" * 64}))
    assert not is_verified(root) and not record_path(root).exists()


def test_verify_prints_hostile_and_non_utf8_file_names_safely(workbook_env, tmp_path, capsys):
    root = image_folder(tmp_path / "set", 2)
    if sys.platform != "win32":  # Windows refuses control characters in file names
        (root / "Positive" / "\x1b[2Jclear\n  - fake line.jpg").write_bytes(b"not an image")
    if sys.platform not in ("win32", "darwin"):  # a name that is not UTF-8 (Linux keeps its bytes)
        with open(os.fsencode(root / "Negative") + b"/caf\xe9.jpg", "wb") as file:
            file.write(b"not an image either")
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and not any(line.startswith("  - fake line") for line in out.splitlines())
    if sys.platform not in ("win32", "darwin"):
        assert "clear   - fake line.jpg" in out and "caf\\xe9.jpg" in out


# --- the command line --------------------------------------------------------------------


def test_cli_synthetic_then_verify(tmp_path, capsys):
    dest = tmp_path / "synthetic"
    assert main(["synthetic", "--per-class", "4", "--seed", "3", "--dest", str(dest)]) == 0
    assert "4 Positive, 4 Negative (8 in all)." in capsys.readouterr().out
    assert main(["verify", str(dest)]) == 0
    assert "Every file is a decodable image." in capsys.readouterr().out
    assert main(["synthetic", "--per-class", "0", "--dest", str(dest)]) == 1
    assert capsys.readouterr().err == "error: --per-class must be at least 1, not 0.\n"


def test_cli_404_is_one_sentence_and_leaves_no_folder(workbook_env, tmp_path, file_server, capsys):
    url, dest = file_server.url("/missing.zip"), tmp_path / "real"
    assert main(["download", "--url", url, "--dest", str(dest)]) == 1
    assert capsys.readouterr().err == (
        f"error: {url} answered 404 Not Found: check the address, or download the file by hand and pass its path.\n"
    )
    assert not dest.exists()


@pytest.mark.parametrize("sha256", ["0" * 63, "0" * 65, "g" * 64, "", "sha256:" + "0" * 64])
def test_a_sha256_that_is_not_64_hex_digits_is_refused_before_anything_is_fetched(
    workbook_env, tmp_path, file_server, capsys, sha256
):
    file_server.add_file("/concrete.zip", zip_bytes(per_class=2))
    dest = tmp_path / "real"
    assert main(["download", "--url", file_server.url("/concrete.zip"), "--dest", str(dest), "--sha256", sha256]) == 1
    assert capsys.readouterr().err == (
        f"error: The SHA-256 given ({sha256!r}) is not 64 hexadecimal digits: copy it again.\n"
    )
    assert file_server.requests == [] and not dest.exists()


@pytest.mark.parametrize("command", ["download", "synthetic"])
def test_a_folder_the_workbook_did_not_make_is_never_emptied(workbook_env, tmp_path, capsys, command):
    """Issue 29, item 2: `data download --dest` refuses the user's own photos, as `data synthetic` does."""
    archive = tmp_path / "set.zip"
    archive.write_bytes(zip_bytes(per_class=2))
    dest = image_folder(tmp_path / "my_photos", 1)
    options = ["--url", str(archive)] if command == "download" else ["--overwrite", "--per-class", "2"]
    assert main([command, *options, "--dest", str(dest)]) == 1
    assert capsys.readouterr().err == (
        f"error: {dest} holds files the workbook did not make (e.g. Negative); choose an empty or new folder.\n"
    )
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "Negative",
        "Negative/00000.jpg",
        "Positive",
        "Positive/00000.jpg",
    ]
    made = tmp_path / "made"  # a folder the same command made is replaced
    assert main([command, *options, "--dest", str(made)]) == 0
    assert main([command, *options, "--dest", str(made)]) == 0 and read_json(made / SOURCE_FILE)["source"] == command


def test_a_file_given_as_destination_is_named_as_a_file(workbook_env, tmp_path, capsys):
    archive = tmp_path / "set.zip"
    archive.write_bytes(zip_bytes(per_class=2))
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    for dest in (a_file, a_file / "x"):
        assert main(["download", "--url", str(archive), "--dest", str(dest)]) == 1
        assert capsys.readouterr().err == (
            f"error: {dest} cannot be a data folder: {a_file} is a file; choose another folder.\n"
        )
    assert sorted(os.listdir(tmp_path)) == ["data", "passwd", "set.zip"] and a_file.read_text() == "root:x:0:0\n"
    assert main(["verify", str(a_file)]) == 1
    assert "is not a folder holding Positive/ and Negative/" in capsys.readouterr().out


@pytest.mark.parametrize("url", ["", "ftp://mirror.example/concrete.zip"])
def test_an_address_that_cannot_be_fetched_is_one_sentence(workbook_env, capsys, url):
    assert main(["download", "--url", url]) == 1
    assert capsys.readouterr().err == f"error: {url!r} is neither an http(s) address nor a file: check it.\n"


@pytest.mark.parametrize("args", [["download", "--bogus"], ["synthetic", "--per-class", "many"], ["nonsense"], []])
def test_a_bad_data_command_line_is_one_error_line(args, capsys):
    """`data` printed argparse's usage above its error, where `predict` prints one line."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
