"""Checks for the notebooks' exercises: one function per exercise.

Each check takes your answer (usually a function you wrote), tries it on small cases of its own,
and prints one sentence: "Well done: ..." when it is right, "Not yet: ..." with a hint when it is
not, or "Not answered yet: ..." while the exercise still holds its stub (returns None or raises
NotImplementedError). A check never raises, and it returns True or False, so you (or a teacher)
can also use it in code. Reference solutions are in the `solutions/` folder, for when you are stuck.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet18

NOT_ANSWERED = object()  # what _call returns for a stub that is not filled in yet


# ----------------------------------------------------------------------------- shared pieces
def _call(function: Callable, *args):
    """Call the learner's function: its value, NOT_ANSWERED for a stub, or the exception it raised."""
    try:
        value = function(*args)
    except NotImplementedError:
        return NOT_ANSWERED
    except Exception as error:  # a learner's bug must never stop the notebook
        return error
    return NOT_ANSWERED if value is None else value


def _verdict(passed: bool, message: str) -> bool:
    """Print the one-sentence verdict and return whether the answer passed."""
    print(message)
    return passed


def _raised(error: Exception) -> bool:
    """The verdict for an answer that raised an exception."""
    return _verdict(False, f"Not yet: your function raised {type(error).__name__}: {error}. "
                           "Read the error, fix the line it points at, and run the check again.")


def _number(value) -> float | None:
    """A plain Python number from an int, a float, a numpy scalar or a one-element tensor."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return float(value)


def _whole_number(value) -> int | None:
    """An int from an int or a numpy integer; None for anything else (floats included)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        return None
    return int(value)


def _as_list(value) -> list | None:
    """A plain list from a list, tuple or 1-D tensor; None for anything else."""
    if isinstance(value, torch.Tensor):
        return value.flatten().tolist()
    if isinstance(value, (list, tuple)):
        return [item.item() if isinstance(item, torch.Tensor) else item for item in value]
    return None


# ----------------------------------------------------------------------------- notebook 02
def check_interleave(function: Callable) -> bool:
    """`function(positives, negatives)` returns `(files, labels)`: positives at even positions (1)."""
    positives, negatives = ["P0", "P1", "P2"], ["N0", "N1", "N2"]
    answer = _call(function, positives, negatives)
    if answer is NOT_ANSWERED:
        return _verdict(False, "Not answered yet: fill in `my_interleave` so that it returns `(files, labels)`.")
    if isinstance(answer, Exception):
        return _raised(answer)
    expected_files, expected_labels = ["P0", "N0", "P1", "N1", "P2", "N2"], [1, 0, 1, 0, 1, 0]
    if not (isinstance(answer, tuple) and len(answer) == 2):
        return _verdict(False, "Not yet: return two lists, `files, labels`, e.g. `return files, labels`.")
    files, labels = _as_list(answer[0]), _as_list(answer[1])
    if files is None or labels is None:
        return _verdict(False, "Not yet: `files` and `labels` should both be lists.")
    if len(files) != 6:
        return _verdict(False, f"Not yet: 3 positives and 3 negatives make 6 files, not {len(files)}; "
                               "start from `files = [None] * (len(positives) + len(negatives))`.")
    if files == ["N0", "P0", "N1", "P1", "N2", "P2"]:
        return _verdict(False, "Not yet: position 0 holds a negative; positives go at even positions "
                               "(`files[::2] = positives`) and negatives at odd ones (`files[1::2] = negatives`).")
    if files == positives + negatives:
        return _verdict(False, "Not yet: all positives come first, so the last 25% (validation) would hold only "
                               "negatives; alternate them with `files[::2] = positives` and `files[1::2] = negatives`.")
    if files != expected_files:
        return _verdict(False, f"Not yet: for positives {positives} and negatives {negatives} the files should be "
                               f"{expected_files}, but you gave {files}.")
    if labels == [0, 1, 0, 1, 0, 1]:
        return _verdict(False, "Not yet: the files are right but the labels are swapped: a crack (positive) is "
                               "label 1 and no crack is label 0, so even positions get 1.")
    if labels != expected_labels:
        return _verdict(False, f"Not yet: the labels should follow the files, {expected_labels} "
                               f"(1 at even positions, 0 at odd ones), but you gave {labels}.")
    return _verdict(True, "Well done: positives at even positions with label 1, negatives at odd ones with label 0.")


