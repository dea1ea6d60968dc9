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
            return _verdict(False, f"Not yet: your function raised {type(error).__name__}: {error}. "
                                   "Read the error, fix the line it points at, and run the check again.")
        if answer is None:
            return _verdict(False, f"Not answered yet: {not_answered}")
        hint = mistake(answer, *arguments, expected)
        if hint is not None:
            return _verdict(False, f"Not yet: {hint}")
    return _verdict(True, f"Well done: {well_done}")


def _verdict(passed: bool, message: str) -> bool:
    """Print the one-sentence verdict and return whether the answer passed."""
    print(message)
    return passed


def _copy(argument):
    """A copy of a tensor or list argument; anything else (a model, a number) as it is."""
    if isinstance(argument, torch.Tensor):
        return argument.clone()
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
    """A plain list from a list, tuple or 1-D tensor; None for anything else."""
    if isinstance(value, torch.Tensor):
        return value.flatten().tolist()
    if isinstance(value, (list, tuple)):
        return [item.item() if isinstance(item, torch.Tensor) else item for item in value]
    return None


def _all_close(values, expected) -> bool:
    """Whether each number is within 1e-6 of the expected one."""
    return all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(values, expected))


# ----------------------------------------------------------------------------- notebook 02
def check_interleave(function: Callable) -> bool:
    """`function(positives, negatives)` returns `(files, labels)`: positives at even positions (1)."""
    positives, negatives = ["P0", "P1", "P2"], ["N0", "N1", "N2"]
    cases = [((positives, negatives), (["P0", "N0", "P1", "N1", "P2", "N2"], [1, 0, 1, 0, 1, 0]))]

    def mistake(answer, positives, negatives, expected) -> str | None:
        expected_files, expected_labels = expected
        if not (isinstance(answer, tuple) and len(answer) == 2):
            return "return two lists, `files, labels`, e.g. `return files, labels`."
        files, labels = _as_list(answer[0]), _as_list(answer[1])
        if files is None or labels is None:
            return "`files` and `labels` should both be lists."
        if len(files) != 6:
            return (f"3 positives and 3 negatives make 6 files, not {len(files)}; "
                    "start from `files = [None] * (len(positives) + len(negatives))`.")
        if files == ["N0", "P0", "N1", "P1", "N2", "P2"]:
            return ("position 0 holds a negative; positives go at even positions (`files[::2] = positives`) "
                    "and negatives at odd ones (`files[1::2] = negatives`).")
        if files == positives + negatives:
            return ("all positives come first, so the last 25% (validation) would hold only negatives; "
                    "alternate them with `files[::2] = positives` and `files[1::2] = negatives`.")
        if files != expected_files:
            return (f"for positives {positives} and negatives {negatives} the files should be {expected_files}, "
                    f"but you gave {files}.")
        if labels == [0, 1, 0, 1, 0, 1]:
            return ("the files are right but the labels are swapped: a crack (positive) is label 1 and no crack "
                    "is label 0, so even positions get 1.")
        if labels != expected_labels:
            return (f"the labels should follow the files, {expected_labels} (1 at even positions, 0 at odd ones), "
                    f"but you gave {labels}.")
        return None

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_interleave` so that it returns `(files, labels)`.",
                      well_done="positives at even positions with label 1, negatives at odd ones with label 0.")


def check_split_index(function: Callable) -> bool:
    """`function(n)` returns how many of n samples go to training: the first 75%, rounded down."""
    cases = [((n,), expected) for n, expected in {40_000: 30_000, 10: 7, 7: 5, 3: 2, 1: 0, 0: 0, 100: 75}.items()]

    def mistake(answer, n, expected) -> str | None:
        value = _whole_number(answer)
        if value is None:
            if _number(answer) == expected:
                return (f"you returned {answer!r}, a float; an index that slices a list must be a whole number "
                        "(an int), e.g. `int(n * 0.75)`.")
            return f"for n = {n} you returned {answer!r}; return a whole number (an int)."
        if value == expected:
            return None
        if value == n - expected:
            return f"for n = {n} you gave {value}, the size of the validation part; training takes the first 75%."
        if value in (math.ceil(n * 0.75), round(n * 0.75)):
            return (f"for n = {n} you gave {value}, expected {expected}: round down (`int(n * 0.75)` or "
                    "`n * 3 // 4`), as 30,000 of 40,000 does.")
        return f"for n = {n} you gave {value}, expected {expected} (75%, rounded down)."

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_split_index` so that it returns a whole number.",
                      well_done="75% rounded down, a whole number (30,000 of 40,000, 7 of 10).")


def check_count_leaks(function: Callable) -> bool:
    """`function(train_hashes, val_hashes)` counts the validation images whose content is in training."""
    cases = [
        ((["a", "a", "b"], ["a", "e"]), 1),            # two training copies of "a": still one leaked image
        ((["a", "b", "c"], ["c", "d", "c", "a"]), 3),  # two validation copies of "c": both leak
        ((["a", "b"], ["c", "d"]), 0),
    ]

    def mistake(answer, train, val, expected) -> str | None:
        value = _whole_number(answer)
        if value is None and isinstance(answer, torch.Tensor) and answer.numel() == 1:
            value = int(answer.item())
        if value == expected:
            return None
        case = f"for train {train} and val {val}"
        if value == len(set(train) & set(val)):
            return (f"{case} you counted distinct shared hashes ({value}); count every validation image whose "
                    f"hash is in training ({expected}): two copies are two leaks.")
        if value == sum(digest in set(val) for digest in train):
            return (f"{case} you counted training images ({value}); the question is how many validation images "
                    f"also appear in training ({expected}): loop over `val_hashes`.")
        return (f"{case} the answer is {expected}, you gave {answer!r}; loop over the validation hashes and count "
                "those found in `set(train_hashes)`.")

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_count_leaks` so that it returns a count.",
                      well_done="you count every validation image whose exact content is also in training.")


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
            return (f"the head takes {head.in_features} inputs, but ResNet18 gives it 512 features per image "
                    "(`model.fc.in_features`).")
        if head.out_features != 3:
            return (f"the head has {head.out_features} outputs; a 3-class problem needs one score per class, "
                    "`nn.Linear(512, 3)`.")
        backbone_trainable = sum(p.numel() for name, p in answer.named_parameters()
                                 if p.requires_grad and not name.startswith("fc."))
        if backbone_trainable:
            return (f"{backbone_trainable:,} backbone parameters can still learn; set `requires_grad = False` "
                    "on every parameter before you replace `fc`.")
        head_trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
        if head_trainable != expected:
            return (f"only {head_trainable:,} parameters of the new head can learn; freeze first, then replace "
                    "`fc`: a new layer starts with `requires_grad = True`.")
        answer.eval()
        with torch.no_grad():
            shape = tuple(answer(torch.zeros(2, 3, 64, 64)).shape)
        if shape != (2, 3):
            return f"two images give outputs of shape {shape}, expected (2, 3)."
        return None

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_new_head` (and remember to `return model`).",
                      well_done="fc = Linear(512, 3) with 512 x 3 + 3 = 1,539 trainable parameters, "
                                "and the backbone is frozen.")


def check_count_trainable(function: Callable) -> bool:
    """`function(model)` returns the number of trainable parameters (numbers, not tensors)."""
    first_frozen = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # 15 + 8 parameters
    first_frozen[0].requires_grad_(False)
    all_frozen = nn.Sequential(nn.Linear(2, 2)).requires_grad_(False)
    cases = [((first_frozen,), 8), ((all_frozen,), 0), ((nn.Linear(5, 1),), 6)]

    def mistake(answer, model, expected) -> str | None:
        value = _number(answer)
        if value == expected:
            return None
        value = int(value) if value is not None and value.is_integer() else value
        all_numbers = sum(p.numel() for p in model.parameters())
        trainable_tensors = sum(1 for p in model.parameters() if p.requires_grad)
        if value == all_numbers:
            return (f"you counted all {all_numbers} parameters, the frozen ones too; keep only those with "
                    "`p.requires_grad`.")
        if value == trainable_tensors and expected != trainable_tensors:
            return f"you counted {value} tensors; add up the numbers inside them with `p.numel()`."
        if value == all_numbers - expected:
            return f"you counted the {value} frozen parameters; the trainable ones have `p.requires_grad == True`."
        return (f"a model with {expected} trainable parameters got {answer!r}; add `p.numel()` over "
                "`model.parameters()` where `p.requires_grad`.")

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_count_trainable` so that it returns a number.",
                      well_done="you add up p.numel() of the parameters with requires_grad, as count_parameters does.")


