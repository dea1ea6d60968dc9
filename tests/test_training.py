"""Tests for helpers/training.py: the training loop, the BatchNorm trap and the fast path.

ImageNet weights are not needed: every ResNet18 here is randomly initialised (weights=None)
and fed tiny images, so the whole file runs in seconds on a laptop CPU.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.dataset import CrackDataset
from helpers.features import FeatureSet
from helpers.inference import logits_from_loader
from helpers.model import backbone_of, build_resnet18
from helpers.synthetic_dataset import generate_dataset
from helpers.training import (
    History,
    evaluate,
    set_train_mode,
    train,
    train_head,
)

DEVICE = "cpu"  # the equivalence test compares CPU features with CPU training, bit for bit


def tiny_images(n: int, size: int = 32, seed: int = 0) -> TensorDataset:
    """n random 3 x size x size 'images' with alternating labels 1, 0, 1, 0, ..."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=generator)
    labels = torch.tensor([1 - i % 2 for i in range(n)])
    return TensorDataset(images, labels)


def fresh_model(seed: int = 0) -> nn.Module:
    """A ResNet18 with random weights, a frozen backbone and a new Linear(512, 2) head."""
    torch.manual_seed(seed)
    return build_resnet18(weights=None)


def rows(features: torch.Tensor, labels: torch.Tensor) -> FeatureSet:
    """A FeatureSet of given rows, as extract_features would return it."""
    return FeatureSet(features, labels, [f"row {i}" for i in range(len(labels))])


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every backbone parameter and buffer (BatchNorm statistics included)."""
    return {name: value.clone() for name, value in model.state_dict().items() if not name.startswith("fc.")}


def batchnorm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """running_mean, running_var and num_batches_tracked of every BatchNorm layer."""
    return {
        name: value.clone()
        for name, value in model.named_buffers()
        if name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


def changed(before: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Names of the entries of `before` whose values differ in the model now."""
    now = model.state_dict()
    return [name for name, value in before.items() if not torch.equal(value, now[name])]


# ----------------------------------------------------------------------------- set_train_mode
def test_set_train_mode_keeps_the_frozen_backbone_in_eval_mode():
    model = fresh_model()
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 2))  # a head with a parameter-free layer
    set_train_mode(model, frozen_backbone=True)
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batchnorms) == 20
    assert not any(bn.training for bn in batchnorms)
    assert not model.layer1.training and not model.conv1.training
    assert model.training and model.fc.training
    assert model.fc[0].training, "the head's Dropout must stay in training mode"

    set_train_mode(model, frozen_backbone=False)  # the capstone: model.train() on everything
    assert all(m.training for m in model.modules())


def test_set_train_mode_trains_everything_when_nothing_is_frozen():
    model = build_resnet18(weights=None, freeze_backbone=False)
    set_train_mode(model, frozen_backbone=True)
    assert all(m.training for m in model.modules())


# ----------------------------------------------------------------------------- what training changes
@pytest.fixture(scope="module")
def trained_models():
    """The same model trained twice on tiny images: frozen BatchNorm, and the capstone's way."""
    loader = DataLoader(tiny_images(24), batch_size=8)
    untouched = fresh_model()
    frozen_bn, capstone = copy.deepcopy(untouched), copy.deepcopy(untouched)
    train(frozen_bn, loader, epochs=1, device=DEVICE, freeze_batchnorm=True, progress=False)
    train(capstone, loader, epochs=1, device=DEVICE, freeze_batchnorm=False, progress=False)
    return untouched, frozen_bn, capstone


def test_only_fc_receives_gradients_and_changes(trained_models):
    untouched, frozen_bn, capstone = trained_models
    for model in (frozen_bn, capstone):
        backbone_grads = [
            name for name, p in model.named_parameters() if not name.startswith("fc.") and p.grad is not None
        ]
        assert backbone_grads == []
        assert model.fc.weight.grad is not None and model.fc.bias.grad is not None
        assert not torch.equal(model.fc.weight, untouched.fc.weight)
        assert not torch.equal(model.fc.bias, untouched.fc.bias)
        backbone_weights = {name: p for name, p in untouched.named_parameters() if not name.startswith("fc.")}
        assert changed(backbone_weights, model) == [], "a frozen weight changed"


def test_frozen_batchnorm_keeps_its_running_statistics(trained_models):
    untouched, frozen_bn, _ = trained_models
    assert changed(backbone_state(untouched), frozen_bn) == []


def test_capstone_train_mode_lets_batchnorm_statistics_drift(trained_models):
    untouched, _, capstone = trained_models
    drifted = changed(batchnorm_buffers(untouched), capstone)
    assert len(drifted) == 3 * 20  # every running_mean, running_var and counter of the 20 BN layers
    assert capstone.bn1.num_batches_tracked.item() == 3  # one update per batch: 24 images / 8