def check_split_index(function: Callable) -> bool:
    """`function(n)` returns how many of n samples go to training: the first 75%, rounded down."""
    cases = {40_000: 30_000, 10: 7, 7: 5, 3: 2, 1: 0, 0: 0, 100: 75}
    for n, expected in cases.items():
        answer = _call(function, n)
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_split_index` so that it returns a whole number.")
        if isinstance(answer, Exception):
            return _raised(answer)
        value = _whole_number(answer)
        if value is None:
            number = _number(answer)
            if number is not None and number == expected:
                return _verdict(False, f"Not yet: you returned {answer!r}, a float; an index that slices a list "
                                       "must be a whole number (an int), e.g. `int(n * 0.75)`.")
            return _verdict(False, f"Not yet: for n = {n} you returned {answer!r}; return a whole number (an int).")
        if value == expected:
            continue
        if value == n - expected:
            return _verdict(False, f"Not yet: for n = {n} you gave {value}, the size of the validation part; "
                                   "training takes the first 75%.")
        if value == math.ceil(n * 0.75) or value == round(n * 0.75):
            return _verdict(False, f"Not yet: for n = {n} you gave {value}, expected {expected}: round down "
                                   "(`int(n * 0.75)` or `n * 3 // 4`), as 30,000 of 40,000 does.")
        return _verdict(False, f"Not yet: for n = {n} you gave {value}, expected {expected} (75%, rounded down).")
    return _verdict(True, "Well done: 75% rounded down, a whole number (30,000 of 40,000, 7 of 10).")


