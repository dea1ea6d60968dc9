"""Checks for the notebooks' exercises: one function per exercise, which prints one sentence ("Well done: ...",
"Not yet: ..." or "Not answered yet: ..."), never raises, and returns True or False. A check runs your function
and the reference solution (`solutions/`) on hand-picked and seeded generated cases, smallest first, and reports
the first where they differ; a decision check decides from the run's own object, as you do."""

import copy
import functools
import math
import random
import runpy
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet18


class _Stop(Exception):
    """Ends a check; its text is the sentence to print, none if the exercise still holds its stub."""


def _check(name: str, well_done: str) -> Callable:
    """Make `body(answer, *objects)`, which raises _Stop or returns its own "Well done", the check of `name`."""

    def wrap(body: Callable) -> Callable:
        @functools.wraps(body)
        def check(answer, *objects) -> bool:
            passed, message = False, f"Not answered yet: fill in `{name}`, then run this check again."
            try:
                if answer is None:
                    raise _Stop
                with torch.random.fork_rng(devices=[]):  # the check's seeds leave the notebook's random numbers alone
                    message, passed = body(answer, *objects) or f"Well done: {well_done}", True
            except _Stop as stop:
                message = str(stop) or message
            except Exception as error:  # an answer (or object) of a kind the check did not foresee
                message = f"Not yet: the check could not read your answer ({type(error).__name__}: {error})."
            print(message)
            return passed

        return check

    return wrap


@functools.cache
def _reference(stem: str, name: str) -> Callable:
    """The reference answer `name` in solutions/<stem>.py."""
    return runpy.run_path(str(Path(__file__).resolve().parent.parent / "solutions" / f"{stem}.py"))[name]


def _call(function: Callable, *args):
    """`function(*args)`; the stub, a crash or a forgotten `return` ends the check with its sentence."""
    code = getattr(function, "__code__", None)
    try:
        with torch.random.fork_rng(devices=[]):  # an answer's seeds leave the notebook's random numbers alone
            result = function(*args)
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        if isinstance(error, NotImplementedError) and code and frames[-1][:3:2] == (code.co_filename, code.co_name):
            raise _Stop from None  # the stub's own raise, not one of PyTorch's
        lines = [f.line for f in frames if code and f.filename == code.co_filename and f.line]
        where = f" at `{lines[-1]}`" if lines else ""
        raise _Stop(f"Not yet: your function raised {type(error).__name__}: {error}{where}; fix that line.") from None
    if result is None:
        n_args = code and code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)
        if code is None or (not code.co_names and code.co_nlocals == n_args):  # `return None` and nothing else
            raise _Stop
        raise _Stop("Not yet: your function ran but returned None: does it end with `return` and its result?")
    return result


def _plain(value, digits: int = 0):
    """Python numbers, lists, tuples and dicts from tensors and numpy values, ints as ints, floats to `digits`."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        items = [_plain(item, digits) for item in value]
        return tuple(items) if type(value) is tuple else items
    if isinstance(value, dict):
        return {key: _plain(item, digits) for key, item in value.items()}
    return float(f"{value:.{digits}g}") if digits and isinstance(value, float) else value


def _show(value) -> str:
    """`value` as a learner writes it: ints as ints, floats to 4 digits, cut to 100 characters."""
    text = repr(_plain(value, 4))
    return text if len(text) <= 100 else text[:97] + "..."


def _same(a, b) -> bool:
    """Equal, numbers to a relative tolerance of 1e-6."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _compare(function: Callable, reference: Callable, cases: list, read: Callable, mistakes: dict = {}) -> None:
    """Stop at the first of `cases` ((description, args)) where `function` and `reference` differ once `read` puts both
    in one form: name the fact that differs (for facts: a dict), or the hint of the first of `mistakes` it matches."""
    for case, args in cases:
        copied, right_args = copy.deepcopy(args), copy.deepcopy(args)
        given = _call(function, *copied)
        mine, right = read(given, *copied), read(reference(*right_args), *right_args)
        if _same(mine, right):
            continue
        if isinstance(right, dict) and all(" " in str(key) for key in right):  # facts
            fact = next(key for key in right if not _same(mine[key], right[key]))
            raise _Stop(f"Not yet: {case}, {fact}: yours {_show(mine[fact])}, expected {_show(right[fact])}.")
        hint = next((f": {hint}." for hint, wrong in mistakes.items() if _same(mine, wrong(*copy.deepcopy(args)))), ".")
        raise _Stop(f"Not yet: {case} your function gives {_show(given)}, expected {_show(right)}{hint}")


