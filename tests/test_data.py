"""helpers.data: the download-or-synthesise path, verification, and the teachers' command line.

Downloads go to a real HTTP server on 127.0.0.1 (tests/http_server.py) serving small zips.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import FileServer
from PIL import Image, ImageFile

from helpers.plumbing.archive import ArchiveError
from helpers.settings import QUICK_SYNTHETIC_PER_CLASS
from helpers.data import (
    DataChoice,
    candidate_urls,
    download_dataset,
    locate_dataset,
    prepare_data,
    read_source,
)
from helpers.tools.data import main
from helpers.verify import is_verified, verify_dataset

ROOT = Path(__file__).resolve().parent.parent


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def image_folder(root: Path, per_class: int, make_bytes=jpeg_bytes, suffix: str = ".jpg") -> Path:
    """root/Positive and root/Negative with `per_class` files each, file i of class c from make_bytes(10 * c + i)."""
    for class_index, class_name in enumerate(("Positive", "Negative")):
        (root / class_name).mkdir(parents=True)
        for i in range(per_class):
            (root / class_name / f"{i:05d}{suffix}").write_bytes(make_bytes(10 * class_index + i))
    return root


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


def test_download_dataset_from_another_address_fetches_that_archive(workbook_env, file_server):
    second = zip_bytes(per_class=3)
    file_server.add_file("/first.zip", zip_bytes(per_class=2))
    file_server.add_file("/second.zip", second)
    download_dataset(url=file_server.url("/first.zip"), progress=False)
    dest = download_dataset(url=file_server.url("/second.zip"), progress=False)
    assert [r.path for r in file_server.requests] == ["/first.zip", "/second.zip"]
    assert verify_dataset(dest, progress=False).counts == {"Positive": 3, "Negative": 3}
    source = read_source(dest)
    assert source["url"] == file_server.url("/second.zip")
    assert source["archive_sha256"] == hashlib.sha256(second).hexdigest()


def test_a_corrupt_archive_is_named_by_its_full_path(workbook_env, file_server):
    file_server.add_file("/broken.zip", b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ArchiveError) as caught:
        download_dataset(url=file_server.url("/broken.zip"), progress=False)
    [archive] = (workbook_env / "downloads").glob("*.zip")
    assert str(caught.value) == (
        f"{archive} is not a valid zip archive (corrupt or incomplete download): delete it and download again."
    )


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


def test_after_a_failed_download_later_notebooks_do_not_send_the_learner_back(workbook_env, monkeypatch):
    assert "run notebooks/01_download_data.ipynb" in locate_dataset(progress=False).reason  # nobody tried yet
    monkeypatch.setenv("WORKBOOK_OFFLINE", "1")
    prepare_data(progress=False)  # what notebook 01 and make run do first
    reason = locate_dataset(progress=False).reason
    assert "01_download_data" not in reason
    assert "could not be downloaded (WORKBOOK_OFFLINE is set" in reason and "python -m helpers data download" in reason


def test_prepare_data_downloads_when_a_mirror_answers(workbook_env, file_server, monkeypatch):
    file_server.add_file("/mirror.zip", zip_bytes(per_class=3))
    monkeypatch.setenv("WORKBOOK_DATA_URL", file_server.url("/mirror.zip"))
    workbook_env.mkdir(parents=True, exist_ok=True)
    (workbook_env / "download_attempt.json").write_text('{"why": "an earlier failure"}')
    choice = prepare_data(progress=False)
    assert choice == DataChoice(workbook_env / "concrete_crack_images", "real", "downloaded and verified.")
    assert not (workbook_env / "download_attempt.json").exists()  # the earlier failure is forgotten
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
        "Positive": QUICK_SYNTHETIC_PER_CLASS,
        "Negative": QUICK_SYNTHETIC_PER_CLASS,
    }


def test_verify_names_each_problem(tmp_path):
    root = tmp_path / "set"
    (root / "Positive").mkdir(parents=True)
    (root / "Positive" / "00001.jpg").write_bytes(jpeg_bytes(1))
    (root / "Positive" / "00002.jpg").write_bytes(b"not a jpeg")
    report = verify_dataset(root, progress=False)
    assert not report.ok
    assert any("Negative" in p and "does not exist" in p for p in report.problems)
    assert any(
        p.startswith(os.path.join("Positive", "00002.jpg")) and "cannot be decoded" in p for p in report.problems
    )
    assert "00002.jpg" in str(report)

    (root / "Negative").mkdir()
    report = verify_dataset(root, progress=False)
    assert any("holds no images" in p for p in report.problems)


def test_verify_lists_other_sizes_and_refuses_enormous_images(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "set", 2, lambda seed: jpeg_bytes(seed, size=227))
    for name in ("Positive/00002.jpg", "Negative/00002.jpg"):
        Image.new("RGB", (300, 200), (120, 120, 120)).save(root / name)
    report = verify_dataset(root, progress=False)
    assert report.ok and report.other_sizes == {"Positive/00002.jpg": (300, 200), "Negative/00002.jpg": (300, 200)}
    note = "2 images are not 227x227 (e.g. Positive/00002.jpg is 300x200); the datasets resize them to 227x227."
    assert report.notes == [note] and note in str(report)
    assert is_verified(root)

    # 10000x10000 in its header: a problem, found without decoding the pixels
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (10_000).to_bytes(2, "big") * 2
    (root / "Positive" / "00003.jpg").write_bytes(bytes(data))
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    report = verify_dataset(root, progress=False)
    assert (10_000, 10_000) not in decoded
    assert report.problems == [
        f"{os.path.join('Positive', '00003.jpg')} is 10000x10000 pixels (100 megapixels), "
        "more than the 40 megapixels an image may have here: shrink it, "
        "or cut it into 227x227 tiles"
    ]
    assert not is_verified(root)


def test_verification_stamp_is_invalidated_by_a_change(tmp_path):
    root = image_folder(tmp_path / "set", 3)
    report = verify_dataset(root, expected_per_class=3, progress=False)
    assert report.ok and is_verified(root)
    (root / "Negative" / "00009.jpg").write_bytes(jpeg_bytes(9))
    assert not is_verified(root)
    assert not verify_dataset(root, expected_per_class=3, progress=False).ok


def test_verification_is_not_trusted_after_a_same_size_edit_with_the_old_mtime(tmp_path, monkeypatch):
    import helpers.plumbing.files as files_module

    monkeypatch.setattr(files_module, "SETTLE_NS", 0)  # trust digests of files written a moment ago

    def bmp(seed: int) -> bytes:  # every 227x227 BMP has the same size
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (227, 227, 3), dtype=np.uint8)).save(
            buffer, format="BMP"
        )
        return buffer.getvalue()

    root = image_folder(tmp_path / "set", 2, bmp, suffix=".bmp")
    assert verify_dataset(root, progress=False).ok and is_verified(root) and is_verified(root)
    edited = root / "Negative" / "00001.bmp"
    before = edited.stat()
    edited.write_bytes(bmp(99)[:54] + b"\xff" * (before.st_size - 54))  # same size, not the verified bytes
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not is_verified(root)


def test_a_record_the_workbook_did_not_seal_is_not_trusted(workbook_env, tmp_path):
    root = image_folder(tmp_path / "set", 2)
    assert verify_dataset(root, progress=False).ok and is_verified(root)
    record = json.loads((root / ".verified.json").read_text())
    unsealed = {key: value for key, value in record.items() if key != "seal"}
    (root / ".verified.json").write_text(json.dumps(unsealed))  # what a record written by content alone holds
    assert not is_verified(root)
    (root / ".verified.json").write_text(json.dumps({**record, "seal": "0" * 64}))
    assert not is_verified(root)
    files = sorted(root.glob("*/*.jpg"))  # the record of the workbook before seals: count and bytes
    (root / ".verified.json").write_text(
        json.dumps({"n_files": 4, "total_bytes": sum(p.stat().st_size for p in files)})
    )
    assert not is_verified(root)


def forged_record(files: dict[str, bytes]) -> bytes:
    """A .verified.json computed from the files' contents alone, as anyone making an archive could."""
    lines = sorted(f"{name}|{hashlib.sha1(data).hexdigest()}" for name, data in files.items())
    return json.dumps(
        {
            "n_files": len(files),
            "files_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
            "counts": {"Positive": 2, "Negative": 2},
        }
    ).encode()


