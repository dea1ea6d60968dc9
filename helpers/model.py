"""ResNet18 with a new head: ImageNet weights, a frozen backbone, `fc` replaced; checkpoints.

This is the capstone's recipe (`models.resnet18(pretrained=True)`, every parameter frozen,
`model.fc = nn.Linear(512, 2)`) written with torchvision's current weights API, plus what a
learner needs when things go wrong: a plain error when the weights cannot be had, and
checkpoints that say what they hold.
"""

from __future__ import annotations

import platform
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from helpers.plumbing.files import atomic_path
from helpers.plumbing.text import printable
from helpers.settings import OFFLINE, offline, quick_mode, random_weights_allowed, weights_url

IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1  # what the capstone's `pretrained=True` meant
WEIGHTS_URL = IMAGENET_WEIGHTS.url
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[-1]  # resnet18-f37072fd.pth
WEIGHTS_SHA256_PREFIX = WEIGHTS_FILE.rsplit("-", 1)[1].split(".")[0]  # f37072fd: how the file's SHA-256 starts
CHECKPOINT_FORMAT = "concrete-crack-workbook/1"
CHECKPOINT_KEYS = ("architecture", "num_classes", "class_names", "state_dict")  # besides "format"
MAX_CLASSES = 10_000  # a checkpoint claiming more is refused before a model is built


class WeightsUnavailableError(RuntimeError):
    """The ImageNet weights could not be loaded; the message says where to put them."""


class CheckpointMismatchError(ValueError):
    """A file that is not a usable workbook checkpoint (damaged, not one, other classes); the message says why."""


@dataclass(frozen=True)
class WeightsChoice:
    """What the backbone starts from: ImageNet's weights, a state-dict file, or random numbers.

    source: "imagenet", the path of a state-dict file, or None (a random backbone).
    description: what a person reads, e.g. "ImageNet (torchvision IMAGENET1K_V1)".
    Checkpoints record it as `label` ("imagenet", the path, or "random"); from_label reads it back.
    """

    source: str | None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.description:
            object.__setattr__(
                self,
                "description",
                "ImageNet (torchvision IMAGENET1K_V1)"
                if self.is_imagenet
                else "random initialisation (NOT pretrained)"
                if self.is_random
                else f"from {self.source}",
            )

    @property
    def is_imagenet(self) -> bool:
        return self.source == "imagenet"

    @property
    def is_random(self) -> bool:
        return self.source is None

    @property
    def label(self) -> str:
        """How a checkpoint's metadata records it: "imagenet", the file's path, or "random"."""
        return "random" if self.source is None else self.source

    @classmethod
    def of(cls, weights: WeightsChoice | str | Path | None) -> WeightsChoice:
        """The choice for what build_resnet18 takes: a WeightsChoice, "imagenet", a path, or None (random)."""
        return weights if isinstance(weights, WeightsChoice) else cls(None if weights is None else str(weights))

    @classmethod
    def from_label(cls, label: str | None, description: str = "") -> WeightsChoice:
        """The choice a checkpoint recorded (see `label`); a missing label reads as random."""
        return cls(None if label in (None, "random") else str(label), description or "")


