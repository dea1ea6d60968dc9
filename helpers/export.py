"""Taking a trained model out of the workbook: one file that runs without helpers/ or its classes.

A checkpoint (helpers.model.save_checkpoint) holds weights only: to use it you need the code
that builds the network. An *exported* model holds the computation too, so another program
can load it with nothing but PyTorch:

    import torch
    model = torch.export.load("resnet18_cracks.pt2").module()
    logits = model(images)   # images: (N, 3, 227, 227), ImageNet-normalised RGB

Why torch.export and not TorchScript? In torch 2.14 `torch.jit.trace`, `torch.jit.script`,
`torch.jit.save` and `torch.jit.load` all warn that TorchScript is deprecated and point to
`torch.export`. So this module writes `torch.export` programs (`.pt2` files).

What to know:

* The program is traced in eval mode (BatchNorm uses its running statistics) for images of
  the example's height and width (227 x 227 by default); the batch size may vary.
* Next to the model, `<name>.json` says what the outputs mean: the class names in label
  order and the expected input.
* Both files are written under a temporary name and renamed into place, so an interrupted
  export never leaves half a file where a good one was.
* `check_export` compares the exported program's logits with the original model's.
* An exported model is a program: load only files that come from a trusted source.
  `load_exported` refuses a .pt2 that carries pickled Python objects (which
  `torch.export.load` would unpickle, and unpickling can run code), shape expressions outside
  a strict grammar (torch hands them to sympy, which evaluates them as Python), guard code, and
  nodes that call anything but PyTorch's operators; the program itself still runs whatever
  PyTorch operations it holds.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.export import Dim

from helpers.plumbing.images import TILE_SIZE
from helpers.plumbing.files import atomic_path, write_json_atomically

EXPORT_FORMAT = "torch.export"
# What torch.export.save writes for one program named "model", and nothing else. Only the sample
# inputs are a pickle (checked with weights_only=True); weights and constants are raw bytes.
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
PAYLOAD_CONFIGS = ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json")
ARCHIVE_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/weights/weight_\d+|data/constants/tensor_\d+|"
    + "|".join(re.escape(name) for name in (SAMPLE_INPUTS, *PAYLOAD_CONFIGS))
)
# What torch.export.load hands to sympy.sympify (which evaluates it as Python): the shape expressions
# ("expr_str") written by sympy's srepr. Only these calls, with these arguments, are let through.
SYMPY_FUNCTIONS = frozenset(
    {
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Max",
        "Min",
        "Abs",
        "Mod",
        "Equality",
        "Unequality",
        "LessThan",
        "StrictLessThan",
        "GreaterThan",
        "StrictGreaterThan",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "RShift",
        "FloatTrueDiv",
        "IntTrueDiv",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
    }
)  # not PowByNatural, FloatPow or LShift: their arguments are not bounded, so 10**10**9 would hang the load
SYMBOL_NAME = re.compile(r"[a-z]{1,4}\d{1,9}")  # what torch names shape symbols: s0, s77, u3
SYMBOL_ASSUMPTIONS = frozenset({"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite"})
FLOAT_TEXT = re.compile(r"-?\d{1,30}(\.\d{0,30})?(e-?\d{1,3})?")
MAX_EXPRESSION_CHARS = 2_000
MAX_INTEGER_DIGITS = 30
OPERATOR_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.\w+\.\w+|_operator\.\w+")  # what a graph node may call
INPUT_DESCRIPTION = (
    "Nx3x{height}x{width} float32, RGB scaled to [0, 1] then ImageNet-normalised "
    "(mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225)"
)


class ExportFileError(ValueError):
    """A .pt2 file load_exported will not load: not an export, or carrying parts that could run code."""


def metadata_path(path: str | Path) -> Path:
    """Where the class names of an exported model are kept: the same name with .json."""
    return Path(path).with_suffix(".json")


def export_model(
    model: nn.Module,
    path: str | Path,
    example: torch.Tensor | None = None,
    format: str = EXPORT_FORMAT,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Export `model` (on the CPU, in eval mode) to a .pt2 file with torch.export; returns its path.

    example: a batch of inputs of the right size (default: 2 random 3x227x227 images); the
    exported program accepts any batch size, but only this height and width.
    class_names: what the outputs mean, in label order (default "class 0", "class 1"...).
    The model is put in eval mode and moved to the CPU, and stays there.
    """
    if format != EXPORT_FORMAT:
        raise ValueError(f"format must be {EXPORT_FORMAT!r}: TorchScript is deprecated in this PyTorch.")
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"An exported program is a .pt2 file; got {path.name}.")
    model = model.cpu().eval()
    example = torch.randn(2, 3, TILE_SIZE, TILE_SIZE) if example is None else example.cpu()
    batch = Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    num_classes = model(example[:1]).shape[1]
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"The model has {num_classes} outputs but {len(names)} class names were given.")
    height, width = example.shape[-2:]
    info = {
        "class_names": names,
        "input": INPUT_DESCRIPTION.format(height=height, width=width),
        "output": f"Nx{num_classes} logits (softmax gives probabilities)",
        "format": EXPORT_FORMAT,
        "torch": str(torch.__version__),
    }
    with atomic_path(path) as temp:
        torch.export.save(program, temp)
    write_json_atomically(info, metadata_path(path))
    return path