@pytest.mark.parametrize("prefix", ["", "wrapped/"])
def test_a_verified_record_inside_the_archive_never_counts(workbook_env, tmp_path, prefix):
    files = {
        f"{name}/{i:05d}.jpg": jpeg_bytes(10 * c + i)
        for c, name in enumerate(("Positive", "Negative"))
        for i in range(2)
    }
    files["Positive/00001.jpg"] = b"not an image at all"  # the download then fails to verify
    archive = tmp_path / "forged.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, data in files.items():
            out.writestr(prefix + name, data)
        out.writestr(prefix + ".verified.json", forged_record(files))
        out.writestr(prefix + "Positive/.verified.json", forged_record(files))
    dest = download_dataset(url=str(archive), progress=False)
    assert list(dest.rglob(".verified.json")) == []
    assert not verify_dataset(dest, progress=False).ok
    assert not is_verified(dest)
    (dest / ".verified.json").write_bytes(forged_record(files))  # even placed by hand, it is not the workbook's
    assert not is_verified(dest)


def test_a_second_address_whose_archive_is_wrapped_replaces_the_images(workbook_env, file_server):
    file_server.add_file("/first.zip", zip_bytes(per_class=4))
    second = zip_bytes(per_class=3, prefix="concrete_crack_images/")  # its classes inside one more folder
    file_server.add_file("/second.zip", second)
    download_dataset(url=file_server.url("/first.zip"), progress=False)
    dest = download_dataset(url=file_server.url("/second.zip"), progress=False)
    assert read_source(dest)["url"] == file_server.url("/second.zip")
    with zipfile.ZipFile(io.BytesIO(second)) as archive:
        expected = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    found = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*.jpg")}
    assert found == expected
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        "Negative",
        "Positive",
        "workbook_source.json",
    ]