def imagenet_weights_path() -> Path:
    """Where torchvision looks for the weights file: `$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def load_imagenet_state_dict(url: str | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """The ImageNet ResNet18 weights: from torchvision's cache, else downloaded (and checked) into it.

    The address is torchvision's, unless `url` or `$WORKBOOK_WEIGHTS_URL` names a mirror. The
    file's SHA-256 must start with the `f37072fd` in its name, whoever serves it. The cache is
    looked at first and nothing is downloaded with WORKBOOK_OFFLINE=1, so a machine without the
    file sees one message, WeightsUnavailableError's (not torch.hub's "Downloading: ..." before it).
    """
    url = url or weights_url() or WEIGHTS_URL
    target = imagenet_weights_path()
    if not target.is_file():
        if offline():
            raise _missing_weights(target, f"{OFFLINE}=1 says not to download them")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), hash_prefix=WEIGHTS_SHA256_PREFIX, progress=progress)
        except Exception as exc:  # offline, proxy, certificate, wrong file: all end the same way
            raise _missing_weights(target, f"could not be downloaded ({_reason(exc)})") from exc
        if progress:
            print(f"Saved the ImageNet weights to {target}; later runs load them from there.")
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file in the cache
        raise WeightsUnavailableError(
            f"{target} cannot be read as the ImageNet weights ({_reason(exc)}): delete it, and the next "
            f"run downloads it again."
        ) from exc


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def _missing_weights(target: Path, why: str) -> WeightsUnavailableError:
    """The one message a learner without the weights file reads: what happened and where to put the file."""
    return WeightsUnavailableError(
        f"The ImageNet weights for ResNet18 are not on this machine and {why}. "
        f"On a connected machine, download {WEIGHTS_URL} and put the file at {target} "
        f"(set TORCH_HOME to use another folder), or pass its path: "
        f"build_resnet18(weights='/path/to/{WEIGHTS_FILE}')."
    )


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"No weights file at {path}: check the path, or use weights='imagenet'.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:  # a workbook checkpoint: take its backbone
        state = {k: v for k, v in state["state_dict"].items() if not k.startswith("fc.")}
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} does not hold a ResNet18 state dict.")
    return state


def build_resnet18(
    num_classes: int = 2,
    weights: WeightsChoice | str | Path | None = "imagenet",
    freeze_backbone: bool = True,
    progress: bool = True,
) -> nn.Module:
    """ResNet18 with a fresh `Linear(512, num_classes)` head.

    weights: "imagenet" (torchvision's IMAGENET1K_V1, the capstone's `pretrained=True`), a path
    to a state dict file, None for a randomly initialised backbone, or a WeightsChoice (what
    resolve_weights returns). With `freeze_backbone` every backbone parameter has
    `requires_grad=False`; only the new head learns.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}.")
    weights = WeightsChoice.of(weights)
    model = resnet18(weights=None)
    if weights.is_imagenet:
        model.load_state_dict(load_imagenet_state_dict(progress=progress))
    elif not weights.is_random:
        state = _load_state_dict_file(Path(weights.source))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise WeightsUnavailableError(
                f"{weights.source} is not a ResNet18 state dict "
                f"(missing {len(missing)} keys, {len(unexpected)} unexpected)."
            )
    if freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # new layers are trainable by default
    return model


def starting_head(num_classes: int = 2, seed: int = 0) -> nn.Linear:
    """The head training starts from: the `Linear(512, num_classes)` that build_resnet18 makes right after
    `torch.manual_seed(seed)`, as the capstone did (notebook 04).

    build_resnet18 draws the backbone's random numbers before the head's, so a bare
    `torch.manual_seed(0); nn.Linear(512, 2)` is another head. This replays the same draws on the
    side (torch's global random state is left as it was), whatever weights the backbone then loads.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet18(weights=None)  # the same draws build_resnet18 makes before its head
        return nn.Linear(model.fc.in_features, num_classes)


def resolve_weights(allow_random: bool | None = None) -> WeightsChoice:
    """For the notebooks: the ImageNet weights when they can be had, else a loud fallback to a random backbone.

    Falling back to a random backbone is allowed only in quick mode or when the learner opts in
    (WORKBOOK_ALLOW_RANDOM_WEIGHTS=1 or `allow_random=True`); otherwise the error stands.
    """
    try:
        load_imagenet_state_dict()
        return WeightsChoice("imagenet")
    except WeightsUnavailableError as exc:
        if not (allow_random if allow_random is not None else (quick_mode() or random_weights_allowed())):
            raise
        print("!" * 88)
        print("WARNING: no ImageNet weights; the backbone is RANDOMLY INITIALISED, not pretrained.")
        print("Transfer learning needs the pretrained weights: accuracies below mean little.")
        print(str(exc))
        print("!" * 88)
        return WeightsChoice(None, "random initialisation (NOT pretrained: ImageNet weights unavailable)")


def backbone_of(model: nn.Module) -> nn.Module:
    """Every layer of a torchvision ResNet except `fc`, then a flatten: (N, 3, H, W) -> (N, 512).

    The layers are shared with `model`, not copied: it is the same backbone, in the same mode
    (train or eval) as `model`.
    """
    layers = [module for name, module in model.named_children() if name != "fc"]
    return nn.Sequential(*layers, nn.Flatten(start_dim=1)).train(model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters). ResNet18 with a 2-class head: (11,177,538, 1,026)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will learn, e.g. ['fc.weight', 'fc.bias']."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def software_versions() -> dict[str, str]:
    """Versions worth recording next to a result."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


