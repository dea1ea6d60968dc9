"""Checks for the notebooks' exercises: one function per exercise.

Most checks take a function you wrote and try it on small cases of their own; the decision checks
(check_more_epochs, check_threshold_for_recall) take your value and the run's own object and decide
from it, and check_batchnorm_prediction runs the experiment you predicted. Each prints one sentence:
"Well done: ..." when it is right, "Not yet: ..." with a hint that names the mistake (or the error
your function raised), or "Not answered yet: ..." while the exercise still holds its stub (None, or
a function that returns None or raises NotImplementedError). A check never raises, and it returns
True or False, so you (or a teacher) can also use it in code. Reference solutions are in the
`solutions/` folder, for when you are stuck.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet18


# ----------------------------------------------------------------------------- shared pieces
def _try_cases(function: Callable, cases: list, mistake: Callable, *, not_answered: str, well_done: str) -> bool:
    """Try the learner's `function` on each case; print the one-sentence verdict and return whether it passed.

    `cases` holds `(arguments, expected)` pairs: `function(*arguments)` should give `expected`.
    `arguments` may also be a function without parameters that builds them, for a case whose objects a
    right answer changes (a model and its optimiser): it is called afresh just before the answer, which
    gets those very objects, not copies.
    `mistake(answer, *arguments, expected)` returns the hint for a wrong answer, or None for a right one;
    with built arguments it sees them as the answer left them (a model after the answer trained it).
    The sentences' openings ("Well done: ", "Not yet: ", "Not answered yet: ") are added here.
    """
    for arguments, expected in cases:
        if callable(arguments):  # a builder: fresh objects for this call
            arguments = given = arguments()
        else:  # copies, so that an answer that changes its inputs cannot change the case
            given = [_copy(argument) for argument in arguments]
        try:
            answer = function(*given)
        except NotImplementedError:  # the stub, as the notebook gives it
            answer = None
        except Exception as error:  # a learner's bug must never stop the notebook
            return _verdict(
                False,
                f"Not yet: your function raised {type(error).__name__}: {error}. "
                "Read the error, fix the line it points at, and run the check again.",
            )
        if answer is None:
            return _verdict(False, f"Not answered yet: {not_answered}")
        try:
            hint = mistake(answer, *arguments, expected)
        except Exception as error:  # an answer of a shape the check did not foresee
            hint = (
                f"the check could not read your answer, {_short(answer)} ({type(error).__name__}: {error}); "
                "look again at what the task says your function should give."
            )
        if hint is not None:
            return _verdict(False, f"Not yet: {hint}")
    return _verdict(True, f"Well done: {well_done}")


def _short(value, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _verdict(passed: bool, message: str) -> bool:
    """Print the one-sentence verdict and return whether the answer passed."""
    print(message)
    return passed


def _copy(argument):
    """A copy of a tensor, numpy array or list argument; anything else (a model, a number) as it is."""
    if isinstance(argument, (torch.Tensor, np.ndarray)):
        return argument.copy() if isinstance(argument, np.ndarray) else argument.clone()
    return list(argument) if isinstance(argument, list) else argument


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
    """A plain list from a list, tuple, tensor or numpy array (flattened); None for anything else."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.flatten().tolist()
    if isinstance(value, (list, tuple)):
        return [item.item() if isinstance(item, torch.Tensor) else item for item in value]
    return None


def _all_close(values, expected) -> bool:
    """Whether each number is within 1e-6 of the expected one."""
    return all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(values, expected))


