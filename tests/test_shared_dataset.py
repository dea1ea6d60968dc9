"""A class on a shared JupyterHub: one read-only data set (WORKBOOK_DATASET), a folder of their own per learner.

The slow test starts two learner processes at once, each with their own HOME and
WORKBOOK_DATA_DIR, on one data folder made read-only for real (a read-only bind mount when the
test runs as root, who ignores permission bits; else chmod). Each runs the calls notebooks 01-05
make, in their order (LEARNER; the notebooks themselves, run headless, take minutes), and the
test checks that both finish with their own caches and checkpoints and that the shared folder is
exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.data import is_verified, locate_dataset, prepare_data, record_path, verify_dataset
from helpers.dataset import CrackDataset, list_class_files
from helpers.settings import (
    DATASET,
    PROJECT_ROOT,
    SettingsError,
    data_dir,
    executed_dir,
    images_dir,
    real_sample_dir,
    shared_dataset_dir,
    validate_settings,
)
from helpers.synthetic_dataset import generate_dataset

PER_CLASS = 20  # images per class in the shared folder of the two-learner test
LEARNER = """
import torch

from helpers.analysis import compute_metrics
from helpers.data import locate_dataset, prepare_data, verify_dataset
from helpers.dataset import CrackDataset, find_split_leakage
from helpers.features import extract_features
from helpers.inference import predict_dataset
from helpers.training import checkpoint_metadata, ensure_checkpoint
from helpers.model import build_resnet18, resolve_weights, save_checkpoint
from helpers.workbook import show_samples
from helpers.settings import default_checkpoint_path, feature_cache_dir
from helpers.training import train_head
from helpers.workbook import announce_run, save_figure

# 01: where the data comes from, every image checked, a figure
choice = prepare_data(progress=False)
announce_run(choice)
assert verify_dataset(choice.path, progress=False).ok
save_figure(show_samples(choice.path, n_per_class=2), "samples_grid.png")
# 02: the capstone's split, the files' digests, the leak and the deduplicated split
train_set, val_set = CrackDataset(choice.path, "train"), CrackDataset(choice.path, "val")
print(find_split_leakage(train_set, val_set))
CrackDataset(choice.path, "train", dedupe=True, progress=False)
# 03: ResNet18 with a new head
weights = resolve_weights()
torch.manual_seed(0)
model = build_resnet18(num_classes=2, weights=weights, progress=False)
# 04: the features, cached; the head; the checkpoint
train_features = extract_features(model, train_set, feature_cache_dir(), progress=False)
val_features = extract_features(model, val_set, feature_cache_dir(), progress=False)
history = train_head(model.fc, train_features, val_features, epochs=1, device="cpu", progress=False)
metadata = checkpoint_metadata(choice, train_set, val_set, weights, history, train_features.number_format)
save_checkpoint(default_checkpoint_path(), model, train_set.classes, metadata)
# 05: the checkpoint loaded, the features from the cache, the predictions
checkpoint = ensure_checkpoint(locate_dataset(progress=False), progress=False)
features = extract_features(checkpoint.model, val_set, feature_cache_dir(), progress=False)
predictions = predict_dataset(checkpoint.model, val_set, features=features, progress=False)
print(f"learner done: accuracy {compute_metrics(predictions).accuracy:.2%} on {len(predictions)} images")
"""


def make_shared_folder(dest: Path, per_class: int = PER_CLASS) -> Path:
    """A real-layout folder: `per_class` images of each class copied from WORKBOOK_REAL_SAMPLE, else synthetic."""
    sample = real_sample_dir()
    if sample is None:
        return generate_dataset(dest, per_class=per_class, seed=0, progress=False)
    for name in ("Positive", "Negative"):
        (dest / name).mkdir(parents=True)
        for path in list_class_files(sample, name)[:per_class]:
            shutil.copy2(path, dest / name / path.name)
    return dest


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `folder` (the folder itself as "."): its (mode, size, mtime in ns)."""
    entries = {".": folder.stat()}
    entries |= {path.relative_to(folder).as_posix(): path.lstat() for path in folder.rglob("*")}
    return {
        name: (s.st_mode, s.st_size if stat.S_ISREG(s.st_mode) else 0, s.st_mtime_ns) for name, s in entries.items()
    }