def test_an_archive_without_the_class_folders_fails_saying_so(workbook_env, tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("cats/1.jpg", jpeg_bytes(1))
    with pytest.raises(ArchiveError, match="holds no Positive/, Negative/ folders"):
        download_dataset(url=str(archive), progress=False)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from helpers.plumbing.files import exclusive_lock
with exclusive_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_second_download_into_the_same_folder_is_told_another_is_running(workbook_env, tmp_path):
    archive = tmp_path / "set.zip"
    archive.write_bytes(zip_bytes(per_class=2))
    dest = workbook_env / "concrete_crack_images"
    in_use = workbook_env / ".concrete_crack_images.extracting-0123abcd"  # the other process's folder, being filled
    (in_use / "Positive").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(dest)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OSError, match="Another process is downloading or extracting into .*concrete_crack_images"):
            download_dataset(url=str(archive), progress=False)
        assert in_use.is_dir(), "the other process's folder was removed"
        assert main(["download", "--url", str(archive)]) == 1
    finally:
        holder.kill()  # a killed holder leaves no stale lock: the system releases it
        holder.wait()
    assert download_dataset(url=str(archive), progress=False) == dest
    assert verify_dataset(dest, progress=False).counts == {"Positive": 2, "Negative": 2}


def test_two_downloads_at_once_never_verify_a_partial_set(workbook_env, tmp_path):
    archive = tmp_path / "set.zip"
    archive.write_bytes(zip_bytes(per_class=150))
    code = f"import sys\nfrom helpers.tools.data import main\nsys.exit(main(['download', '--url', {str(archive)!r}]))"
    env = {**os.environ, "WORKBOOK_DATA_DIR": str(workbook_env)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for status, stderr in results:
        assert status == 0 or "Another process is downloading" in stderr, stderr
    assert any(status == 0 for status, _ in results)
    dest = workbook_env / "concrete_crack_images"
    assert verify_dataset(dest, progress=False).counts == {"Positive": 150, "Negative": 150}
    assert is_verified(dest)


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
    url = file_server.url("/missing.zip")
    code = main(["download", "--url", url, "--dest", str(dest)])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"error: Could not download {url}: the server answered 404 Not Found. Check the "
        f"address, or download the file by hand and pass its path.\n"
    )
    assert not dest.exists()