# ----------------------------------------------------------------------------- notebook 04
def _epoch(head: nn.Module, batches: list, optimizer: torch.optim.Optimizer, criterion: nn.Module, *,
           order: str = "zfbs", train: bool = True) -> list[float]:
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
        and torch.allclose(weights[name].double(), other[name].double(), rtol=1e-5, atol=1e-6) for name in weights)


# the common mistakes that still change the head, as (order, train) for `_epoch`, and their hints
_STEP_TOO_EARLY = ("each step uses the previous batch's gradients (so the first step does nothing, and the "
                   "last batch's are never used): call `loss.backward()` before `optimizer.step()`.")
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
                    return (f"you returned the mean of the losses, {value:.4f}; return the list of the {n} batch "
                            "losses itself, one float per batch (`losses.append(loss.item())` in the loop).")
                return (f"you returned one number, {value!r}; return a list with one loss per batch "
                        f"({n} here): `losses.append(loss.item())` in the loop, then `return losses`.")
            if isinstance(answer, torch.Tensor):
                return ("you returned a tensor; return a plain list of Python floats, one per batch: "
                        "`losses.append(loss.item())` in the loop.")
            if not isinstance(answer, (list, tuple)):
                return f"return a list of the batch losses, not a {type(answer).__name__}."
            if len(answer) != n:
                return (f"you returned {len(answer)} loss{'' if len(answer) == 1 else 'es'} for {n} batches: "
                        "append one loss per batch, inside the loop (`losses.append(loss.item())`).")
            values = [_number(item) for item in answer]
            if None in values:
                return "each item of the list should be one batch's loss, a number: `loss.item()`."
            trained = _weights(head)
            if not _same_weights(trained, weights):
                if _same_weights(trained, start):  # nothing learnt: which call is missing or misplaced?
                    if not steps:
                        return ("the head never changed, because `optimizer.step()` is never called (the brackets "
                                "matter): after `loss.backward()`, the step is what updates the weights.")
                    if all(p.grad is None or not p.grad.any() for p in head.parameters()):
                        return ("the head never learnt: each `optimizer.step()` found no gradients, as when "
                                "`zero_grad()` comes between `loss.backward()` and `optimizer.step()` (or backward "
                                "is missing); zero them first, at the start of each batch, and step right after "
                                "backward.")
                    return ("the head never learnt: `optimizer.step()` runs before `loss.backward()`, just after "
                            "`zero_grad()`, so each step finds no gradients; the order is zero_grad, outputs, "
                            "loss, backward, step.")
                for variant, hint in _EPOCH_MISTAKES.items():
                    if _same_weights(trained, outcomes[variant][0]):
                        return hint
                if not steps:
                    return ("the head changed, but the `optimizer` your function was given never stepped: "
                            "use it (`optimizer.step()`) rather than a new one.")
                return ("after one epoch the head's weights differ from the capstone loop's: `head.train()`, then "
                        "for each batch `optimizer.zero_grad()`, `outputs = head(features)`, "
                        "`loss = criterion(outputs, labels)`, `loss.backward()`, `optimizer.step()`, in that order.")
            if any(isinstance(item, torch.Tensor) for item in answer):
                return ("the head trained right, but the losses are tensors; return Python floats with "
                        "`loss.item()` (a tensor also keeps its batch's whole graph in memory).")
            if not all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(values, losses)):
                return (f"the head trained right, but the losses should be each batch's `loss.item()`, in order: "
                        f"{[round(loss, 4) for loss in losses]}, not {[round(v, 4) for v in values]}.")
            return None

        return _try_cases(function, cases, mistake,
                          not_answered="fill in `my_train_one_epoch` so that it returns the list of batch losses.",
                          well_done="head.train(), then for each batch zero_grad, outputs, loss, backward, step: "
                                    "the same weights and losses as the capstone's loop.")


