"""What differs between Linux, macOS and Windows, made the same: sample ids, file replacement, where CI keeps the
ImageNet weights; and make's disk check."""

from __future__ import annotations

import importlib.util
import os
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from helpers.dataset import CrackDataset, list_class_files
from helpers.dataset import FolderDataset
from helpers.model import imagenet_weights_path
from helpers.synthetic_dataset import generate_dataset

ROOT = Path(__file__).resolve().parent.parent
COMPOSED, DECOMPOSED = unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg")


def dataset_named(tmp_path: Path, folder: str, name: str) -> Path:
    """A tiny synthetic set whose Positive/00002.jpg is renamed to `name`."""
    root = generate_dataset(tmp_path / folder, per_class=3, seed=0, progress=False)
    os.rename(root / "Positive" / "00002.jpg", root / "Positive" / name)
    return root


def test_sample_ids_and_order_are_the_same_whichever_unicode_form_the_file_system_hands_out(tmp_path):
    """macOS's HFS+ lists "café" decomposed (e + accent); Linux and Windows keep what was written."""
    assert COMPOSED != DECOMPOSED
    composed, decomposed = dataset_named(tmp_path, "nfc", COMPOSED), dataset_named(tmp_path, "nfd", DECOMPOSED)
    if len(list((decomposed / "Positive").iterdir())) != 3 or (decomposed / "Positive" / COMPOSED).exists():
        pytest.skip("this file system normalises names itself")
    assert [p.name for p in list_class_files(decomposed, "Positive")][-1] == DECOMPOSED  # sorted after 00003.jpg
    for make in (
        lambda root: CrackDataset(root, split="all", progress=False),
        lambda root: FolderDataset(root, split="all"),
    ):
        ids = [[sample.sample_id for sample in make(root).samples] for root in (composed, decomposed)]
        assert ids[0] == ids[1] and f"Positive/{COMPOSED}" in ids[0]


def load_check_space():
    spec = importlib.util.spec_from_file_location("check_space", ROOT / "scripts" / "check_space.py")
    check_space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_space)
    return check_space


def test_make_checks_the_disk_before_it_creates_the_venv():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert makefile.index("scripts/check_space.py $(VENV)") < makefile.index("-m venv $(VENV)")


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for the venv's python")
def test_too_little_disk_for_torch_is_one_sentence_that_says_what_to_do(tmp_path):
    check_space = load_check_space()
    assert check_space.problem(tmp_path / ".venv", free=7e9, needed=6.5e9) is None  # room enough
    message = check_space.problem(tmp_path / ".venv", free=0.3e9, needed=6.5e9)  # no venv yet
    assert "6.5 GB" in message and "0.3 GB free" in message and "CPU-only" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    # A venv whose python lacks torch still needs the room; one that has torch needs none.
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    assert check_space.problem(tmp_path / ".venv", free=0.3e9, needed=6.5e9) == message
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # the test's own Python, which imports torch
    assert check_space.problem(tmp_path / ".venv", free=0.3e9, needed=6.5e9) is None


def test_the_cuda_build_is_what_needs_six_gigabytes():
    check_space = load_check_space()
    assert check_space.needed_bytes("Linux", "x86_64") > 6e9
    for system, machine in (("Linux", "aarch64"), ("Darwin", "arm64"), ("Windows", "AMD64")):
        assert check_space.needed_bytes(system, machine) < 3e9


def test_ci_keeps_the_imagenet_weights_where_torch_looks_on_every_runner_keyed_by_the_files_hash(monkeypatch):
    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):  # unset on GitHub's runners
        monkeypatch.delenv(name, raising=False)
    job = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text(encoding="utf-8"))["jobs"]["test"]
    steps = job["steps"]
    uses = [step.get("uses", "").split("@")[0] for step in steps]
    cache = steps[uses.index("actions/cache")]["with"]
    assert Path(cache["path"]).expanduser() == imagenet_weights_path().parent  # ~ is the home folder on Windows too
    assert imagenet_weights_path().stem.split("-")[-1] in cache["key"]  # a new file (hash) is a new cache
    assert uses.index("actions/cache") < min(i for i, step in enumerate(steps) if "run" in step)  # restored first
