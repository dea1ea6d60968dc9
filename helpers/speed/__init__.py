"""Optional: the frozen backbone in int8 where that measures faster, the JPEGs decoded in batches. Taught in notebook 07.

The one door to the speed path. :func:`measure` times float32 against int8 on this machine; :func:`enable` records
int8 as switched on (where it measured faster) in the learner's data folder, and from then on
:func:`helpers.features.extract_features` (notebooks 04-06) computes the features in int8 without naming it;
:func:`disable` switches it off. :func:`jpeg_batches` reads a data set's JPEGs on a CPU a batch at a time: the very
tensors of the data set's own PIL path, faster. Nothing here changes what the model learns, only how fast the
features arrive, and their last digits: int8 rounds.
"""

import copy
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

import numpy as np
import torch
from torch import nn
from torchvision.io import ImageReadMode, decode_jpeg

from helpers.model import backbone_of, weights_digest
from helpers.plumbing import read_json, write_json_atomically
from helpers.settings import data_dir
from helpers.speed.int8 import RECIPE, Int8Backbone, int8_unavailable_reason, quantize_backbone  # noqa: F401 (the door)


CALIBRATION_IMAGES = 64  # enough for stable activation ranges; drawn with a fixed seed, never the data measured
FASTER_BY = 1.1  # int8 is switched on only when it runs at least this much faster than float32


def record_file() -> Path:
    """Where :func:`enable` keeps its decision: data/cache/fast_backbone.json."""
    return data_dir() / "cache" / "fast_backbone.json"