@contextmanager
def read_only_view(folder: Path) -> Iterator[Path]:
    """`folder` made read-only for real: a read-only bind mount beside it as root, else the folder with chmod a-w
    (on Windows, which has no os.geteuid, that makes its files read-only but not the folder)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
        for path, mode in modes.items():
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    view = folder.with_name(folder.name + "_read_only")
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True, text=True)
    if mounted.returncode != 0:
        view.rmdir()
        pytest.skip(
            f"this test runs as root, who ignores permission bits, and cannot bind-mount here to make a "
            f"read-only folder ({mounted.stderr.strip() or 'mount failed'})"
        )
    try:
        remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True, text=True)
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount the bind mount read-only ({remounted.stderr.strip()})")
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()


def learner_environment(home: Path, dataset: Path) -> dict[str, str]:
    """The environment a hub's spawner gives one learner: own HOME and data folder, the shared data set."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("WORKBOOK_")}
    return {
        **env,
        "HOME": str(home),
        "WORKBOOK_DATA_DIR": str(home / "workbook-data"),
        DATASET: str(dataset),
        "WORKBOOK_QUICK": "1",
        "WORKBOOK_OFFLINE": "1",
        "WORKBOOK_ALLOW_RANDOM_WEIGHTS": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


@pytest.mark.slow
def test_two_learners_run_the_pipeline_of_notebooks_01_to_05_at_once_on_one_read_only_data_set(tmp_path):
    shared = make_shared_folder(tmp_path / "srv" / "concrete")
    with read_only_view(shared) as dataset:
        if hasattr(os, "geteuid"):  # Windows (no geteuid) lets anyone add files to a folder: the snapshots tell
            with pytest.raises(OSError):
                (dataset / "probe.txt").write_text("a learner must not be able to write here")
        before, around = snapshot(dataset), sorted(p.name for p in dataset.parent.iterdir())
        homes = [tmp_path / "home" / name for name in ("ada", "grace")]
        learners = []
        for home in homes:
            home.mkdir(parents=True)
            learners.append(
                subprocess.Popen(
                    [sys.executable, "-c", LEARNER],
                    cwd=home,
                    env=learner_environment(home, dataset),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = []
        try:
            outputs = [learner.communicate(timeout=600)[0] for learner in learners]
        finally:
            for learner in learners:
                learner.kill()
                learner.wait()
        for home, learner, output in zip(homes, learners, outputs):
            assert learner.returncode == 0, f"{home.name}'s run failed:\n{output[-4000:]}"
            assert f"{dataset.resolve()}: the class's shared data set" in output, output[-4000:]
            assert "learner done: accuracy" in output and f"on {PER_CLASS // 2} images" in output

        assert snapshot(dataset) == before, "a learner's run changed the shared data folder"
        assert sorted(p.name for p in dataset.parent.iterdir()) == around, "a learner's run wrote beside it"
        assert snapshot(shared) == before  # the folder under the mount too

    for home in homes:
        own = home / "workbook-data"
        assert len(list((own / "cache" / "features").glob("*.pt"))) == 2, f"{home.name}'s feature cache"
        assert (own / "checkpoints" / "resnet18_cracks_quick.pt").is_file()
        assert len(list((own / "cache" / "verified").glob("*.json"))) == 1  # 01 verified the shared set
        assert (own / "images" / "samples_grid.png").is_file()


@pytest.fixture
def learner(tmp_path, monkeypatch) -> Path:
    """A learner's environment in this process: own data folder, the shared set (writable here) in tmp_path/shared."""
    for name in [name for name in os.environ if name.startswith("WORKBOOK_")]:
        monkeypatch.delenv(name)
    shared = make_shared_folder(tmp_path / "shared", per_class=6)
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "learner"))
    monkeypatch.setenv(DATASET, str(shared))
    return shared


def test_the_shared_set_is_used_in_every_mode_and_nothing_is_written_beside_it(learner, monkeypatch):
    """Even when the folder happens to be writable (a teacher forgot chmod), no record lands there."""
    before = snapshot(learner)
    for quick in ("0", "1"):
        monkeypatch.setenv("WORKBOOK_QUICK", quick)
        choice = locate_dataset(progress=False)
        assert choice.path == learner.resolve() and "shared data set" in choice.reason
    monkeypatch.setattr(
        "helpers.data.download_dataset", lambda *args, **kwargs: pytest.fail("a learner's run downloads")
    )
    assert prepare_data(progress=False).path == learner.resolve()

    root = locate_dataset(progress=False).path
    report = verify_dataset(root, progress=False)
    assert report.ok and is_verified(root)
    everything = CrackDataset(root, split="all", progress=False)
    assert len(everything.content_hashes()) == 12
    CrackDataset(root, split="train", dedupe=True, progress=False)

    assert snapshot(learner) == before
    assert data_dir() in record_path(root).parents and record_path(root).is_file()
    assert data_dir() / "images" == images_dir() and data_dir() / "executed" == executed_dir()


def test_a_learner_cannot_be_pointed_at_a_data_set_that_does_not_exist(tmp_path):
    missing = tmp_path / "srv" / "concrete"
    env = {**learner_environment(tmp_path / "home", missing), "WORKBOOK_QUICK": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "run"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {DATASET}={str(missing)!r} does not exist: point it at the shared folder that "
        "holds Positive/ and Negative/ (ask your teacher where it is), or unset it.\n"
    )
    assert result.stdout == ""  # not one notebook started


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("no_negative", "has no Negative/ folder: point it at the folder that holds Positive/ and Negative/."),
        (
            "empty",
            "has no Positive/ and no Negative/ folder: point it at the folder that holds Positive/ and Negative/.",
        ),
        ("a_file", "is a file, not a folder: point it at the shared folder that holds Positive/ and Negative/"),
        ("data_dir_inside", "lies inside WORKBOOK_DATASET="),
    ],
)
def test_a_shared_data_set_that_is_not_one_is_one_sentence(tmp_path, monkeypatch, layout, expected):
    folder = tmp_path / "concrete"
    if layout == "a_file":
        folder.write_text("not a folder")
    else:
        folder.mkdir()
    for name in {"no_negative": ["Positive"], "data_dir_inside": ["Positive", "Negative"]}.get(layout, []):
        (folder / name).mkdir()
    monkeypatch.setenv(DATASET, str(folder))
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(folder / "me" if layout == "data_dir_inside" else tmp_path / "me"))
    with pytest.raises(SettingsError) as error:
        validate_settings()
    message = str(error.value)
    assert expected in message and "\n" not in message and message.replace("e.g. ", "").count(". ") == 0
    with pytest.raises(SettingsError):
        locate_dataset(progress=False)  # a notebook meets the same sentence


