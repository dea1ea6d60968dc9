"""ResNet18 with a new head (the capstone's `resnet18(pretrained=True)`, frozen, `fc = nn.Linear(512, 2)`), a plain
error when the ImageNet weights cannot be had, and checkpoints that load without running code. Taught in 03-04."""

import hashlib
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from helpers.plumbing import atomic_path, printable
from helpers.settings import OFFLINE, offline, quick_mode, random_weights_allowed

WEIGHTS_URL = ResNet18_Weights.IMAGENET1K_V1.url  # what the capstone's `pretrained=True` meant
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[-1]  # resnet18-f37072fd.pth
WEIGHTS_SHA256_PREFIX = WEIGHTS_FILE.rsplit("-", 1)[1].split(".")[0]  # f37072fd: how the file's SHA-256 starts
CHECKPOINT_FORMAT = "concrete-crack-workbook/1"
MAX_CLASSES = 10_000  # a checkpoint claiming more is refused before a model is built


class WeightsUnavailableError(RuntimeError):
    """The ImageNet weights (or a weights file) could not be loaded; the message says what to do."""


class CheckpointMismatchError(ValueError):
    """A file that is not a usable workbook checkpoint (damaged, not one, other classes); the message says why."""


@dataclass(frozen=True)
class WeightsChoice:
    """What the backbone starts from. source: "imagenet", the path of a state-dict file, or None (random)."""

    source: str | None
    description: str = ""  # what a person reads; filled in from `source` when empty

    def __post_init__(self) -> None:
        text = {"imagenet": "ImageNet (torchvision IMAGENET1K_V1)", None: "random initialisation (NOT pretrained)"}
        object.__setattr__(self, "description", self.description or text.get(self.source, f"from {self.source}"))

    is_imagenet = property(lambda self: self.source == "imagenet")
    is_random = property(lambda self: self.source is None)
    label = property(lambda self: self.source or "random", doc="How a checkpoint records it.")


def imagenet_weights_path() -> Path:
    """Where torchvision looks for the weights file: `$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def load_imagenet_state_dict(url: str | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """The ImageNet weights: from torchvision's cache, else downloaded into it from `url` (default: torchvision's),
    whose SHA-256 must start with the `f37072fd` in the file's name. WORKBOOK_OFFLINE=1: no download."""
    target = imagenet_weights_path()
    if not target.is_file():
        if offline():
            raise _missing_weights(target, f"{OFFLINE}=1 says not to download them")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(
                url or WEIGHTS_URL, target, hash_prefix=WEIGHTS_SHA256_PREFIX, progress=progress
            )
        except Exception as error:  # offline, proxy, certificate, wrong file: all end the same way
            raise _missing_weights(target, f"could not be downloaded ({_reason(error)})") from error
        if progress:
            print(f"Saved the ImageNet weights to {target}; later runs load them from there.")
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file in the cache
        raise WeightsUnavailableError(
            f"{target} is damaged ({_reason(error)}): delete it to download it again."
        ) from error


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]


def _missing_weights(target: Path, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"The ImageNet weights for ResNet18 are not on this machine and {why}. On a connected machine, "
        f"download {WEIGHTS_URL} and put the file at {target} (set TORCH_HOME to use another folder), "
        "or pass the file's path (weights=PATH in Python, --weights PATH in a terminal; or --weights random)."
    )


def build_resnet18(
    num_classes: int = 2,
    weights: WeightsChoice | str | Path | None = "imagenet",
    freeze_backbone: bool = True,
    progress: bool = True,
) -> nn.Module:
    """ResNet18 with a fresh `Linear(512, num_classes)` head (with `freeze_backbone`, only the head learns). weights:
    "imagenet", the path of a state dict (or of a checkpoint: its backbone), None (random) or a WeightsChoice."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}.")
    source = weights.source if isinstance(weights, WeightsChoice) else weights
    model = resnet18(weights=None)
    if source == "imagenet":
        model.load_state_dict(load_imagenet_state_dict(progress=progress))
    elif source is not None:
        try:  # a state dict of torchvision's resnet18, or a workbook checkpoint (its backbone is taken)
            state = torch.load(source, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.get("state_dict", state).items() if not k.startswith("fc.")}
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [key for key in missing if not key.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(f"{len(missing)} weights missing, {len(unexpected)} unexpected")
        except Exception as error:  # a missing file, a text file, another network...
            raise WeightsUnavailableError(
                f"{source} cannot be loaded as ResNet18 weights ({_reason(error)[:120]}): pass a state dict of "
                "torchvision's resnet18, or weights='imagenet'."
            ) from None
    for parameter in model.parameters():
        parameter.requires_grad = not freeze_backbone
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # new layers are trainable by default
    return model


def starting_head(num_classes: int = 2, seed: int = 0) -> nn.Linear:
    """The head build_resnet18 makes right after `torch.manual_seed(seed)` (notebook 04), leaving torch's random state:
    build_resnet18 draws the backbone's random numbers first, so a bare seeded `nn.Linear(512, 2)` is another head."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(resnet18(weights=None).fc.in_features, num_classes)