def _form(answer, ok: Callable, what: str):
    """`answer` as plain Python values if `ok` says they have the form the task asks for, else stop with `what`."""
    value = _plain(answer)
    if not ok(value):
        raise _Stop(f"Not yet: return {what}, not {_show(answer)}.")
    return value


def _ints(count: int = 0, kind: type = int) -> Callable:
    """Whether a value is a list or tuple of `count` (any number if 0) values of `kind`."""
    return lambda v: type(v) in (list, tuple) and len(v) == (count or len(v)) and all(isinstance(x, kind) for x in v)


@_check("my_interleave", "one file of each class in turn, with its class's label, for any number of classes.")
def check_interleave(function: Callable) -> None:
    """`function(groups)` returns `(files, labels)`: one file of each `(label, files)` group in turn, in order."""
    right, rng, cases = _reference("ex02_dataset_class", "my_interleave"), random.Random(2), []
    for k, n in [(3, 2), (2, 3), (4, 2)] + [(rng.randint(1, 4), rng.randint(1, 4)) for _ in range(12)]:
        labels = rng.sample(range(6), k) if cases else [1, 0, 2]
        groups = [(y, [f"{'CISJAB'[y]}{i}" for i in range(n)]) for y in labels]
        cases.append((k * n, f"for labels {labels} with {n} files each", (groups,)))
    whole = lambda g: ([f for _, fs in g for f in fs], [y for y, fs in g for _ in fs])
    mistakes = {"each group comes whole, so the last part (validation) holds only the last class": whole}
    read = lambda answer, groups: _form(answer, _ints(2, (list, tuple)), "a pair `(files, labels)` of two lists")
    _compare(function, right, [case[1:] for case in sorted(cases)], read, mistakes)


@_check("my_split_sizes", "70% and 15% rounded down and the rest to test: three whole sizes that add up to n.")
def check_split_sizes(function: Callable) -> None:
    """`function(n)` returns `(train, validation, test)` sizes: 70% and 15% of n rounded down, the rest to test."""
    rng, right = random.Random(0), _reference("ex02_dataset_class", "my_split_sizes")
    sizes = sorted({0, 1, 3, 7, 10, 13, 90, 40_000, *(rng.randint(1, 100_000) for _ in range(40))})
    shares = lambda n, rounding: (rounding(n * 0.7), rounding(n * 0.15), n - rounding(n * 0.7) - rounding(n * 0.15))
    mistakes = {"a share was rounded up; round each share down": lambda n: shares(n, math.ceil)}
    mistakes["0.7 has no exact binary value: n * 0.7 can fall just below a whole number"] = lambda n: shares(n, int)
    read = lambda answer, n: _form(answer, _ints(3), "three sizes, each a whole number of images (an int)")
    _compare(function, right, [(f"for n = {n}", (n,)) for n in sizes], read, mistakes)


@_check("my_leak_counts", "the validation images seen in training and the repeats inside validation.")
def check_leak_counts(function: Callable) -> None:
    """`function(train_hashes, val_hashes)` counts the validation images seen in training, and the repeats."""
    rng, right = random.Random(1), _reference("ex02_dataset_class", "my_leak_counts")
    cases = [(["a", "b"], ["c", "c", "d", "c"]), (["a", "a", "b"], ["a", "e", "b"]), (["c"], ["c", "d", "c", "e", "e"])]
    cases += [(rng.choices("abcd", k=rng.randint(0, 4)), rng.choices("abcde", k=rng.randint(0, 6))) for _ in range(30)]
    cases.sort(key=lambda case: len(case[0]) + len(case[1]))
    mistakes = {"the two counts are swapped": lambda t, v: right(t, v)[::-1]}
    cases = [(f"for train {t} and validation {v}", (t, v)) for t, v in cases]
    _compare(function, right, cases, lambda a, t, v: _form(a, _ints(2), "two counts (ints)"), mistakes)