def test_train_returns_the_model_in_eval_mode(trained_models):
    for model in trained_models[1:]:
        assert not any(m.training for m in model.modules())


# ----------------------------------------------------------------------------- losses fall
def separable_features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """512-d noise whose first 16 numbers also say the class: shifted by +2 (label 1) or -2 (label 0)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([1 - i % 2 for i in range(n)])
    features = torch.randn(n, 512, generator=generator)
    features[:, :16] += (2.0 * labels - 1.0).unsqueeze(1) * 2.0
    return features, labels


def test_train_head_learns_a_separable_problem():
    train_x, train_y = separable_features(400, seed=1)
    val_x, val_y = separable_features(200, seed=2)
    torch.manual_seed(0)
    head = nn.Linear(512, 2)
    history = train_head(
        head, rows(train_x, train_y), rows(val_x, val_y), epochs=10, batch_size=50, device=DEVICE, progress=False
    )
    assert len(history.iteration_loss) == 10 * 8 and len(history.epoch_loss) == 10
    assert history.epoch_loss[-1] < 0.2 * history.epoch_loss[0]
    assert history.final_accuracy >= 0.95 and history.final_accuracy > history.val_accuracy[0]
    assert all(0.0 <= a <= 1.0 for a in history.val_accuracy)
    assert history.settings["path"] == "features" and history.settings["batch_size"] == 50
    assert not head.training


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """16 synthetic concrete photos (8 with cracks, 8 without), 227 x 227."""
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "concrete", per_class=8, seed=0, progress=False)


def test_train_lowers_the_loss_on_synthetic_photos(synthetic_root):
    train_set = CrackDataset(synthetic_root, split="train", progress=False)  # 12 photos
    val_set = CrackDataset(synthetic_root, split="val", progress=False)  # 4 photos
    model = fresh_model()
    # One batch of all 12 photos per epoch and a small step, so the loss falls at every epoch.
    history = train(
        model,
        DataLoader(train_set, batch_size=12),
        DataLoader(val_set, batch_size=4),
        epochs=3,
        lr=1e-4,
        device=DEVICE,
        progress=False,
    )
    assert len(history.iteration_loss) == 3 and len(history.val_accuracy) == 3
    assert history.epoch_loss[0] > history.epoch_loss[1] > history.epoch_loss[2]
    assert history.final_accuracy in {0.0, 0.25, 0.5, 0.75, 1.0}
    assert history.seconds > 0
    assert history.settings == {
        "lr": 1e-4,
        "batch_size": 12,
        "epochs": 3,
        "seed": 0,
        "optimizer": "Adam",
        "device": "cpu",
        "path": "direct",
        "backbone_mode": "eval",
    }


# ----------------------------------------------------------------------------- the two paths agree
def eval_features(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's features of every image (backbone in eval mode), batch by batch."""
    backbone = backbone_of(model).eval()
    features, labels = [], []
    with torch.no_grad():
        for images, batch_labels in loader:
            features.append(backbone(images))
            labels.append(batch_labels)
    return torch.cat(features), torch.cat(labels)


