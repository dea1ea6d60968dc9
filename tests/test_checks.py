"""The exercise checks judge like a teacher: right answers in any allowed style pass, each class of wrong answer
fails with a sentence that is true of it (the smallest case where it differs from the reference, a hint where
the check knows the mistake), an unanswered stub says so, a crash is reported as that crash, and every exercise
in the notebooks calls its check. The tests named after issue 28's defects failed before its change."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import checks
from helpers.analysis import compare_on_same_images, threshold_curve
from helpers.inference import Predictions

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("02_dataset_class", "03_replace_the_head", "04_training", "05_misclassification", "06_going_further")
# check -> (solution file, answer name in it and in the notebook)
EXERCISES = {
    "check_interleave": ("ex02_dataset_class", "my_interleave"),
    "check_split_sizes": ("ex02_dataset_class", "my_split_sizes"),
    "check_leak_counts": ("ex02_dataset_class", "my_leak_counts"),
    "check_new_head": ("ex03_replace_the_head", "my_new_head"),
    "check_trainable_per_block": ("ex03_replace_the_head", "my_trainable_per_block"),
    "check_train_epochs": ("ex04_training", "my_train_epochs"),
    "check_more_epochs": ("ex04_training", "my_decision"),
    "check_batchnorm_prediction": ("ex04_training", "my_prediction"),
    "check_confident_mistakes": ("ex05_misclassification", "my_confident_mistakes"),
    "check_precision_recall": ("ex05_misclassification", "my_precision_recall"),
    "check_threshold_for_recall": ("ex05_misclassification", "my_threshold"),
    "check_tiles_above": ("ex06_going_further", "my_tiles_above"),
    "check_unfreeze": ("ex06_going_further", "my_unfreeze"),
    "check_parameter_groups": ("ex06_going_further", "my_parameter_groups"),
}
FUNCTION_CHECKS = [
    name
    for name in EXERCISES
    if name not in {"check_more_epochs", "check_batchnorm_prediction", "check_threshold_for_recall"}
]


def solution(check_name: str):
    stem, name = EXERCISES[check_name]
    spec = importlib.util.spec_from_file_location(stem, ROOT / "solutions" / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def verdict(check_name: str, answer, capsys, *objects) -> tuple[bool, str]:
    """The check's result and the one sentence it printed."""
    result = getattr(checks, check_name)(answer, *objects)
    printed = capsys.readouterr().out.strip()
    assert "\n" not in printed, printed
    return result, printed


def assert_right(check_name: str, answer, capsys, *objects) -> None:
    result, printed = verdict(check_name, answer, capsys, *objects)
    assert result is True and printed.startswith("Well done:"), printed


def assert_wrong(check_name: str, answer, words: list[str], capsys, *objects) -> None:
    result, printed = verdict(check_name, answer, capsys, *objects)
    assert result is False and printed.startswith("Not yet:"), printed
    assert all(word in printed for word in words), printed