# ----------------------------------------------------------------------------- notebook 02
def check_interleave(function: Callable) -> bool:
    """`function(groups)` takes `(label, files)` pairs of equal length and returns `(files, labels)`: one file
    of each group in turn, in the groups' order (the capstone's two classes are `[(1, cracks), (0, intact)]`)."""
    cracks, intact, stains, joints = ["C0", "C1"], ["I0", "I1"], ["S0", "S1"], ["J0", "J1"]
    cases = [
        (([(1, cracks), (0, intact), (2, stains)],), (["C0", "I0", "S0", "C1", "I1", "S1"], [1, 0, 2, 1, 0, 2])),
        (
            ([(1, ["P0", "P1", "P2"]), (0, ["N0", "N1", "N2"])],),
            (["P0", "N0", "P1", "N1", "P2", "N2"], [1, 0, 1, 0, 1, 0]),
        ),
        (
            ([(3, joints), (1, cracks), (0, intact), (2, stains)],),
            (["J0", "C0", "I0", "S0", "J1", "C1", "I1", "S1"], [3, 1, 0, 2, 3, 1, 0, 2]),
        ),
    ]

    def mistake(answer, groups, expected) -> str | None:
        expected_files, expected_labels = expected
        if not (isinstance(answer, tuple) and len(answer) == 2):
            return "return two lists, the files and their labels, as a pair `(files, labels)`."
        files, labels = _as_list(answer[0]), _as_list(answer[1])
        if files is None or labels is None:
            return "the files and the labels should both be lists."
        case = f"for {len(groups)} groups of {len(groups[0][1])}"
        if len(files) != len(expected_files):
            return (
                f"{case} you returned {len(files)} files instead of {len(expected_files)}: every file of every "
                "group goes into the list once, whatever the number of groups."
            )
        if files == [file for _, group in groups for file in group]:
            return (
                f"{case} each group comes whole, one after the other, so the last part of the list (validation) "
                "would hold only the last class; take one file of each group in turn."
            )
        k = len(groups)
        takes_turns = all(
            set(files[r * k : (r + 1) * k]) == {group[r] for _, group in groups} for r in range(len(groups[0][1]))
        )
        if takes_turns and files != expected_files:
            return (
                f"{case} the classes take turns, but not in the order the groups were given "
                f"({[label for label, _ in groups]}); keep that order in every round."
            )
        if files != expected_files:
            return f"{case} the files should be {expected_files}, but you gave {files}."
        if labels == list(range(len(groups))) * len(groups[0][1]):
            return (
                f"{case} the labels count the groups' positions (0, 1, 2, ...); each file carries the label "
                "that comes with its group."
            )
        if labels != expected_labels:
            return f"{case} each file should carry its group's label, {expected_labels}, but you gave {labels}."
        return None

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_interleave` so that it returns `(files, labels)`.",
        well_done="one file of each class in turn, with its class's label, for two classes or more.",
    )


def check_split_sizes(function: Callable) -> bool:
    """`function(n)` returns `(train, validation, test)` sizes: 70% and 15% of n rounded down, the rest to test."""
    sizes = {
        10: (7, 1, 2),
        40_000: (28_000, 6_000, 6_000),
        7: (4, 1, 2),
        13: (9, 1, 3),
        3: (2, 0, 1),
        1: (0, 0, 1),
        0: (0, 0, 0),
    }
    cases = [((n,), expected) for n, expected in sizes.items()]

    def mistake(answer, n, expected) -> str | None:
        values = _as_list(answer) if not isinstance(answer, dict) else None
        if values is None or len(values) != 3:
            return "return three sizes, `(train, validation, test)`."
        if any(_number(value) is None for value in values):
            return f"for n = {n} you returned {answer!r}; each size should be a number of images."
        whole = [_whole_number(value) for value in values]
        numbers = [_number(value) for value in values]
        case = f"for n = {n} you gave {tuple(numbers)}, expected {expected}"
        if None in whole:
            if all(math.isclose(a, b) for a, b in zip(numbers, expected)):
                return (
                    f"for n = {n} the sizes are right but some are floats; a size slices a list of files, "
                    "so each must be a whole number (an int)."
                )
            if all(float(v).is_integer() for v in numbers):
                return (
                    f"{case}: and some are floats; a size slices a list of files, so each must be a whole "
                    "number (an int)."
                )
            return (
                f"{case}: a share of {n} images that is not a whole number of images cannot be a size; "
                "round each share down to whole images."
            )
        if tuple(whole) == expected:
            return None
        train, val, test = whole
        if train + val + test < n:
            return (
                f"{case}: {n - train - val - test} image(s) fall into no part; rounding both shares down "
                "leaves a remainder, and the test part takes all of it."
            )
        if train + val + test > n:
            return (
                f"{case}: the parts hold {train + val + test} images, more than the {n} there are; a share "
                "rounded up borrows images another part also counts."
            )
        if (train, val) == (expected[0], int(n * 85 // 100) - expected[0]) and val != expected[1]:
            return (
                f"{case}: you rounded where validation ends (85% of n) rather than its size (15% of n, "
                "rounded down); the task fixes the sizes."
            )
        shares = (n * 0.7, n * 0.15)
        roundings = [{math.floor(share), math.ceil(share), round(share)} for share in shares]
        if train in roundings[0] and val in roundings[1]:
            return (
                f"{case}: a share that is not a whole number of images was rounded up; round each share down, "
                "and the leftover goes to test."
            )
        if sorted(whole) == sorted(expected):
            return f"{case}: the right sizes in the wrong order; the order is training, validation, test."
        return f"{case}: training takes 70% of the images and validation 15%, each rounded down; test gets the rest."

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_split_sizes` so that it returns `(train, validation, test)`.",
        well_done="70% and 15% rounded down and the rest to test: three whole sizes that add up to n.",
    )