def check_count_leaks(function: Callable) -> bool:
    """`function(train_hashes, val_hashes)` counts the validation images whose content is in training."""
    cases = [
        (["a", "a", "b"], ["a", "e"], 1),            # two training copies of "a": still one leaked image
        (["a", "b", "c"], ["c", "d", "c", "a"], 3),  # two validation copies of "c": both leak
        (["a", "b"], ["c", "d"], 0),
    ]
    for train, val, expected in cases:
        answer = _call(function, list(train), list(val))
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_count_leaks` so that it returns a count.")
        if isinstance(answer, Exception):
            return _raised(answer)
        value = _whole_number(answer)
        if value is None and isinstance(answer, torch.Tensor) and answer.numel() == 1:
            value = int(answer.item())
        if value == expected:
            continue
        shared_hashes = len(set(train) & set(val))
        train_side = sum(digest in set(val) for digest in train)
        case = f"for train {train} and val {val}"
        if value == shared_hashes:
            return _verdict(False, f"Not yet: {case} you counted distinct shared hashes ({value}); count every "
                                   f"validation image whose hash is in training ({expected}): two copies are two leaks.")
        if value == train_side:
            return _verdict(False, f"Not yet: {case} you counted training images ({value}); the question is how many "
                                   f"validation images also appear in training ({expected}): loop over `val_hashes`.")
        return _verdict(False, f"Not yet: {case} the answer is {expected}, you gave {answer!r}; loop over the "
                               "validation hashes and count those found in `set(train_hashes)`.")
    return _verdict(True, "Well done: you count every validation image whose exact content is also in training.")


# ----------------------------------------------------------------------------- notebook 03
def check_new_head(function: Callable) -> bool:
    """`function(model)` returns the ResNet18 with its backbone frozen and fc = Linear(512, 3)."""
    torch.manual_seed(0)
    answer = _call(function, resnet18(weights=None))  # a random backbone: fast, and no download
    if answer is NOT_ANSWERED:
        return _verdict(False, "Not answered yet: fill in `my_new_head` (and remember to `return model`).")
    if isinstance(answer, Exception):
        return _raised(answer)
    if not isinstance(answer, nn.Module) or not isinstance(getattr(answer, "fc", None), nn.Module):
        return _verdict(False, f"Not yet: return the model itself (got a {type(answer).__name__}).")
    head = answer.fc
    if not isinstance(head, nn.Linear):
        return _verdict(False, f"Not yet: `model.fc` is a {type(head).__name__}; make it one linear layer, "
                               "`nn.Linear(512, 3)`.")
    if head.in_features != 512:
        return _verdict(False, f"Not yet: the head takes {head.in_features} inputs, but ResNet18 gives it 512 "
                               "features per image (`model.fc.in_features`).")
    if head.out_features != 3:
        return _verdict(False, f"Not yet: the head has {head.out_features} outputs; a 3-class problem needs one "
                               "score per class, `nn.Linear(512, 3)`.")
    backbone_trainable = sum(p.numel() for name, p in answer.named_parameters()
                             if p.requires_grad and not name.startswith("fc."))
    if backbone_trainable:
        return _verdict(False, f"Not yet: {backbone_trainable:,} backbone parameters can still learn; set "
                               "`requires_grad = False` on every parameter before you replace `fc`.")
    head_trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    if head_trainable != 1_539:
        return _verdict(False, f"Not yet: only {head_trainable:,} parameters of the new head can learn; freeze "
                               "first, then replace `fc`: a new layer starts with `requires_grad = True`.")
    answer.eval()
    with torch.no_grad():
        shape = tuple(answer(torch.zeros(2, 3, 64, 64)).shape)
    if shape != (2, 3):
        return _verdict(False, f"Not yet: two images give outputs of shape {shape}, expected (2, 3).")
    return _verdict(True, "Well done: fc = Linear(512, 3) with 512 x 3 + 3 = 1,539 trainable parameters, "
                          "and the backbone is frozen.")


def check_count_trainable(function: Callable) -> bool:
    """`function(model)` returns the number of trainable parameters (numbers, not tensors)."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # 15 + 8 parameters
    for parameter in model[0].parameters():
        parameter.requires_grad = False
    frozen_all = nn.Sequential(nn.Linear(2, 2))
    frozen_all.requires_grad_(False)
    for case, expected in ((model, 8), (frozen_all, 0), (nn.Linear(5, 1), 6)):
        answer = _call(function, case)
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_count_trainable` so that it returns a number.")
        if isinstance(answer, Exception):
            return _raised(answer)
        value = _number(answer)
        if value == expected:
            continue
        value = int(value) if value is not None and value.is_integer() else value
        all_numbers = sum(p.numel() for p in case.parameters())
        trainable_tensors = sum(1 for p in case.parameters() if p.requires_grad)
        frozen_numbers = all_numbers - expected
        if value == all_numbers:
            return _verdict(False, f"Not yet: you counted all {all_numbers} parameters, the frozen ones too; "
                                   "keep only those with `p.requires_grad`.")
        if value == trainable_tensors and expected != trainable_tensors:
            return _verdict(False, f"Not yet: you counted {value} tensors; add up the numbers inside them "
                                   "with `p.numel()`.")
        if value == frozen_numbers:
            return _verdict(False, f"Not yet: you counted the {value} frozen parameters; the trainable ones "
                                   "have `p.requires_grad == True`.")
        return _verdict(False, f"Not yet: a model with {expected} trainable parameters got {answer!r}; add "
                               "`p.numel()` over `model.parameters()` where `p.requires_grad`.")
    return _verdict(True, "Well done: you add up p.numel() of the parameters with requires_grad, "
                          "as count_parameters does.")


