"""Compute the frozen backbone's features once, keep them on disk, train the head in seconds.

Our model is ResNet18 with every backbone layer frozen and a new ``fc = Linear(512, 2)``.
Frozen means the backbone's weights never change, so (in eval mode) the 512 numbers it
produces for an image never change either. The capstone's training loop still pushes every
image through the whole network at every epoch, recomputing those same 512 numbers each time.
Almost all of the time goes there: the head is a single small matrix multiplication.

So we split the model in two:

1. ``backbone_of(model)``: everything but ``fc``, turning (N, 3, H, W) images into (N, 512)
   feature vectors. :func:`extract_features` runs it once over a data set and saves the
   features in a cache file.
2. ``model.fc``: trained on the cached features, for as many epochs as we like.

``head(backbone(x))`` is the same computation as ``model(x)``, so the result is the same model
(up to float rounding). Two things differ from the capstone's loop:

* the backbone runs in eval mode: BatchNorm uses its stored statistics. The capstone called
  ``model.train()``, so its BatchNorm layers used each batch's statistics (and updated the
  stored ones), which makes an image's features depend on the other images in its batch;
* the cache must be thrown away whenever anything that changes the features changes: the
  images, the split, the transform, the backbone's weights or the number format (bfloat16, int8).
  :func:`feature_cache_key` hashes all of these; a cache file with another key is recomputed
  (the files themselves are read and written by :mod:`helpers.feature_cache`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from copy import deepcopy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from helpers.feature_cache import (
    FeatureSet, cache_file, dataset_fingerprint, load_cached, save_atomically, weights_fingerprint,
)
from helpers.int8 import RECIPE, Int8Backbone, calibration_images, int8_unavailable_reason, quantize_backbone
from helpers.model import pick_device
from helpers.workbook import data_dir

CACHE_FORMAT = "concrete-crack-workbook/features/1"  # part of the key: bump it when the recipe changes
INT8_MIN_IMAGES = 2000  # below this, compiling the int8 backbone (about 30 s) costs more than it saves
INT8_ENV = "WORKBOOK_INT8"  # "0" keeps FastSettings(int8=None) in float32


@dataclass
class FastSettings:
    """How the backbone pass runs. None of these changes the features beyond float rounding, except bf16 and int8.

    channels_last: store images and weights as (N, H, W, C) in memory; faster convolutions on CPUs and GPUs.
    bf16: compute in bfloat16 (autocast). None = only where the hardware does it fast (see bf16_is_fast).
    int8: run a quantised copy of the backbone in 8-bit integers (helpers.int8), about 2x faster on an
        x86-64 CPU. None = on a CPU that can (see int8_unavailable_reason), when bfloat16 is not in use
        and the data set's folder holds at least INT8_MIN_IMAGES images, unless the environment
        variable WORKBOOK_INT8=0 turns it off; building it takes 15-30 s.
    compile: run the backbone through torch.compile. It takes tens of seconds (and, on a CPU, a C++
        compiler) before the first batch, then runs faster (about 1.2x on a 2-core AVX2 CPU):
        worth it for tens of thousands of images, not for a few hundred.
    num_threads: CPU threads for the backbone (torch.set_num_threads) while extracting; None = torch's default.
    """

    channels_last: bool = True
    bf16: bool | None = None
    int8: bool | None = None
    compile: bool = False
    num_threads: int | None = None


def bf16_is_fast(device: torch.device | str) -> bool:
    """True when `device` has hardware support for bfloat16 matrix maths.

    CUDA: GPUs from Ampere on. CPU: AVX512-BF16 or AMX instructions (recent Intel Xeons, AMD Zen 4);
    elsewhere oneDNN emulates bfloat16, which can be several times *slower* than float32 (about 6x
    slower for ResNet18 on a 2-core AMD EPYC with AVX2 only; 2.6x *faster* on a Xeon with AMX).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    has_avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return bool(has_avx512_bf16 or has_amx)


def uses_bf16(settings: FastSettings, device: torch.device | str) -> bool:
    """The bf16 setting with None ("auto") resolved for `device` (never together with int8=True)."""
    if settings.int8 and settings.bf16 is None:
        return False
    return bf16_is_fast(device) if settings.bf16 is None else bool(settings.bf16)


def source_size(dataset) -> int:
    """How many images the folder behind `dataset` holds (both splits), so train and val decide alike."""
    return int(getattr(dataset, "source_size", len(dataset)))


