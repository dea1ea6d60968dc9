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
  `torch.export.load` would unpickle, and unpickling can run code), but the program itself
  still runs whatever operations it holds.
"""

from __future__ import annotations

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
ARCHIVE_MEMBERS = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                             r"|models/model\.json|data/weights/weight_\d+|data/constants/tensor_\d+|"
                             + "|".join(re.escape(name) for name in (SAMPLE_INPUTS, *PAYLOAD_CONFIGS)))
INPUT_DESCRIPTION = ("Nx3x{height}x{width} float32, RGB scaled to [0, 1] then ImageNet-normalised "
                     "(mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225)")


class ExportFileError(ValueError):
    """A .pt2 file load_exported will not load: not an export, or carrying parts that could run code."""


def metadata_path(path: str | Path) -> Path:
    """Where the class names of an exported model are kept: the same name with .json."""
    return Path(path).with_suffix(".json")


def export_model(model: nn.Module, path: str | Path, example: torch.Tensor | None = None,
                 format: str = EXPORT_FORMAT, class_names: Sequence[str] | None = None) -> Path:
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
    info = {"class_names": names, "input": INPUT_DESCRIPTION.format(height=height, width=width),
            "output": f"Nx{num_classes} logits (softmax gives probabilities)", "format": EXPORT_FORMAT,
            "torch": str(torch.__version__)}
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
        raise ExportFileError(f"Loading {path} safely needs a PyTorch whose exports use torch.export.pt2_archive "
                              f"(torch 2.14 was checked; this is {torch.__version__}): upgrade torch, or load it "
                              "with torch.export.load only if you trust where it came from.") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:  # what torch's fallback for old files reads
            names = archive.namelist()
        reader = PT2ArchiveReader(io.BytesIO(data))  # what torch.export.load reads
        members = reader.get_file_names()
        configs = [json.loads(reader.read_string(name))["config"] for name in PAYLOAD_CONFIGS]
        pickled = [name for config in configs for name, item in config.items()
                   if not isinstance(item, dict) or item.get("use_pickle")]
    except Exception as error:
        raise ExportFileError(f"{path} is not a model exported with torch.export "
                              f"({type(error).__name__}): export it again with helpers.export.export_model.") from None

    def refuse(reason: str) -> ExportFileError:
        return ExportFileError(f"{path} is refused because it could run code when loaded ({reason}): "
                               "load exported models only from a trusted source, or export this one again.")

    root = names[0].split("/")[0] + "/" if names else ""
    if len(set(names)) != len(names) or not all(name.startswith(root) for name in names):
        raise refuse("its zip holds repeated names or files outside the archive folder")
    unknown = [name for name in members if not ARCHIVE_MEMBERS.fullmatch(name)]
    if unknown:
        raise refuse(f"it holds {unknown[0]!r}, which torch.export.save does not write")
    if pickled:
        raise refuse(f"its {pickled[0]!r} is stored as a pickle")
    try:
        torch.load(io.BytesIO(reader.read_bytes(SAMPLE_INPUTS)), weights_only=True)
    except Exception:
        raise refuse(f"{SAMPLE_INPUTS} holds Python objects other than tensors") from None


def load_class_names(path: str | Path) -> list[str]:
    """The class names saved next to the exported model at `path`."""
    return json.loads(metadata_path(path).read_text())["class_names"]


@torch.no_grad()
def check_export(model: nn.Module, exported: nn.Module, images: torch.Tensor, atol: float = 1e-4) -> float:
    """The largest absolute difference between the two models' logits on `images`.

    Raises ValueError when it is above `atol`: the exported file does not compute what the
    model does (was the model in training mode, or changed after exporting?).
    """
    model = model.cpu().eval()
    difference = (model(images) - exported(images)).abs().max().item()
    if difference > atol:
        raise ValueError(f"The exported model's logits differ from the original's by up to {difference:.3g}, "
                         f"more than the tolerance {atol:g}: export the model again.")
    return difference