def check_leak_counts(function: Callable) -> bool:
    """`function(train_hashes, val_hashes)` returns `(in_training, repeated)`: the validation images with a copy
    in training, and those that repeat an earlier validation image."""
    cases = [
        ((["a", "b"], ["c", "c", "d", "c"]), (0, 2)),  # copies inside validation alone
        ((["a", "a", "b"], ["a", "e", "b"]), (2, 0)),  # leaks across the split alone
        ((["a", "b", "c"], ["c", "d", "c", "a", "e", "e"]), (3, 2)),  # both, and "c" does both
        ((["a", "b"], ["c", "d"]), (0, 0)),
    ]

    def mistake(answer, train, val, expected) -> str | None:
        values = _as_list(answer) if not isinstance(answer, dict) else None
        if values is None or len(values) != 2:
            return "return two counts, `(in_training, repeated)`."
        counts = [_whole_number(value) for value in values]
        if None in counts:
            return f"return two whole numbers, not {answer!r}."
        counts = tuple(counts)
        if counts == expected:
            return None
        case = f"for train {train} and validation {val} you gave {counts}, expected {expected}"
        in_training, repeated = counts
        distinct_shared = len(set(train) & set(val))
        train_side = sum(digest in set(val) for digest in train)
        every_member = sum(val.count(digest) for digest in set(val) if val.count(digest) > 1)
        first_only = sum(1 for i, digest in enumerate(val) if digest in train and digest not in val[:i])
        if counts == expected[::-1] and expected[0] != expected[1]:
            return f"{case}: the two counts are swapped; the copies in training come first."
        if in_training != expected[0]:
            if in_training == distinct_shared:
                return (
                    f"{case}: you counted the distinct pictures both splits share ({distinct_shared}); count "
                    "validation images instead: two validation copies of one training picture are two leaks."
                )
            if in_training == train_side:
                return (
                    f"{case}: you counted training images that have a copy in validation; the question is how "
                    "many validation images were already seen in training."
                )
            if in_training == first_only:
                return (
                    f"{case}: a validation picture that is in training and repeats in validation leaks every "
                    "time it appears; count each validation image, not each picture."
                )
            return f"{case}: the first count is how many validation images have a copy in training."
        if repeated == every_member:
            return (
                f"{case}: you counted every member of a repeated group, its first image too; the first one is "
                "fresh evidence, only the copies after it add nothing."
            )
        if repeated == 0 and expected[1]:
            return (
                f"{case}: copies inside validation count too; a picture the model sees twice there is counted "
                "twice in the accuracy, as if it were two pieces of evidence."
            )
        if repeated == len(set(val)):
            return f"{case}: you counted the distinct pictures in validation; count the repeats of an earlier one."
        return f"{case}: the second count is how many validation images repeat an earlier validation image."

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_leak_counts` so that it returns `(in_training, repeated)`.",
        well_done="you count the validation images seen in training and the repeats inside validation: "
        "neither is fresh evidence.",
    )


# ----------------------------------------------------------------------------- notebook 03
def check_new_head(function: Callable) -> bool:
    """`function(model)` returns the ResNet18 with its backbone frozen and fc = Linear(512, 3)."""
    torch.manual_seed(0)
    # a random backbone (fast, and no download); the new head's 512 x 3 + 3 parameters should be trainable
    cases = [((resnet18(weights=None),), 1_539)]

    def mistake(answer, model, expected) -> str | None:
        if not isinstance(answer, nn.Module) or not isinstance(getattr(answer, "fc", None), nn.Module):
            return f"return the model itself (got a {type(answer).__name__})."
        head = answer.fc
        if not isinstance(head, nn.Linear):
            return f"`model.fc` is a {type(head).__name__}; make it one linear layer, `nn.Linear(512, 3)`."
        if head.in_features != 512:
            return (
                f"the head takes {head.in_features} inputs, but ResNet18 gives it 512 features per image "
                "(`model.fc.in_features`)."
            )
        if head.out_features != 3:
            return (
                f"the head has {head.out_features} outputs; a 3-class problem needs one score per class, "
                "`nn.Linear(512, 3)`."
            )
        backbone_trainable = sum(
            p.numel() for name, p in answer.named_parameters() if p.requires_grad and not name.startswith("fc.")
        )
        if backbone_trainable:
            return (
                f"{backbone_trainable:,} backbone parameters can still learn; set `requires_grad = False` "
                "on every parameter before you replace `fc`."
            )
        head_trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
        if head_trainable != expected:
            return (
                f"only {head_trainable:,} parameters of the new head can learn; freeze first, then replace "
                "`fc`: a new layer starts with `requires_grad = True`."
            )
        answer.eval()
        with torch.no_grad():
            shape = tuple(answer(torch.zeros(2, 3, 64, 64)).shape)
        if shape != (2, 3):
            return f"two images give outputs of shape {shape}, expected (2, 3)."
        return None

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_new_head` (and remember to `return model`).",
        well_done="fc = Linear(512, 3) with 512 x 3 + 3 = 1,539 trainable parameters, and the backbone is frozen.",
    )