# ----------------------------------------------------------------------------- notebook 04
def check_accuracy(function: Callable) -> bool:
    """`function(logits, labels)` returns the share of images whose highest logit is their label."""
    cases = [
        (torch.tensor([[2.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 0])),  # square: argmax(dim=0) gives 0.5
        (torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]]),
         torch.tensor([0, 1, 1, 0, 0])),  # predicted 0 1 0 0 1: 3 of 5 right
    ]
    for logits, labels in cases:
        answer = _call(function, logits.clone(), labels.clone())
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_accuracy` so that it returns a number.")
        if isinstance(answer, Exception):
            return _raised(answer)
        value = _number(answer)
        correct = int((logits.argmax(dim=1) == labels).sum())
        expected = correct / len(labels)
        if value is None:
            return _verdict(False, f"Not yet: you returned {type(answer).__name__}; return one number, "
                                   "e.g. `(predicted == labels).float().mean().item()`.")
        if math.isclose(value, expected, abs_tol=1e-6):
            continue
        square = logits.shape[0] == logits.shape[1]  # only then does argmax(dim=0) fit the labels
        wrong_dim = float((logits.argmax(dim=0) == labels).float().mean()) if square else math.nan
        if value == correct:
            return _verdict(False, f"Not yet: you returned {value:g}, the number of right answers; divide by the "
                                   "number of images, `len(labels)`, to get a fraction.")
        if math.isclose(value, 100 * expected):
            return _verdict(False, f"Not yet: you returned {value:g}, a percentage; return a fraction "
                                   f"between 0 and 1 ({expected:g}).")
        if math.isclose(value, 1 - expected):
            return _verdict(False, f"Not yet: you returned {value:g}, the share of mistakes; accuracy is the "
                                   "share of right answers.")
        if math.isclose(value, wrong_dim):
            return _verdict(False, "Not yet: you took argmax over the wrong dimension; logits have shape "
                                   "(images, classes), so the prediction is `logits.argmax(dim=1)`.")
        return _verdict(False, f"Not yet: for logits {logits.tolist()} and labels {labels.tolist()} the accuracy "
                               f"is {expected:g}, you gave {value:g}.")
    return _verdict(True, "Well done: argmax over the classes, compared with the labels, as a fraction.")


def check_iterations_per_epoch(function: Callable) -> bool:
    """`function(n_images, batch_size)` returns how many batches one epoch takes (the last may be smaller)."""
    cases = [((30_000, 100), 300), ((30_050, 100), 301), ((10, 3), 4), ((5, 10), 1), ((100, 100), 1)]
    for (n_images, batch_size), expected in cases:
        answer = _call(function, n_images, batch_size)
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_iterations_per_epoch` so that it returns a whole number.")
        if isinstance(answer, Exception):
            return _raised(answer)
        value = _whole_number(answer)
        case = f"for {n_images:,} images in batches of {batch_size}"
        if value is None:
            return _verdict(False, f"Not yet: {case} you returned {answer!r}; a number of iterations is a whole "
                                   "number (an int), e.g. `math.ceil(n_images / batch_size)`.")
        if value == expected:
            continue
        if value == n_images // batch_size:
            return _verdict(False, f"Not yet: {case} you gave {value}, expected {expected}: the last, smaller batch "
                                   "is an iteration too, so round up (`math.ceil`).")
        return _verdict(False, f"Not yet: {case} you gave {value}, expected {expected} (round up: a partly "
                               "filled last batch still counts).")
    return _verdict(True, "Well done: 30,000 images in batches of 100 take 300 iterations, and a partial "
                          "last batch counts as one more.")


# ----------------------------------------------------------------------------- notebook 05
def _two_class(crack_probability: list[float]) -> torch.Tensor:
    """(N, 2) probabilities [P(no crack), P(crack)] from the crack probabilities."""
    crack = torch.tensor(crack_probability)
    return torch.stack([1 - crack, crack], dim=1)


