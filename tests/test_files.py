"""Tests for helpers.plumbing.files: content hashes that an edit with the old modification time cannot fool,
and the leftovers of interrupted atomic saves."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.plumbing import files as files_module
from helpers.plumbing.files import BusyError, atomic_path, content_hashes, exclusive_lock, remove_stale_temporaries


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def edit_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Replace a file's bytes with as many other bytes, then set its modification time back."""
    before = path.stat()
    assert len(data) == before.st_size and data != path.read_bytes()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.fixture
def settled(monkeypatch):
    """Trust digests of files written a moment ago (normally they are hashed again until they settle)."""
    monkeypatch.setattr(files_module, "SETTLE_NS", 0)


# ----------------------------------------------------------------------------- content hashes
def test_a_same_size_edit_with_the_old_mtime_is_hashed_again(tmp_path, settled):
    paths = [tmp_path / f"{name}.bin" for name in "abc"]
    for i, path in enumerate(paths):
        path.write_bytes(bytes([i]) * 1000)
    cache = tmp_path / ".content_hashes.json"
    first = content_hashes(paths, cache)
    assert first == [sha1(p) for p in paths]
    edit_keeping_size_and_mtime(paths[1], b"x" * 1000)
    second = content_hashes(paths, cache)
    assert second[1] == sha1(paths[1]) != first[1]
    assert second[::2] == first[::2]


def test_digests_are_reused_while_the_files_are_unchanged(tmp_path, settled, monkeypatch):
    paths = [tmp_path / f"{i}.bin" for i in range(3)]
    for i, path in enumerate(paths):
        path.write_bytes(bytes([i]) * 100)
    cache = tmp_path / ".content_hashes.json"
    first = content_hashes(paths, cache)
    hashed = []
    monkeypatch.setattr(files_module, "file_digest", lambda p, algorithm="sha256": hashed.append(p) or sha1(p))
    assert content_hashes(paths, cache) == first and hashed == []
    os.replace(paths[0], tmp_path / "moved")  # same name, other file (new inode): hashed again
    paths[0].write_bytes(bytes([9]) * 100)
    assert content_hashes(paths, cache)[0] == sha1(paths[0]) and hashed == [paths[0]]


def test_files_that_just_changed_are_hashed_again_until_they_settle(tmp_path, monkeypatch):
    path = tmp_path / "new.bin"
    path.write_bytes(b"fresh")
    cache = tmp_path / ".content_hashes.json"
    hashed = []
    monkeypatch.setattr(files_module, "file_digest", lambda p, algorithm="sha256": hashed.append(p) or sha1(p))
    content_hashes([path], cache)
    content_hashes([path], cache)  # its ctime is within SETTLE_NS of the first hashing: not trusted yet
    assert len(hashed) == 2
    monkeypatch.setattr(files_module, "SETTLE_NS", 0)
    content_hashes([path], cache)
    content_hashes([path], cache)
    assert len(hashed) == 3


def test_an_old_cache_format_is_ignored(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    stat = path.stat()
    cache = tmp_path / ".content_hashes.json"
    cache.write_text(f'{{"a.bin|{stat.st_size}|{stat.st_mtime_ns}": "{"0" * 40}"}}')  # before ctime and inode
    assert content_hashes([path], cache) == [sha1(path)]


# ----------------------------------------------------------------------------- leftovers of atomic saves
def temporary_of(path: Path, pid: int, hex_part: str) -> Path:
    return path.with_name(f".{path.name}.{pid}-{hex_part}.tmp{path.suffix}")


def test_remove_stale_temporaries_removes_only_old_leftovers_of_that_file(tmp_path):
    target = tmp_path / "model.pt"
    old = temporary_of(target, 4242, "0badc0de")
    fresh = temporary_of(target, 4243, "12345678")
    other = temporary_of(tmp_path / "other.pt", 4242, "0badc0de")
    lookalike = tmp_path / ".model.pt.notes.tmp.pt"
    for path in (old, fresh, other, lookalike):
        path.write_bytes(b"half a checkpoint")
    an_hour_ago = time.time() - 3600
    for path in (old, other, lookalike):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert remove_stale_temporaries(target, older_than_s=60) == [old]
    assert not old.exists()
    assert fresh.exists() and other.exists() and lookalike.exists()
    assert remove_stale_temporaries(tmp_path / "absent" / "x.pt") == []  # a missing folder is fine


def test_atomic_path_cleans_up_after_a_killed_save(tmp_path):
    target = tmp_path / "features.pt"
    killed = temporary_of(target, 99999, "deadbeef")
    killed.write_bytes(b"left by a SIGKILL")
    os.utime(killed, (time.time() - 600, time.time() - 600))
    with atomic_path(target) as temp:
        temp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.pt"]


HOLD = """
import sys
from helpers.plumbing.files import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path):
    folder = tmp_path / "images"
    root = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=r"Another process is downloading or extracting into .*images .*wait"):
            with exclusive_lock(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)  # no clean-up runs
        holder.wait()
    with exclusive_lock(folder) as lock:  # the system released the killed process's lock
        with exclusive_lock(folder):  # and this process may take it again inside
            assert lock.exists()
    assert not lock.exists(), "the lock file is removed once released"


TORCH_SHORT_WRITE = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4054")


@pytest.mark.parametrize(
    "failure", [TORCH_SHORT_WRITE, OSError(28, "No space left on device")], ids=["torch-runtime-error", "enospc"]
)
def test_a_full_disk_is_one_sentence_naming_the_folder_and_the_space(tmp_path, monkeypatch, failure):
    import torch

    def full_disk(obj, file):
        Path(file).write_bytes(b"x" * 1000)
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    target = tmp_path / "checkpoints" / "model.pt"
    with pytest.raises(files_module.DiskFullError) as error:
        with atomic_path(target, size_hint=45_000_000) as temp:
            torch.save({}, temp)
    message = str(error.value)
    assert message.startswith(f"The disk holding {target.parent} is full: model.pt needs about 45.0 MB")
    assert "is free" in message and "WORKBOOK_DATA_DIR" in message and message.count(". ") == 0
    assert isinstance(error.value, OSError) and list(target.parent.iterdir()) == []
    with pytest.raises(files_module.DiskFullError, match="more than the 1.0 kB written before it filled up"):
        with atomic_path(target) as temp:
            torch.save({}, temp)


def test_other_errors_pass_through_atomic_path_unchanged(tmp_path):
    with pytest.raises(RuntimeError, match="^something else$"):
        with atomic_path(tmp_path / "a.pt"):
            raise RuntimeError("something else")
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "a.pt"):
            raise PermissionError(13, "Permission denied")