def check_trainable_per_block(function: Callable) -> bool:
    """`function(model)` returns a dict: top-level block name -> how many numbers in it can learn.

    Blocks where nothing learns may be left out or given 0.
    """
    partly = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.BatchNorm1d(2))  # 15, 0, 8, 4 numbers
    partly[0].requires_grad_(False)
    partly[3].bias.requires_grad_(False)
    cases = [
        (lambda: (_resnet_with_blocks_unfrozen("layer4"),), {"layer4": 8_393_728, "fc": 1_026}),
        (lambda: (partly,), {"2": 8, "3": 2}),
    ]

    def mistake(answer, model, expected) -> str | None:
        if not isinstance(answer, dict):
            return f"return a dict from block name to count, not a {type(answer).__name__}."
        counts = {name: _number(value) for name, value in answer.items()}
        if None in counts.values():
            return "each value of the dict should be a count, a number."
        learning = {name: value for name, value in counts.items() if value}
        if learning == expected:
            return None
        blocks = dict(model.named_children())
        if any(name not in blocks for name in learning):
            strangers = sorted(name for name in learning if name not in blocks)[:2]
            return (
                f"keys such as {strangers} are not blocks of the model; a block is one of the model's own "
                f"children ({', '.join(blocks)}), and it gathers every parameter inside it."
            )
        tensors = {name: sum(1 for p in block.parameters() if p.requires_grad) for name, block in blocks.items()}
        every = {name: sum(p.numel() for p in block.parameters()) for name, block in blocks.items()}
        frozen = {
            name: sum(p.numel() for p in block.parameters() if not p.requires_grad) for name, block in blocks.items()
        }
        if learning == {name: n for name, n in tensors.items() if n}:
            return (
                "you counted parameter tensors; the question is how many numbers can learn, and a tensor "
                "holds many (a weight matrix of 512 x 2 holds 1,024)."
            )
        if learning == {name: n for name, n in every.items() if n}:
            return (
                "you counted every number in each block, the frozen ones too; a frozen parameter keeps its "
                "values, so it does not count."
            )
        if learning == {name: n for name, n in frozen.items() if n}:
            return "you counted the frozen numbers; the question is how many can learn."
        for name, count in expected.items():
            if learning.get(name) != count:
                return f"{name} should hold {count:,} numbers that can learn, you gave {learning.get(name, 0):,}."
        extra = sorted(set(learning) - set(expected))
        return f"in {extra[0]} nothing can learn, but you gave it {learning[extra[0]]:,}."

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_trainable_per_block` so that it returns a dict.",
        well_done="per block, the numbers whose parameter has requires_grad: with layer4 unfrozen, "
        "8,393,728 there and 1,026 in the head.",
    )


# ----------------------------------------------------------------------------- notebook 04
def _epoch(
    head: nn.Module,
    batches: list,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    order: str = "zfbs",
    train: bool = True,
) -> list[float]:
    """One epoch as the capstone's loop runs it (helpers.training.training_step), or as a mistake does.

    `order` spells out each batch's calls: z = optimizer.zero_grad(), f = outputs and loss,
    b = loss.backward(), s = optimizer.step(); "zfbs" is the capstone's loop. train=False leaves out
    head.train(). Returns the batch losses.
    """
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
            else:
                optimizer.step()
        losses.append(loss.item())
    return losses


def _epoch_case(steps: list | None = None) -> tuple:
    """A small seeded case for one epoch, built afresh: (head, batches, optimizer, criterion).

    The head, Dropout(0.5) then Linear(512, 2), comes in eval mode, so an answer that forgets head.train()
    trains without Dropout; with Adam, gradients that pile up change the steps. The seed is set again
    last, so every run draws the same Dropout masks. With `steps`, each optimizer.step() appends to it.
    """
    torch.manual_seed(0)
    head = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 2)).eval()
    batches = [(torch.randn(n, 512), torch.randint(0, 2, (n,))) for n in (8, 8, 8, 5)]  # a smaller last batch
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
    if steps is not None:
        optimizer.register_step_post_hook(lambda *_: steps.append(1))
    torch.manual_seed(1)
    return head, batches, optimizer, nn.CrossEntropyLoss()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's parameters and buffers."""
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


def _same_weights(weights: dict, other: dict) -> bool:
    """Whether two `_weights` hold the same tensors, up to rounding."""
    return weights.keys() == other.keys() and all(
        weights[name].shape == other[name].shape
        and torch.allclose(weights[name].double(), other[name].double(), rtol=1e-5, atol=1e-6)
        for name in weights
    )


# the common mistakes that still change the head, as (order, train) for `_epoch`, and their hints
_STEP_TOO_EARLY = (
    "each step uses the previous batch's gradients (so the first step does nothing, and the "
    "last batch's are never used): call `loss.backward()` before `optimizer.step()`."
)
_EPOCH_MISTAKES = {
    ("fbs", True): "the gradients accumulate from batch to batch, because they are never zeroed: call "
    "`optimizer.zero_grad()` (with its brackets) at the start of each batch.",
    ("szfb", True): _STEP_TOO_EARLY,  # step at the top of the loop
    ("fszb", True): _STEP_TOO_EARLY,  # step between the loss and zero_grad, backward last
    ("zfbs", False): "the head stayed in eval mode, so its Dropout was off while it trained: call `head.train()` "
    "(with its brackets) before the loop, as the capstone's loop does.",
}


def check_train_one_epoch(function: Callable) -> bool:
    """`function(head, batches, optimizer, criterion)` trains the head for one epoch and returns the batch losses.

    The answer should give the head the same weights as the capstone's loop (head.train(), then per batch
    zero_grad, outputs, loss, backward, step) from the same start, and return its losses as floats.
    """
    with torch.random.fork_rng(devices=[]):  # the check's seeds leave the notebook's random numbers alone
        start = _weights(_epoch_case()[0])
        outcomes = {}  # (order, train) -> (weights after the epoch, losses)
        for order, train in [("zfbs", True), *_EPOCH_MISTAKES]:
            head, *rest = _epoch_case()
            losses = _epoch(head, *rest, order=order, train=train)
            outcomes[order, train] = (_weights(head), losses)
        steps: list = []  # one item per step of the optimizer the answer is given
        cases = [(lambda: _epoch_case(steps), outcomes["zfbs", True])]

        def mistake(answer, head, batches, optimizer, criterion, expected) -> str | None:
            weights, losses = expected
            n = len(losses)
            value = _number(answer)
            if value is not None:
                if math.isclose(value, sum(losses) / n, rel_tol=1e-5):
                    return (
                        f"you returned the mean of the losses, {value:.4f}; return the list of the {n} batch "
                        "losses itself, one float per batch (`losses.append(loss.item())` in the loop)."
                    )
                return (
                    f"you returned one number, {value!r}; return a list with one loss per batch "
                    f"({n} here): `losses.append(loss.item())` in the loop, then `return losses`."
                )
            if isinstance(answer, torch.Tensor):
                return (
                    "you returned a tensor; return a plain list of Python floats, one per batch: "
                    "`losses.append(loss.item())` in the loop."
                )
            if not isinstance(answer, (list, tuple)):
                return f"return a list of the batch losses, not a {type(answer).__name__}."
            if len(answer) != n:
                return (
                    f"you returned {len(answer)} loss{'' if len(answer) == 1 else 'es'} for {n} batches: "
                    "append one loss per batch, inside the loop (`losses.append(loss.item())`)."
                )
            values = [_number(item) for item in answer]
            if None in values:
                return "each item of the list should be one batch's loss, a number: `loss.item()`."
            trained = _weights(head)
            if not _same_weights(trained, weights):
                if _same_weights(trained, start):  # nothing learnt: which call is missing or misplaced?
                    if not steps:
                        return (
                            "the head never changed, because `optimizer.step()` is never called (the brackets "
                            "matter): after `loss.backward()`, the step is what updates the weights."
                        )
                    if all(p.grad is None or not p.grad.any() for p in head.parameters()):
                        return (
                            "the head never learnt: each `optimizer.step()` found no gradients, as when "
                            "`zero_grad()` comes between `loss.backward()` and `optimizer.step()` (or backward "
                            "is missing); zero them first, at the start of each batch, and step right after "
                            "backward."
                        )
                    return (
                        "the head never learnt: `optimizer.step()` runs before `loss.backward()`, just after "
                        "`zero_grad()`, so each step finds no gradients; the order is zero_grad, outputs, "
                        "loss, backward, step."
                    )
                for variant, hint in _EPOCH_MISTAKES.items():
                    if _same_weights(trained, outcomes[variant][0]):
                        return hint
                if not steps:
                    return (
                        "the head changed, but the `optimizer` your function was given never stepped: "
                        "use it (`optimizer.step()`) rather than a new one."
                    )
                return (
                    "after one epoch the head's weights differ from the capstone loop's: `head.train()`, then "
                    "for each batch `optimizer.zero_grad()`, `outputs = head(features)`, "
                    "`loss = criterion(outputs, labels)`, `loss.backward()`, `optimizer.step()`, in that order."
                )
            if any(isinstance(item, torch.Tensor) for item in answer):
                return (
                    "the head trained right, but the losses are tensors; return Python floats with "
                    "`loss.item()` (a tensor also keeps its batch's whole graph in memory)."
                )
            if not all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(values, losses)):
                return (
                    f"the head trained right, but the losses should be each batch's `loss.item()`, in order: "
                    f"{[round(loss, 4) for loss in losses]}, not {[round(v, 4) for v in values]}."
                )
            return None

        return _try_cases(
            function,
            cases,
            mistake,
            not_answered="fill in `my_train_one_epoch` so that it returns the list of batch losses.",
            well_done="head.train(), then for each batch zero_grad, outputs, loss, backward, step: "
            "the same weights and losses as the capstone's loop.",
        )


_DECISIONS = {
    "ten epochs": ("ten epochs", "ten", "10", "10 epochs"),
    "one epoch": ("one epoch", "one", "1", "1 epoch"),
    "no clear difference": ("no clear difference", "no difference", "unclear", "tie", "neither", "same"),
}


def _decision(answer) -> str | None:
    """The decision a learner's string names (see _DECISIONS), or None."""
    if not isinstance(answer, str):
        return None
    text = " ".join(answer.lower().replace("-", " ").split()).rstrip(".!")
    return next((decision for decision, spellings in _DECISIONS.items() if text in spellings), None)


def check_more_epochs(answer, comparison) -> bool:
    """`answer` is "ten epochs", "one epoch" or "no clear difference": what `comparison` (one epoch against
    ten on the same images, from compare_on_same_images) shows at the 5% level."""
    if answer is None:
        return _verdict(
            False, 'Not answered yet: set `my_decision` to "ten epochs", "one epoch" or "no clear difference".'
        )
    try:
        decision = _decision(answer)
        if decision is None:
            return _verdict(
                False,
                f'Not yet: {answer!r} is none of the three decisions; answer "ten epochs", '
                '"one epoch" or "no clear difference".',
            )
        only_one, only_ten = comparison.only_first_right, comparison.only_second_right
        p = comparison.p_value
        if p < 0.05 and only_one != only_ten:
            right = "ten epochs" if only_ten > only_one else "one epoch"
        else:
            right = "no clear difference"
        counts = (
            f"one epoch alone was right on {only_one:,} images and ten epochs alone on {only_ten:,}, "
            f"a split at least this uneven comes by chance with probability {p:.2g}"
        )
        if decision == right:
            return _verdict(
                True,
                f"Well done: {counts}, so the answer is {right}: only the images where the two "
                "heads disagree tell them apart.",
            )
        if right == "no clear difference":
            return _verdict(
                False,
                f"Not yet: {counts}, more than 5%: two equally good heads would often split "
                f"their disagreements like this, so the data do not show that {decision} is "
                "better.",
            )
        if decision == "no clear difference":
            return _verdict(
                False,
                f"Not yet: {counts}, under 5%: equally good heads would rarely split their "
                "disagreements this unevenly, so the data do pick one of them.",
            )
        return _verdict(
            False,
            f"Not yet: {counts}; the head that is right alone on more of the disagreements is "
            f"the better one, and that is not {decision}.",
        )
    except Exception as error:  # an answer or object of a kind the check did not expect
        return _verdict(
            False,
            f"Not yet: the check could not read what it was given ({type(error).__name__}: "
            f"{error}); pass your decision and the notebook's `comparison`.",
        )


_BATCHNORM_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _batchnorm_experiment() -> set[str]:
    """Which of a frozen BatchNorm layer's tensors change when it sees one batch in training mode.

    The layer has requires_grad=False everywhere (as in a frozen backbone), goes to model.train(), and
    runs forward on one batch under torch.no_grad(); no optimiser is involved.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = nn.BatchNorm2d(3).requires_grad_(False)
        before = {name: value.clone() for name, value in layer.state_dict().items()}
        layer.train()
        with torch.no_grad():
            layer(torch.randn(4, 3, 5, 5) * 2 + 1)
    after = layer.state_dict()
    return {name for name in _BATCHNORM_NAMES if not torch.equal(before[name], after[name])}


def check_batchnorm_prediction(prediction) -> bool:
    """`prediction` is the set (or list) of names, among weight, bias, running_mean, running_var and
    num_batches_tracked, that you expect to change when a frozen BatchNorm layer sees one batch in
    training mode; the check runs that experiment and compares."""
    if prediction is None:
        return _verdict(
            False,
            "Not answered yet: set `my_prediction` to the set of names you expect to change "
            "(an empty set if you expect none).",
        )
    try:
        if isinstance(prediction, str) or not isinstance(prediction, (set, frozenset, list, tuple)):
            return _verdict(
                False,
                f"Not yet: write your prediction as a set of names, e.g. {{'bias'}}, not a "
                f"{type(prediction).__name__}.",
            )
        names = {str(name).strip() for name in prediction}
        unknown = sorted(names - set(_BATCHNORM_NAMES))
        if unknown:
            return _verdict(
                False,
                f"Not yet: {unknown[0]!r} is not one of the layer's tensors; choose among "
                f"{', '.join(_BATCHNORM_NAMES)}.",
            )
        changed = _batchnorm_experiment()
        happened = (
            f"in the experiment {', '.join(sorted(changed))} changed and "
            f"{', '.join(name for name in _BATCHNORM_NAMES if name not in changed)} did not"
        )
        if names == changed:
            return _verdict(
                True,
                f"Well done: {happened}, as you predicted: requires_grad=False stops gradients, "
                "while training mode still updates the running statistics with every batch.",
            )
        if not names:
            return _verdict(
                False,
                f"Not yet: {happened}; requires_grad=False only stops gradients, and the "
                "running statistics are not learnt by gradients but updated in training mode "
                "by every forward pass.",
            )
        learnt = sorted(names & {"weight", "bias"})
        if learnt:
            return _verdict(
                False,
                f"Not yet: {happened}; {learnt[0]} is a parameter, which only an optimiser step "
                "changes, and this layer is frozen and no optimiser ran.",
            )
        missing = sorted(changed - names)
        if missing == ["num_batches_tracked"]:
            return _verdict(
                False, f"Not yet: {happened}; the layer also counts the batches it has seen in training mode."
            )
        return _verdict(
            False,
            f"Not yet: {happened}; in training mode every forward pass blends the batch's "
            f"mean and variance into the running ones (you left out {', '.join(missing)}).",
        )
    except Exception as error:  # an answer of a kind the check did not expect
        return _verdict(
            False,
            f"Not yet: the check could not read your prediction ({type(error).__name__}: "
            f"{error}); write it as a set of names.",
        )


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
    cases = [
        ((probabilities, labels, 3), [5, 0, 4]),
        ((probabilities, labels, 10), [5, 0, 4, 2, 6]),
        ((probabilities, labels, 1), [5]),
    ]

    def mistake(answer, probabilities, labels, k, expected) -> str | None:
        value = _as_list(answer)
        if value is None:
            return f"return a list of indices, not a {type(answer).__name__}."
        value = [int(i) if isinstance(i, Real) else i for i in value]
        if value == expected:
            return None
        if value == [6, 2, 4, 5, 0][:k]:
            return (
                "these are the least confident mistakes first; the surest mistake, the most alarming one, comes first."
            )
        if value == [3, 5, 0, 1, 7, 4, 2, 6][:k]:
            return (
                "your list includes right answers; keep only the images where the predicted class differs "
                "from the label."
            )
        if value == [0, 2, 4, 5, 6][:k]:
            return "these mistakes are in order of index; sort them by confidence, surest first."
        if value == [0, 4, 6, 2, 5][:k]:
            return (
                "you sorted by the probability of a crack; a model that says 'no crack' at 98% is just as "
                "sure, so confidence is the probability of the class it predicted."
            )
        if len(value) != len(expected) and value[: len(expected)] == expected:
            return f"with k = {k} return at most k indices; you returned {len(value)}."
        return f"with k = {k} the surest mistakes are {expected}, you gave {value}."

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_confident_mistakes` so that it returns a list of indices.",
        well_done="only the mistakes, surest first, at most k of them.",
    )


