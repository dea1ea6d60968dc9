"""Tests for helpers/training.py: the capstone's loop, the BatchNorm trap and the fast path.

Every ResNet18 here is randomly initialised (no ImageNet weights) and fed tiny images, so the
file runs in seconds on a CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.features import FeatureSet
from helpers.inference import logits_from_loader
from helpers.model import backbone_of, build_resnet18
from helpers.training import evaluate, set_train_mode, train, train_head

DEVICE = "cpu"  # the equivalence tests compare CPU features with CPU training


def tiny_images(n: int, seed: int = 0) -> TensorDataset:
    """n random 3 x 32 x 32 'images' with alternating labels 1, 0, 1, 0, ..."""
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(images, torch.tensor([1 - i % 2 for i in range(n)]))


def fresh_model() -> nn.Module:
    """A ResNet18 with random weights, a frozen backbone and a new Linear(512, 2) head."""
    torch.manual_seed(0)
    return build_resnet18(weights=None)


def separable(n: int, seed: int) -> FeatureSet:
    """512 numbers of noise per row whose first 16 are shifted by +2 (label 1) or -2 (label 0)."""
    labels = torch.tensor([1 - i % 2 for i in range(n)])
    features = torch.randn(n, 512, generator=torch.Generator().manual_seed(seed))
    features[:, :16] += (4.0 * labels - 2.0).unsqueeze(1)
    return FeatureSet(features, labels, [f"row {i}" for i in range(n)])


def test_train_head_is_notebook_04s_loop_to_the_bit():
    rows = separable(250, seed=1)
    torch.manual_seed(0)
    head = nn.Linear(512, 2)
    start = copy.deepcopy(head)
    optimizer, criterion, loss_list = torch.optim.Adam(head.parameters(), lr=0.001), nn.CrossEntropyLoss(), []
    torch.manual_seed(0)
    head.train()
    for x, y in DataLoader(rows.tensor_dataset(), batch_size=100):
        optimizer.zero_grad()
        loss = criterion(head(x), y)
        loss.backward()
        optimizer.step()
        loss_list.append(loss.item())

    history = train_head(start, rows, epochs=1, lr=0.001, batch_size=100, seed=0, device=DEVICE, progress=False)
    assert history.iteration_loss == loss_list and len(loss_list) == 3
    assert torch.equal(start.weight, head.weight) and torch.equal(start.bias, head.bias)


def test_train_head_learns_and_validates_after_every_epoch():
    head = nn.Linear(512, 2)
    history = train_head(head, separable(420, 1), separable(200, 2), epochs=10, batch_size=50, progress=False)
    assert len(history.iteration_loss) == 10 * 9 and len(history.epoch_loss) == len(history.val_accuracy) == 10
    assert history.epoch_loss[1] == pytest.approx(sum(history.iteration_loss[9:18]) / 9)  # 9 batches, the last of 20
    assert history.epoch_loss[-1] < 0.2 * history.epoch_loss[0]
    assert history.final_accuracy == history.val_accuracy[-1] >= 0.95 and history.seconds > 0
    assert not head.training


def test_the_direct_path_gives_the_head_the_fast_path_gives_unless_batchnorm_drifts():
    train_loader = DataLoader(tiny_images(20, seed=1), batch_size=8)  # 3 batches: 8, 8, 4
    val_loader = DataLoader(tiny_images(12, seed=2), batch_size=8)
    model = fresh_model()
    untouched = copy.deepcopy(model)
    head, capstone = copy.deepcopy(model.fc), copy.deepcopy(model)
    backbone = backbone_of(model).eval()
    with torch.no_grad():
        train_rows, val_rows = (
            FeatureSet(torch.cat([backbone(x) for x, _ in loader]), torch.cat([y for _, y in loader]), [])
            for loader in (train_loader, val_loader)
        )

    direct = train(model, train_loader, val_loader, epochs=2, device=DEVICE, progress=False)
    fast = train_head(head, train_rows, val_rows, epochs=2, batch_size=8, device=DEVICE, progress=False)
    torch.testing.assert_close(head.weight, model.fc.weight, atol=1e-5, rtol=0)
    assert direct.iteration_loss == pytest.approx(fast.iteration_loss, abs=1e-5) and len(fast.iteration_loss) == 6
    assert direct.val_accuracy == fast.val_accuracy
    backbone_state = {k: v for k, v in untouched.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone_state.items())  # statistics included
    assert not any(m.training for m in model.modules())

    # The capstone's model.train(): the frozen weights stay, but every BatchNorm statistic drifts.
    train(capstone, train_loader, epochs=2, device=DEVICE, freeze_batchnorm=False, progress=False)
    changed = {k for k, v in backbone_state.items() if not torch.equal(v, capstone.state_dict()[k])}
    assert changed == {k for k in backbone_state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert len(changed) == 3 * 20 and capstone.bn1.num_batches_tracked.item() == 6
    assert (capstone.fc.weight - head.weight).abs().max() > 1e-4  # so the head learns something else


def test_set_train_mode_keeps_frozen_parts_in_eval_mode_and_the_heads_dropout_training():
    model = fresh_model()
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 2))
    set_train_mode(model)
    assert model.training and model.fc[0].training
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model.requires_grad_(True)  # nothing frozen: plain model.train()
    set_train_mode(model)
    assert all(m.training for m in model.modules())


def test_a_seed_gives_a_shuffling_loader_the_same_order_again():
    def run(seed: int) -> list[float]:
        loader = DataLoader(tiny_images(16, seed=4), batch_size=4, shuffle=True)
        return train(fresh_model(), loader, seed=seed, device=DEVICE, progress=False).iteration_loss

    first = run(0)
    assert run(0) == first and run(1) != first


def test_bad_training_stops_with_one_sentence():
    with pytest.raises(ValueError, match=r"The loss became \w+ at step 2, .*lower the learning rate"):
        train_head(nn.Linear(512, 2), separable(20, 0), epochs=2, batch_size=20, lr=float("inf"), progress=False)
    frozen = nn.Linear(512, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_head(frozen, separable(20, 0), progress=False)
    with pytest.raises(ValueError, match="no batches"):
        train(fresh_model(), DataLoader(tiny_images(3), batch_size=4, drop_last=True), device=DEVICE, progress=False)


def test_evaluate_and_logits_from_loader_run_in_eval_mode():
    linear = nn.Linear(1, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        linear.bias.zero_()
    model = nn.Sequential(nn.Dropout(0.5), linear).train()  # logits (-x, x) once Dropout is off
    inputs, labels = torch.tensor([[-2.0], [-1.0], [1.0], [2.0], [3.0]]), torch.tensor([0, 0, 1, 1, 0])
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=2)
    logits, got_labels = logits_from_loader(model, loader, device=DEVICE)
    assert torch.equal(logits, torch.cat([-inputs, inputs], dim=1)) and torch.equal(got_labels, labels)
    assert evaluate(model, loader, device=DEVICE) == pytest.approx(0.8)  # the last one is wrong
    assert evaluate(model, [(inputs[:2], labels[:2])], device=DEVICE) == 1.0  # any iterable of batches
    assert not model.training
    with pytest.raises(ValueError, match="no batches"):
        logits_from_loader(model, [], device=DEVICE)