def uses_int8(settings: FastSettings, device: torch.device | str, dataset=None) -> bool:
    """The int8 setting with None ("auto") resolved for `device` and `dataset` (see FastSettings).

    int8=True where int8 cannot run raises a RuntimeError that says why.
    """
    if settings.int8 and settings.bf16:
        raise ValueError("Choose bf16 or int8, not both.")
    if settings.int8:
        reason = int8_unavailable_reason(device)
        if reason:
            raise RuntimeError(f"FastSettings(int8=True) cannot run here: {reason}. Use int8=None or False.")
        return True
    if settings.int8 is None:
        if os.environ.get(INT8_ENV, "").strip().lower() in ("0", "false", "no", "off"):
            return False
        big_enough = dataset is None or source_size(dataset) >= INT8_MIN_IMAGES
        return big_enough and not uses_bf16(settings, device) and int8_unavailable_reason(device) is None
    return False


def default_num_workers(device: torch.device | str | None = None) -> int:
    """DataLoader worker processes that decode the JPEGs while the backbone runs.

    On a CPU the backbone needs every core, and decoding a 227x227 JPEG (about 1 ms) is a few
    per cent of its work: with fewer than 8 cores the main process decodes (measured on 2 cores
    with int8: one worker process competing with the backbone's threads cut 55 images/s to 39);
    with more, one worker per 8 cores, up to 4. With a GPU (or MPS) decoding is the slow part:
    up to 8 workers.
    """
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (Linux)
    except AttributeError:
        cores = os.cpu_count() or 1
    accelerator = device is not None and torch.device(device).type in ("cuda", "mps")
    if accelerator:
        return 0 if cores <= 1 else min(8, cores - 1)
    return min(4, cores // 8)


def default_cache_dir() -> Path:
    """Where the notebooks keep feature caches: data/cache/features (or under $WORKBOOK_DATA_DIR)."""
    return data_dir() / "cache" / "features"


# ----------------------------------------------------------------------------- the backbone
def backbone_of(model: nn.Module) -> nn.Module:
    """Every layer of a torchvision ResNet except `fc`, then a flatten: (N, 3, H, W) -> (N, 512).

    The layers are shared with `model`, not copied: it is the same backbone, in the same mode
    (train or eval) as `model`.
    """
    layers = [module for name, module in model.named_children() if name != "fc"]
    return nn.Sequential(*layers, nn.Flatten(start_dim=1)).train(model.training)


def prepare_backbone(model: nn.Module, settings: FastSettings, device: torch.device) -> nn.Module:
    """A copy of the backbone, in eval mode, on `device`, laid out as `settings` ask.

    A copy, so the learner's `model` keeps its device, memory layout and train/eval mode.
    """
    backbone = deepcopy(backbone_of(model)).eval().to(device)
    if settings.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    if settings.compile:
        backbone = torch.compile(backbone)
    return backbone


_INT8_BACKBONES: dict[tuple, Int8Backbone] = {}  # the last one built, reused for every split of the data


def int8_backbone(model: nn.Module, transform, weights: str | None = None) -> Int8Backbone:
    """The int8 backbone of `model` (helpers.int8), calibrated on synthetic images through `transform`.

    Built once per weights and transform, then reused: the training and validation features come
    from the very same int8 model. `weights`: weights_fingerprint(model), when already computed.
    """
    key = (weights or weights_fingerprint(model), repr(transform))
    if key not in _INT8_BACKBONES:
        print("building the int8 backbone (calibration on synthetic images, then torch.compile): about 30 s, once")
        _INT8_BACKBONES.clear()  # each holds a compiled model: keep only the newest
        _INT8_BACKBONES[key] = quantize_backbone(backbone_of(model), calibration_images(transform))
    return _INT8_BACKBONES[key]


@torch.inference_mode()
def backbone_features(backbone: nn.Module, images: torch.Tensor, settings: FastSettings | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """The (N, 512) float32 features of a batch of images, returned on the CPU.

    `backbone` must be in eval mode and already on `device` (default: the device of its weights).
    """
    settings = settings or FastSettings()
    if backbone.training:
        raise ValueError("Call backbone.eval() first: in training mode BatchNorm uses each batch's "
                         "statistics, so an image's features would depend on the rest of its batch.")
    device = torch.device(device) if device is not None else next(backbone.parameters()).device
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    images = images.to(device, memory_format=memory_format, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=uses_bf16(settings, device)):
        features = backbone(images)
    return features.float().cpu()


@torch.inference_mode()
def head_logits(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The head's outputs (logits) for cached features, on the head's device."""
    device = next(head.parameters()).device
    return head(features.to(device))


# ----------------------------------------------------------------------------- the cache key
def number_format(settings: FastSettings, device: torch.device | str, dataset=None) -> str:
    """How the backbone computes: "float32", "bfloat16" or "int8" (settings resolved for device and data)."""
    if uses_int8(settings, device, dataset):
        return "int8"
    return "bfloat16" if uses_bf16(settings, device) else "float32"


def feature_cache_key(dataset, model: nn.Module, settings: FastSettings,
                      device: torch.device | str | None = None, weights: str | None = None) -> str:
    """One hash that changes whenever the cached features would: data, weights or number format.

    `weights`: weights_fingerprint(model), when already computed (hashing 45 MB takes a moment).
    """
    device = torch.device(device) if device is not None else pick_device()
    parts = [CACHE_FORMAT, dataset_fingerprint(dataset), weights or weights_fingerprint(model),
             f"bf16={uses_bf16(settings, device)}"]
    if uses_int8(settings, device, dataset):
        parts.append(RECIPE)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def compute_features(backbone: nn.Module, loader: DataLoader, settings: FastSettings, device: torch.device,
                     total: int, desc: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backbone over every batch of `loader`: (features (N, 512), labels (N,))."""
    features, labels = [], []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for images, batch_labels in loader:
            features.append(backbone_features(backbone, images, settings, device))
            labels.append(batch_labels)
            bar.update(len(batch_labels))
    return torch.cat(features), torch.cat(labels).long()


def extract_features(model: nn.Module, dataset, cache_dir: str | Path | None = None, *, name: str | None = None,
                     batch_size: int = 100, num_workers: int | None = None, settings: FastSettings | None = None,
                     device: torch.device | str | None = None, progress: bool = True) -> FeatureSet:
    """The backbone features of every image of `dataset` (a CrackDataset), from the cache when possible.

    With `cache_dir`, the features live in cache_dir/<name or dataset.split>.pt together with the
    key they were computed under; a file with the same key is loaded instead of recomputed.
    `device` defaults to pick_device(), `num_workers` to default_num_workers(device); the images
    go through the backbone in `batch_size` batches, in the data set's order.
    """
    settings = settings or FastSettings()
    device = torch.device(device) if device is not None else pick_device()
    weights = weights_fingerprint(model)  # once: the cache key and the int8 backbone both need it
    key = feature_cache_key(dataset, model, settings, device, weights)
    path = cache_file(cache_dir, name or dataset.split) if cache_dir is not None else None
    if path is not None:
        cached = load_cached(path, key)
        if cached is not None:
            print(f"features loaded from cache: {path}")
            return cached

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=default_num_workers(device) if num_workers is None else num_workers,
                        pin_memory=device.type == "cuda")  # pinned memory only speeds up copies to a GPU
    backbone = None
    if uses_int8(settings, device, dataset):
        try:
            backbone = int8_backbone(model, getattr(dataset, "transform", None), weights)
        except Exception as error:
            if settings.int8:  # asked for explicitly: do not quietly do something else
                raise
            warnings.warn(f"Could not build the int8 backbone ({type(error).__name__}: {error}); "
                          "computing the features in float32 instead.")
            settings = replace(settings, int8=False)
            key = feature_cache_key(dataset, model, settings, device, weights)
    if backbone is None:
        backbone = prepare_backbone(model, settings, device)
    threads_before = torch.get_num_threads()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    try:
        features, labels = compute_features(backbone, loader, settings, device, len(dataset),
                                            f"features ({name or dataset.split})", progress)
    finally:
        torch.set_num_threads(threads_before)

    feature_set = FeatureSet(features, labels, [sample.sample_id for sample in dataset.samples], key,
                             number_format(settings, device, dataset))
    if path is not None:
        try:
            save_atomically(feature_set, path)
        except OSError as error:  # a full disk or a read-only folder must not throw the work away
            warnings.warn(f"Could not save the feature cache {path} ({error}); the features are not cached.")
    return feature_set