def check_precision_recall(function: Callable) -> bool:
    """`function(confusion)` returns (precision, recall) of the crack class (label 1).

    The confusion matrix has rows = actual class and columns = predicted class, as in notebook 05.
    """
    # precision: true positives over column 1 (called a crack); recall: over row 1 (a real crack)
    cases = [
        ((torch.tensor([[50, 10], [5, 35]]),), (35 / 45, 35 / 40)),
        ((torch.tensor([[8, 2], [4, 6]]),), (6 / 8, 6 / 10)),
    ]

    def mistake(answer, confusion, expected) -> str | None:
        if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
            return "return two numbers, `precision, recall`."
        values = [_number(item) for item in answer]
        if None in values:
            return "precision and recall should both be numbers."
        if _all_close(values, expected):
            return None
        (precision, recall), c = expected, confusion.double()
        no_crack = (float(c[0, 0] / c[:, 0].sum()), float(c[0, 0] / c[0, :].sum()))
        case = f"for the matrix {confusion.tolist()}"
        if _all_close(values, (recall, precision)):
            return (
                f"{case} precision and recall are swapped; precision divides by a column (all images called "
                "a crack), recall by a row (all real cracks)."
            )
        if _all_close(values, no_crack):
            return (
                f"{case} you measured the no-crack class; a crack is label 1, so read the row and the column "
                "of class 1."
            )
        if _all_close(values, (100 * precision, 100 * recall)):
            return f"{case} you gave percentages; return fractions between 0 and 1."
        return (
            f"{case} expected precision {precision:.3f} and recall {recall:.3f}, "
            f"got {values[0]:.3f} and {values[1]:.3f}."
        )

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_precision_recall` so that it returns `(precision, recall)`.",
        well_done="precision = TP / (TP + false alarms), recall = TP / (TP + missed cracks).",
    )


def check_threshold_for_recall(answer, curve: dict, recall: float = 0.95) -> bool:
    """`answer` is the highest threshold of `curve` (from threshold_curve) at which the crack recall is at
    least `recall`: the threshold that misses few enough cracks with the fewest false alarms."""
    if answer is None:
        return _verdict(False, "Not answered yet: set `my_threshold` to the threshold you choose from `curve`.")
    try:
        value = _number(answer[0] if isinstance(answer, (list, tuple)) and len(answer) == 1 else answer)
        if value is None:
            return _verdict(False, f"Not yet: a threshold is one number between 0 and 1, not {answer!r}.")
        thresholds = [float(t) for t in curve["threshold"]]
        recalls = [float(r) for r in curve["recall"]]
        alarms = [int(a) for a in curve["false_alarms"]]
        good = [i for i, r in enumerate(recalls) if r >= recall - 1e-12]
        if not good:
            return _verdict(False, f"Not yet: no threshold of this curve reaches {recall:.0%} recall.")
        best = max(good, key=lambda i: thresholds[i])
        if math.isclose(value, 100 * recall):
            return _verdict(
                False,
                f"Not yet: {value:g} is the recall you need (in percent), not a threshold; find "
                f"the threshold at which the recall curve still reaches {recall:.0%}.",
            )
        if not 0 <= value <= 1:
            return _verdict(False, f"Not yet: {value:g} is no threshold: a crack probability lies between 0 and 1.")
        at = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - value))
        if not math.isclose(thresholds[at], value, abs_tol=1e-6):
            return _verdict(
                False,
                f"Not yet: {value:g} is not one of the thresholds the curve was measured at, "
                "so its recall is unknown; choose one of the curve's thresholds.",
            )
        best_text = f"at {thresholds[best]:.2f} recall is {recalls[best]:.1%} with {alarms[best]:,} false alarms"
        if recalls[at] < recall - 1e-12:
            return _verdict(
                False,
                f"Not yet: at {value:.2f} recall is {recalls[at]:.1%}, below {recall:.0%}: too "
                "many cracks slip through; a lower threshold calls more images cracks.",
            )
        if at != best:
            return _verdict(
                False,
                f"Not yet: at {value:.2f} recall is {recalls[at]:.1%}, enough, but with "
                f"{alarms[at]:,} false alarms; a higher threshold also keeps {recall:.0%} "
                "recall and calls fewer intact surfaces cracks.",
            )
        return _verdict(True, f"Well done: {best_text}, and any higher threshold misses too many cracks.")
    except Exception as error:  # an answer or object of a kind the check did not expect
        return _verdict(
            False,
            f"Not yet: the check could not read what it was given ({type(error).__name__}: "
            f"{error}); pass your threshold and the notebook's `curve`.",
        )


# ----------------------------------------------------------------------------- notebook 06
def check_tiles_above(function: Callable) -> bool:
    """`function(probabilities, threshold)` returns the (row, column) of every tile at or above the threshold.

    `probabilities` is a numpy array of shape (rows, columns); the answer may be a list of pairs or an
    (N, 2) array of them.
    """
    # numpy grids, as scan returns them; float32 like the model's outputs (0.6 is then not exactly 0.6)
    cases = [
        ((np.array([[0.1, 0.7, 0.5], [0.5, 0.2, 0.9]], dtype=np.float32), 0.5), [(0, 1), (0, 2), (1, 0), (1, 2)]),
        (
            (np.array([[0.9, 0.625], [0.3, 0.8], [0.625, 0.1]], dtype=np.float32), 0.625),
            [(0, 0), (0, 1), (1, 1), (2, 0)],
        ),
        ((np.array([[0.2, 0.3]], dtype=np.float32), 0.5), []),
    ]

    def mistake(answer, probabilities, threshold, expected) -> str | None:
        try:
            tiles = [(int(r), int(c)) for r, c in answer]
        except (TypeError, ValueError):
            return f"return a list of (row, column) pairs, not {type(answer).__name__}."
        if tiles == expected:
            return None
        if tiles == [(c, r) for r, c in expected]:
            return "the pairs are (column, row); the first index of `probabilities` is the row."
        if tiles == [t for t in expected if probabilities[t] > threshold]:
            return (
                f"a tile whose probability equals the threshold ({threshold}) counts as a crack, as everywhere "
                "in the workbook: 'at least' includes the threshold itself."
            )
        rows, cols = probabilities.shape
        if tiles == [(r, c) for r in range(rows) for c in range(cols) if probabilities[r, c] < threshold]:
            return "you listed the tiles below the threshold; keep those at or above it."
        if sorted(tiles) == expected:
            return "the right tiles, but list them row by row, left to right."
        return f"for threshold {threshold} the tiles are {expected}, you gave {tiles}."

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_tiles_above` so that it returns a list of (row, column).",
        well_done="every tile at or above the threshold, row by row, as (row, column).",
    )