def test_the_teachers_download_into_a_shared_folder_then_the_learners_use_it(tmp_path, monkeypatch, capsys):
    """`python -m helpers data download --url ZIP --dest /srv/data/concrete` is the teacher's one command."""
    from helpers.commands import data_main as main

    for name in [name for name in os.environ if name.startswith("WORKBOOK_")]:
        monkeypatch.delenv(name)
    images = generate_dataset(tmp_path / "made", per_class=3, seed=1, progress=False)
    archive = tmp_path / "concrete.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted((images / "Positive").iterdir()) + sorted((images / "Negative").iterdir()):
            out.write(path, f"{path.parent.name}/{path.name}")
    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "teacher"))
    shared = tmp_path / "srv" / "data" / "concrete"
    assert main(["download", "--url", str(archive), "--dest", str(shared)]) == 0
    assert "3 Positive, 3 Negative" in capsys.readouterr().out
    assert sorted(os.listdir(shared)) == ["Negative", "Positive", "workbook_source.json"]

    monkeypatch.setenv("WORKBOOK_DATA_DIR", str(tmp_path / "learner"))
    monkeypatch.setenv(DATASET, str(shared))
    before = snapshot(shared)
    choice = locate_dataset(progress=False)
    assert choice.is_real and shared_dataset_dir() == shared.resolve()
    assert len(CrackDataset(choice.path, split="all", progress=False).content_hashes()) == 6
    assert snapshot(shared) == before
