"""The exercise checks: they pass the reference solutions, catch the common mistakes with the right
hint, never raise on an unanswered stub, and every exercise in the notebooks calls one of them."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import checks

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
    "check_split_index": ("ex02_dataset_class", "my_split_index"),
    "check_count_leaks": ("ex02_dataset_class", "my_count_leaks"),
    "check_new_head": ("ex03_replace_the_head", "my_new_head"),
    "check_count_trainable": ("ex03_replace_the_head", "my_count_trainable"),
    "check_train_one_epoch": ("ex04_training", "my_train_one_epoch"),
    "check_accuracy": ("ex04_training", "my_accuracy"),
    "check_iterations_per_epoch": ("ex04_training", "my_iterations_per_epoch"),
    "check_confident_mistakes": ("ex05_misclassification", "my_confident_mistakes"),
    "check_precision_recall": ("ex05_misclassification", "my_precision_recall"),
    "check_tiles_above": ("ex06_going_further", "my_tiles_above"),
    "check_unfreeze": ("ex06_going_further", "my_unfreeze"),
}


def run_check(check_name: str, answer, capsys) -> tuple[bool, str]:
    """Run a check; return its verdict and the one line it printed."""
    result = getattr(checks, check_name)(answer)
    printed = capsys.readouterr().out.strip()
    assert "\n" not in printed, f"a check prints one sentence, got {printed!r}"
    return result, printed


# ----------------------------------------------------------------------------- right, unanswered, broken
@pytest.mark.parametrize("check_name", EXERCISES)
def test_reference_solution_passes(check_name, capsys):
    stem, answer_name = EXERCISES[check_name]
    result, printed = run_check(check_name, getattr(load_solution(stem), answer_name), capsys)
    assert result is True and printed.startswith("Well done:"), printed


def _returns_none(*args):
    return None


def _not_implemented(*args):
    raise NotImplementedError


@pytest.mark.parametrize("stub", [_returns_none, _not_implemented], ids=["returns None", "raises"])
@pytest.mark.parametrize("check_name", EXERCISES)
def test_unanswered_stub_says_so_and_does_not_raise(check_name, stub, capsys):
    result, printed = run_check(check_name, stub, capsys)
    assert result is False and printed.startswith("Not answered yet:"), printed


@pytest.mark.parametrize("check_name", EXERCISES)
def test_an_answer_that_crashes_is_reported_not_raised(check_name, capsys):
    def broken(*args):
        return 1 / 0

    result, printed = run_check(check_name, broken, capsys)
    assert result is False and printed.startswith("Not yet:") and "ZeroDivisionError" in printed


# ----------------------------------------------------------------------------- common mistakes
def _interleave_swapped(positives, negatives):
    files = [None] * (len(positives) + len(negatives))
    files[::2], files[1::2] = negatives, positives
    return files, [1 if i % 2 == 0 else 0 for i in range(len(files))]


def _interleave_labels_swapped(positives, negatives):
    files = [None] * (len(positives) + len(negatives))
    files[::2], files[1::2] = positives, negatives
    return files, [0 if i % 2 == 0 else 1 for i in range(len(files))]


def _interleave_concatenated(positives, negatives):
    return list(positives) + list(negatives), [1] * len(positives) + [0] * len(negatives)


def _interleave_pairs(positives, negatives):
    return [(p, 1) for p in positives]  # a list, not (files, labels)


def _leaks_distinct(train_hashes, val_hashes):
    return len(set(train_hashes) & set(val_hashes))


def _leaks_train_side(train_hashes, val_hashes):
    return sum(digest in set(val_hashes) for digest in train_hashes)


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


def _trainable_all(model):
    return sum(p.numel() for p in model.parameters())


def _trainable_tensors(model):
    return sum(1 for p in model.parameters() if p.requires_grad)


def _trainable_frozen(model):
    return sum(p.numel() for p in model.parameters() if not p.requires_grad)


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


def _pr(confusion, *, swap=False, cls=1, scale=1.0):
    c = confusion.double()
    precision, recall = float(c[cls, cls] / c[:, cls].sum()), float(c[cls, cls] / c[cls, :].sum())
    return (scale * recall, scale * precision) if swap else (scale * precision, scale * recall)


WRONG_ANSWERS = [
    ("check_interleave", _interleave_swapped, "position 0 holds a negative"),
    ("check_interleave", _interleave_labels_swapped, "labels are swapped"),
    ("check_interleave", _interleave_concatenated, "all positives come first"),
    ("check_interleave", _interleave_pairs, "return two lists"),
    ("check_split_index", lambda n: round(n * 0.75), "round down"),
    ("check_split_index", lambda n: math.ceil(n * 0.75), "round down"),
    ("check_split_index", lambda n: n * 0.75, "a float"),
    ("check_split_index", lambda n: n - n * 3 // 4, "size of the validation part"),
    ("check_count_leaks", _leaks_distinct, "distinct shared hashes"),
    ("check_count_leaks", _leaks_train_side, "counted training images"),
    ("check_new_head", _head_not_frozen, "backbone parameters can still learn"),
    ("check_new_head", _head_frozen_too, "freeze first, then replace"),
    ("check_new_head", _head_two_classes, "2 outputs"),
    ("check_count_trainable", _trainable_all, "the frozen ones too"),
    ("check_count_trainable", _trainable_tensors, "p.numel()"),
    ("check_count_trainable", _trainable_frozen, "counted the 15 frozen"),
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
    ("check_accuracy", lambda logits, labels: int((logits.argmax(dim=1) == labels).sum()), "number of right answers"),
    ("check_accuracy", lambda logits, labels: 100 * (logits.argmax(1) == labels).float().mean().item(), "a percentage"),
    ("check_accuracy", lambda logits, labels: (logits.argmax(1) != labels).float().mean().item(), "share of mistakes"),
    ("check_accuracy", lambda logits, labels: (logits.argmax(dim=0) == labels).float().mean(), "wrong dimension"),
    ("check_accuracy", lambda logits, labels: [0.6], "return one number"),
    ("check_iterations_per_epoch", lambda n, b: n // b, "round up"),
    ("check_iterations_per_epoch", lambda n, b: n / b, "whole number"),
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
    ("check_tiles_above", lambda p, t: _tiles(p, t, strict=True), "use `>=`"),
    ("check_tiles_above", lambda p, t: _tiles(p, t, below=True), "below the threshold"),
    ("check_tiles_above", lambda p, t: sorted(_tiles(p, t), key=lambda rc: (rc[1], rc[0])), "row by row"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer4",)), "unfreeze `model.layer3` too"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer1", "layer2", "layer3", "layer4")), "layer1, layer2 can learn"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer3", "layer4"), freeze_head=True), "no longer learns"),
    ("check_unfreeze", lambda m: _unfreeze(m, ("layer3", "layer4"), partly=True), "only part of layer3"),
]


def _tiles(probabilities, threshold, strict=False, below=False):
    rows, cols = probabilities.shape
    keep = (lambda p: p < threshold) if below else (lambda p: p > threshold) if strict else (lambda p: p >= threshold)
    return [(r, c) for r in range(rows) for c in range(cols) if keep(probabilities[r, c])]


def _unfreeze(model, blocks, freeze_head=False, partly=False):
    for block in blocks:
        parameters = list(getattr(model, block).parameters())
        for parameter in parameters[: len(parameters) // 2] if partly else parameters:
            parameter.requires_grad = True
    if freeze_head:
        for parameter in model.fc.parameters():
            parameter.requires_grad = False
    return model


@pytest.mark.parametrize("check_name, answer, hint", WRONG_ANSWERS,
                         ids=[f"{name}-{hint}" for name, _, hint in WRONG_ANSWERS])
def test_common_mistake_gets_its_hint(check_name, answer, hint, capsys):
    result, printed = run_check(check_name, answer, capsys)
    assert result is False and printed.startswith("Not yet:"), printed
    assert hint in printed, printed


def test_forgotten_return_is_reminded(capsys):
    result, printed = run_check("check_new_head", _head_no_return, capsys)
    assert result is False and "remember to `return model`" in printed


def test_hard_coded_answers_do_not_pass(capsys):
    """Each check tries more than one case, so an answer fitted to one example fails."""
    assert not run_check("check_count_trainable", lambda model: 8, capsys)[0]
    assert not run_check("check_split_index", lambda n: 30_000, capsys)[0]
    assert not run_check("check_precision_recall", lambda c: (35 / 45, 35 / 40), capsys)[0]


def test_tensor_answers_are_accepted(capsys):
    """Learners often return tensors; a right answer is right in any form."""
    accuracy = lambda logits, labels: (logits.argmax(dim=1) == labels).float().mean()  # noqa: E731
    assert run_check("check_accuracy", accuracy, capsys)[0]
    mistakes = load_solution("ex05_misclassification").my_confident_mistakes
    assert run_check("check_confident_mistakes", lambda p, y, k: torch.tensor(mistakes(p, y, k), dtype=torch.long),
                     capsys)[0]


def test_train_one_epoch_accepts_right_loops_written_differently(capsys):
    """zero_grad(set_to_none=False), head.train() in the loop, a tuple of numbers: all the capstone's loop."""
    def variant(head, batches, optimizer, criterion):
        losses = ()
        for features, labels in batches:
            head.train(True)
            optimizer.zero_grad(set_to_none=False)
            loss = nn.functional.cross_entropy(head(features), labels)
            loss.backward()
            optimizer.step()
            losses += (loss.item(),)
        return losses

    assert run_check("check_train_one_epoch", variant, capsys)[0]


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
        tiles = [tuple(rc) for rc in (probabilities >= threshold).nonzero().tolist()]
        probabilities.zero_()
        return tiles

    assert run_check("check_tiles_above", tiles_then_clear, capsys)[0]


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
        match = re.search(r"from helpers\.checks import (\w+)\n+\1\((\w+)\);?\s*$", check_source)
        assert match, f"{stem}: unexpected check cell {check_source!r}"
        check_name, answer_name = match.groups()
        assert callable(getattr(checks, check_name, None)), f"{stem}: helpers.checks has no {check_name}"
        assert EXERCISES[check_name][1] == answer_name
        assert EXERCISES[check_name][0] == f"ex{stem}", f"{check_name}'s solution should be in solutions/ex{stem}.py"
        namespace: dict = {}
        exec(stub_source, namespace)  # noqa: S102 - our own notebook's cell
        result, printed = run_check(check_name, namespace[answer_name], capsys)
        assert result is False and printed.startswith("Not answered yet:"), printed


def test_every_check_is_used_by_a_notebook():
    used = {re.search(r"import (\w+)", check).group(1) for stem in NOTEBOOKS for _, check in exercise_cells(stem)}
    assert used == set(EXERCISES)
    public = {name for name in dir(checks) if name.startswith("check_")}
    assert public == set(EXERCISES)


def test_solutions_folder_explains_itself():
    readme = (SOLUTIONS / "README.md").read_text(encoding="utf-8")
    assert "teacher" in readme.lower() and "stuck" in readme.lower()
    assert {path.stem for path in SOLUTIONS.glob("ex*.py")} == {stem for stem, _ in EXERCISES.values()}