@dataclass
class Checkpoint:
    """A model loaded from a workbook checkpoint, with what the file says about it.

    metadata: what its training recorded (helpers.pipeline.checkpoint_metadata: data, split,
    accuracy, settings...), plus "saved" and "versions".
    """

    model: nn.Module
    class_names: list[str]
    path: Path
    metadata: dict = field(default_factory=dict)

    @property
    def weights(self) -> WeightsChoice:
        """What the backbone was trained from, as the checkpoint recorded it."""
        return WeightsChoice.from_label(self.metadata.get("weights"), self.metadata.get("weights_description", ""))


def save_checkpoint(path: str | Path, model: nn.Module, class_names: list[str], metadata: dict | None = None) -> Path:
    """Save the model and what it is (classes, weights source, data, accuracy...) atomically.

    The file is written under a unique temporary name and renamed into place, so an interrupted
    save never leaves a half-written checkpoint where a good one was, and saves running at the
    same time do not clash. Temporary files that a killed save of this checkpoint left behind
    (untouched for a minute) are removed first (helpers.plumbing.files.atomic_path does both).
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": "resnet18",
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "state_dict": model.state_dict(),
        "metadata": {
            **(metadata or {}),
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": software_versions(),
        },
    }
    with atomic_path(path) as temp:
        torch.save(payload, temp)
    return path


def load_checkpoint(
    path: str | Path, num_classes: int | None = None, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Rebuild the model saved by `save_checkpoint`: a Checkpoint with the model in eval mode.

    Loaded with `weights_only=True` (no code runs from the file). A file that is damaged, is not
    a workbook checkpoint, holds values of the wrong kind, weights that do not fit, or another
    number of classes than `num_classes` raises CheckpointMismatchError with one sentence. The
    classes are checked (2 to 10,000) before a model is built.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: run notebooks/04_training.ipynb to make one.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # RuntimeError, EOFError, UnpicklingError...: their text suggests unsafe loading
        raise CheckpointMismatchError(_why_unreadable(path, error)) from None
    _check_payload(payload, path)
    found = payload["num_classes"]
    if num_classes is not None and found != num_classes:
        names = ", ".join(printable(name) for name in payload["class_names"][:10]) + (", ..." if found > 10 else "")
        raise CheckpointMismatchError(
            f"{path} has a {found}-class head ({names}), but {num_classes} classes were asked for: "
            f"train a model for these classes or pick the matching checkpoint."
        )
    _check_finite(payload["state_dict"], path)
    model = build_resnet18(found, weights=None)
    _load_weights(model, payload["state_dict"], path)
    model.eval()
    metadata = payload.get("metadata")
    return Checkpoint(model, list(payload["class_names"]), path, dict(metadata) if isinstance(metadata, dict) else {})


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise CheckpointMismatchError when a weight is NaN or infinite: such a model answers "nan%" to every photo."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointMismatchError(
                f"{path} holds weights that are not numbers (NaN or infinite, e.g. {printable(name)[:60]}): the "
                "training that saved it diverged, so train again with a smaller learning rate."
            )


def _why_unreadable(path: Path, error: Exception) -> str:
    """One sentence on why torch.load(weights_only=True) could not read the file at `path`."""
    with open(path, "rb") as file:
        start = file.read(4)
    if len(start) == 4 and not start.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip (long ago, a pickle)
        return f"{path} is not a checkpoint saved by this workbook: it is not a file written by torch.save."
    if _is_exported_program(path):
        return (
            f"{path} is an exported model (torch.export), not a checkpoint: pass the .pt file notebook 04 "
            "saved, or load this one with helpers.export.load_exported."
        )
    if "Weights only load failed" in str(error):
        return (
            f"{path} is not a checkpoint saved by this workbook: it holds Python objects other than "
            "weights, which are not loaded because loading them could run code."
        )
    return f"{path} is damaged or incomplete (a save or a copy cut short?): save or copy it again."


def _is_exported_program(path: Path) -> bool:
    """True when `path` is a torch.export archive (a zip holding models/model.json), not a torch.save file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/models/model.json") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _check_payload(payload: object, path: Path) -> None:
    """Raise CheckpointMismatchError unless `payload` has every key of a workbook checkpoint, of the right kind."""
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not a checkpoint saved by this workbook (helpers.model.save_checkpoint)."
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    if missing:
        raise CheckpointMismatchError(f"{path} is not a complete workbook checkpoint: it has no {', '.join(missing)}.")
    bad = f"{path} is not a usable workbook checkpoint: "
    if payload["architecture"] != "resnet18":
        raise CheckpointMismatchError(f"{path} holds a {printable(payload['architecture'])[:40]}, not a resnet18.")
    count, names, state = payload["num_classes"], payload["class_names"], payload["state_dict"]
    if type(count) is not int or not 2 <= count <= MAX_CLASSES:
        raise CheckpointMismatchError(
            bad + f"num_classes must be a whole number from 2 to {MAX_CLASSES:,}, not {printable(repr(count))[:40]}."
        )
    wanted = f"class_names must be a list of {count} strings (one per class)"
    if not isinstance(names, list):
        raise CheckpointMismatchError(bad + f"{wanted}, not a {type(names).__name__}.")
    if len(names) != count:
        raise CheckpointMismatchError(bad + f"{wanted}, but it holds {len(names)}.")
    odd = [name for name in names if not isinstance(name, str)]
    if odd:
        raise CheckpointMismatchError(bad + f"{wanted}, but it holds a {type(odd[0]).__name__}.")
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise CheckpointMismatchError(bad + "its state_dict must map parameter names to tensors.")
    if not isinstance(payload.get("metadata", {}), dict):
        raise CheckpointMismatchError(bad + "its metadata must be a dict.")


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load `state` into `model`, or raise CheckpointMismatchError saying which weights do not fit."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    problems = missing + unexpected + misshaped
    if not problems:
        try:
            model.load_state_dict(state)
            return
        except RuntimeError as error:  # a tensor that cannot be copied into the parameter
            problems = [str(error).splitlines()[-1].strip()]
    raise CheckpointMismatchError(
        f"{path}'s weights do not fit a ResNet18 with a {model.fc.out_features}-class head ({len(missing)} missing, "
        f"{len(unexpected)} unexpected, {len(misshaped)} of another shape, e.g. {printable(problems[0])[:80]})."
    )


def layer_summary(model: nn.Module) -> list[tuple[str, str, int, int]]:
    """(name, type, parameters, trainable parameters) for each top-level block of the model."""
    rows = []
    for name, block in model.named_children():
        params = list(block.parameters())
        rows.append(
            (
                name,
                type(block).__name__,
                sum(p.numel() for p in params),
                sum(p.numel() for p in params if p.requires_grad),
            )
        )
    return rows


def print_layer_summary(model: nn.Module) -> None:
    """Print `layer_summary` as a small table, with the totals."""
    print(f"{'block':<9} {'type':<18} {'parameters':>12} {'trainable':>11}")
    for name, kind, total, trainable in layer_summary(model):
        print(f"{name:<9} {kind:<18} {total:>12,} {trainable:>11,}")
    total, trainable = count_parameters(model)
    print(f"{'total':<9} {'':<18} {total:>12,} {trainable:>11,}")