def test_cli_synthetic_overwrite_keeps_a_foreign_folder(tmp_path, capsys):
    dest = tmp_path / "thesis_folder"
    dest.mkdir()
    (dest / "thesis.txt").write_text("do not delete")
    assert main(["synthetic", "--per-class", "2", "--dest", str(dest), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {dest} holds files the workbook did not make (e.g. thesis.txt); choose an empty or new folder.\n"
    )
    assert (dest / "thesis.txt").read_text() == "do not delete"
    assert sorted(p.name for p in dest.iterdir()) == ["thesis.txt"]

    generated = tmp_path / "generated"  # a folder the workbook made is still replaced
    assert main(["synthetic", "--per-class", "2", "--dest", str(generated)]) == 0
    assert main(["synthetic", "--per-class", "3", "--seed", "1", "--dest", str(generated), "--overwrite"]) == 0
    assert json.loads((generated / "workbook_source.json").read_text())["per_class"] == 3


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process")
def test_cli_ctrl_c_during_a_download_says_one_line_and_keeps_the_part(tmp_path, file_server):
    # 1.2 MB at once (more than one 1 MiB chunk, so the .part gets bytes), then 20 kB/s.
    file_server.add_file("/slow.zip", os.urandom(3 * 2**20), "slow:1200000")
    downloads = (tmp_path / "data").resolve() / "downloads"
    env = {**os.environ, "WORKBOOK_DATA_DIR": str(tmp_path / "data")}
    env.pop("WORKBOOK_DATA_URL", None)
    command = [
        sys.executable,
        "-m",
        "helpers",
        "data",
        "download",
        "--url",
        file_server.url("/slow.zip"),
        "--dest",
        str(tmp_path / "real"),
    ]
    # A child gets Python's Ctrl+C handler only if SIGINT is not ignored here (nohup, CI).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )  # bytes: text mode turns \r into \n
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline, parts = time.monotonic() + 60, []
        while not parts and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            parts = [p for p in downloads.glob("*.part") if p.stat().st_size > 0]
        assert parts, f"no .part file appeared; the command said: {process.communicate(timeout=30)}"
        process.send_signal(signal.SIGINT)
        err = process.communicate(timeout=30)[1].decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "Traceback" not in err
    # Apart from the progress bar (redrawn with \r), stderr holds one line.
    lines = [line for line in err.split("\n") if line.strip() and "\r" not in line]
    assert lines == [f"Download interrupted; run the same command again to resume from {parts[0]}."]
    assert parts[0].stat().st_size >= 2**20
    assert not (tmp_path / "real").exists()


def test_cli_runs_as_a_module(tmp_path):
    env = {**os.environ, "WORKBOOK_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "data", "verify", str(tmp_path / "absent")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "run notebooks/01_download_data.ipynb" in result.stdout


# Windows refuses control characters in file names; macOS (APFS) and Windows refuse names that are not UTF-8.
CONTROL_CHARACTERS_IN_NAMES = sys.platform != "win32"
NON_UTF8_NAMES = sys.platform not in ("win32", "darwin")


def test_verify_prints_hostile_and_non_utf8_file_names_safely(tmp_path):
    root = image_folder(tmp_path / "set", 2)
    hostile = "\x1b[2Jclear\n  - fake line.jpg" if CONTROL_CHARACTERS_IN_NAMES else "clear   - fake line.jpg"
    (root / "Positive" / hostile).write_bytes(b"not an image")
    if NON_UTF8_NAMES:  # a name that is not UTF-8 (Linux keeps its bytes)
        with open(os.fsencode(root / "Negative") + b"/caf\xe9.jpg", "wb") as file:
            file.write(b"not an image either")
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "data", "verify", str(root)], capture_output=True, cwd=ROOT, timeout=120
    )
    out = result.stdout.decode("utf-8")
    assert result.returncode == 1 and b"Traceback" not in result.stderr, result.stderr
    assert "\x1b" not in out and not any(line.startswith("  - fake line") for line in out.splitlines())
    assert "clear   - fake line.jpg cannot be decoded" in out
    if NON_UTF8_NAMES:
        assert "caf\\xe9.jpg cannot be decoded" in out


@pytest.mark.parametrize("command", [["verify", "DIR"], ["synthetic", "--dest", "DIR"]])
def test_ctrl_c_in_the_data_commands_is_one_line_and_130(tmp_path, capsys, monkeypatch, command):
    import helpers.tools.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(helpers.tools.data, "verify_dataset", interrupted)
    monkeypatch.setattr(helpers.tools.data, "generate_dataset", interrupted)
    assert main([part.replace("DIR", str(tmp_path / "set")) for part in command]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted (Ctrl+C)") and len(err.splitlines()) == 1


@pytest.mark.parametrize("url", ["", "ftp://mirror.example/concrete.zip", "gopher://x/y"])
def test_an_address_that_cannot_be_fetched_is_refused_before_anything(workbook_env, capsys, url):
    with pytest.raises(SystemExit) as exit_:
        main(["download", "--url", url])
    assert exit_.value.code == 2
    assert "is not an address the workbook can fetch" in capsys.readouterr().err
    assert not workbook_env.exists()


def test_a_file_given_as_destination_or_data_folder_is_named_as_a_file(workbook_env, tmp_path, capsys):
    archive = tmp_path / "set.zip"
    archive.write_bytes(zip_bytes(per_class=2))
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    assert main(["download", "--url", str(archive), "--dest", str(a_file)]) == 1
    err = capsys.readouterr().err
    assert "is a file" in err and "--dest" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd", "set.zip"]  # no temporary folder beside it
    assert main(["verify", str(a_file)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().out