def check_accuracy(function: Callable) -> bool:
    """`function(logits, labels)` returns the share of images whose highest logit is their label."""
    cases = [
        ((torch.tensor([[2.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 0])), 1.0),  # square: argmax(dim=0) gives 0.5
        ((torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]]),
          torch.tensor([0, 1, 1, 0, 0])), 0.6),  # predicted 0 1 0 0 1: 3 of 5 right
    ]

    def mistake(answer, logits, labels, expected) -> str | None:
        value = _number(answer)
        if value is None:
            return (f"you returned {type(answer).__name__}; return one number, "
                    "e.g. `(predicted == labels).float().mean().item()`.")
        if math.isclose(value, expected, abs_tol=1e-6):
            return None
        square = logits.shape[0] == logits.shape[1]  # only then does argmax(dim=0) fit the labels
        wrong_dim = float((logits.argmax(dim=0) == labels).float().mean()) if square else math.nan
        if value == round(expected * len(labels)):
            return (f"you returned {value:g}, the number of right answers; divide by the number of images, "
                    "`len(labels)`, to get a fraction.")
        if math.isclose(value, 100 * expected):
            return f"you returned {value:g}, a percentage; return a fraction between 0 and 1 ({expected:g})."
        if math.isclose(value, 1 - expected):
            return f"you returned {value:g}, the share of mistakes; accuracy is the share of right answers."
        if math.isclose(value, wrong_dim):
            return ("you took argmax over the wrong dimension; logits have shape (images, classes), "
                    "so the prediction is `logits.argmax(dim=1)`.")
        return (f"for logits {logits.tolist()} and labels {labels.tolist()} the accuracy is {expected:g}, "
                f"you gave {value:g}.")

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_accuracy` so that it returns a number.",
                      well_done="argmax over the classes, compared with the labels, as a fraction.")


def check_iterations_per_epoch(function: Callable) -> bool:
    """`function(n_images, batch_size)` returns how many batches one epoch takes (the last may be smaller)."""
    cases = [((30_000, 100), 300), ((30_050, 100), 301), ((10, 3), 4), ((5, 10), 1), ((100, 100), 1)]

    def mistake(answer, n_images, batch_size, expected) -> str | None:
        value = _whole_number(answer)
        case = f"for {n_images:,} images in batches of {batch_size}"
        if value is None:
            return (f"{case} you returned {answer!r}; a number of iterations is a whole number (an int), "
                    "e.g. `math.ceil(n_images / batch_size)`.")
        if value == expected:
            return None
        if value == n_images // batch_size:
            return (f"{case} you gave {value}, expected {expected}: the last, smaller batch is an iteration too, "
                    "so round up (`math.ceil`).")
        return f"{case} you gave {value}, expected {expected} (round up: a partly filled last batch still counts)."

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_iterations_per_epoch` so that it returns a whole number.",
                      well_done="30,000 images in batches of 100 take 300 iterations, and a partial "
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
    cases = [((probabilities, labels, 3), [5, 0, 4]), ((probabilities, labels, 10), [5, 0, 4, 2, 6]),
             ((probabilities, labels, 1), [5])]

    def mistake(answer, probabilities, labels, k, expected) -> str | None:
        value = _as_list(answer)
        if value is None:
            return f"return a list of indices, not a {type(answer).__name__}."
        value = [int(i) if isinstance(i, Real) else i for i in value]
        if value == expected:
            return None
        if value == [6, 2, 4, 5, 0][:k]:
            return ("these are the least confident mistakes first; sort by confidence in descending order "
                    "(`reverse=True`, or `descending=True`).")
        if value == [3, 5, 0, 1, 7, 4, 2, 6][:k]:
            return ("your list includes right answers; keep only the images where the predicted class differs "
                    "from the label.")
        if value == [0, 2, 4, 5, 6][:k]:
            return "these mistakes are in order of index; sort them by confidence, surest first."
        if value == [0, 4, 6, 2, 5][:k]:
            return ("you sorted by the probability of a crack; confidence is the probability of the predicted "
                    "class, `probabilities.max(dim=1)`.")
        if len(value) != len(expected) and value[:len(expected)] == expected:
            return f"with k = {k} return at most k indices; you returned {len(value)}."
        return f"with k = {k} the surest mistakes are {expected}, you gave {value}."

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_confident_mistakes` so that it returns a list of indices.",
                      well_done="only the mistakes, surest first, at most k of them.")


def check_precision_recall(function: Callable) -> bool:
    """`function(confusion)` returns (precision, recall) of the crack class (label 1).

    The confusion matrix has rows = actual class and columns = predicted class, as in notebook 05.
    """
    # precision: true positives over column 1 (called a crack); recall: over row 1 (a real crack)
    cases = [((torch.tensor([[50, 10], [5, 35]]),), (35 / 45, 35 / 40)),
             ((torch.tensor([[8, 2], [4, 6]]),), (6 / 8, 6 / 10))]

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
            return (f"{case} precision and recall are swapped; precision divides by a column (all images called "
                    "a crack), recall by a row (all real cracks).")
        if _all_close(values, no_crack):
            return (f"{case} you measured the no-crack class; a crack is label 1, so use `confusion[1, 1]` with "
                    "column 1 and row 1.")
        if _all_close(values, (100 * precision, 100 * recall)):
            return f"{case} you gave percentages; return fractions between 0 and 1."
        return (f"{case} expected precision {precision:.3f} and recall {recall:.3f}, "
                f"got {values[0]:.3f} and {values[1]:.3f}.")

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_precision_recall` so that it returns `(precision, recall)`.",
                      well_done="precision = TP / (TP + false alarms), recall = TP / (TP + missed cracks).")