def machine() -> str:
    """What the decision depends on: the CPU's model and core count, torch's version."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


@dataclass
class Measurement:
    """float32 against int8 on this machine, images per second of the backbone alone, and the decision."""

    float32_per_second: float
    int8_per_second: float = 0.0
    rounding_error: float = float("nan")  # mean 1 - cosine similarity of int8 against float32 features
    use_int8: bool = False
    why: str = ""
    machine: str = ""


def enabled() -> bool:
    """True when :func:`enable` switched int8 on for this machine (a record of another machine does not count)."""
    record = read_json(record_file())  # {} when there is none, or it does not read as a JSON object
    return record.get("use_int8") is True and record.get("machine") == machine()


def disable() -> None:
    """Switch int8 off: extract_features computes in float32 again."""
    record_file().unlink(missing_ok=True)


def float_backbone(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """A copy of the model's frozen backbone in eval mode on `device` (channels_last on a CPU, oneDNN's layout)."""
    backbone = copy.deepcopy(backbone_of(model)).eval().to(device)
    return backbone.to(memory_format=torch.channels_last) if torch.device(device).type == "cpu" else backbone


def calibration_images(count: int = CALIBRATION_IMAGES, seed: int = 0) -> torch.Tensor:
    """`count` synthetic concrete photos (half cracked), normalised as the data sets are: (count, 3, 227, 227)."""
    from helpers.dataset import default_transform
    from helpers.synthetic import make_image

    rng, transform = np.random.default_rng(seed), default_transform()
    return torch.stack([transform(make_image(rng, ("crack", "no_crack")[i % 2])[0]) for i in range(count)])


class LazyInt8:
    """The int8 backbone, built on its first call (a feature-cache hit never pays for the build), and kept for the
    next call with the same weights (notebook 04 asks for training and validation features)."""

    training = False
    last_built: tuple[str, Int8Backbone] | None = None  # (the weights' digest, the backbone built from them)

    def __init__(self, backbone: nn.Module):
        self.backbone, self.weights = backbone, None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.weights = self.weights or weights_digest(self.backbone)  # hashed once, and only when computing
        if LazyInt8.last_built is None or LazyInt8.last_built[0] != self.weights:
            print("building the int8 backbone (calibration and compilation: up to tens of seconds)")
            LazyInt8.last_built = (self.weights, quantize_backbone(self.backbone, calibration_images()))
        return LazyInt8.last_built[1](images)


def number_format(device: torch.device | str = "cpu") -> str:
    """The number format extract_features computes in on `device`: int8 where enabled, else float32."""
    int8 = torch.device(device).type == "cpu" and enabled() and int8_unavailable_reason("cpu") is None
    return "int8" if int8 else "float32"


def backbone_for(
    model: nn.Module, device: torch.device | str = "cpu", chosen: str | None = None
) -> tuple[nn.Module | LazyInt8, str]:
    """The frozen backbone as extract_features runs it, and its number format (`chosen`, else :func:`number_format`)."""
    backbone, chosen = float_backbone(model, device), chosen or number_format(device)
    return (LazyInt8(backbone) if chosen == "int8" else backbone), chosen


def images_per_second(backbone, images: torch.Tensor, batch_size: int = 100) -> float:
    """How many of `images` (already in memory) the backbone turns into features per second."""
    start = time.perf_counter()
    with torch.no_grad():
        for batch in images.split(batch_size):
            backbone(batch)
    return len(images) / (time.perf_counter() - start)


def measure(
    model: nn.Module, images: torch.Tensor | None = None, rounds: int = 3, int8_backbone: Int8Backbone | None = None
) -> Measurement:
    """Time float32 against int8 (`int8_backbone`, or one built now) on `images` already in memory (default: the
    64 calibration images), in turns, median of `rounds`; int8 is worth switching on where it ran at least
    FASTER_BY times faster."""
    images = calibration_images() if images is None else images
    reference = float_backbone(model)
    images_per_second(reference, images[:2])  # warm-up
    result = Measurement(float32_per_second=0.0, machine=machine())
    result.why = int8_unavailable_reason("cpu") or ""
    if not result.why and int8_backbone is None:
        try:
            int8_backbone = quantize_backbone(reference, calibration_images())
        except RuntimeError as error:
            result.why = str(error)
    float_rates, int8_rates = [], []
    for _ in range(rounds):
        float_rates.append(images_per_second(reference, images))
        if int8_backbone is not None:
            int8_rates.append(images_per_second(int8_backbone, images))
    result.float32_per_second = median(float_rates)
    if int8_backbone is not None:
        result.int8_per_second, result.rounding_error = median(int8_rates), int8_backbone.rounding_error
        result.use_int8 = result.int8_per_second >= FASTER_BY * result.float32_per_second
        ratio = result.int8_per_second / result.float32_per_second
        result.why = f"int8 ran {ratio:.2f}x float32's speed on {len(images)} images" + (
            "" if result.use_int8 else f", less than the {FASTER_BY}x asked of it before it is switched on"
        )
    return result


def enable(measurement: Measurement) -> bool:
    """Switch int8 on for extract_features where `measurement` (from :func:`measure`) found it faster; returns
    whether it is on. The record keeps the measurement, and counts only on the machine that made it."""
    if not measurement.use_int8:
        disable()
        return False
    write_json_atomically(asdict(measurement), record_file())
    return enabled()


_DECODERS = ThreadPoolExecutor(2, thread_name_prefix="decode_jpeg", initializer=torch.set_num_threads, initargs=(1,))


def jpeg_batches(dataset, batch_size: int = 100, reuse: bool = False):
    """(images, labels) batches of a data set with the default transform, for a CPU: libjpeg-turbo decodes each batch
    in two threads, normalised as ToTensor and Normalize do (the very tensors of `dataset[i]`, without PIL's
    per-image overhead). `reuse`: every batch in one buffer (fresh memory costs as much as decoding), for a caller
    done with each batch before the next. None for another transform; an image that is not a 227x227 JPEG is read
    by the data set itself."""
    from helpers.dataset import IMAGENET_MEAN, IMAGENET_STD, default_transform

    if repr(getattr(dataset, "transform", None)) != repr(default_transform()):
        return None
    # Per row of pixels in channels_last memory, (R, G, B) 227 times: one broadcast along rows, twice as fast as
    # broadcasting a (3, 1, 1) mean over that layout.
    mean, std = (torch.tensor(values).repeat(227) for values in (IMAGENET_MEAN, IMAGENET_STD))

    def read(image: torch.Tensor, index: int) -> None:
        """Decode one file into `image`, a (3, 227, 227) view of the batch, as ToTensor and Normalize would."""
        path = dataset.samples[index].path
        try:
            data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
            pixels = decode_jpeg(data, mode=ImageReadMode.RGB)
        except RuntimeError:  # not a JPEG, or a broken one: the data set reads it and names the file
            pixels = None
        if pixels is None or pixels.shape != image.shape:
            image.copy_(dataset[index][0])
        else:  # ToTensor's and Normalize's steps, in place, on the image's rows of (R, G, B) x 227
            image.copy_(pixels).permute(1, 2, 0).view(227, -1).div_(255).sub_(mean).div_(std)

    def batches():
        # channels_last: the layout the CPU backbone computes in, so no copy between decoding and the backbone
        buffer = torch.empty((min(batch_size, len(dataset)), 3, 227, 227), memory_format=torch.channels_last)
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            images = buffer[: len(indices)] if reuse else torch.empty_like(buffer[: len(indices)])
            list(_DECODERS.map(read, images, indices))
            yield images, torch.tensor([dataset.samples[i].label for i in indices])

    return batches()