# ----------------------------------------------------------------------------- answers a learner writes
def interleave_zip(groups):
    files = [f for round_ in zip(*[files for _, files in groups]) for f in round_]
    return files, [label for label, _ in groups] * (len(files) // len(groups))


def interleave_slices(groups):  # a tuple of files and a tensor of labels
    k, n = len(groups), len(groups[0][1])
    files, labels = [None] * (k * n), [0] * (k * n)
    for j, (label, group) in enumerate(groups):
        files[j::k], labels[j::k] = group, [label] * n
    return tuple(files), torch.tensor(labels)


def leaks_loop(train, val):
    seen, in_training, repeated = set(), 0, 0
    for digest in val:
        in_training += digest in train
        repeated += digest in seen
        seen.add(digest)
    return [in_training, repeated]


def leaks_numpy(train, val):
    val = np.array(val, dtype=object)
    return np.isin(val, np.array(train, dtype=object)).sum(), val.size - len(set(val))


def new_head_loop(model, num_classes):
    model.requires_grad_(False)
    model.fc = nn.Sequential(nn.Linear(model.fc.in_features, num_classes))
    return model


def per_block_tensors(model):  # counts as one-element tensors, frozen blocks given 0
    return {
        name: torch.tensor(sum(p.numel() for p in block.parameters() if p.requires_grad))
        for name, block in model.named_children()
    }


def epochs_loop(head, batches, optimizer, criterion, epochs, *, order="zfbs", train=True, seed=None, result="means"):
    """One loop, written as a learner might: `order` spells each batch's calls (z zero_grad, f forward and
    loss, b backward, s step), `seed` seeds torch first as the notebook's cell does, `result` is what it returns."""
    if seed is not None:
        torch.manual_seed(seed)
    if train:
        head.train()
    means, every = [], []
    for _ in range(epochs):
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
            losses.append(loss.item())
        every += losses
        means.append(sum(losses) / len(losses))
    return {"means": means, "every": every, "array": np.array(means), "last": means[-1]}[result]


def epochs_shuffling_rng(head, batches, optimizer, criterion, epochs):
    """Draws random numbers (Dropout-style noise it throws away, Python's random) and uses head.zero_grad()."""
    torch.manual_seed(0)
    random.seed(1)
    head.train(True)
    means = []
    for _ in range(epochs):
        total = 0.0
        for x, y in batches:
            torch.rand(3)
            head.zero_grad()
            loss = nn.functional.cross_entropy(head(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        means.append(total / len(batches))
    return tuple(means)


def confident_torch(probabilities, labels, k):
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    return wrong[confidence[wrong].argsort(descending=True)][:k]


def confident_numpy(probabilities, labels, k):
    p, y = probabilities.numpy(), labels.numpy()
    wrong = np.flatnonzero(p.argmax(axis=1) != y)
    return wrong[np.argsort(-p.max(axis=1)[wrong])][:k]


def pr_numpy(confusion):
    c = np.asarray(confusion, dtype=float)
    return np.float64(c[1, 1] / c[:, 1].sum()), np.float64(c[1, 1] / c[1].sum())


def unfreeze_by_name(model, n):
    for name, parameter in model.named_parameters():
        if name.split(".")[0] in [f"layer{i}" for i in range(5 - n, 5)]:
            parameter.requires_grad_(True)
    return model


def groups_by_name(model, head_lr, backbone_lr):
    groups = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            block = name.split(".")[0]
            rate = {"fc": head_lr, "layer4": backbone_lr}.get(block, backbone_lr * 0.1)
            groups.setdefault(block, {"params": [], "lr": rate})["params"].append(parameter)
    return tuple(groups.values())


def groups_fixed(model, head_lr, backbone_lr, *, layer3_lr=None, blocks=("layer3",)):
    """Head and layer4 by name, then `blocks` at `layer3_lr` (backbone_lr / 10 if None)."""
    groups = [{"params": list(model.fc.parameters()), "lr": head_lr}]
    groups.append({"params": [p for p in model.layer4.parameters() if p.requires_grad], "lr": backbone_lr})
    for block in blocks:
        learning = [p for p in getattr(model, block).parameters() if p.requires_grad]
        if learning:
            groups.append({"params": learning, "lr": backbone_lr / 10 if layer3_lr is None else layer3_lr(head_lr)})
    return groups


RIGHT_ANSWERS = [
    ("check_interleave", interleave_zip),
    ("check_interleave", interleave_slices),
    ("check_interleave", lambda groups: list(solution("check_interleave")(groups))),  # a list for the pair
    ("check_split_sizes", lambda n: (n * 7 // 10, n * 3 // 20, n - n * 7 // 10 - n * 3 // 20)),
    (
        "check_split_sizes",
        lambda n: np.array([math.floor(n * 70 / 100), n * 15 // 100, n - n * 70 // 100 - n * 15 // 100]),
    ),
    ("check_split_sizes", lambda n: torch.tensor([n * 70 // 100, n * 15 // 100, n - n * 70 // 100 - n * 15 // 100])),
    ("check_leak_counts", leaks_loop),
    ("check_leak_counts", leaks_numpy),
    ("check_new_head", new_head_loop),
    ("check_trainable_per_block", per_block_tensors),
    ("check_train_epochs", lambda *a: epochs_loop(*a, seed=0)),  # the notebook's cell, seed included
    ("check_train_epochs", lambda *a: epochs_loop(*a, order="fzbs")),  # zero_grad after the forward pass: right too
    ("check_train_epochs", lambda *a: epochs_loop(*a, result="array")),
    ("check_train_epochs", epochs_shuffling_rng),
    ("check_confident_mistakes", confident_torch),
    ("check_confident_mistakes", confident_numpy),
    ("check_precision_recall", pr_numpy),
    ("check_precision_recall", lambda c: torch.stack([c[1, 1] / c[:, 1].sum(), c[1, 1] / c[1].sum()])),
    ("check_tiles_above", lambda p, t: np.argwhere(p >= t)),
    ("check_tiles_above", lambda p, t: [[int(r), int(c)] for r, c in zip(*np.nonzero(p >= t))]),
    ("check_unfreeze", unfreeze_by_name),
    ("check_parameter_groups", groups_by_name),
    ("check_parameter_groups", lambda m, h, b: groups_fixed(m, h, b, blocks=("layer1", "layer2", "layer3"))),
]


@pytest.mark.parametrize("check_name", FUNCTION_CHECKS)
def test_the_reference_solution_passes(check_name, capsys):
    assert_right(check_name, solution(check_name), capsys)


@pytest.mark.parametrize("check_name, answer", RIGHT_ANSWERS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_right_answers_in_other_styles_pass(check_name, answer, capsys):
    assert_right(check_name, answer, capsys)


def sizes(n, rounding):
    train, val = rounding(n * 0.7), rounding(n * 0.15)
    return train, val, n - train - val


def unfreeze(model, blocks, *, freeze_head=False, half=False, new_head=False):
    for block in blocks:
        parameters = list(getattr(model, block).parameters())
        for parameter in parameters[: len(parameters) // 2] if half else parameters:
            parameter.requires_grad = True
    if freeze_head:
        model.fc.requires_grad_(False)
    if new_head:
        model.fc = nn.Linear(model.fc.in_features, 3)
    return model


WRONG_ANSWERS = [  # (check, wrong answer, words its sentence must hold)
    (
        "check_interleave",
        lambda g: ([f for _, fs in g for f in fs], [y for y, fs in g for _ in fs]),
        ["each group comes whole"],
    ),
    (
        "check_interleave",
        lambda g: interleave_zip(g[:2]),
        ["for labels [1, 3, 4] with 1 files each your function gives"],
    ),  # two groups only
    (
        "check_interleave",
        lambda g: (interleave_zip(g)[0], list(range(len(g))) * len(g[0][1])),
        ["gives (['I0'], [0]), expected (['I0'], [1])"],
    ),
    ("check_interleave", lambda g: interleave_zip(sorted(g)), ["for labels [1, 0, 2]"]),
    ("check_interleave", lambda g: [(f, 1) for f in g[0][1]], ["a pair `(files, labels)`"]),
    ("check_split_sizes", lambda n: sizes(n, round), ["for n = 1 your function gives (1, 0, 0), expected (0, 0, 1)"]),
    ("check_split_sizes", lambda n: sizes(n, math.ceil), ["rounded up"]),
    (
        "check_split_sizes",
        lambda n: sizes(n, int),
        ["for n = 90", "(62, 13, 15)", "(63, 13, 14)", "no exact binary value"],
    ),
    ("check_split_sizes", lambda n: (n * 0.7, n * 0.15, n * 0.15), ["whole number of images (an int)"]),
    (
        "check_split_sizes",
        lambda n: (n * 70 // 100, n * 15 // 100, n * 15 // 100),
        ["for n = 1", "(0, 0, 0)", "(0, 0, 1)"],
    ),
    ("check_split_sizes", lambda n: n * 7 // 10, ["three sizes"]),
    ("check_leak_counts", lambda t, v: leaks_loop(t, v)[::-1], ["swapped"]),
    (
        "check_leak_counts",
        lambda t, v: (len(set(t) & set(v)), len(v) - len(set(v))),
        ["gives (1, 2), expected (2, 2)"],
    ),
    ("check_leak_counts", lambda t, v: (leaks_loop(t, v)[0], 0), ["gives (0, 0), expected (0, 2)"]),
    ("check_leak_counts", lambda t, v: sum(d in t for d in v), ["two counts"]),
    (
        "check_new_head",
        lambda m, c: setattr(m, "fc", nn.Linear(m.fc.in_features, c)) or m,
        ["numbers of the backbone that can learn: yours 224, expected 0"],
    ),
    (
        "check_new_head",
        lambda m, c: setattr(m, "fc", nn.Linear(512, c)) or m.requires_grad_(False) and m,
        ["does not fit"],
    ),
    (
        "check_new_head",
        lambda m, c: (setattr(m, "fc", nn.Linear(m.fc.in_features, c)), m.requires_grad_(False))[1],
        ["numbers of the head that can learn", "yours 0, expected 18"],
    ),
    (
        "check_new_head",
        lambda m, c: (m.requires_grad_(False), setattr(m, "fc", nn.Linear(m.fc.in_features, 3)))[0],
        ["scores per image: yours 3, expected 2"],
    ),
    ("check_new_head", lambda m, c: nn.Sequential(), ["return the model"]),
    (
        "check_trainable_per_block",
        lambda m: {n: sum(p.requires_grad for p in b.parameters()) for n, b in m.named_children()},
        ["expected {'2': 8, '3': 2}"],
    ),
    (
        "check_trainable_per_block",
        lambda m: {n: sum(p.numel() for p in b.parameters()) for n, b in m.named_children()},
        ["your function gives {'0': 15"],
    ),
    (
        "check_trainable_per_block",
        lambda m: {n: p.numel() for n, p in m.named_parameters() if p.requires_grad},
        ["'2.weight'"],
    ),
    (
        "check_trainable_per_block",
        lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad),
        ["a dict of counts"],
    ),
    ("check_train_epochs", lambda *a: epochs_loop(*a, order="fbs"), ["never zeroed"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, order="szfb"), ["comes before `loss.backward()`"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, order="zfsb"), ["comes before `loss.backward()`"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, order="fbzs"), ["found no gradients"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, order="zfb"), ["`optimizer.step()` is never called"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, order="zfbss"), ["6 steps for 3 batches"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, train=False), ["eval mode"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, result="every"), ["return 1 mean loss(es), one per epoch"]),
    ("check_train_epochs", lambda *a: epochs_loop(*a, result="last"), ["one per epoch"]),
    (
        "check_train_epochs",
        lambda h, b, o, c, e: epochs_loop(h, b, torch.optim.Adam(h.parameters(), lr=0.05), c, e),
        ["never called"],
    ),
    ("check_confident_mistakes", lambda p, y, k: confident_torch(p, y, len(y)), ["expected"]),
    ("check_confident_mistakes", lambda p, y, k: confident_torch(p, y, k).flip(0), ["expected"]),
    ("check_confident_mistakes", lambda p, y, k: sorted(confident_torch(p, y, k).tolist()), ["expected"]),
    (
        "check_confident_mistakes",
        lambda p, y, k: [i for i in p[:, 1].argsort(descending=True).tolist() if p[i].argmax() != y[i]][:k],
        ["probability of the predicted class"],
    ),
    (
        "check_confident_mistakes",
        lambda p, y, k: p.max(1).values[confident_torch(p, y, k)],
        ["the indices of the images (ints), not [0.62]"],
    ),
    ("check_precision_recall", lambda c: pr_numpy(c)[::-1], ["precision and recall are swapped", "[[8, 2], [4, 6]]"]),
    ("check_precision_recall", lambda c: tuple(100 * v for v in pr_numpy(c)), ["percentages"]),
    (
        "check_precision_recall",
        lambda c: (float(c[0, 0] / c[:, 0].sum()), float(c[0, 0] / c[0].sum())),
        ["for the matrix [[8, 2], [4, 6]]"],
    ),
    ("check_precision_recall", lambda c: 0.5, ["two numbers"]),
    (
        "check_tiles_above",
        lambda p, t: [(c, r) for r, c in np.argwhere(p >= t)],
        ["the first index of a grid is its row"],
    ),
    ("check_tiles_above", lambda p, t: np.argwhere(p > t), ["equals the threshold counts too"]),
    ("check_tiles_above", lambda p, t: np.argwhere(p < t), ["expected"]),
    (
        "check_tiles_above",
        lambda p, t: sorted(map(tuple, np.argwhere(p >= t).tolist()), key=lambda rc: rc[::-1]),
        ["expected"],
    ),
    (
        "check_unfreeze",
        lambda m, n: unfreeze(m, ("layer3", "layer4")),
        ["with n = 0, blocks that learn: yours ['fc', 'layer3', 'layer4'], expected ['fc']"],
    ),
    (
        "check_unfreeze",
        lambda m, n: unfreeze(m, [f"layer{i}" for i in range(1, n + 1)]),
        ["with n = 1, blocks that learn"],
    ),
    (
        "check_unfreeze",
        lambda m, n: unfreeze(m, [f"layer{i}" for i in range(5 - n, 5)], freeze_head=True),
        ["blocks that learn: yours []"],
    ),
    (
        "check_unfreeze",
        lambda m, n: unfreeze(m, [f"layer{i}" for i in range(5 - n, 5)], half=True),
        ["blocks that learn only in part"],
    ),
    (
        "check_parameter_groups",
        lambda m, h, b: [{"params": [p for p in m.parameters() if p.requires_grad], "lr": h}],
        ["learning rates of the unfrozen blocks"],
    ),
    (
        "check_parameter_groups",
        lambda m, h, b: groups_fixed(m, h, b) + [{"params": list(m.layer1.parameters()), "lr": b}],
        ["frozen numbers in a group"],
    ),
    (
        "check_parameter_groups",
        lambda m, h, b: groups_fixed(m, h, b) + [{"params": list(m.fc.parameters()), "lr": h}],
        ["more than one parameter group"],
    ),
    ("check_parameter_groups", lambda m, h, b: [{"params": m.fc.parameters()}], ['"params" and its "lr"']),
    ("check_parameter_groups", lambda m, h, b: {"params": m.parameters(), "lr": h}, ["a list of dicts"]),
]


@pytest.mark.parametrize(
    "check_name, answer, words", WRONG_ANSWERS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(WRONG_ANSWERS)]
)
def test_wrong_answers_fail_with_a_true_sentence(check_name, answer, words, capsys):
    assert_wrong(check_name, answer, words, capsys)


def _returns_none(*args):
    return None


def _raises(*args):
    raise NotImplementedError


@pytest.mark.parametrize("stub", [_returns_none, _raises])
@pytest.mark.parametrize("check_name", FUNCTION_CHECKS)
def test_an_unanswered_stub_says_so(check_name, stub, capsys):
    result, printed = verdict(check_name, stub, capsys)
    assert (
        result is False
        and printed == f"Not answered yet: fill in `{EXERCISES[check_name][1]}`, then run this check again."
    )


@pytest.mark.parametrize("check_name", FUNCTION_CHECKS)
def test_a_crash_is_reported_as_that_crash_with_its_line(check_name, capsys):
    def broken(*args):
        return 1 / 0

    result, printed = verdict(check_name, broken, capsys)
    assert result is False and "your function raised ZeroDivisionError: division by zero at `return 1 / 0`" in printed


def test_checks_leave_the_notebooks_random_numbers_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    verdict("check_train_epochs", lambda *a: epochs_loop(*a, seed=5), capsys)
    verdict("check_confident_mistakes", confident_torch, capsys)
    assert torch.equal(torch.rand(3), expected)


def test_hard_coded_answers_fail(capsys):
    assert not verdict("check_split_sizes", lambda n: (7, 1, 2), capsys)[0]
    assert not verdict("check_precision_recall", lambda c: (0.75, 0.6), capsys)[0]
    assert not verdict("check_leak_counts", lambda t, v: (0, 2), capsys)[0]


# ----------------------------------------------------------------------------- the 8 defects of issue 28
def test_defect1_a_right_loop_that_seeds_or_draws_random_numbers_passes(capsys):
    assert_right("check_train_epochs", lambda *a: epochs_loop(*a, seed=0), capsys)
    assert_right("check_train_epochs", epochs_shuffling_rng, capsys)


class _NoForward(nn.Module):  # a misspelt `forward`: torch raises NotImplementedError when it is called
    def forwrd(self, x):
        return x


def test_defect2_only_the_stub_is_unanswered(capsys):
    result, printed = verdict("check_precision_recall", lambda c: _NoForward()(c), capsys)
    assert not result and printed.startswith("Not yet: your function raised NotImplementedError")

    def forgot_return(head, batches, optimizer, criterion, epochs):
        losses = [loss for loss in epochs_loop(head, batches, optimizer, criterion, epochs)]  # noqa: F841

    def returns_append(head, batches, optimizer, criterion, epochs):
        losses = []
        return losses.append(epochs_loop(head, batches, optimizer, criterion, epochs))

    for answer in (forgot_return, returns_append):
        assert_wrong("check_train_epochs", answer, ["returned None", "`return`"], capsys)


def _curve(crack: list[float], labels: list[int]) -> dict:
    """threshold_curve of made-up predictions (101 thresholds from 0 to 1, as in notebook 05)."""
    crack = torch.tensor(crack)
    return threshold_curve(
        Predictions(
            sample_ids=[str(i) for i in range(len(labels))],
            paths=[],
            labels=torch.tensor(labels),
            probabilities=torch.stack([1 - crack, crack], dim=1),
            class_names=["Negative", "Positive"],
        )
    )


# 20 cracks and 6 intact surfaces: recall is 95% up to 0.20 (one crack at 0.05 is lost), 90% above it
CURVE = _curve(
    [0.05, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.99]
    + [0.1, 0.3, 0.35, 0.42, 0.5, 0.6],
    [1] * 20 + [0] * 6,
)


def test_defect3_every_threshold_that_meets_the_task_passes(capsys):
    """From 0.11 to 0.20 the recall is 95% with 5 false alarms: every one of them is right."""
    assert_right("check_threshold_for_recall", solution("check_threshold_for_recall")(CURVE), capsys, CURVE)
    for answer in (0.11, np.float32(0.15), torch.tensor(0.2), [0.2], 0.2):
        assert_right("check_threshold_for_recall", answer, capsys, CURVE)
    assert_wrong("check_threshold_for_recall", 0.1, ["with 6 false alarms", "fewer false alarms"], capsys, CURVE)
    assert_wrong("check_threshold_for_recall", 0.5, ["recall is 75.0%", "below 95%"], capsys, CURVE)
    for answer, words in [
        (95, ["not one of the curve's thresholds"]),
        (0.205, ["not one of"]),
        ("0.2", ["one number"]),
    ]:
        assert_wrong("check_threshold_for_recall", answer, words, capsys, CURVE)


@pytest.mark.parametrize(
    "answer, words",
    [
        (
            lambda m, h, b: groups_fixed(m, h, b, layer3_lr=lambda h: 1e-5),
            ["head_lr 0.003, backbone_lr 0.0002", "'layer3': [1e-05]", "'layer3': [2e-05]"],
        ),
        (lambda m, h, b: groups_fixed(m, h, b, layer3_lr=lambda h: h / 100), ["'layer3': [3e-05]"]),
        (
            lambda m, h, b: groups_fixed(m, h, b),
            ["layer2 layer3 layer4 unfrozen", "'layer2': [None]"],
        ),  # layer3 by name
    ],
)
def test_defect4_wrong_parameter_groups_fail(answer, words, capsys):
    assert_wrong("check_parameter_groups", answer, words, capsys)


def test_defect5_an_unfreeze_that_replaces_the_head_fails(capsys):
    answer = lambda m, n: unfreeze(m, [f"layer{i}" for i in range(5 - n, 5)], new_head=True)
    assert_wrong("check_unfreeze", answer, ["with n = 0, every weight as it was: yours False"], capsys)


def test_defect6_the_typical_wrong_split_fails(capsys):
    assert_wrong("check_split_sizes", lambda n: sizes(n, int), ["for n = 90"], capsys)


def test_defect7_a_list_for_the_pair_passes(capsys):
    assert_right("check_interleave", lambda groups: list(interleave_zip(groups)), capsys)


def test_defect8_messages_show_the_answer_as_given(capsys):
    assert_wrong(
        "check_split_sizes",
        lambda n: sizes(n, round),
        ["gives (1, 0, 0)"],
        capsys,
    )
    assert_wrong(
        "check_confident_mistakes",
        lambda p, y, k: p.max(1).values[confident_torch(p, y, k)].tolist(),
        ["not [0.62]"],
        capsys,
    )
    no_bias = lambda m, c: (m.requires_grad_(False), setattr(m, "fc", nn.Linear(m.fc.in_features, c, bias=False)))[0]
    assert_wrong("check_new_head", no_bias, ["numbers of the head that can learn", "yours 16, expected 18"], capsys)
    assert_wrong("check_threshold_for_recall", 0.0, ["with 6 false alarms"], capsys, CURVE)


# ----------------------------------------------------------------------------- the decision exercises
def _comparison(only_one: int, only_ten: int, both_right: int = 50):
    n = both_right + only_one + only_ten
    one = torch.cat([torch.ones(both_right + only_one), torch.zeros(only_ten)]).long()
    ten = torch.cat([torch.ones(both_right), torch.zeros(only_one), torch.ones(only_ten)]).long()
    return compare_on_same_images(torch.ones(n, dtype=torch.long), one, ten, names=("one epoch", "ten epochs"))


@pytest.mark.parametrize(
    "counts, right",
    [
        ((2, 15), "ten epochs"),
        ((14, 1), "one epoch"),
        ((7, 11), "no clear difference"),
        ((0, 0), "no clear difference"),
    ],
)
def test_more_epochs_accepts_the_decision_the_counts_support_and_no_other(counts, right, capsys):
    comparison = _comparison(*counts)
    assert_right("check_more_epochs", right, capsys, comparison)
    assert_right("check_more_epochs", f"  {right.title()}. ", capsys, comparison)
    assert_right("check_more_epochs", solution("check_more_epochs")(comparison), capsys, comparison)
    for wrong in {"ten epochs", "one epoch", "no clear difference"} - {right}:
        assert_wrong("check_more_epochs", wrong, [f"alone on {counts[1]}", "probability"], capsys, comparison)
    assert_wrong("check_more_epochs", "yes", ["none of"], capsys, comparison)


@pytest.mark.parametrize(
    "prediction",
    [
        {"running_mean", "running_var", "num_batches_tracked"},
        ["num_batches_tracked", "running_var", "running_mean "],
        ("running_mean", "running_var", "num_batches_tracked"),
    ],
)
def test_batchnorm_prediction_accepts_any_collection(prediction, capsys):
    assert_right("check_batchnorm_prediction", prediction, capsys)


@pytest.mark.parametrize(
    "prediction, words",
    [
        (set(), ["keep track of"]),
        ({"weight", "running_mean"}, ["weight and bias are parameters"]),
        ({"running_mean", "running_var"}, ["keep track of"]),
        ({"momentum"}, ["a set of names among"]),
        ("running_mean", ["a set of names among"]),
    ],
)
def test_batchnorm_prediction_hints_without_giving_the_answer(prediction, words, capsys):
    result, printed = verdict("check_batchnorm_prediction", prediction, capsys)
    assert (
        not result and all(word in printed for word in words) and "num_batches_tracked" not in printed.split("among")[0]
    ), printed


@pytest.mark.parametrize(
    "check_name, objects",
    [
        ("check_more_epochs", (_comparison(7, 11),)),
        ("check_batchnorm_prediction", ()),
        ("check_threshold_for_recall", (CURVE,)),
    ],
)
def test_an_unanswered_decision_says_so_and_a_wrong_object_does_not_raise(check_name, objects, capsys):
    assert verdict(check_name, None, capsys, *objects)[1].startswith("Not answered yet:")
    if objects:
        result, printed = verdict(check_name, "ten epochs" if objects[0] is not CURVE else 0.2, capsys, {"p": 1})
        assert not result and printed.startswith("Not yet: the check could not read")


# ----------------------------------------------------------------------------- the notebooks
def exercise_cells(stem: str) -> list[tuple[str, str]]:
    """(stub source, check source) for every exercise of a notebook."""
    cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))["cells"]
    sources = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    return [(stub, check) for stub, check in zip(sources, sources[1:]) if "# your code here" in stub]


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_each_exercise_runs_its_check_and_its_stub_is_not_answered_yet(stem, capsys):
    for stub, check in exercise_cells(stem):
        check_name, answer_name, objects = re.search(
            r"from helpers\.checks import (\w+)\n+\1\((\w+)((?:, \w+)*)\);\s*$", check
        ).groups()
        assert EXERCISES[check_name] == (f"ex{stem}", answer_name)
        namespace = {}
        exec(stub, namespace)  # noqa: S102 - our own notebook's cell
        lesson = {"train_comparison": _comparison(7, 11), "curve": CURVE}
        result, printed = verdict(
            check_name,
            namespace[answer_name],
            capsys,
            *(lesson[name.strip()] for name in objects.split(",") if name.strip()),
        )
        assert printed.startswith("Not answered yet:"), printed


def test_every_check_has_an_exercise_a_solution_and_a_row_in_teaching():
    used = {re.search(r"import (\w+)", check).group(1) for stem in NOTEBOOKS for _, check in exercise_cells(stem)}
    assert used == set(EXERCISES) == {name for name in dir(checks) if name.startswith("check_")}
    rows = [
        line
        for line in (ROOT / "TEACHING.md").read_text(encoding="utf-8").splitlines()
        if re.match(r"\| 0[2-6]\.\d ", line)
    ]
    assert len(rows) == len(EXERCISES)
    for check_name, (stem, answer_name) in EXERCISES.items():
        assert any(f"`{answer_name}`" in row and f"`{check_name}`" in row for row in rows), check_name
        assert callable(solution(check_name)) or check_name == "check_batchnorm_prediction"