def check_confident_mistakes(function: Callable) -> bool:
    """`function(probabilities, labels, k)` returns the indices of the k surest mistakes, surest first."""
    probabilities = _two_class([0.95, 0.10, 0.40, 0.99, 0.70, 0.02, 0.55, 0.80])
    labels = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1])
    # mistakes: 0 (sure 0.95), 2 (0.60), 4 (0.70), 5 (0.98), 6 (0.55) -> surest first 5, 0, 4, 2, 6
    for k, expected in ((3, [5, 0, 4]), (10, [5, 0, 4, 2, 6]), (1, [5])):
        answer = _call(function, probabilities.clone(), labels.clone(), k)
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_confident_mistakes` so that it returns a list of indices.")
        if isinstance(answer, Exception):
            return _raised(answer)
        value = _as_list(answer)
        if value is None:
            return _verdict(False, f"Not yet: return a list of indices, not a {type(answer).__name__}.")
        value = [int(i) if isinstance(i, Real) else i for i in value]
        if value == expected:
            continue
        if value == [6, 2, 4, 5, 0][:k]:
            return _verdict(False, "Not yet: these are the least confident mistakes first; sort by confidence "
                                   "in descending order (`reverse=True`, or `descending=True`).")
        if value == [3, 5, 0, 1, 7, 4, 2, 6][:k]:
            return _verdict(False, "Not yet: your list includes right answers; keep only the images where the "
                                   "predicted class differs from the label.")
        if value == [0, 2, 4, 5, 6][:k]:
            return _verdict(False, "Not yet: these mistakes are in order of index; sort them by confidence, "
                                   "surest first.")
        if value == [0, 4, 6, 2, 5][:k]:
            return _verdict(False, "Not yet: you sorted by the probability of a crack; confidence is the "
                                   "probability of the predicted class, `probabilities.max(dim=1)`.")
        if len(value) != len(expected) and value[:len(expected)] == expected:
            return _verdict(False, f"Not yet: with k = {k} return at most k indices; you returned {len(value)}.")
        return _verdict(False, f"Not yet: with k = {k} the surest mistakes are {expected}, you gave {value}.")
    return _verdict(True, "Well done: only the mistakes, surest first, at most k of them.")


def check_precision_recall(function: Callable) -> bool:
    """`function(confusion)` returns (precision, recall) of the crack class (label 1).

    The confusion matrix has rows = actual class and columns = predicted class, as in notebook 05.
    """
    for confusion in (torch.tensor([[50, 10], [5, 35]]), torch.tensor([[8, 2], [4, 6]])):
        answer = _call(function, confusion.clone())
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_precision_recall` so that it returns `(precision, recall)`.")
        if isinstance(answer, Exception):
            return _raised(answer)
        if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
            return _verdict(False, "Not yet: return two numbers, `precision, recall`.")
        values = [_number(item) for item in answer]
        if None in values:
            return _verdict(False, "Not yet: precision and recall should both be numbers.")
        c = confusion.double()
        precision, recall = float(c[1, 1] / c[:, 1].sum()), float(c[1, 1] / c[1, :].sum())
        no_crack = (float(c[0, 0] / c[:, 0].sum()), float(c[0, 0] / c[0, :].sum()))

        def matches(pair) -> bool:
            return all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(values, pair))

        if matches((precision, recall)):
            continue
        case = f"for the matrix {confusion.tolist()}"
        if matches((recall, precision)):
            return _verdict(False, f"Not yet: {case} precision and recall are swapped; precision divides by a column "
                                   "(all images called a crack), recall by a row (all real cracks).")
        if matches(no_crack):
            return _verdict(False, f"Not yet: {case} you measured the no-crack class; a crack is label 1, so use "
                                   "`confusion[1, 1]` with column 1 and row 1.")
        if matches((100 * precision, 100 * recall)):
            return _verdict(False, f"Not yet: {case} you gave percentages; return fractions between 0 and 1.")
        return _verdict(False, f"Not yet: {case} expected precision {precision:.3f} and recall {recall:.3f}, "
                               f"got {values[0]:.3f} and {values[1]:.3f}.")
    return _verdict(True, "Well done: precision = TP / (TP + false alarms), recall = TP / (TP + missed cracks).")