# ----------------------------------------------------------------------------- notebook 06
def check_tiles_above(function: Callable) -> bool:
    """`function(probabilities, threshold)` returns the (row, column) of every tile at or above the threshold."""
    cases = [((torch.tensor([[0.1, 0.7, 0.5], [0.5, 0.2, 0.9]]), 0.5), [(0, 1), (0, 2), (1, 0), (1, 2)]),
             ((torch.tensor([[0.9, 0.6], [0.3, 0.8], [0.6, 0.1]]), 0.6), [(0, 0), (0, 1), (1, 1), (2, 0)])]

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
            return (f"a tile whose probability equals the threshold ({threshold}) counts as a crack, as everywhere "
                    "in the workbook: use `>=`, not `>`.")
        rows, cols = probabilities.shape
        if tiles == [(r, c) for r in range(rows) for c in range(cols) if probabilities[r, c] < threshold]:
            return "you listed the tiles below the threshold; keep those at or above it."
        if sorted(tiles) == expected:
            return "the right tiles, but list them row by row, left to right."
        return f"for threshold {threshold} the tiles are {expected}, you gave {tiles}."

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_tiles_above` so that it returns a list of (row, column).",
                      well_done="every tile at or above the threshold, row by row, as (row, column).")


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
            return (f"{', '.join(sorted(trainable - expected))} can learn as well; unfreeze only layer3 and layer4, "
                    "e.g. `for p in model.layer3.parameters(): p.requires_grad = True`.")
        if trainable != expected:
            return "set `requires_grad = True` on every parameter of layer3 and layer4."
        partly = [block for block in ("layer3", "layer4")
                  if not all(p.requires_grad for p in getattr(answer, block).parameters())]
        if partly:
            return f"only part of {partly[0]} learns; unfreeze all of its parameters."
        return None

    return _try_cases(function, cases, mistake,
                      not_answered="fill in `my_unfreeze` (and remember to `return model`).",
                      well_done="layer3, layer4 and the head learn; the stem, layer1 and layer2 stay frozen.")