def check_unfreeze(function: Callable) -> bool:
    """`function(model)` makes layer3 and layer4 trainable (the head stays trainable) and returns the model."""
    model = resnet18(weights=None).requires_grad_(False)
    model.fc = nn.Linear(512, 2)
    cases = [((model,), {"fc", "layer3", "layer4"})]  # the blocks that should learn

    def mistake(answer, model, expected) -> str | None:
        if not isinstance(answer, nn.Module):
            return f"return the model itself (got a {type(answer).__name__})."
        trainable = {name.split(".")[0] for name, p in answer.named_parameters() if p.requires_grad}
        if "fc" not in trainable:
            return "the head (`fc`) no longer learns; unfreeze blocks, do not freeze the head."
        if trainable == {"fc", "layer4"}:
            return "only layer4 learns; unfreeze `model.layer3` too."
        if trainable - expected:
            return (
                f"{', '.join(sorted(trainable - expected))} can learn as well; unfreeze only layer3 and layer4: "
                "the earlier blocks' general features (edges, textures) should stay as ImageNet left them."
            )
        if trainable != expected:
            return "set `requires_grad = True` on every parameter of layer3 and layer4."
        partly = [
            block
            for block in ("layer3", "layer4")
            if not all(p.requires_grad for p in getattr(answer, block).parameters())
        ]
        if partly:
            return f"only part of {partly[0]} learns; unfreeze all of its parameters."
        return None

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_unfreeze` (and remember to `return model`).",
        well_done="layer3, layer4 and the head learn; the stem, layer1 and layer2 stay frozen.",
    )


def _resnet_with_blocks_unfrozen(*blocks: str) -> nn.Module:
    """A random ResNet18, frozen but for the named blocks and a new 2-class head."""
    model = resnet18(weights=None).requires_grad_(False)
    for block in blocks:
        getattr(model, block).requires_grad_(True)
    model.fc = nn.Linear(512, 2)
    return model


def check_parameter_groups(function: Callable) -> bool:
    """`function(model, head_lr, backbone_lr)` returns parameter groups (a list of dicts with "params" and "lr")
    for an optimiser: the head at head_lr, layer4 at backbone_lr, the other unfrozen blocks at backbone_lr / 10,
    frozen parameters left out."""
    cases = [
        (lambda: (_resnet_with_blocks_unfrozen("layer3", "layer4"), 1e-3, 1e-4), None),
        (lambda: (_resnet_with_blocks_unfrozen("layer4"), 1e-2, 1e-3), None),
    ]

    def mistake(answer, model, head_lr, backbone_lr, expected) -> str | None:
        if not isinstance(answer, (list, tuple)) or not all(isinstance(group, dict) for group in answer):
            return "return a list of dicts, one per group, each with its \"params\" and its \"lr\"."
        try:
            optimizer = torch.optim.Adam(answer, lr=0.123)
        except ValueError as error:
            if "more than one" in str(error):
                return (
                    "a parameter sits in two groups; each parameter learns at one rate, so it belongs to "
                    "one group only."
                )
            return f"an optimiser cannot be built from your groups: {error}"
        rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        if any(rate == 0.123 for rate in rates.values()):
            return (
                "a group has no \"lr\" of its own, so it learns at whatever rate the optimiser was built with; "
                "give each group its rate."
            )
        frozen = {id(p) for p in model.parameters() if not p.requires_grad}
        if set(rates) & frozen:
            unfrozen = [
                name for name, block in model.named_children() if any(p.requires_grad for p in block.parameters())
            ]
            return (
                f"{len(set(rates) & frozen)} frozen parameters sit in your groups; only the parameters that "
                f"can learn belong there (here those of {', '.join(unfrozen)})."
            )
        if len(rates) == sum(p.requires_grad for p in model.parameters()) and set(rates.values()) == {head_lr}:
            return (
                "everything learns at the head's rate; the pretrained blocks need smaller steps, or large ones "
                "would wipe out what ImageNet taught them."
            )
        wanted = {"fc": head_lr, "layer4": backbone_lr}  # every other unfrozen block: backbone_lr / 10
        for name, block in sorted(model.named_children(), key=lambda child: child[0] != "fc"):  # the head first
            learning = [p for p in block.parameters() if p.requires_grad]
            if not learning:
                continue
            rate = wanted.get(name, backbone_lr / 10)
            given = {rates.get(id(p)) for p in learning}
            if None in given:
                return (
                    f"{'the head' if name == 'fc' else name} can learn but is in no group (or only part of it "
                    "is), so the optimiser would never change it."
                )
            if given == {rate}:
                continue
            if name == "fc" and given == {backbone_lr}:
                return (
                    "the head learns at the backbone's rate; it starts from random numbers and needs the largest steps."
                )
            if name != "fc" and given == {head_lr}:
                return (
                    f"{name} learns at the head's rate; pretrained weights need smaller steps, or large ones "
                    "would wipe out what ImageNet taught them."
                )
            if name == "layer3" and given == {backbone_lr}:
                return (
                    "layer3 learns at layer4's rate; an earlier block holds more general features, worth "
                    "keeping closer to ImageNet's, so it gets a tenth of that rate."
                )
            return f"{name} should learn at {rate:g}, yours learns at {', '.join(f'{g:g}' for g in sorted(given))}."
        return None

    return _try_cases(
        function,
        cases,
        mistake,
        not_answered="fill in `my_parameter_groups` so that it returns a list of groups.",
        well_done="the new head takes the largest steps, layer4 smaller ones and layer3 smaller still, "
        "and nothing frozen sits in the optimiser.",
    )