def _net(width: int) -> nn.Module:
    """A small stand-in for a pretrained network: a body, then a 1000-class head `fc` that takes `width` features."""
    body = [("conv", nn.Conv2d(3, width, 3)), ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten())]
    return nn.Sequential(OrderedDict(body + [("fc", nn.Linear(width, 1000))]))


def _head_facts(answer, model: nn.Module, classes: int) -> dict:
    """What the task asks of the model `my_new_head` returned, fact by fact."""
    parameters = _form(answer, lambda v: hasattr(v, "fc"), "the model").named_parameters()
    learning = {n: p.numel() for n, p in parameters if p.requires_grad}
    old, now = model.state_dict(), answer.state_dict()
    try:
        with torch.no_grad():
            scores = answer.eval()(torch.zeros(2, 3, 32, 32)).shape[-1]
    except RuntimeError:
        raise _Stop("Not yet: the new head does not fit: it must take the numbers the layer before it gives.") from None
    head = sum(v for n, v in learning.items() if n[:3] == "fc.")
    return {
        "numbers of the backbone that can learn": sum(learning.values()) - head,
        "backbone weights as given": all(torch.equal(v, old[n]) for n, v in now.items() if n[:3] != "fc."),
        "scores per image": scores,
        "numbers of the head that can learn (a weight per feature and class, a bias per class)": head,
    }


@_check("my_new_head", "the backbone frozen and a new trainable head with one output per class, whatever the network.")
def check_new_head(function: Callable) -> None:
    """`function(model, num_classes)` freezes the model and replaces `fc` by a trainable `num_classes` head."""
    cases = [(_net(8), 2), (_net(24), 5), (resnet18(weights=None), 3)]
    cases = [(f"for a network whose head takes {m.fc.in_features} features, and {c} classes", (m, c)) for m, c in cases]
    _compare(function, _reference("ex03_replace_the_head", "my_new_head"), cases, _head_facts)


