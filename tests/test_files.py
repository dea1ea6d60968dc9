"""helpers.plumbing: nothing half-written, a killed run's leftovers cleaned, a full disk said in one sentence."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.plumbing import atomic_path, replacing

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_path_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="^something else$"):  # other errors pass through unchanged
        with atomic_path(target) as temp:
            temp.write_bytes(b"half a ")
            raise RuntimeError("something else")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.pt"]
    with atomic_path(target) as temp:
        temp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.pt"]


TORCH_SHORT_WRITE = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4054")


@pytest.mark.parametrize(
    "failure", [TORCH_SHORT_WRITE, OSError(errno.ENOSPC, "No space left")], ids=["torch", "enospc"]
)
def test_a_full_disk_is_one_sentence_naming_the_folder_and_the_room_needed(tmp_path, failure):
    target = tmp_path / "checkpoints" / "model.pt"
    with pytest.raises(OSError) as caught:
        with atomic_path(target, size_hint=45_000_000) as temp:
            temp.write_bytes(b"x" * 1000)
            raise failure
    message = str(caught.value)
    assert message.startswith(f"The disk holding {target.parent} is full: this needs about 45.0 MB for model.pt and ")
    assert re.search(
        r" and [\d.]+ (GB|MB|kB|bytes) is free; free some space, or choose a folder on a larger disk\.$", message
    )
    assert message.count(". ") == 0 and caught.value.errno == errno.ENOSPC and os.listdir(target.parent) == []


def test_a_failed_replacement_keeps_the_old_folder_and_leaves_nothing_beside_it(tmp_path):
    dest = tmp_path / "set"
    with replacing(dest, "synthetic") as temp:
        (temp / "workbook_source.json").write_text('{"source": "synthetic"}')
    with pytest.raises(KeyboardInterrupt):
        with replacing(dest, "synthetic") as temp:
            (temp / "half.jpg").write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(dest) == ["workbook_source.json"] and os.listdir(tmp_path) == ["set"]


GENERATE = "import sys; from helpers.synthetic_dataset import generate_dataset; generate_dataset(sys.argv[1], int(sys.argv[2]))"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_what_a_killed_generation_left_is_removed_by_the_next_run(tmp_path):
    """Issue 29, item 12: SIGKILL cannot be cleaned up after; the next run, holding the lock, removes it."""
    dest = tmp_path / "synthetic"
    process = subprocess.Popen([sys.executable, "-c", GENERATE, str(dest), "2000"], cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / ".synthetic.tmp").glob("*/*.jpg")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / ".synthetic.tmp").is_dir() and not dest.exists()
    subprocess.run([sys.executable, "-c", GENERATE, str(dest), "2"], cwd=ROOT, check=True, capture_output=True)
    assert os.listdir(tmp_path) == ["synthetic"]