def resolve_weights(allow_random: bool | None = None, url: str | None = None) -> WeightsChoice:
    """The ImageNet weights (from `url`, a mirror, if given), else loudly a random backbone: only in quick mode,
    with WORKBOOK_ALLOW_RANDOM_WEIGHTS=1 or `allow_random=True`; otherwise WeightsUnavailableError stands."""
    try:
        load_imagenet_state_dict(url)
        return WeightsChoice("imagenet")
    except WeightsUnavailableError as error:
        if not (allow_random if allow_random is not None else quick_mode() or random_weights_allowed()):
            raise
        banner = "!" * 88
        print(f"{banner}\nWARNING: no ImageNet weights; the backbone is RANDOMLY INITIALISED, not pretrained.")
        print(f"Transfer learning needs the pretrained weights: accuracies below mean little.\n{error}\n{banner}")
        return WeightsChoice(None, "random initialisation (NOT pretrained: ImageNet weights unavailable)")


def backbone_of(model: nn.Module) -> nn.Module:
    """Every layer of a ResNet but `fc`, then a flatten: (N, 3, H, W) -> (N, 512); shared with `model`, same mode."""
    layers = [module for name, module in model.named_children() if name != "fc"]
    return nn.Sequential(*layers, nn.Flatten(start_dim=1)).train(model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters). ResNet18 with a 2-class head: (11,177,538, 1,026)."""
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will learn, e.g. ['fc.weight', 'fc.bias']."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def print_layer_summary(model: nn.Module) -> None:
    """A small table: each top-level block of the model, its parameters and how many learn; then the totals."""
    print(f"{'block':<9} {'type':<18} {'parameters':>12} {'trainable':>11}")
    for name, block in model.named_children():
        total, trainable = count_parameters(block)
        print(f"{name:<9} {type(block).__name__:<18} {total:>12,} {trainable:>11,}")
    total, trainable = count_parameters(model)
    print(f"{'total':<9} {'':<18} {total:>12,} {trainable:>11,}")


@dataclass
class Checkpoint:
    """A model loaded from a workbook checkpoint (in eval mode), with what its training recorded (metadata)."""

    model: nn.Module
    class_names: list[str]
    path: Path
    metadata: dict
    weights: WeightsChoice  # what the backbone was trained from, as the checkpoint recorded it


def save_checkpoint(path: str | Path, model: nn.Module, class_names: list[str], metadata: dict | None = None) -> Path:
    """Save the weights and what they are (classes, data, accuracy...) atomically: only tensors, strings and numbers,
    so that `torch.load(path, weights_only=True)` reads it."""
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "class_names": list(class_names),
        "state_dict": model.state_dict(),
        "metadata": {
            **(metadata or {}),
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {name: str(version) for name, version in versions.items()},
        },
    }
    with atomic_path(path) as temp:
        torch.save(payload, temp)
    return Path(path)


def load_checkpoint(path: str | Path, num_classes: int | None = None) -> Checkpoint:
    """The model save_checkpoint saved, read with `weights_only=True`: no code runs from the file. A file that is
    damaged, not a checkpoint, with weights that do not fit or are not numbers, or not `num_classes` classes,
    raises CheckpointMismatchError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: run notebooks/04_training.ipynb to make one.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError...: their text suggests loading unsafely
        with open(path, "rb") as file:
            pickled = file.read(4).startswith((b"PK\x03\x04", b"\x80"))  # torch.save's zip (long ago: a pickle)
        why = (
            "it holds Python objects other than weights, which are not loaded because loading them could run code"
            if pickled and "Weights only load failed" in str(error)
            else "it is damaged, cut short or another kind of file; pass the .pt file notebook 04 saved"
        )
        raise CheckpointMismatchError(f"{path} is not a checkpoint saved by this workbook: {why}.") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path} is not a checkpoint saved by this workbook (save_checkpoint).")
    names, state, metadata = payload.get("class_names"), payload.get("state_dict"), payload.get("metadata")
    if not (isinstance(names, list) and 2 <= len(names) <= MAX_CLASSES and all(isinstance(n, str) for n in names)):
        raise CheckpointMismatchError(
            f"{path} is damaged (no list of 2 to {MAX_CLASSES:,} class names): save it again."
        )
    if num_classes is not None and len(names) != num_classes:
        shown = ", ".join(printable(name) for name in names[:10]) + (", ..." if len(names) > 10 else "")
        raise CheckpointMismatchError(
            f"{path} has a {len(names)}-class head ({shown}), but {num_classes} classes were asked for: "
            "train a model for these classes or pick the matching checkpoint."
        )
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointMismatchError(f"{path} is damaged (its state_dict is not a dict of tensors): save it again.")
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise CheckpointMismatchError(
            f"{path} holds NaN or infinite weights: train again, with a smaller learning rate."
        )
    model = build_resnet18(len(names), weights=None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        wrong = missing + unexpected
    except RuntimeError as error:  # a tensor of another shape: "size mismatch for fc.weight: ..."
        wrong = [str(error).split("size mismatch for ")[-1].split(":")[0]]
    if wrong:
        raise CheckpointMismatchError(
            f"{path}'s weights do not fit a ResNet18 with a {len(names)}-class head (e.g. {printable(wrong[0])[:80]})."
        )
    metadata = metadata if isinstance(metadata, dict) else {}
    label, description = metadata.get("weights"), str(metadata.get("weights_description", ""))
    weights = WeightsChoice(None if label in (None, "random") else str(label), description)
    return Checkpoint(model.eval(), names, path, metadata, weights)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every backbone weight and BatchNorm statistic (everything but fc)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