# ----------------------------------------------------------------------------- notebook 06
def check_tiles_above(function: Callable) -> bool:
    """`function(probabilities, threshold)` returns the (row, column) of every tile at or above the threshold."""
    cases = [(torch.tensor([[0.1, 0.7, 0.5], [0.5, 0.2, 0.9]]), 0.5), (torch.tensor([[0.9, 0.6], [0.3, 0.8], [0.6, 0.1]]), 0.6)]
    for probabilities, threshold in cases:
        answer = _call(function, probabilities, threshold)
        if answer is NOT_ANSWERED:
            return _verdict(False, "Not answered yet: fill in `my_tiles_above` so that it returns a list of (row, column).")
        if isinstance(answer, Exception):
            return _raised(answer)
        rows, cols = probabilities.shape
        expected = [(r, c) for r in range(rows) for c in range(cols) if probabilities[r, c] >= threshold]
        try:
            tiles = [(int(r), int(c)) for r, c in answer]
        except (TypeError, ValueError):
            return _verdict(False, f"Not yet: return a list of (row, column) pairs, not {type(answer).__name__}.")
        if tiles == expected:
            continue
        if tiles == [(c, r) for r, c in expected]:
            return _verdict(False, "Not yet: the pairs are (column, row); the first index of `probabilities` is the row.")
        if tiles == [t for t in expected if probabilities[t] > threshold]:
            return _verdict(False, f"Not yet: a tile whose probability equals the threshold ({threshold}) counts as a "
                                   "crack, as everywhere in the workbook: use `>=`, not `>`.")
        below = [(r, c) for r in range(rows) for c in range(cols) if probabilities[r, c] < threshold]
        if tiles == below:
            return _verdict(False, "Not yet: you listed the tiles below the threshold; keep those at or above it.")
        if sorted(tiles) == expected:
            return _verdict(False, "Not yet: the right tiles, but list them row by row, left to right.")
        return _verdict(False, f"Not yet: for threshold {threshold} the tiles are {expected}, you gave {tiles}.")
    return _verdict(True, "Well done: every tile at or above the threshold, row by row, as (row, column).")


def check_unfreeze(function: Callable) -> bool:
    """`function(model)` makes layer3 and layer4 trainable (the head stays trainable) and returns the model."""
    model = resnet18(weights=None)
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.fc = nn.Linear(512, 2)
    answer = _call(function, model)
    if answer is NOT_ANSWERED:
        return _verdict(False, "Not answered yet: fill in `my_unfreeze` (and remember to `return model`).")
    if isinstance(answer, Exception):
        return _raised(answer)
    if not isinstance(answer, nn.Module):
        return _verdict(False, f"Not yet: return the model itself (got a {type(answer).__name__}).")
    trainable = {name.split(".")[0] for name, p in answer.named_parameters() if p.requires_grad}
    if "fc" not in trainable:
        return _verdict(False, "Not yet: the head (`fc`) no longer learns; unfreeze blocks, do not freeze the head.")
    if trainable == {"fc", "layer4"}:
        return _verdict(False, "Not yet: only layer4 learns; unfreeze `model.layer3` too.")
    if trainable - {"fc", "layer3", "layer4"}:
        extra = ", ".join(sorted(trainable - {"fc", "layer3", "layer4"}))
        return _verdict(False, f"Not yet: {extra} can learn as well; unfreeze only layer3 and layer4, "
                               "e.g. `for p in model.layer3.parameters(): p.requires_grad = True`.")
    if trainable != {"fc", "layer3", "layer4"}:
        return _verdict(False, "Not yet: set `requires_grad = True` on every parameter of layer3 and layer4.")
    partly = [block for block in ("layer3", "layer4")
              if not all(p.requires_grad for p in getattr(answer, block).parameters())]
    if partly:
        return _verdict(False, f"Not yet: only part of {partly[0]} learns; unfreeze all of its parameters.")
    return _verdict(True, "Well done: layer3, layer4 and the head learn; the stem, layer1 and layer2 stay frozen.")
