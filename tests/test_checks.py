"""The exercise checks: they pass the reference solutions and right answers written in other styles, catch
the typical wrong answers with a hint that names the mistake, never raise (an unanswered stub says so, a
crash is reported as that crash), and every exercise in the notebooks calls one of them."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import checks
from helpers.analysis import Comparison, compare_on_same_images, threshold_curve
from helpers.inference import Predictions

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = {"02_dataset_class", "03_replace_the_head", "04_training", "05_misclassification", "06_going_further"}


def load_solution(stem: str):
    """Import solutions/<stem>.py by path (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"solutions_{stem}", SOLUTIONS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# check name -> (solution file, answer name in it and in the notebook)
EXERCISES = {
    "check_interleave": ("ex02_dataset_class", "my_interleave"),
    "check_split_sizes": ("ex02_dataset_class", "my_split_sizes"),
    "check_leak_counts": ("ex02_dataset_class", "my_leak_counts"),
    "check_new_head": ("ex03_replace_the_head", "my_new_head"),
    "check_trainable_per_block": ("ex03_replace_the_head", "my_trainable_per_block"),
    "check_train_one_epoch": ("ex04_training", "my_train_one_epoch"),
    "check_more_epochs": ("ex04_training", "my_decision"),
    "check_batchnorm_prediction": ("ex04_training", "my_prediction"),
    "check_confident_mistakes": ("ex05_misclassification", "my_confident_mistakes"),
    "check_precision_recall": ("ex05_misclassification", "my_precision_recall"),
    "check_threshold_for_recall": ("ex05_misclassification", "my_threshold"),
    "check_tiles_above": ("ex06_going_further", "my_tiles_above"),
    "check_unfreeze": ("ex06_going_further", "my_unfreeze"),
    "check_parameter_groups": ("ex06_going_further", "my_parameter_groups"),
}
# the interpretive exercises: the answer is a value (a decision), checked against this run's objects
VALUE_CHECKS = {"check_more_epochs", "check_batchnorm_prediction", "check_threshold_for_recall"}
FUNCTION_CHECKS = [name for name in EXERCISES if name not in VALUE_CHECKS]


def run_check(check_name: str, answer, capsys, *objects) -> tuple[bool, str]:
    """Run a check (with the run's objects a value check needs); return its verdict and the one line it printed."""
    result = getattr(checks, check_name)(answer, *objects)
    printed = capsys.readouterr().out.strip()
    assert "\n" not in printed, f"a check prints one sentence, got {printed!r}"
    return result, printed


def assert_right(check_name: str, answer, capsys, *objects) -> None:
    result, printed = run_check(check_name, answer, capsys, *objects)
    assert result is True and printed.startswith("Well done:"), printed


def assert_wrong(check_name: str, answer, hint: str, capsys, *objects) -> None:
    result, printed = run_check(check_name, answer, capsys, *objects)
    assert result is False and printed.startswith("Not yet:"), printed
    assert hint in printed, printed


# ----------------------------------------------------------------------------- reference, unanswered, broken
@pytest.mark.parametrize("check_name", FUNCTION_CHECKS)
def test_reference_solution_passes(check_name, capsys):
    stem, answer_name = EXERCISES[check_name]
    assert_right(check_name, getattr(load_solution(stem), answer_name), capsys)


def _returns_none(*args):
    return None


def _not_implemented(*args):
    raise NotImplementedError


@pytest.mark.parametrize("stub", [_returns_none, _not_implemented], ids=["returns None", "raises"])
@pytest.mark.parametrize("check_name", FUNCTION_CHECKS)
def test_unanswered_stub_says_so_and_does_not_raise(check_name, stub, capsys):
    result, printed = run_check(check_name, stub, capsys)
    assert result is False and printed.startswith("Not answered yet:"), printed


@pytest.mark.parametrize(
    "error",
    [ZeroDivisionError("division by zero"), ValueError("bad shape"), NameError("name 'np' is not defined")],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("check_name", FUNCTION_CHECKS)
def test_an_answer_that_crashes_is_reported_as_that_crash(check_name, error, capsys):
    def broken(*args):
        raise error

    result, printed = run_check(check_name, broken, capsys)
    assert result is False and printed.startswith("Not yet: your function raised"), printed
    assert type(error).__name__ in printed and str(error) in printed


# ----------------------------------------------------------------------------- notebook 02: wrong and right answers
def _interleave_concatenated(groups):
    return [f for _, files in groups for f in files], [label for label, files in groups for _ in files]


def _interleave_two_only(groups):
    (first_label, first), (second_label, second) = groups[0], groups[1]  # ignores a third group
    files = [None] * (len(first) + len(second))
    files[::2], files[1::2] = first, second
    return files, [first_label if i % 2 == 0 else second_label for i in range(len(files))]


def _interleave_positions_as_labels(groups):
    files = _interleave_loop(groups)[0]
    return files, [i % len(groups) for i in range(len(files))]


def _interleave_sorted_labels(groups):
    order = sorted(groups, key=lambda group: group[0])
    return _interleave_loop(order)


def _interleave_loop(groups):
    files, labels = [], []
    for i in range(len(groups[0][1])):
        for label, group in groups:
            files.append(group[i])
            labels.append(label)
    return files, labels


def _interleave_zip(groups):
    labels_of = [label for label, _ in groups]
    rounds = zip(*[files for _, files in groups])
    files = [f for round_ in rounds for f in round_]
    return files, labels_of * (len(files) // len(groups))


def _interleave_slices(groups):
    k, n = len(groups), len(groups[0][1])
    files, labels = [None] * (k * n), [None] * (k * n)
    for j, (label, group) in enumerate(groups):
        files[j::k] = group
        labels[j::k] = [label] * n
    return tuple(files), torch.tensor(labels)


def _sizes(n, *, how="floor"):
    if how == "floats":
        return n * 0.7 // 1, n * 0.15 // 1, n - n * 0.7 // 1 - n * 0.15 // 1
    if how == "round":
        train, val = round(n * 0.7), round(n * 0.15)
    elif how == "ceil":
        train, val = math.ceil(n * 0.7), math.ceil(n * 0.15)
    elif how == "cumulative":
        train, val = n * 70 // 100, n * 85 // 100 - n * 70 // 100
    else:
        train, val = int(n * 0.7), int(n * 0.15)
    if how == "test floored":
        return train, val, int(n * 0.15)
    if how == "order":
        return n - train - val, train, val
    return train, val, n - train - val


def _leaks(train, val, *, first="val", second="after first"):
    if first == "distinct":
        leaked = len(set(train) & set(val))
    elif first == "train side":
        leaked = sum(digest in set(val) for digest in train)
    elif first == "per picture":
        leaked = len({digest for digest in val if digest in set(train)})
    else:
        leaked = sum(digest in set(train) for digest in val)
    if second == "every member":
        repeated = sum(val.count(digest) for digest in set(val) if val.count(digest) > 1)
    elif second == "none":
        repeated = 0
    elif second == "distinct":
        repeated = len(set(val))
    else:
        repeated = len(val) - len(set(val))
    return leaked, repeated


def _leaks_loop(train, val):
    seen_train, seen_val, leaked, repeated = set(train), set(), 0, 0
    for digest in val:
        leaked += digest in seen_train
        repeated += digest in seen_val
        seen_val.add(digest)
    return [leaked, repeated]


def _leaks_numpy(train, val):
    val = np.array(val)
    return np.isin(val, np.array(train)).sum(), val.size - np.unique(val).size


# ----------------------------------------------------------------------------- notebook 03
def _head_not_frozen(model):
    model.fc = nn.Linear(512, 3)
    return model


def _head_frozen_too(model):
    model.fc = nn.Linear(512, 3)
    model.requires_grad_(False)
    return model


def _head_two_classes(model):
    model.requires_grad_(False)
    model.fc = nn.Linear(512, 2)
    return model


def _head_no_return(model):
    model.requires_grad_(False)
    model.fc = nn.Linear(512, 3)


def _per_block(model, *, what="trainable", keys="blocks"):
    counts = {}
    pairs = (
        model.named_parameters()
        if keys == "names"
        else ((f"{block}.{name}", p) for block, child in model.named_children() for name, p in child.named_parameters())
    )
    for name, p in pairs:
        key = name if keys == "names" else name.split(".")[0]
        if what == "tensors":
            counts[key] = counts.get(key, 0) + int(p.requires_grad)
        elif what == "all":
            counts[key] = counts.get(key, 0) + p.numel()
        elif what == "frozen":
            counts[key] = counts.get(key, 0) + p.numel() * (not p.requires_grad)
        else:
            counts[key] = counts.get(key, 0) + p.numel() * p.requires_grad
    return counts


def _per_block_comprehension(model):
    return {
        name: sum(p.numel() for p in block.parameters() if p.requires_grad)
        for name, block in model.named_children()
        if any(p.requires_grad for p in block.parameters())
    }


def _per_block_tensors_as_values(model):
    return {
        name: torch.tensor(sum(p.numel() for p in block.parameters() if p.requires_grad))
        for name, block in model.named_children()
    }


# ----------------------------------------------------------------------------- notebook 04
def _epoch(head, batches, optimizer, criterion, *, order="zfbs", train=True, result="floats"):
    """A configurable answer for check_train_one_epoch. `order` spells each batch's calls: z = zero_grad,
    f = outputs and loss, b = backward, s = step ("zfbs" is right); `result` is what it returns."""
    if train:
        head.train()
    losses = []
    for features, labels in batches:
        for call in order:
            if call == "z":
                optimizer.zero_grad()
            elif call == "f":
                loss = criterion(head(features), labels)
            elif call == "b":
                loss.backward()
            elif call == "s":
                optimizer.step()
        losses.append(loss if result == "tensors" else loss.item())
    if result == "mean":
        return sum(losses) / len(losses)
    if result == "last":
        return losses[-1:]  # the append after the loop: one loss
    if result == "stacked":
        return torch.tensor(losses)
    return losses


def _epoch_own_optimizer(head, batches, optimizer, criterion):
    return _epoch(head, batches, torch.optim.Adam(head.parameters(), lr=0.001), criterion)


def _epoch_variant(head, batches, optimizer, criterion):
    """zero_grad(set_to_none=False), head.train() in the loop, a tuple of numbers: all the capstone's loop."""
    losses = ()
    for features, labels in batches:
        head.train(True)
        optimizer.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(head(features), labels)
        loss.backward()
        optimizer.step()
        losses += (loss.item(),)
    return losses


# ----------------------------------------------------------------------------- notebook 05
def _confident(probabilities, labels, k, *, order="confidence", mistakes_only=True, crack_sort=False):
    """A configurable wrong answer for check_confident_mistakes."""
    confidence, predicted = probabilities.max(dim=1)
    indices = [i for i in range(len(labels)) if not mistakes_only or predicted[i] != labels[i]]
    if order == "confidence":
        key = (lambda i: -float(probabilities[i, 1])) if crack_sort else (lambda i: -float(confidence[i]))
        indices.sort(key=key)
    elif order == "least":
        indices.sort(key=lambda i: float(confidence[i]))
    return indices[:k]


def _confident_torch(probabilities, labels, k):
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    return wrong[confidence[wrong].argsort(descending=True)][:k]


def _confident_numpy(probabilities, labels, k):
    p, y = probabilities.numpy(), labels.numpy()
    wrong = np.flatnonzero(p.argmax(axis=1) != y)
    return wrong[np.argsort(-p.max(axis=1)[wrong], kind="stable")][:k]


def _pr(confusion, *, swap=False, cls=1, scale=1.0):
    c = confusion.double()
    precision, recall = float(c[cls, cls] / c[:, cls].sum()), float(c[cls, cls] / c[cls, :].sum())
    return (scale * recall, scale * precision) if swap else (scale * precision, scale * recall)


def _pr_numpy(confusion):
    c = np.asarray(confusion, dtype=float)
    tp = c[1, 1]
    return np.float64(tp / c[:, 1].sum()), np.float64(tp / c[1].sum())


# ----------------------------------------------------------------------------- notebook 06
def _tiles(probabilities, threshold, strict=False, below=False):
    rows, cols = probabilities.shape
    keep = (lambda p: p < threshold) if below else (lambda p: p > threshold) if strict else (lambda p: p >= threshold)
    return [(r, c) for r in range(rows) for c in range(cols) if keep(probabilities[r, c])]


def _tiles_torch_only(probabilities, threshold):
    return [tuple(rc) for rc in (probabilities >= threshold).nonzero().tolist()]  # numpy has no .nonzero().tolist()


def _unfreeze(model, blocks, freeze_head=False, partly=False):
    for block in blocks:
        parameters = list(getattr(model, block).parameters())
        for parameter in parameters[: len(parameters) // 2] if partly else parameters:
            parameter.requires_grad = True
    if freeze_head:
        for parameter in model.fc.parameters():
            parameter.requires_grad = False
    return model


def _groups(model, head_lr, backbone_lr, *, how="right"):
    head = list(model.fc.parameters())
    layer4 = [p for p in model.layer4.parameters() if p.requires_grad]
    layer3 = [p for p in model.layer3.parameters() if p.requires_grad]
    early_rate = {"same": backbone_lr, "head": head_lr}.get(how, backbone_lr / 10)
    groups = [
        {"params": head, "lr": head_lr},
        {"params": layer4, "lr": backbone_lr},
        {"params": layer3, "lr": early_rate},
    ]
    if how == "one group":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": head_lr}]
    if how == "backbone together":  # helpers.finetune.parameter_groups: two groups
        return [{"params": head, "lr": head_lr}, {"params": layer4 + layer3, "lr": backbone_lr}]
    if how == "swapped":
        groups[0]["lr"], groups[1]["lr"] = backbone_lr, head_lr
    if how == "layer3 always":
        groups[2]["params"] = list(model.layer3.parameters())
    if how == "head twice":
        groups[1]["params"] = list(model.fc.parameters()) + layer4
    if how == "no lr":
        del groups[1]["lr"]
    if how == "no head":
        del groups[0]
    if how == "no layer3":
        del groups[2]
    return groups


def _groups_by_name(model, head_lr, backbone_lr):
    groups = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            block = name.split(".")[0]
            rate = {"fc": head_lr, "layer4": backbone_lr}.get(block, backbone_lr * 0.1)
            groups.setdefault(block, {"params": [], "lr": rate})["params"].append(parameter)
    return list(groups.values())


def _groups_as_generators(model, head_lr, backbone_lr):
    def trainable(block):
        return (p for p in block.parameters() if p.requires_grad)

    return (
        {"params": trainable(model.fc), "lr": head_lr},
        {"params": trainable(model.layer4), "lr": backbone_lr},
        {"params": trainable(model.layer3), "lr": backbone_lr / 10},
    )


WRONG_ANSWERS = [
    ("check_interleave", _interleave_concatenated, "each group comes whole"),
    ("check_interleave", _interleave_two_only, "every file of every group"),
    ("check_interleave", _interleave_positions_as_labels, "count the groups' positions"),
    ("check_interleave", _interleave_sorted_labels, "not in the order the groups were given"),
    ("check_interleave", lambda groups: [(f, 1) for f in groups[0][1]], "as a pair `(files, labels)`"),
    (
        "check_interleave",
        lambda groups: (sorted(_interleave_loop(groups)[0])[::-1], _interleave_loop(groups)[1]),
        "the files should be",
    ),  # sorted backwards by name: neither whole groups nor turns
    ("check_split_sizes", lambda n: _sizes(n, how="round"), "was rounded up"),
    ("check_split_sizes", lambda n: _sizes(n, how="ceil"), "was rounded up"),
    ("check_split_sizes", lambda n: (math.ceil(n * 0.7), math.ceil(n * 0.15), math.ceil(n * 0.15)), "more than the"),
    ("check_split_sizes", lambda n: _sizes(n, how="test floored"), "fall into no part"),
    ("check_split_sizes", lambda n: _sizes(n, how="floats"), "floats"),
    ("check_split_sizes", lambda n: (n * 0.7, n * 0.15, n * 0.15), "round each share down"),
    ("check_split_sizes", lambda n: _sizes(n, how="cumulative"), "where validation ends"),
    ("check_split_sizes", lambda n: _sizes(n, how="order"), "wrong order"),
    ("check_split_sizes", lambda n: n * 7 // 10, "three sizes"),
    ("check_leak_counts", lambda t, v: _leaks(t, v, first="distinct"), "distinct pictures both splits share"),
    ("check_leak_counts", lambda t, v: _leaks(t, v, first="train side"), "counted training images"),
    ("check_leak_counts", lambda t, v: _leaks(t, v, second="every member"), "its first image too"),
    ("check_leak_counts", lambda t, v: _leaks(t, v, second="none"), "copies inside validation count too"),
    ("check_leak_counts", lambda t, v: _leaks(t, v, second="distinct"), "distinct pictures in validation"),
    ("check_leak_counts", lambda t, v: _leaks(t, v)[::-1], "swapped"),
    ("check_leak_counts", lambda t, v: sum(d in set(t) for d in v), "two counts"),
    ("check_new_head", _head_not_frozen, "backbone parameters can still learn"),
    ("check_new_head", _head_frozen_too, "freeze first, then replace"),
    ("check_new_head", _head_two_classes, "2 outputs"),
    ("check_trainable_per_block", lambda m: _per_block(m, what="tensors"), "counted parameter tensors"),
    ("check_trainable_per_block", lambda m: _per_block(m, what="all"), "the frozen ones too"),
    ("check_trainable_per_block", lambda m: _per_block(m, what="frozen"), "counted the frozen numbers"),
    ("check_trainable_per_block", lambda m: _per_block(m, keys="names"), "not blocks of the model"),
    ("check_trainable_per_block", lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad), "return a dict"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, order="fbs"), "gradients accumulate"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, order="szfb"), "previous batch's gradients"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, order="fszb"), "previous batch's gradients"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, order="fbzs"), "between `loss.backward()` and `optimizer.step()`"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, order="zfsb"), "runs before `loss.backward()`"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, order="zfb"), "`optimizer.step()` is never called"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, train=False), "stayed in eval mode"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, result="tensors"), "losses are tensors"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, result="stacked"), "you returned a tensor"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, result="last"), "1 loss for 4 batches"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, result="mean"), "the mean of the losses"),
    ("check_train_one_epoch", _epoch_own_optimizer, "never stepped"),
    ("check_train_one_epoch", lambda *a: _epoch(*a, order="zfbss"), "differ from the capstone loop's"),
    ("check_confident_mistakes", lambda p, y, k: _confident(p, y, k, order="least"), "least confident mistakes first"),
    ("check_confident_mistakes", lambda p, y, k: _confident(p, y, k, mistakes_only=False), "includes right answers"),
    ("check_confident_mistakes", lambda p, y, k: _confident(p, y, k, order="index"), "in order of index"),
    ("check_confident_mistakes", lambda p, y, k: _confident(p, y, k, crack_sort=True), "probability of a crack"),
    ("check_confident_mistakes", lambda p, y, k: _confident(p, y, len(y)), "at most k indices"),
    ("check_precision_recall", lambda c: _pr(c, swap=True), "are swapped"),
    ("check_precision_recall", lambda c: _pr(c, cls=0), "no-crack class"),
    ("check_precision_recall", lambda c: _pr(c, scale=100.0), "percentages"),
    ("check_precision_recall", lambda c: 0.5, "return two numbers"),
    ("check_tiles_above", lambda p, t: [(c, r) for r, c in _tiles(p, t)], "(column, row)"),
    ("check_tiles_above", lambda p, t: _tiles(p, t, strict=True), "includes the threshold itself"),
    ("check_tiles_above", lambda p, t: _tiles(p, t, below=True), "below the threshold"),
    ("check_tiles_above", lambda p, t: sorted(_tiles(p, t), key=lambda rc: (rc[1], rc[0])), "row by row"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer4",)), "unfreeze `model.layer3` too"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer1", "layer2", "layer3", "layer4")), "layer1, layer2 can learn"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer3", "layer4"), freeze_head=True), "no longer learns"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer3", "layer4"), partly=True), "only part of layer3"),
    *[
        ("check_parameter_groups", partial(_groups, how=how), hint)
        for how, hint in {
            "one group": "everything learns at the head's rate",
            "backbone together": "layer3 learns at layer4's rate",  # helpers.finetune's two groups
            "same": "layer3 learns at layer4's rate",
            "head": "layer3 learns at the head's rate",
            "swapped": "the head learns at the backbone's rate",
            "layer3 always": "frozen parameters sit in your groups",  # layer3's parameters, frozen or not
            "head twice": "sits in two groups",
            "no lr": "no \"lr\" of its own",
            "no head": "the head can learn but is in no group",
            "no layer3": "layer3 can learn but is in no group",
        }.items()
    ],
    ("check_parameter_groups", lambda m, h, b: {"params": m.parameters(), "lr": h}, "a list of dicts"),
]

