"""How the frozen backbone runs on this machine: one door to the speed path.

A frozen backbone may compute its features in whatever way is fastest, as long as the numbers
stay (nearly) the same: float32 everywhere, bfloat16 on GPUs and CPUs with AMX, int8 on other
x86 CPUs for big folders (:mod:`helpers.speed.int8`), channels_last memory layout, torch.compile.
:func:`choose_backbone` decides this once, for a device and a data set, and returns a
:class:`Backbone` that carries its number format, its part of the feature cache's key, and the
call that turns images into features. :func:`helpers.features.extract_features` only uses it.

None of this is needed to understand transfer learning; notebook 07 (optional) looks inside.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from helpers.dataset import default_transform
from helpers.model import backbone_of
from helpers.speed.fast_input import can_decode_on_device
from helpers.speed.int8 import (
    CALIBRATION_IMAGES, CALIBRATION_SEED, RECIPE, Int8Backbone, int8_unavailable_reason, int8_untested_reason,
    quantize_backbone,
)
from helpers.settings import int8_allowed, pick_device
from helpers.synthetic import make_image

INT8_MIN_IMAGES = 2000  # below this, building the int8 backbone (about 30 s) costs more than it saves
NUMBER_FORMATS = ("float32", "bfloat16", "int8")


@dataclass
class FastSettings:
    """How the backbone pass runs. None of these changes the features beyond float rounding, except bf16 and int8.

    channels_last: store images and weights as (N, H, W, C) in memory; faster convolutions on CPUs and GPUs.
    bf16: compute in bfloat16 (autocast). None = where the hardware does it fast (see bf16_is_fast)
        and int8 is not the better choice (see choose_number_format).
    int8: run a quantised copy of the backbone in 8-bit integers (helpers.speed.int8), 2-3x faster on an
        x86-64 CPU. None = on a CPU that can (see int8_unavailable_reason) and has no AMX, when the
        data set's folder holds at least INT8_MIN_IMAGES images, unless WORKBOOK_INT8=0;
        building it takes 15-30 s.
    decode_on_device: decode the JPEGs on the device, in batches (helpers.speed.fast_input): the same
        pixels, read by nvJPEG on a GPU. None = on a CUDA GPU, where PIL's decoding is the slow part,
        when the data set can (see helpers.speed.fast_input.can_decode_on_device).
    compile: run the backbone through torch.compile. It takes tens of seconds (and, on a CPU, a C++
        compiler) before the first batch, then runs faster (about 1.2x on a 2-core AVX2 CPU).
    num_threads: CPU threads for the backbone (torch.set_num_threads) while extracting; None = torch's default.
    """

    channels_last: bool = True
    bf16: bool | None = None
    int8: bool | None = None
    compile: bool = False
    num_threads: int | None = None
    decode_on_device: bool | None = None


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
    return bool(has_avx512_bf16 or has_amx())


def has_amx() -> bool:
    """True on a CPU with AMX tiles (recent Xeons), where bfloat16 was measured faster than int8 here."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def choose_number_format(settings: FastSettings, device: torch.device | str,
                         source_size: int | None = None) -> tuple[str, str]:
    """(number format, why): the settings with None ("auto") resolved for the device and the data's size.

    The format is "float32", "bfloat16" or "int8"; `why` is one sentence for the learner.
    GPUs, and CPUs with AMX, take bfloat16 where it is fast (measured: 4.5x the capstone's loop on
    an AMX Xeon). Other CPUs take int8 where it can run, for a big enough folder: on a CPU with
    AVX512-BF16 but no AMX (AMD Zen 4) int8 ran 2.6x as fast as bfloat16; else bfloat16 if fast,
    else float32. source_size: images in the data set's folder (both splits, so train and val
    decide alike); None (unknown) never picks int8 automatically. int8=True where int8 cannot run
    raises a RuntimeError that says why.
    """
    if settings.int8 and settings.bf16:
        raise ValueError("Choose bf16 or int8, not both.")
    if settings.int8:
        reason = int8_unavailable_reason(device)
        if reason:
            raise RuntimeError(f"FastSettings(int8=True) cannot run here: {reason}. Use int8=None or False.")
        return "int8", "asked for with FastSettings(int8=True)"
    if settings.bf16:
        return "bfloat16", "asked for with FastSettings(bf16=True)"
    device = torch.device(device)
    bf16_fast = settings.bf16 is None and bf16_is_fast(device)
    if bf16_fast and (device.type != "cpu" or has_amx()):
        return "bfloat16", f"this {device.type.upper()} computes bfloat16 fast"
    no_int8 = _why_not_int8(settings, device, source_size)
    if no_int8 is None:
        return "int8", "the fastest format that keeps the features nearly exact on this CPU"
    if bf16_fast:
        return "bfloat16", f"this CPU computes bfloat16 fast, and {no_int8}"
    return "float32", no_int8


def _why_not_int8(settings: FastSettings, device: torch.device, source_size: int | None) -> str | None:
    """None when the automatic choice may take int8, else why not, in a few words."""
    if settings.int8 is False:
        return ("asked for with FastSettings(bf16=False, int8=False)" if settings.bf16 is False
                else "int8 turned off in the settings")
    if source_size is None or source_size < INT8_MIN_IMAGES:
        count = "an unknown number of" if source_size is None else f"{source_size:,}"
        return f"{count} images are too few to pay for building an int8 backbone"
    if not int8_allowed():
        return "WORKBOOK_INT8=0 turns int8 off"
    reason = int8_unavailable_reason(device) or int8_untested_reason()
    return f"int8 is off: {reason}" if reason else None


