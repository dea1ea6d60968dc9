"""Tests for notebook 06's helpers: any number of classes (FolderDataset), and fine-tuning layer4.

No ImageNet weights are needed: every ResNet18 is randomly initialised (weights=None). The
data are a small synthetic set with three classes (8 images each), shrunk to 64x64 for
training so the whole file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from helpers.analysis import compute_metrics
from helpers.inference import predictions_from_logits
from helpers.dataset import IMAGENET_MEAN, IMAGENET_STD, DatasetNotFoundError
from helpers.dataset import FolderDataset
from helpers.plumbing import BadImageError
from helpers.features import extract_features
from helpers.model import build_resnet18, load_checkpoint, save_checkpoint
from helpers.synthetic_dataset import generate_dataset
from helpers.training import History, compare_runs, parameter_groups, set_train_mode, train, train_head, unfreeze

CLASSES = {"no_defect": "plain", "crack": "crack", "stain": "stain"}
PER_CLASS = 8
SMALL = transforms.Compose(
    [transforms.Resize(64), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = generate_dataset(
        tmp_path_factory.mktemp("three") / "data", per_class=PER_CLASS, seed=0, classes=CLASSES, progress=False
    )
    (folder / "crack" / ".DS_Store").write_bytes(b"\x00\x01")  # what macOS leaves behind
    (folder / ".ipynb_checkpoints").mkdir()  # a hidden folder is not a class
    return folder


def small_model(num_classes: int = 3):
    torch.manual_seed(0)
    return build_resnet18(num_classes=num_classes, weights=None)


# ----------------------------------------------------------------------------- FolderDataset
def test_classes_labels_and_ids_come_from_the_folders(root):
    data = FolderDataset(root, "all")
    assert data.classes == ["crack", "no_defect", "stain"]  # sorted folder names
    assert len(data) == 3 * PER_CLASS
    assert data.class_counts() == {"crack": PER_CLASS, "no_defect": PER_CLASS, "stain": PER_CLASS}
    for sample in data.samples:
        assert sample.sample_id == f"{sample.path.parent.name}/{sample.path.name}"
        assert data.classes[sample.label] == sample.path.parent.name
    assert [s.index for s in data.samples] == list(range(len(data)))
    assert [s.label for s in data.samples[:6]] == [0, 1, 2, 0, 1, 2]  # classes taken in turn
    assert not any(s.path.name == ".DS_Store" for s in data.samples)
    image, label = data[0]
    assert image.shape == (3, 227, 227) and label == 0


def test_split_keeps_the_class_balance(root):
    train, val = FolderDataset(root, "train"), FolderDataset(root, "val")
    assert train.class_counts() == {"crack": 6, "no_defect": 6, "stain": 6}  # first 75% of each class
    assert val.class_counts() == {"crack": 2, "no_defect": 2, "stain": 2}
    train_ids = {s.sample_id for s in train.samples}
    assert not train_ids & {s.sample_id for s in val.samples}
    assert "crack/00001.jpg" in train_ids
    assert FolderDataset(root, "train").samples == train.samples  # deterministic
    assert torch.equal(train.labels(), torch.tensor([s.label for s in train.samples]))


def test_missing_and_empty_folders_give_clear_errors(root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        FolderDataset(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetNotFoundError, match="at least 2"):
        FolderDataset(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes((root / "crack" / "00001.jpg").read_bytes())
    (tmp_path / "b" / ".DS_Store").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match=r"b holds no images"):
        FolderDataset(tmp_path)
    with pytest.raises(ValueError, match="split"):
        FolderDataset(root, "test")


def test_an_unreadable_image_is_named(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadImageError, match="broken.jpg"):
        FolderDataset(tmp_path, "all")[0]


def test_helpers_analysis_reads_its_predictions(root):
    data = FolderDataset(root, "val")
    logits = torch.nn.functional.one_hot(data.labels(), 3).float() * 5  # a perfect model
    predictions = predictions_from_logits(logits, data)
    assert predictions.class_names == ["crack", "no_defect", "stain"]
    assert predictions.sample_ids == [s.sample_id for s in data.samples]
    assert compute_metrics(predictions).accuracy == 1.0


def test_works_with_a_dataloader_and_extract_features(root):
    data = FolderDataset(root, "val", transform=SMALL)
    images, labels = next(iter(DataLoader(data, batch_size=4)))
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == [0, 1, 2, 0]
    features = extract_features(small_model(), data, cache_dir=None, device="cpu", progress=False)
    assert features.features.shape == (len(data), 512)
    assert features.sample_ids == [s.sample_id for s in data.samples]
    assert torch.equal(features.labels, data.labels())


# ----------------------------------------------------------------------------- three classes
def test_a_three_class_head_learns_and_its_checkpoint_names_the_classes(root, tmp_path):
    train = FolderDataset(root, "train", transform=SMALL)
    model = small_model().eval()
    features = extract_features(model, train, cache_dir=None, device="cpu", progress=False)
    history = train_head(model.fc, features, epochs=30, lr=1e-2, batch_size=6, device="cpu", progress=False)
    assert history.epoch_loss[-1] < history.epoch_loss[0] * 0.5
    path = save_checkpoint(tmp_path / "three.pt", model, train.classes, {"data": "synthetic"})
    checkpoint = load_checkpoint(path, num_classes=3)
    loaded = checkpoint.model
    assert checkpoint.class_names == ["crack", "no_defect", "stain"]
    images = torch.stack([train[i][0] for i in range(4)])
    assert torch.allclose(loaded(images), model.eval()(images))


# ----------------------------------------------------------------------------- fine-tuning
def test_unfreeze_makes_only_layer4_and_the_head_trainable():
    model = small_model()
    names = unfreeze(model)
    assert set(names) == {n for n, _ in model.named_parameters() if n.startswith(("layer4.", "fc."))}
    with pytest.raises(ValueError, match="no block called 'layer9'"):
        unfreeze(model, ("layer9",))


def test_parameter_groups_give_the_backbone_a_smaller_learning_rate():
    model = small_model()
    assert [g["name"] for g in parameter_groups(model)] == ["head"]  # nothing unfrozen yet
    unfreeze(model)
    groups = parameter_groups(model, head_lr=1e-3, backbone_lr=1e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-3), ("backbone", 1e-4)]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.fc.parameters()}
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each once


def test_fine_tuning_changes_layer4_and_the_head_only(root):
    train_set = FolderDataset(root, "train", transform=SMALL)
    val_loader = DataLoader(FolderDataset(root, "val", transform=SMALL), batch_size=6)
    model = small_model()
    unfreeze(model)
    set_train_mode(model)
    assert model.layer4[0].bn1.training and not model.bn1.training and not model.layer3[0].bn1.training
    before = copy.deepcopy(model.state_dict())
    loader = DataLoader(train_set, batch_size=6, shuffle=True)
    history = train(model, loader, val_loader, epochs=3, lr=1e-2, backbone_lr=1e-3, device="cpu", progress=False)
    changed = {name for name, value in model.state_dict().items() if not torch.equal(before[name], value)}
    assert {"fc.weight", "layer4.1.conv2.weight", "layer4.0.bn1.running_mean"} <= changed  # BatchNorm learns too
    assert all(name.startswith(("layer4.", "fc.")) for name in changed)  # conv1, bn1, layer1-3 untouched
    assert history.epoch_loss[-1] < history.epoch_loss[0] and len(history.val_accuracy) == 3
    assert not model.training

    still = small_model()
    unfreeze(still)
    train(still, loader, epochs=1, backbone_lr=0.0, device="cpu", progress=False)  # the backbone's rate is used
    assert torch.equal(still.layer4[1].conv2.weight, before["layer4.1.conv2.weight"])

    lines = compare_runs({"layer4 + head": (model, history), "head only": (still, History())}).splitlines()
    assert "trainable parameters" in lines[0] and len(lines) == 4
    assert f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,}" in lines[2]
    assert lines[2].split()[-1] == f"{history.final_accuracy:.2%}" and lines[3].split()[-1] == "-"