def load_exported(path: str | Path) -> nn.Module:
    """The exported program at `path` as a callable module: logits = module(images).

    An exported model is a program: load only files from a trusted source. A file that is not
    a torch.export archive, or that carries pickled Python objects (a crafted file could run
    code when they are unpickled), raises ExportFileError before anything in it is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No exported model at {path}: make one with helpers.export.export_model.")
    data = path.read_bytes()  # checked and loaded from the same bytes
    check_archive(data, path)
    return torch.export.load(io.BytesIO(data)).module()


def check_archive(data: bytes, path: Path) -> None:
    """Raise ExportFileError unless `data` holds only what export_model writes, with no pickled object in it."""
    try:
        from torch.export.pt2_archive import PT2ArchiveReader  # the archive format torch.export.load reads
    except ImportError:  # older torch: another format, whose parts are unpickled without checks
        raise ExportFileError(
            f"Loading {path} safely needs a PyTorch whose exports use torch.export.pt2_archive "
            f"(torch 2.14 was checked; this is {torch.__version__}): upgrade torch, or load it "
            "with torch.export.load only if you trust where it came from."
        ) from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:  # what torch's fallback for old files reads
            names = archive.namelist()
        reader = PT2ArchiveReader(io.BytesIO(data))  # what torch.export.load reads
        members = reader.get_file_names()
        configs = [json.loads(reader.read_string(name))["config"] for name in PAYLOAD_CONFIGS]
        pickled = [
            name
            for config in configs
            for name, item in config.items()
            if not isinstance(item, dict) or item.get("use_pickle")
        ]
    except Exception as error:
        raise ExportFileError(
            f"{path} is not a model exported with torch.export "
            f"({type(error).__name__}): export it again with helpers.export.export_model."
        ) from None

    def refuse(reason: str) -> ExportFileError:
        return ExportFileError(
            f"{path} is refused because it could run code when loaded ({reason}): "
            "load exported models only from a trusted source, or export this one again."
        )

    try:
        program = json.loads(reader.read_string("models/model.json"))
        documents = [program, *(json.loads(reader.read_string(name)) for name in PAYLOAD_CONFIGS)]
    except (ValueError, RuntimeError, KeyError) as error:
        raise ExportFileError(
            f"{path} is damaged: its models/model.json is not readable JSON "
            f"({type(error).__name__}), so export the model again."
        ) from None
    root = names[0].split("/")[0] + "/" if names else ""
    if len(set(names)) != len(names) or not all(name.startswith(root) for name in names):
        raise refuse("its zip holds repeated names or files outside the archive folder")
    unknown = [name for name in members if not ARCHIVE_MEMBERS.fullmatch(name)]
    if unknown:
        raise refuse(f"it holds {unknown[0]!r}, which torch.export.save does not write")
    if pickled:
        raise refuse(f"its {pickled[0]!r} is stored as a pickle")
    unsafe = program_problem(documents)
    if unsafe:
        raise refuse(unsafe)
    try:
        torch.load(io.BytesIO(reader.read_bytes(SAMPLE_INPUTS)), weights_only=True)
    except Exception:
        raise refuse(f"{SAMPLE_INPUTS} holds Python objects other than tensors") from None


def program_problem(documents: Sequence[object]) -> str | None:
    """Why the parsed JSON of an export could run code when torch.export.load reads it, or None.

    torch hands every "expr_str" to sympy.sympify, which evaluates it as Python; it turns the
    "guards_code" strings into a Python function; and it resolves each node's "target" by name.
    Each expression must pass :func:`expression_problem`, the guards must be empty (export_model
    writes none) and every target must be an ATen or prims operator, or one of Python's operators.
    """
    stack: list[object] = list(documents)
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    problem = expression_problem(value)
                    if problem:
                        return f"a shape expression {problem}"
                elif key == "guards_code" and value:
                    return "it carries guard code, which export_model never writes"
                elif key == "target" and isinstance(value, str) and not OPERATOR_TARGET.fullmatch(value):
                    return f"a node calls {value[:60]!r}, which is not a PyTorch operator"
                stack.append(value)
    return None


def expression_problem(text: object) -> str | None:
    """Why `text` is not a shape expression of the strict grammar export writes, or None when it is.

    The grammar: symbols named like torch's (s0, u3), whole numbers of at most 30 digits, + - * / // %
    and ** (by a small whole number), comparisons, and calls of SYMPY_FUNCTIONS with such arguments;
    Symbol('s0', positive=True, integer=True) and Float('1.5', precision=53) with literal arguments
    only. Nothing else: no attribute, subscript, string, lambda, tuple or other name.
    """
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        return "is not a short string"
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "is not a valid expression"
    try:
        return _node_problem(tree, depth=0)
    except RecursionError:
        return "is nested too deeply"


def _node_problem(node: ast.AST, depth: int) -> str | None:
    """The first part of the parsed expression `node` that the grammar of expression_problem refuses."""
    if depth > 100:
        return "is nested too deeply"
    if isinstance(node, ast.Constant):
        ok = type(node.value) in (int, float) and len(str(node.value)) <= MAX_INTEGER_DIGITS
        return None if ok else f"holds the literal {str(node.value)[:40]!r}"
    if isinstance(node, ast.Name):
        ok = SYMBOL_NAME.fullmatch(node.id) or node.id in ("true", "false", "oo")
        return None if ok else f"names {node.id[:40]!r}, which is not a shape symbol"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        return _node_problem(node.operand, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(
        node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
    ):
        if isinstance(node.op, ast.Pow) and not (
            isinstance(node.right, ast.Constant) and type(node.right.value) is int and 0 <= node.right.value <= 64
        ):
            return "raises to a power other than a small whole number"
        return _node_problem(node.left, depth + 1) or _node_problem(node.right, depth + 1)
    if isinstance(node, ast.Compare) and all(
        isinstance(op, (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops
    ):
        for part in (node.left, *node.comparators):
            problem = _node_problem(part, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(node, ast.BoolOp):
        for part in node.values:
            problem = _node_problem(part, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _call_problem(node, depth)
    return f"holds Python that is not arithmetic ({type(node).__name__})"


def _call_problem(node: ast.Call, depth: int) -> str | None:
    """The part of one call that the grammar refuses: Symbol and Float take literals, the rest expressions."""
    name, args, keywords = node.func.id, node.args, node.keywords
    literal = [arg.value if isinstance(arg, ast.Constant) else None for arg in args]
    if name == "Symbol":
        flags_ok = all(
            k.arg in SYMBOL_ASSUMPTIONS and isinstance(k.value, ast.Constant) and type(k.value.value) is bool
            for k in keywords
        )
        ok = len(args) == 1 and isinstance(literal[0], str) and SYMBOL_NAME.fullmatch(literal[0]) and flags_ok
        return None if ok else "makes a Symbol with something other than a shape name and yes/no assumptions"
    if name == "Float":
        ok = (
            len(args) == 1
            and isinstance(literal[0], str)
            and FLOAT_TEXT.fullmatch(literal[0])
            and all(
                k.arg == "precision" and isinstance(k.value, ast.Constant) and type(k.value.value) is int
                for k in keywords
            )
        )
        return None if ok else "makes a Float from something other than a number"
    if name not in SYMPY_FUNCTIONS:
        return f"calls {name[:40]!r}, which is not a sympy function export writes"
    if keywords:
        return f"passes keywords to {name}"
    for arg in args:
        problem = _node_problem(arg, depth + 1)
        if problem:
            return problem
    return None


def load_class_names(path: str | Path) -> list[str]:
    """The class names saved next to the exported model at `path` (ExportFileError when that file is damaged)."""
    info_path = metadata_path(path)
    try:
        names = json.loads(info_path.read_text(encoding="utf-8"))["class_names"]
    except (ValueError, KeyError, TypeError) as error:
        raise ExportFileError(
            f"{info_path} is damaged ({type(error).__name__}): export the model again to write it anew."
        ) from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ExportFileError(
            f"{info_path} is damaged (its class_names are not a list of names): export the "
            "model again to write it anew."
        )
    return names


@torch.no_grad()
def check_export(model: nn.Module, exported: nn.Module, images: torch.Tensor, atol: float = 1e-4) -> float:
    """The largest absolute difference between the two models' logits on `images`.

    Raises ValueError when it is above `atol`: the exported file does not compute what the
    model does (was the model in training mode, or changed after exporting?).
    """
    model = model.cpu().eval()
    difference = (model(images) - exported(images)).abs().max().item()
    if difference > atol:
        raise ValueError(
            f"The exported model's logits differ from the original's by up to {difference:.3g}, "
            f"more than the tolerance {atol:g}: export the model again."
        )
    return difference
