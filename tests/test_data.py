"""helpers.data: the download-or-synthesise path, verification, and the teachers' command line.

Downloads go to a real HTTP server on 127.0.0.1 (tests/http_server.py) serving small zips.
"""

from __future__ import annotations

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
from PIL import Image

from helpers.settings import QUICK_SYNTHETIC_PER_CLASS
from helpers.data import (
    DataChoice,
    candidate_urls,
    download_dataset,
    is_verified,
    locate_dataset,
    main,
    prepare_data,
    read_source,
    verify_dataset,
)

ROOT = Path(__file__).resolve().parent.parent


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def zip_bytes(per_class: int = 4, prefix: str = "") -> bytes:
    """A small archive with the real set's layout: Positive/00001.jpg ..., Negative/00001.jpg ..."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for class_index, class_name in enumerate(("Positive", "Negative")):
            for i in range(1, per_class + 1):
                archive.writestr(f"{prefix}{class_name}/{i:05d}.jpg", jpeg_bytes(100 * class_index + i))
    return buffer.getvalue()


@pytest.fixture
def file_server():
    """A real HTTP server on 127.0.0.1 (tests/http_server.py); add archives with `add_file`."""
    with FileServer() as server:
        yield server


@pytest.fixture
def workbook_env(tmp_path, monkeypatch):
    """A private data folder, full mode, a tiny synthetic stand-in, no user URL."""
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBOOK_SYNTHETIC_PER_CLASS", "6")
    for name in ("WORKBOOK_QUICK", "WORKBOOK_DATA_URL", "WORKBOOK_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"


def test_candidate_urls_prefers_the_users_address(monkeypatch):
    monkeypatch.delenv("WORKBOOK_DATA_URL", raising=False)
    known = candidate_urls()
    assert len(known) >= 2 and all(u.endswith("concrete_crack_images_for_classification.zip") for u in known)
    monkeypatch.setenv("WORKBOOK_DATA_URL", "http://mirror.example/x.zip")
    assert candidate_urls() == ["http://mirror.example/x.zip"]
    assert candidate_urls(url="/media/usb/x.zip") == ["/media/usb/x.zip"]


def test_download_dataset_from_a_server(workbook_env, file_server):
    file_server.add_file("/concrete.zip", zip_bytes(per_class=4))
    dest = download_dataset(url=file_server.url("/concrete.zip"), progress=False)
    assert dest == workbook_env / "concrete_crack_images"
    assert sorted(p.name for p in (dest / "Positive").iterdir()) == [f"{i:05d}.jpg" for i in range(1, 5)]
    source = read_source(dest)
    assert source["source"] == "download" and source["url"].endswith("/concrete.zip")
    assert len(source["archive_sha256"]) == 64
    report = verify_dataset(dest, progress=False)
    assert report.ok and report.counts == {"Positive": 4, "Negative": 4}
    assert is_verified(dest)


def test_download_dataset_unwraps_an_extra_top_folder(workbook_env, tmp_path):
    archive = tmp_path / "wrapped.zip"
    archive.write_bytes(zip_bytes(per_class=2, prefix="concrete_crack_images_for_classification/"))
    dest = download_dataset(url=str(archive), progress=False)  # a local path works too
    assert (dest / "Positive" / "00001.jpg").is_file() and (dest / "Negative" / "00002.jpg").is_file()


def test_prepare_data_offline_says_so_and_uses_synthetic(workbook_env, monkeypatch, capsys):
    monkeypatch.setenv("WORKBOOK_OFFLINE", "1")
    choice = prepare_data(progress=False)
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("The real dataset cannot be downloaded (WORKBOOK_OFFLINE is set)")
    assert choice.source == "synthetic" and choice.path == workbook_env / "synthetic_cracks"
    assert verify_dataset(choice.path, progress=False).counts == {"Positive": 6, "Negative": 6}


def test_prepare_data_falls_back_when_no_address_answers(workbook_env, monkeypatch, capsys):
    monkeypatch.setenv("WORKBOOK_DATA_URL", "http://127.0.0.1:9/concrete.zip")  # the discard port: refused
    choice = prepare_data(progress=False)
    assert "none of its addresses can be reached" in capsys.readouterr().out
    assert choice.source == "synthetic"


def test_prepare_data_downloads_when_a_mirror_answers(workbook_env, file_server, monkeypatch):
    file_server.add_file("/mirror.zip", zip_bytes(per_class=3))
    monkeypatch.setenv("WORKBOOK_DATA_URL", file_server.url("/mirror.zip"))
    choice = prepare_data(progress=False)
    assert choice == DataChoice(workbook_env / "concrete_crack_images", "real", "downloaded and verified.")
    # Later notebooks find it without downloading again.
    monkeypatch.setenv("WORKBOOK_DATA_URL", "http://127.0.0.1:9/gone.zip")
    assert locate_dataset(progress=False).source == "real"


def test_prepare_data_falls_back_on_a_corrupt_archive(workbook_env, file_server, monkeypatch, capsys):
    file_server.add_file("/broken.zip", b"PK\x03\x04 this is not really a zip")
    monkeypatch.setenv("WORKBOOK_DATA_URL", file_server.url("/broken.zip"))
    choice = prepare_data(progress=False)
    assert choice.source == "synthetic"
    assert "could not be downloaded" in capsys.readouterr().out
    assert not (workbook_env / "concrete_crack_images").exists()


def test_quick_mode_uses_the_tiny_synthetic_set(workbook_env, monkeypatch):
    monkeypatch.setenv("WORKBOOK_QUICK", "1")
    choice = locate_dataset(progress=False)
    assert choice.path == workbook_env / "synthetic_quick"
    assert verify_dataset(choice.path, progress=False).counts == {
        "Positive": QUICK_SYNTHETIC_PER_CLASS, "Negative": QUICK_SYNTHETIC_PER_CLASS}


def test_verify_names_each_problem(tmp_path):
    root = tmp_path / "set"
    (root / "Positive").mkdir(parents=True)
    (root / "Positive" / "00001.jpg").write_bytes(jpeg_bytes(1))
    (root / "Positive" / "00002.jpg").write_bytes(b"not a jpeg")
    report = verify_dataset(root, progress=False)
    assert not report.ok
    assert any("Negative" in p and "does not exist" in p for p in report.problems)
    assert any(p.startswith(os.path.join("Positive", "00002.jpg")) and "cannot be decoded" in p
               for p in report.problems)
    assert "00002.jpg" in str(report)

    (root / "Negative").mkdir()
    report = verify_dataset(root, progress=False)
    assert any("holds no images" in p for p in report.problems)


def test_verification_stamp_is_invalidated_by_a_change(tmp_path):
    root = tmp_path / "set"
    for class_name in ("Positive", "Negative"):
        (root / class_name).mkdir(parents=True)
        for i in range(3):
            (root / class_name / f"{i:05d}.jpg").write_bytes(jpeg_bytes(i))
    report = verify_dataset(root, expected_per_class=3, progress=False)
    assert report.ok and is_verified(root)
    (root / "Negative" / "00009.jpg").write_bytes(jpeg_bytes(9))
    assert not is_verified(root)
    assert not verify_dataset(root, expected_per_class=3, progress=False).ok


def test_cli_synthetic_then_verify(tmp_path, capsys):
    dest = tmp_path / "synthetic"
    assert main(["synthetic", "--per-class", "4", "--seed", "3", "--dest", str(dest)]) == 0
    assert main(["verify", str(dest), "--expected-per-class", "4"]) == 0
    assert "4 Positive, 4 Negative" in capsys.readouterr().out
    assert json.loads((dest / "workbook_source.json").read_text())["seed"] == 3


def test_cli_errors_are_one_clear_sentence(workbook_env, tmp_path, file_server, capsys):
    assert main(["synthetic", "--per-class", "0", "--dest", str(tmp_path / "s")]) == 1
    assert "--per-class must be at least 1" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().out

    dest = tmp_path / "real"
    code = main(["download", "--url", file_server.url("/missing.zip"), "--dest", str(dest)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "404" in err
    assert not dest.exists()


def test_cli_runs_as_a_module(tmp_path):
    env = {**os.environ, "WORKBOOK_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-m", "helpers.data", "verify", str(tmp_path / "absent")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "run notebooks/01_download_data.ipynb" in result.stdout