def choose_decoding(dataset, device: torch.device | str, settings: FastSettings) -> tuple[bool, str]:
    """(decode on the device?, why): where the JPEGs of `dataset` are decoded for the backbone.

    Auto (settings.decode_on_device None): on a CUDA GPU, when the data set can. True where the
    data set cannot raises a ValueError that says why.
    """
    reason = can_decode_on_device(dataset)
    if settings.decode_on_device:
        if reason:
            raise ValueError(f"FastSettings(decode_on_device=True) cannot run here: {reason}. "
                             "Use decode_on_device=None or False.")
        return True, "asked for with FastSettings(decode_on_device=True)"
    if settings.decode_on_device is False:
        return False, "decoding on the device turned off in the settings"
    if torch.device(device).type != "cuda":
        return False, "on a CPU the backbone is the slow part and decoding with PIL costs little"
    if reason:
        return False, reason
    return True, "on a GPU, decoding with PIL would be the slow part"


def calibration_images(transform: Callable | None, count: int = CALIBRATION_IMAGES,
                       seed: int = CALIBRATION_SEED) -> torch.Tensor:
    """`count` synthetic concrete photos (half cracked), through `transform`: (count, 3, 227, 227).

    The int8 backbone is calibrated on these, never on the data being measured, so the training
    and validation features come from the very same int8 model.
    """
    transform = transform or default_transform()
    rng = np.random.default_rng(seed)
    recipes = ["crack", "no_crack"] * (count // 2) + ["crack"] * (count % 2)
    return torch.stack([transform(make_image(rng, recipe)[0]) for recipe in recipes])


_INT8_BACKBONES: dict[tuple, Int8Backbone] = {}  # the last one built, reused for every split of the data


def forget_int8_backbones() -> None:
    """Drop the int8 backbone kept for reuse (the next int8 pass builds a new one)."""
    _INT8_BACKBONES.clear()


class Backbone:
    """The frozen backbone, ready to turn images into features, and how it does it.

    number_format: "float32", "bfloat16" or "int8". key_part: what of this goes into the
    feature cache's key. Call :meth:`prepare` before the first batch (it builds the int8 model,
    or copies the float one to the device); calling it returns (N, 512) float32 features on the CPU.
    """

    def __init__(self, model: nn.Module, device: torch.device, settings: FastSettings, number_format: str,
                 why: str = "", weights: str | None = None):
        self.model, self.device, self.settings, self.number_format = model, device, settings, number_format
        self.why = why  # one sentence: why this number format
        self.weights = weights  # fingerprint of the backbone's weights, the int8 model's identity
        self.run: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def key_part(self) -> str:
        """The part of the feature cache's key that says how the features were computed."""
        return f"{self.number_format}|{RECIPE}" if self.number_format == "int8" else self.number_format

    def prepare(self, transform: Callable | None = None) -> Backbone:
        """Build what runs: the int8 model (calibrated through `transform`), or a float copy on the device.

        Under auto settings, an int8 build that fails warns and falls back to float32.
        """
        if self.run is not None:
            return self
        if self.number_format == "int8":
            try:
                self.run = self._int8_model(transform)
                return self
            except Exception as error:
                if self.settings.int8:  # asked for explicitly: do not quietly do something else
                    raise
                warnings.warn(f"Could not build the int8 backbone ({type(error).__name__}: {error}); "
                              "computing the features in float32 instead.")
                self.number_format, self.why = "float32", "the int8 build failed (see the warning)"
        backbone = deepcopy(backbone_of(self.model)).eval().to(self.device)  # the learner's model stays as it is
        if self.settings.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        self.run = torch.compile(backbone) if self.settings.compile else backbone
        return self

    def _int8_model(self, transform: Callable | None) -> Int8Backbone:
        """The int8 backbone for these weights and transform: built once, reused for every split."""
        key = (self.weights, repr(transform))
        if key not in _INT8_BACKBONES:
            print("building the int8 backbone (calibration on synthetic images, then torch.compile): about 30 s, once")
            _INT8_BACKBONES.clear()  # each holds a compiled model: keep only the newest
            _INT8_BACKBONES[key] = quantize_backbone(backbone_of(self.model), calibration_images(transform))
        return _INT8_BACKBONES[key]

    @contextmanager
    def threads(self) -> Iterator[None]:
        """Use settings.num_threads CPU threads inside the block (when set), then restore torch's number."""
        before = torch.get_num_threads()
        if self.settings.num_threads:
            torch.set_num_threads(self.settings.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.run is None:
            self.prepare()
        memory_format = torch.channels_last if self.settings.channels_last else torch.contiguous_format
        images = images.to(self.device, memory_format=memory_format, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=self.number_format == "bfloat16"):
            features = self.run(images)
        return features.float().cpu()


def choose_backbone(model: nn.Module, device: torch.device | str | None = None, settings: FastSettings | None = None,
                    source_size: int | None = None, weights: str | None = None) -> Backbone:
    """Decide once how `model`'s backbone runs on `device` for a folder of `source_size` images.

    Builds nothing yet (see Backbone.prepare), so a cache hit costs no int8 build.
    weights: the backbone's weights fingerprint (helpers.feature_cache.weights_fingerprint).
    """
    device = pick_device(device)
    settings = settings or FastSettings()
    number_format, why = choose_number_format(settings, device, source_size)
    return Backbone(model, device, settings, number_format, why, weights)