def test_direct_training_and_training_on_features_give_the_same_head():
    train_loader = DataLoader(tiny_images(20, seed=1), batch_size=8)  # 3 batches: 8, 8, 4
    val_loader = DataLoader(tiny_images(12, seed=2), batch_size=8)
    model = fresh_model()
    head = copy.deepcopy(model.fc)  # the same starting head for both paths
    capstone = copy.deepcopy(model)  # and the same model, for the capstone's train mode
    train_x, train_y = eval_features(model, train_loader)
    val_x, val_y = eval_features(model, val_loader)

    direct = train(model, train_loader, val_loader, epochs=2, seed=0, device=DEVICE, progress=False)
    fast = train_head(
        head, rows(train_x, train_y), rows(val_x, val_y), epochs=2, batch_size=8, seed=0, device=DEVICE, progress=False
    )

    torch.testing.assert_close(head.weight, model.fc.weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(head.bias, model.fc.bias, atol=1e-5, rtol=0)
    assert len(direct.iteration_loss) == len(fast.iteration_loss) == math.ceil(20 / 8) * 2
    assert len(direct.epoch_loss) == len(fast.epoch_loss) == 2
    assert direct.iteration_loss == pytest.approx(fast.iteration_loss, abs=1e-5)
    assert direct.val_accuracy == fast.val_accuracy
    assert (direct.settings["path"], fast.settings["path"]) == ("direct", "features")

    # With the capstone's model.train() the backbone sees batch statistics: a different head.
    train(capstone, train_loader, epochs=2, seed=0, device=DEVICE, freeze_batchnorm=False, progress=False)
    assert (capstone.fc.weight - head.weight).abs().max() > 1e-4


# ----------------------------------------------------------------------------- seeds
def test_train_head_is_deterministic_for_a_seed():
    features, labels = separable_features(120, seed=3)

    def run(seed: int, shuffle: bool) -> tuple[History, nn.Module]:
        torch.manual_seed(0)
        head = nn.Linear(512, 2)
        history = train_head(
            head,
            rows(features, labels),
            epochs=2,
            batch_size=25,
            shuffle=shuffle,
            seed=seed,
            device=DEVICE,
            progress=False,
        )
        return history, head

    (first, head_a), (second, head_b) = run(0, shuffle=True), run(0, shuffle=True)
    assert first.iteration_loss == second.iteration_loss and first.epoch_loss == second.epoch_loss
    assert torch.equal(head_a.weight, head_b.weight)
    assert run(1, shuffle=True)[0].iteration_loss != first.iteration_loss  # another order
    assert run(0, shuffle=False)[0].iteration_loss != first.iteration_loss  # shuffling does something
    assert run(0, shuffle=False)[0].iteration_loss == run(1, shuffle=False)[0].iteration_loss


def test_train_is_deterministic_for_a_seed():
    dataset = tiny_images(16, seed=4)

    def run(seed: int) -> History:
        loader = DataLoader(dataset, batch_size=4, shuffle=True)  # the order comes from the seed
        return train(fresh_model(), loader, epochs=1, seed=seed, device=DEVICE, progress=False)

    first, second = run(0), run(0)
    assert first.iteration_loss == second.iteration_loss and first.epoch_loss == second.epoch_loss
    assert run(1).iteration_loss != first.iteration_loss


# ----------------------------------------------------------------------------- errors
def test_train_refuses_a_model_with_nothing_to_train():
    model = fresh_model()
    model.fc.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, DataLoader(tiny_images(4), batch_size=2), device=DEVICE, progress=False)


def test_train_head_checks_its_inputs():
    features, labels = separable_features(10, seed=0)
    with pytest.raises(ValueError, match="shape"):
        train_head(nn.Linear(512, 2), rows(features, labels[:9]), device=DEVICE, progress=False)
    with pytest.raises(ValueError, match="validation data: need features of shape"):
        train_head(
            nn.Linear(512, 2), rows(features, labels), rows(features[:0], labels[:0]), device=DEVICE, progress=False
        )
    with pytest.raises(TypeError, match="need a FeatureSet"):
        train_head(nn.Linear(512, 2), features, device=DEVICE, progress=False)  # the old four-tensor call


# ----------------------------------------------------------------------------- evaluate and predict
def sign_model() -> nn.Module:
    """Logits (-x, x) for a single input x, behind a Dropout that only eval mode switches off."""
    linear = nn.Linear(1, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        linear.bias.zero_()
    return nn.Sequential(nn.Dropout(0.5), linear)


def test_predict_and_evaluate_on_a_model_with_known_answers():
    inputs = torch.tensor([[-2.0], [-1.0], [1.0], [2.0], [3.0]])
    labels = torch.tensor([0, 0, 1, 1, 0])  # the last one is wrong: 4 of 5 right
    model = sign_model().train()  # predict must switch to eval itself
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=2)  # batches of 2, 2, 1

    logits, got_labels = logits_from_loader(model, loader, device=DEVICE)
    assert logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert torch.equal(logits, torch.cat([-inputs, inputs], dim=1))
    assert torch.equal(got_labels, labels)
    assert evaluate(model, loader, device=DEVICE) == pytest.approx(0.8)
    assert evaluate(model, [(inputs[:2], labels[:2])], device=DEVICE) == 1.0  # any iterable of batches
    assert not model.training


def test_logits_from_loader_refuses_an_empty_loader():
    with pytest.raises(ValueError, match="no batches"):
        logits_from_loader(sign_model(), [], device=DEVICE)


def test_history_final_accuracy():
    assert History().final_accuracy is None
    assert History(val_accuracy=[0.5, 0.9]).final_accuracy == 0.9


def test_progress_bars_show_the_loss(capsys):
    features, labels = separable_features(20, seed=5)
    train_head(nn.Linear(512, 2), rows(features, labels), epochs=2, batch_size=10, device=DEVICE, progress=True)
    train(fresh_model(), DataLoader(tiny_images(4), batch_size=2), device=DEVICE, progress=True)
    shown = capsys.readouterr().err
    assert "epochs" in shown and "loss=" in shown and "epoch 1/1" in shown