def _resnet(unfrozen: str = "") -> nn.Module:
    """A small net with ResNet18's top-level blocks, frozen but for those in `unfrozen`, and a new 2-class head `fc`."""
    stem = [("conv1", nn.Conv2d(3, 4, 3)), ("bn1", nn.BatchNorm2d(4)), ("relu", nn.ReLU())]
    stages = [(f"layer{i}", nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))) for i in range(1, 5)]
    model = nn.Sequential(OrderedDict(stem + stages + [("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten())]))
    model.requires_grad_(False)
    for block in unfrozen.split():
        getattr(model, block).requires_grad_(True)
    model.fc = nn.Linear(4, 2)
    return model


@_check("my_trainable_per_block", "per block, the numbers whose parameter has requires_grad, whatever the model.")
def check_trainable_per_block(function: Callable) -> None:
    """`function(model)` returns {top-level block: how many of its numbers can learn} (zeros may be left out)."""
    partly = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.BatchNorm1d(2))
    partly[0].requires_grad_(False)
    partly[3].bias.requires_grad_(False)
    cases = [("for a Sequential, partly frozen,", (partly,))]
    cases += [(f"for a ResNet with {b} unfrozen", (_resnet(b),)) for b in ("layer4", "layer2 layer4")]
    is_counts = lambda v: isinstance(v, dict) and _ints()([*v.values()])
    read = lambda a, m: {k: v for k, v in _form(a, is_counts, "a dict of counts (ints)").items() if v}
    _compare(function, _reference("ex03_replace_the_head", "my_trainable_per_block"), cases, read)


def _loop_case(epochs: int) -> tuple:
    """(head, batches, optimizer, criterion, epochs), seeded: a head in eval mode, without Dropout (no randomness)."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    batches = [(torch.randn(n, 6), torch.randint(0, 2, (n,))) for n in (4, 4, 3)]  # a smaller last batch
    return head, batches, torch.optim.Adam(head.parameters(), lr=0.05), nn.CrossEntropyLoss(), epochs


def _loop_hint(calls: str, steps: int) -> str:
    """What a loop that made `calls` (z zero_grad, b backward, s step, f/e forward) did wrong in `steps` batches."""
    order = calls.replace("f", "").replace("e", "")
    if "s" not in order:
        return "the head never changed: `optimizer.step()` is never called (the brackets matter)"
    if "z" not in order:
        return "the gradients add up from batch to batch, because they are never zeroed"
    if order.startswith(("s", "zs")):
        return "each step comes before `loss.backward()`, so it uses the previous batch's gradients"
    if "bzs" in order or "b" not in order:
        return "each step found no gradients: they were zeroed between `loss.backward()` and the step, or never made"
    return f"{order.count('s')} steps for {steps} batches" if order.count("s") != steps else "the weights differ"


@_check("my_train_epochs", "training mode, and per batch zero_grad, outputs, loss, backward, step.")
def check_train_epochs(function: Callable) -> None:
    """`function(head, batches, optimizer, criterion, epochs)` trains the head and returns each epoch's mean loss."""
    for epochs in (1, 3):
        head, batches, optimizer, _, _ = case = _loop_case(epochs)
        calls = []
        head.register_forward_pre_hook(lambda module, x: calls.append("f" if module.training else "e"))
        head[-1].bias.register_hook(lambda grad: calls.append("b"))
        optimizer.register_step_pre_hook(lambda *_: calls.append("s"))
        for owner in (optimizer, head):  # either zero_grad() clears the head's gradients
            owner.zero_grad = lambda *a, zero=owner.zero_grad, **k: (calls.append("z"), zero(*a, **k))[1]
        given = _form(_call(function, *case), _ints(epochs, (int, float)), f"{epochs} mean loss(es), one per epoch")
        right = _reference("ex04_training", "my_train_epochs")(*(reference := _loop_case(epochs)))
        where = f"Not yet: with {epochs} epoch(s) of {len(batches)} batches"
        weights = [[p.tolist() for p in model.parameters()] for model in (head, reference[0])]
        if "s" not in calls or not _same(*weights):
            raise _Stop(f"{where}, {_loop_hint(''.join(calls), epochs * len(batches))}.")
        if "e" in calls:
            raise _Stop(f"{where}, the head ran in eval mode, where Dropout and BatchNorm do not train.")
        if not _same(given, right):
            raise _Stop(f"{where}, the head trained right, but the mean losses are {_show(right)}.")


@_check("my_decision", "only the images on which the heads disagree tell them apart.")
def check_more_epochs(answer, comparison) -> str:
    """`answer`: what `comparison` (one epoch against ten) shows at 5%: "ten epochs", "one epoch" or neither."""
    decision = " ".join(answer.lower().split()).rstrip(".") if isinstance(answer, str) else answer
    if decision not in ("ten epochs", "one epoch", "no clear difference"):
        raise _Stop(f'Not yet: {answer!r} is none of "ten epochs", "one epoch" or "no clear difference".')
    one, ten, p = comparison.only_first_right, comparison.only_second_right, comparison.p_value
    right = "no clear difference" if p >= 0.05 or one == ten else "ten epochs" if ten > one else "one epoch"
    counts = f"one epoch alone was right on {one:,} images and ten epochs alone on {ten:,}, a split as uneven as that comes by chance with probability {p:.2g}"
    if decision == right:
        return f"Well done: {counts}, so the answer is {right}."
    if right == "no clear difference":
        raise _Stop(f"Not yet: {counts}, 5% or more: the data do not show that {decision} is better.")
    raise _Stop(f"Not yet: {counts}, under 5%: the head right alone on more of them is the better one.")


@_check("my_prediction", "requires_grad=False stops gradients; training mode still updates the running statistics.")
def check_batchnorm_prediction(prediction) -> None:
    """`prediction`: the tensors one batch in training mode changes in a frozen BatchNorm layer (run to compare)."""
    names = {str(name).strip() for name in prediction} if isinstance(prediction, (set, list, tuple)) else {None}
    torch.manual_seed(0)  # inside the check's own fork of the random numbers
    layer = nn.BatchNorm2d(3).requires_grad_(False)
    before = copy.deepcopy(layer.state_dict())
    layer.train()(torch.randn(4, 3, 5, 5) * 2 + 1)  # no gradient: nothing in it requires one
    if names - set(before):
        raise _Stop(f"Not yet: write a set of names among {', '.join(before)}, not {prediction!r}.")
    if names & {"weight", "bias"}:
        raise _Stop("Not yet: weight and bias are parameters: only an optimiser step changes them, and none ran.")
    if names != {name for name, value in layer.state_dict().items() if not torch.equal(before[name], value)}:
        raise _Stop("Not yet: what does a BatchNorm layer keep track of in training mode, with no gradient at all?")


@_check("my_confident_mistakes", "only the mistakes, surest first, at most k of them.")
def check_confident_mistakes(function: Callable) -> None:
    """`function(probabilities, labels, k)` returns the indices of the k surest mistakes, surest first."""
    rng, right = torch.Generator().manual_seed(0), _reference("ex05_misclassification", "my_confident_mistakes")
    cases = [(torch.tensor([0.95, 0.1, 0.4, 0.99, 0.7, 0.02, 0.55, 0.8]), torch.tensor([0, 0, 1, 1, 0, 1, 0, 1]), 3)]
    for n in range(2, 12):
        sure = (torch.randperm(49, generator=rng)[:n] + 51) / 100  # distinct confidences, so no ties
        crack = torch.where(torch.rand(n, generator=rng) < 0.5, sure, 1 - sure)
        cases.append((crack, torch.randint(0, 2, (n,), generator=rng), int(torch.randint(1, n + 2, (), generator=rng))))
    probabilities = lambda crack: torch.stack([1 - crack, crack], 1)  # columns: P(no crack), P(crack)
    cases = [(f"for P(crack) {_show(c)}, labels {_show(y)}, k = {k}", (probabilities(c), y, k)) for c, y, k in cases]
    by_crack = lambda p, y, k: [i for i in p[:, 1].argsort(descending=True).tolist() if p[i].argmax() != y[i]][:k]
    read = lambda answer, *case: _form(answer, _ints(), "the indices of the images (ints)")
    hints = {"a confidence is the probability of the predicted class, whichever it is": by_crack}
    _compare(function, right, sorted(cases, key=lambda case: len(case[1][1])), read, hints)


@_check("my_precision_recall", "precision = TP / (TP + false alarms), recall = TP / (TP + missed cracks).")
def check_precision_recall(function: Callable) -> None:
    """`function(confusion)` returns (precision, recall) of the crack class (label 1); rows = actual class."""
    rng, right = torch.Generator().manual_seed(0), _reference("ex05_misclassification", "my_precision_recall")
    matrices = [torch.tensor([[8, 2], [4, 6]]), torch.tensor([[50, 10], [5, 35]])]
    matrices += [torch.randint(1, 60, (2, 2), generator=rng) for _ in range(20)]
    mistakes = {
        "precision and recall are swapped; precision divides by a column, recall by a row": lambda c: right(c)[::-1],
        "you gave percentages; return fractions between 0 and 1": lambda c: tuple(100 * v for v in right(c)),
    }
    read = lambda answer, c: _form(answer, _ints(2, (int, float)), "two numbers `(precision, recall)`")
    _compare(function, right, [(f"for the matrix {c.tolist()}", (c,)) for c in matrices], read, mistakes)


@_check("my_threshold", "")
def check_threshold_for_recall(answer, curve: dict, recall: float = 0.95) -> str:
    """`answer`: a threshold of `curve` with a crack recall of at least `recall` and the fewest false alarms."""
    value = _plain(answer)
    value = value[0] if isinstance(value, list) and len(value) == 1 else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Stop(f"Not yet: a threshold is one number between 0 and 1, not {_show(answer)}.")
    thresholds, recalls, alarms = (np.asarray(curve[key], float) for key in ("threshold", "recall", "false_alarms"))
    at, enough = int(np.abs(thresholds - value).argmin()), recalls >= recall - 1e-12
    if abs(thresholds[at] - value) > 1e-6:
        raise _Stop(f"Not yet: {value:g} is not one of the curve's thresholds, so its recall is unknown.")
    text = f"at {value:.2f} recall is {recalls[at]:.1%} with {alarms[at]:,.0f} false alarms"
    if not enough[at]:
        raise _Stop(f"Not yet: {text}, below {recall:.0%}: too many cracks slip through.")
    if alarms[at] > alarms[enough].min():
        raise _Stop(f"Not yet: {text}; another threshold keeps {recall:.0%} recall with fewer false alarms.")
    return f"Well done: {text}, the fewest of any threshold that keeps {recall:.0%} recall."


@_check("my_tiles_above", "every tile at or above the threshold, row by row, as (row, column).")
def check_tiles_above(function: Callable) -> None:
    """`function(probabilities, threshold)` returns the (row, column) of every tile at or above the threshold."""
    rng, right = np.random.default_rng(0), _reference("ex06_going_further", "my_tiles_above")
    grids = [(np.array([[0.1, 0.7, 0.5], [0.5, 0.2, 0.9]]), 0.5), (np.array([[0.9, 0.625], [0.3, 0.8]]), 0.625)]
    for _ in range(20):
        grids.append((rng.choice([0.1, 0.3, 0.5, 0.625, 0.9], rng.integers(1, 5, 2)), rng.choice([0.3, 0.625])))
    grids.sort(key=lambda grid: grid[0].size)
    cases = [(f"for {_show(g)} and threshold {t}", (g.astype(np.float32), float(t))) for g, t in grids]
    mistakes = {
        "the first index of a grid is its row": lambda p, t: [(c, r) for r, c in right(p, t)],
        "a tile whose probability equals the threshold counts too": lambda p, t: [i for i in right(p, t) if p[i] > t],
    }
    is_pairs = lambda v: isinstance(v, list) and all(map(_ints(2), v))
    read = lambda answer, *case: _form(answer, is_pairs, "a list of (row, column) pairs")
    _compare(function, right, cases, read, mistakes)


@_check("my_unfreeze", "the last n stages and the head learn, the rest stays frozen, and no weight changed.")
def check_unfreeze(function: Callable) -> None:
    """`function(model, n)` makes the last n of layer1-layer4 trainable as well as the head, and returns the model."""
    base = _resnet()

    def facts(answer, model: nn.Module, n: int) -> dict:
        given, old = _form(answer, lambda v: isinstance(v, nn.Module), "the model").state_dict(), base.state_dict()
        flags = {name: [p.requires_grad for p in block.parameters()] for name, block in answer.named_children()}
        same = given.keys() == old.keys() and all(torch.equal(v, old[k]) for k, v in given.items())
        return {
            "blocks that learn": sorted(name for name, learns in flags.items() if any(learns)),
            "blocks that learn only in part": sorted(name for name, on in flags.items() if 0 < sum(on) < len(on)),
            "every weight as it was": same,
        }

    cases = [(f"with n = {n}", (base, n)) for n in range(5)]
    _compare(function, _reference("ex06_going_further", "my_unfreeze"), cases, facts)


def _rates(answer, model: nn.Module, head_lr: float, backbone_lr: float) -> dict:
    """What the task asks of the groups `my_parameter_groups` returned, fact by fact."""
    ok = lambda v: isinstance(v, (list, tuple)) and v and all(isinstance(g, dict) and "lr" in g for g in v)
    _form(answer, ok, 'a list of dicts, each with its "params" and its "lr"')
    try:
        optimizer = torch.optim.Adam(list(answer))
    except ValueError as error:
        raise _Stop(f"Not yet: an optimiser cannot use your groups: {error}.") from None
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    blocks: dict = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            blocks.setdefault(name.split(".")[0], set()).add(rate.get(id(p)))
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad and id(p) in rate)
    return {
        "frozen numbers in a group": frozen,
        "learning rates of the unfrozen blocks (None: in no group)": {b: sorted(r, key=str) for b, r in blocks.items()},
    }


@_check("my_parameter_groups", "the head takes the largest steps, layer4 smaller, earlier blocks smaller still.")
def check_parameter_groups(function: Callable) -> None:
    """`function(model, head_lr, backbone_lr)`: groups for the head, layer4 and other unfrozen blocks (rate / 10)."""
    settings = [("layer4", 1e-2, 1e-3), ("layer3 layer4", 1e-3, 1e-4), ("layer2 layer3 layer4", 3e-3, 2e-4)]
    cases = [(f"for {b} unfrozen, head_lr {h:g}, backbone_lr {lr:g}", (_resnet(b), h, lr)) for b, h, lr in settings]
    _compare(function, _reference("ex06_going_further", "my_parameter_groups"), cases, _rates)
