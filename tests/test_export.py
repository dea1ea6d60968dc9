"""Tests for helpers/export.py: a model exported with torch.export computes what the original does.

The ResNet18 is randomly initialised (weights=None) and exported for 64x64 inputs, which
keeps tracing and running it to a few seconds on a laptop CPU.
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers.export import (
    ExportFileError,
    check_export,
    export_model,
    load_class_names,
    load_exported,
    metadata_path,
)
from helpers.model import build_resnet18

CLASS_NAMES = ["crack", "no_defect", "stain"]
# torch.export's archive format (torch 2.8 on); load_exported checks and loads only that format
NEW_ARCHIVES = importlib.util.find_spec("torch.export.pt2_archive") is not None
needs_new_archives = pytest.mark.skipif(not NEW_ARCHIVES, reason=f"torch {torch.__version__} writes the old format")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_resnet18(num_classes=3, weights=None).eval()


@pytest.fixture(scope="module")
def exported_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "resnet18_3classes.pt2"
    example = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no deprecated TorchScript on the way
        export_model(model, path, example=example, class_names=CLASS_NAMES)
    return path


@needs_new_archives
def test_exported_model_gives_the_same_logits(model, exported_path):
    exported = load_exported(exported_path)
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # another batch size
    difference = check_export(model, exported, images, atol=1e-4)
    assert difference <= 1e-4
    assert exported(images).shape == (5, 3)


def test_class_names_are_saved_next_to_the_model(exported_path):
    info = json.loads(metadata_path(exported_path).read_text())
    assert info["class_names"] == CLASS_NAMES
    assert "3x64x64" in info["input"] and "ImageNet" in info["input"]
    assert load_class_names(exported_path) == CLASS_NAMES


def test_export_leaves_no_temporary_file(exported_path):
    names = sorted(path.name for path in exported_path.parent.iterdir())
    assert names == ["resnet18_3classes.json", "resnet18_3classes.pt2"]


@needs_new_archives
def test_check_export_raises_when_the_logits_differ(model, exported_path):
    exported = load_exported(exported_path)
    changed = build_resnet18(num_classes=3, weights=None).eval()  # other random weights
    with pytest.raises(ValueError, match="tolerance"):
        check_export(changed, exported, torch.randn(2, 3, 64, 64), atol=1e-4)


def test_wrong_class_names_and_format_are_refused(model, tmp_path):
    example = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        export_model(model, tmp_path / "m.pt2", example=example, class_names=["a", "b"])
    with pytest.raises(ValueError, match="TorchScript"):
        export_model(model, tmp_path / "m.pt2", example=example, format="torchscript")
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing.pt2")
    assert list(tmp_path.iterdir()) == []


class TouchOnUnpickle:
    """Unpickling this creates the marker file: it stands for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def pickled(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes]) -> None:
    """Copy the .pt2 zip, passing each member's name (without the root folder) and bytes through `change`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, change(name.split("/", 1)[1], old.read(name)))


def crafted_archive(kind: str, exported: Path, target: Path, evil: bytes) -> None:
    """A real export with a pickled object smuggled in, the way `kind` says."""
    if kind == "sample inputs replaced":  # torch falls back to weights_only=False for these
        rewrite(exported, target, lambda name, data: evil if name == "data/sample_inputs/model.pt" else data)
    elif kind == "a weight marked use_pickle":

        def change(name: str, data: bytes) -> bytes:
            if name == "data/weights/model_weights_config.json":
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                return json.dumps(config).encode()
            return evil if name == "data/weights/weight_0" else data

        rewrite(exported, target, change)
    elif kind == "an extra pickle member":
        rewrite(exported, target, lambda name, data: data)
        with zipfile.ZipFile(exported) as old, zipfile.ZipFile(target, "a") as new:
            new.writestr(old.namelist()[0].split("/")[0] + "/extra/evil.pkl", evil)
    else:  # the pre-2.8 layout torch.export.load still falls back to
        from torch._export.serde.schema import SCHEMA_VERSION

        with zipfile.ZipFile(exported) as old, zipfile.ZipFile(target, "w") as new:
            root = old.namelist()[0].split("/")[0]
            new.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
            new.writestr("serialized_exported_program.json", old.read(f"{root}/models/model.json"))
            for name in ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"):
                new.writestr(name, evil)


@needs_new_archives
@pytest.mark.parametrize(
    "kind", ["sample inputs replaced", "a weight marked use_pickle", "an extra pickle member", "an old-format archive"]
)
def test_a_crafted_archive_is_refused_before_anything_is_unpickled(exported_path, tmp_path, kind):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt2"
    crafted_archive(kind, exported_path, crafted, pickled(TouchOnUnpickle(marker)))
    with pytest.raises(ExportFileError) as error:
        load_exported(crafted)
    assert not marker.exists(), "code from the file ran"
    message = str(error.value)
    assert "crafted.pt2" in message and message.count(". ") == 0  # one sentence that names the file
    expected = "not a model exported with torch.export" if kind == "an old-format archive" else "trusted source"
    assert expected in message


@needs_new_archives
def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(ExportFileError, match="garbage.pt2 is not a model exported with torch.export"):
        load_exported(garbage)


def test_load_exported_says_the_file_must_be_trusted():
    import helpers.export

    for text in (load_exported.__doc__, helpers.export.__doc__):
        assert "program" in text and "trusted source" in text


@pytest.mark.skipif(NEW_ARCHIVES, reason="this torch writes the archive format load_exported checks")
def test_an_older_torch_is_told_to_upgrade_instead_of_loading_unchecked(exported_path):
    with pytest.raises(ExportFileError, match="safely needs a PyTorch whose exports use torch.export.pt2_archive"):
        load_exported(exported_path)


SYMBOL = "Symbol('s77', positive=True, integer=True)"


def code_payloads(marker: Path) -> dict[str, str]:
    """Shape expressions that run code (touching `marker`) when sympy.sympify evaluates them."""
    touch = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return {
        "a tuple around the symbol": f"({SYMBOL}, {touch})[0]",
        "a call inside an allowed function": f"Add({SYMBOL}, Integer(0 if {touch} else 0))",
        "a call as the symbol's name": f"Symbol({touch} or 's77', positive=True, integer=True)",
        "a lambda": f"(lambda: {touch})() or {SYMBOL}",
        "an attribute chain": f"{SYMBOL}.__class__.__init_subclass__.__globals__['__builtins__']['exec']({touch!r})",
        "eval": f"eval({touch!r}) or {SYMBOL}",
        "a keyword argument": f"Symbol('s77', positive={touch} is None, integer=True)",
        "arithmetic around a call": f"{SYMBOL} + 0 * len(str({touch}))",
    }


def with_program(exported: Path, target: Path, change: Callable[[dict], None]) -> None:
    """Copy the export, passing its parsed models/model.json through `change`."""

    def rewrite_program(name: str, data: bytes) -> bytes:
        if name != "models/model.json":
            return data
        program = json.loads(data)
        change(program)
        return json.dumps(program).encode()

    rewrite(exported, target, rewrite_program)


def replace_expressions(program: object, expression: str) -> None:
    """Every "expr_str" in the parsed program set to `expression`."""
    if isinstance(program, dict):
        for key, value in program.items():
            if key == "expr_str":
                program[key] = expression
            else:
                replace_expressions(value, expression)
    elif isinstance(program, list):
        for value in program:
            replace_expressions(value, expression)


@needs_new_archives
@pytest.mark.parametrize("payload", list(code_payloads(Path("marker"))))
def test_a_shape_expression_that_runs_code_is_refused_before_torch_reads_it(exported_path, tmp_path, payload):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt2"
    with_program(exported_path, crafted, lambda program: replace_expressions(program, code_payloads(marker)[payload]))
    with pytest.raises(ExportFileError) as error:
        load_exported(crafted)
    assert not marker.exists(), "code from the file ran"
    message = str(error.value)
    assert "crafted.pt2" in message and "shape expression" in message and "trusted source" in message
    assert message.count(". ") == 0


@needs_new_archives
@pytest.mark.parametrize("how", ["guard code", "a node target outside torch.ops"])
def test_guard_code_and_foreign_node_targets_are_refused(exported_path, tmp_path, how):
    def change(program: dict) -> None:
        if how == "guard code":
            program["guards_code"] = ["__import__('os').getpid() > 0"]
        else:
            program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.os.system"

    crafted = tmp_path / "crafted.pt2"
    with_program(exported_path, crafted, change)
    with pytest.raises(ExportFileError, match="trusted source"):
        load_exported(crafted)


@pytest.mark.parametrize(
    "expression",
    [
        SYMBOL,
        "Add(Mul(Integer(2), Symbol('s0', positive=True, integer=True)), Integer(1))",
        "FloorDiv(Symbol('s0', integer=True), Integer(2))",
        "Max(Integer(2), s0)",
        "s0**2 + 3*u1 - 1",
        "Eq(Symbol('s0', integer=True), Integer(2))",
        "s0 <= 4",
        "Float('1.5', precision=53)",
    ],
)
def test_the_expressions_export_writes_pass_the_grammar(expression):
    from helpers.export import expression_problem

    assert expression_problem(expression) is None


@needs_new_archives
def test_a_damaged_program_or_metadata_file_is_one_sentence(exported_path, tmp_path):
    crafted = tmp_path / "damaged.pt2"
    rewrite(exported_path, crafted, lambda name, data: data[:50] if name == "models/model.json" else data)
    with pytest.raises(ExportFileError, match=r"damaged\.pt2 is damaged: .*export the model again"):
        load_exported(crafted)
    metadata_path(crafted).write_text('{"class_names": ["a", ')
    with pytest.raises(ExportFileError, match=r"damaged\.json is damaged .*export the model again"):
        load_class_names(crafted)