RIGHT_ANSWERS = [
    ("check_interleave", _interleave_loop),
    ("check_interleave", _interleave_zip),
    ("check_interleave", _interleave_slices),  # a tuple of files and a tensor of labels
    ("check_split_sizes", lambda n: _sizes(n)),  # int(n * 0.7)
    (
        "check_split_sizes",
        lambda n: [math.floor(n * 0.7), math.floor(n * 0.15), n - math.floor(n * 0.7) - math.floor(n * 0.15)],
    ),
    ("check_split_sizes", lambda n: torch.tensor([n * 7 // 10, n * 15 // 100, n - n * 7 // 10 - n * 15 // 100])),
    ("check_split_sizes", lambda n: tuple(np.array([n * 70 // 100, n * 15 // 100, n - n * 70 // 100 - n * 15 // 100]))),
    ("check_leak_counts", _leaks_loop),
    ("check_leak_counts", _leaks_numpy),  # numpy integers
    ("check_leak_counts", lambda t, v: (sum(1 for d in v if d in t), sum(1 for i, d in enumerate(v) if d in v[:i]))),
    ("check_new_head", lambda m: (m.requires_grad_(False), setattr(m, "fc", nn.Linear(m.fc.in_features, 3)), m)[-1]),
    ("check_trainable_per_block", _per_block),  # frozen blocks given 0
    ("check_trainable_per_block", _per_block_comprehension),  # frozen blocks left out
    ("check_trainable_per_block", _per_block_tensors_as_values),
    ("check_train_one_epoch", _epoch),
    ("check_train_one_epoch", _epoch_variant),
    ("check_confident_mistakes", _confident),
    ("check_confident_mistakes", _confident_torch),  # a tensor of indices
    ("check_confident_mistakes", _confident_numpy),  # a numpy array of indices
    ("check_precision_recall", _pr),
    ("check_precision_recall", _pr_numpy),
    ("check_precision_recall", lambda c: [(c[1, 1] / c[:, 1].sum()).item(), c[1, 1].item() / c[1].sum().item()]),
    ("check_tiles_above", _tiles),
    ("check_tiles_above", lambda p, t: np.argwhere(p >= t)),  # an (N, 2) array
    ("check_tiles_above", lambda p, t: [[int(r), int(c)] for r, c in zip(*np.nonzero(p >= t))]),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer3", "layer4"))),
    ("check_unfreeze", lambda m: (m.layer3.requires_grad_(True), m.layer4.requires_grad_(True), m)[-1]),
    ("check_parameter_groups", _groups),
    ("check_parameter_groups", _groups_by_name),
    ("check_parameter_groups", _groups_as_generators),
]


@pytest.mark.parametrize(
    "check_name, answer, hint", WRONG_ANSWERS, ids=[f"{name}-{hint}" for name, _, hint in WRONG_ANSWERS]
)
def test_typical_wrong_answer_gets_the_hint_that_names_it(check_name, answer, hint, capsys):
    assert_wrong(check_name, answer, hint, capsys)


@pytest.mark.parametrize(
    "check_name, answer", RIGHT_ANSWERS, ids=[f"{name}-{i}" for i, (name, _) in enumerate(RIGHT_ANSWERS)]
)
def test_right_answer_in_another_style_passes(check_name, answer, capsys):
    assert_right(check_name, answer, capsys)


def test_every_function_check_has_wrong_and_right_answers():
    assert {name for name, *_ in WRONG_ANSWERS} == set(FUNCTION_CHECKS)
    assert {name for name, _ in RIGHT_ANSWERS} == set(FUNCTION_CHECKS)


@pytest.mark.parametrize("check_name", FUNCTION_CHECKS)
def test_an_answer_of_an_unforeseen_shape_is_told_so_not_raised(check_name, capsys):
    """Whatever comes back (here a list of an int, a string and a set), the check answers in one sentence."""
    result, printed = run_check(check_name, lambda *args: [1, "a", {2}], capsys)
    assert result is False and printed.startswith("Not yet:"), printed


def test_an_answer_the_check_cannot_compare_is_told_so_not_raised(capsys):
    """Files that are lists cannot go in a set to compare them: the check says so in its sentence."""

    def answer(groups):
        return [[file] for _, group in groups for file in group][::-1], [1, 0, 2, 1, 0, 2]

    result, printed = run_check("check_interleave", answer, capsys)
    assert result is False and printed.startswith("Not yet: the check could not read your answer"), printed


def test_forgotten_return_is_reminded(capsys):
    """A function without `return` gives None, like the stub: the reminder is in the unanswered sentence."""
    result, printed = run_check("check_new_head", _head_no_return, capsys)
    assert result is False and "remember to `return model`" in printed


def test_hard_coded_answers_do_not_pass(capsys):
    """Each check tries more than one case, so an answer fitted to one example fails."""
    assert not run_check("check_trainable_per_block", lambda model: {"layer4": 8_393_728, "fc": 1_026}, capsys)[0]
    assert not run_check("check_split_sizes", lambda n: (28_000, 6_000, 6_000), capsys)[0]
    assert not run_check("check_precision_recall", lambda c: (35 / 45, 35 / 40), capsys)[0]
    assert not run_check("check_leak_counts", lambda t, v: (0, 2), capsys)[0]


def test_train_one_epoch_leaves_the_random_numbers_alone(capsys):
    """The check seeds its own case, but the notebook's random numbers go on as if it had not run."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_check("check_train_one_epoch", load_solution("ex04_training").my_train_one_epoch, capsys)
    assert torch.equal(torch.rand(3), expected)


def test_train_one_epoch_gives_each_run_a_fresh_head(capsys):
    """Running the check twice gives the same verdict: the answer never trains a head a previous run trained."""
    answer = load_solution("ex04_training").my_train_one_epoch
    assert run_check("check_train_one_epoch", answer, capsys)[0]
    assert run_check("check_train_one_epoch", answer, capsys)[0]


def test_a_right_answer_that_changes_its_inputs_still_passes(capsys):
    """The check judges the answer against its own cases, not against inputs the answer changed in place."""

    def tiles_then_clear(probabilities, threshold):
        tiles = [tuple(rc) for rc in np.argwhere(probabilities >= threshold)]
        probabilities[:] = 0
        return tiles

    assert run_check("check_tiles_above", tiles_then_clear, capsys)[0]


def test_tiles_above_hands_a_numpy_grid_so_a_torch_only_answer_is_told_why_it_crashed(capsys):
    result, printed = run_check("check_tiles_above", _tiles_torch_only, capsys)
    assert result is False and printed.startswith("Not yet: your function raised")


# ----------------------------------------------------------------------------- the interpretive exercises
def _comparison(only_one: int, only_ten: int, both_right: int = 50) -> Comparison:
    """compare_on_same_images for labels on which one epoch alone and ten epochs alone are right that often."""
    n = both_right + only_one + only_ten
    labels = torch.ones(n, dtype=torch.long)
    one = torch.cat([torch.ones(both_right + only_one), torch.zeros(only_ten)]).long()
    ten = torch.cat([torch.ones(both_right), torch.zeros(only_one), torch.ones(only_ten)]).long()
    return compare_on_same_images(labels, one, ten, names=("one epoch", "ten epochs"))


COMPARISONS = {
    "ten better": _comparison(2, 15),
    "one better": _comparison(14, 1),
    "unclear": _comparison(7, 11),
    "identical": _comparison(0, 0),
}
DECISIONS = {
    "ten better": "ten epochs",
    "one better": "one epoch",
    "unclear": "no clear difference",
    "identical": "no clear difference",
}


@pytest.mark.parametrize("case", COMPARISONS)
def test_more_epochs_accepts_the_decision_the_counts_support(case, capsys):
    comparison = COMPARISONS[case]
    assert_right("check_more_epochs", DECISIONS[case], capsys, comparison)
    assert_right("check_more_epochs", load_solution("ex04_training").my_decision(comparison), capsys, comparison)
    assert_right("check_more_epochs", f"  {DECISIONS[case].title()}. ", capsys, comparison)  # other spellings


@pytest.mark.parametrize(
    "case, answer, hint",
    [
        ("unclear", "ten epochs", "do not show that ten epochs is better"),  # more right, but within chance
        ("unclear", "one epoch", "do not show that one epoch is better"),
        ("ten better", "no clear difference", "so the data do pick one of them"),
        ("ten better", "one epoch", "that is not one epoch"),
        ("one better", "ten epochs", "that is not ten epochs"),
        ("identical", "ten epochs", "do not show"),
        ("unclear", "yes", "none of the three decisions"),
        ("unclear", 10, "none of the three decisions"),
    ],
)
def test_more_epochs_names_the_wrong_decision(case, answer, hint, capsys):
    assert_wrong("check_more_epochs", answer, hint, capsys, COMPARISONS[case])


def test_more_epochs_reports_the_counts_behind_its_verdict(capsys):
    result, printed = run_check("check_more_epochs", "ten epochs", capsys, COMPARISONS["unclear"])
    assert result is False and "one epoch alone was right on 7 images and ten epochs alone on 11" in printed


def test_batchnorm_experiment_is_what_the_lesson_says():
    """requires_grad=False and no optimiser: training mode still moves the running statistics."""
    assert checks._batchnorm_experiment() == {"running_mean", "running_var", "num_batches_tracked"}


@pytest.mark.parametrize(
    "prediction",
    [
        load_solution("ex04_training").my_prediction,
        ["running_mean", "running_var", "num_batches_tracked"],
        ("num_batches_tracked", "running_var", "running_mean "),
        frozenset({"running_mean", "running_var", "num_batches_tracked"}),
    ],
)
def test_batchnorm_prediction_accepts_the_right_prediction_in_any_collection(prediction, capsys):
    assert_right("check_batchnorm_prediction", prediction, capsys)


@pytest.mark.parametrize(
    "prediction, hint",
    [
        (set(), "only stops gradients"),  # "frozen means nothing moves"
        ({"running_mean", "running_var", "num_batches_tracked", "weight"}, "weight is a parameter"),
        ({"weight", "bias"}, "bias is a parameter"),
        ({"running_mean", "running_var"}, "counts the batches"),
        ({"num_batches_tracked"}, "you left out running_mean, running_var"),
        ({"running_mean", "momentum"}, "'momentum' is not one of the layer's tensors"),
        ("running_mean", "as a set of names"),
        ({"running_mean": True}, "as a set of names"),
    ],
)
def test_batchnorm_prediction_names_the_wrong_prediction(prediction, hint, capsys):
    assert_wrong("check_batchnorm_prediction", prediction, hint, capsys)


def _curve(crack_probability: list[float], labels: list[int]) -> dict:
    """threshold_curve of made-up predictions (101 thresholds from 0 to 1, as in notebook 05)."""
    crack = torch.tensor(crack_probability)
    predictions = Predictions(
        sample_ids=[str(i) for i in range(len(labels))],
        paths=[],
        labels=torch.tensor(labels),
        probabilities=torch.stack([1 - crack, crack], dim=1),
        class_names=["Negative", "Positive"],
    )
    return threshold_curve(predictions)


# 20 cracks and 6 intact surfaces: recall falls below 95% (19 of 20) once the threshold passes 0.45
CURVE = _curve(
    [
        0.05,
        0.2,
        0.3,
        0.4,
        0.45,
        0.5,
        0.55,
        0.6,
        0.7,
        0.75,
        0.8,
        0.85,
        0.9,
        0.9,
        0.92,
        0.94,
        0.95,
        0.96,
        0.97,
        0.99,
        0.1,
        0.3,
        0.35,
        0.42,
        0.5,
        0.6,
    ],
    [1] * 20 + [0] * 6,
)


def test_threshold_curve_case_is_what_the_tests_assume():
    i = int(np.argmin(np.abs(CURVE["threshold"] - 0.2)))
    assert CURVE["recall"][i] == 0.95 and CURVE["recall"][i + 1] < 0.95


@pytest.mark.parametrize(
    "answer",
    [
        0.2,
        np.float64(0.2),
        np.float32(0.2),
        torch.tensor(0.2),
        [0.2],
        float(CURVE["threshold"][20]),
        load_solution("ex05_misclassification").my_threshold(CURVE),
    ],
)
def test_threshold_for_recall_accepts_the_highest_threshold_that_keeps_the_recall(answer, capsys):
    assert_right("check_threshold_for_recall", answer, capsys, CURVE)


@pytest.mark.parametrize(
    "answer, hint",
    [
        (0.5, "recall is 75.0%, below 95%: too many cracks slip through"),  # the default threshold
        (0.21, "recall is 90.0%, below 95%"),
        (0.1, "a higher threshold also keeps 95% recall"),  # safe, but more false alarms than needed
        (0.0, "with 6 false alarms"),
        (95, "the recall you need"),
        (1.5, "no threshold"),
        (0.205, "not one of the thresholds the curve was measured at"),
        ("0.2", "one number between 0 and 1"),
        (np.array([0.1, 0.2]), "one number between 0 and 1"),
    ],
)
def test_threshold_for_recall_names_the_wrong_choice(answer, hint, capsys):
    assert_wrong("check_threshold_for_recall", answer, hint, capsys, CURVE)


def test_threshold_for_recall_recomputes_the_decision_from_the_curve_it_is_given(capsys):
    """On another run's curve the same number is judged by that curve's recall."""
    other = _curve([0.9, 0.8, 0.7, 0.6, 0.1, 0.2], [1, 1, 1, 1, 0, 0])  # every crack above 0.6
    assert_right("check_threshold_for_recall", 0.6, capsys, other)
    assert_wrong("check_threshold_for_recall", 0.2, "a higher threshold also keeps", capsys, other)


@pytest.mark.parametrize(
    "check_name, objects",
    [
        ("check_more_epochs", (COMPARISONS["unclear"],)),
        ("check_batchnorm_prediction", ()),
        ("check_threshold_for_recall", (CURVE,)),
    ],
)
def test_an_unanswered_value_check_says_so(check_name, objects, capsys):
    result, printed = run_check(check_name, None, capsys, *objects)
    assert result is False and printed.startswith("Not answered yet:"), printed


@pytest.mark.parametrize(
    "check_name, answer, objects",
    [("check_more_epochs", "ten epochs", ({"p": 1},)), ("check_threshold_for_recall", 0.2, ({"threshold": [0.2]},))],
)
def test_a_value_check_given_the_wrong_object_says_so_and_does_not_raise(check_name, answer, objects, capsys):
    result, printed = run_check(check_name, answer, capsys, *objects)
    assert result is False and printed.startswith("Not yet: the check could not read"), printed


# ----------------------------------------------------------------------------- the notebooks
def notebook_code_cells(stem: str) -> list[dict]:
    notebook = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return notebook["cells"]


def exercise_cells(stem: str) -> list[tuple[str, str]]:
    """(stub source, check source) for every exercise of a notebook, in order."""
    cells = notebook_code_cells(stem)
    pairs = []
    for stub, check in zip(cells, cells[1:]):
        if stub["cell_type"] == check["cell_type"] == "code" and "# your code here" in "".join(stub["source"]):
            pairs.append(("".join(stub["source"]), "".join(check["source"])))
    return pairs


CHECK_CELL = re.compile(r"from helpers\.checks import (\w+)\n+\1\((\w+)((?:, \w+)*)\);?\s*$")
# what the notebook's own variables stand for when a stub runs here: the lesson computes them
LESSON_OBJECTS = {"comparison": COMPARISONS["unclear"], "curve": CURVE}


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_notebook_has_exercises_before_whats_next(stem):
    cells = notebook_code_cells(stem)
    assert "".join(cells[-1]["source"]).startswith("## What's next")
    headings = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    assert any(text.startswith("## Exercises") for text in headings)
    assert 2 <= len(exercise_cells(stem)) <= 3
    ids = [cell["id"] for cell in cells]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_notebook_stubs_run_as_they_are_are_not_answered_yet(stem, capsys):
    for stub_source, check_source in exercise_cells(stem):
        match = CHECK_CELL.search(check_source)
        assert match, f"{stem}: unexpected check cell {check_source!r}"
        check_name, answer_name, objects = match.groups()
        assert callable(getattr(checks, check_name, None)), f"{stem}: helpers.checks has no {check_name}"
        assert EXERCISES[check_name][1] == answer_name
        assert EXERCISES[check_name][0] == f"ex{stem}", f"{check_name}'s solution should be in solutions/ex{stem}.py"
        names = [name.strip() for name in objects.split(",") if name.strip()]
        assert set(names) <= set(LESSON_OBJECTS), f"{stem}: the check cell passes {names}"
        namespace: dict = dict(LESSON_OBJECTS)  # a stub may print the lesson's numbers
        exec(stub_source, namespace)  # noqa: S102 - our own notebook's cell
        capsys.readouterr()  # what the stub itself printed
        result, printed = run_check(check_name, namespace[answer_name], capsys, *(LESSON_OBJECTS[n] for n in names))
        assert result is False and printed.startswith("Not answered yet:"), printed


@pytest.mark.parametrize("stem, names", [("04_training", ["comparison"]), ("05_misclassification", ["curve"])])
def test_value_exercises_use_objects_the_lesson_computed(stem, names):
    """An interpretive exercise reads this run's numbers: the lesson above it must define what its check gets."""
    cells = notebook_code_cells(stem)
    start = next(i for i, cell in enumerate(cells) if "".join(cell["source"]).startswith("## Exercises"))
    lesson = "\n".join("".join(cell["source"]) for cell in cells[:start] if cell["cell_type"] == "code")
    for name in names:
        assert re.search(rf"^{name} = ", lesson, re.MULTILINE), f"{stem}'s lesson no longer defines {name}"


def test_every_check_is_used_by_a_notebook():
    used = {re.search(r"import (\w+)", check).group(1) for stem in NOTEBOOKS for _, check in exercise_cells(stem)}
    assert used == set(EXERCISES)
    public = {name for name in dir(checks) if name.startswith("check_")}
    assert public == set(EXERCISES)


def test_solutions_folder_explains_itself():
    readme = (SOLUTIONS / "README.md").read_text(encoding="utf-8")
    assert "teacher" in readme.lower() and "stuck" in readme.lower()
    assert {path.stem for path in SOLUTIONS.glob("ex*.py")} == {stem for stem, _ in EXERCISES.values()}


def test_teaching_table_lists_every_exercise():
    """TEACHING.md's exercise table names each exercise's answer and check, as the notebooks do."""
    teaching = (ROOT / "TEACHING.md").read_text(encoding="utf-8")
    rows = [line for line in teaching.splitlines() if re.match(r"\| 0[2-6]\.\d ", line)]
    assert len(rows) == len(EXERCISES)
    for check_name, (_, answer_name) in EXERCISES.items():
        assert any(f"`{answer_name}`" in row and f"`{check_name}`" in row for row in rows), check_name
