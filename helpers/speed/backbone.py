"""How the frozen backbone runs on this machine: one door to the speed path.

A frozen backbone may compute its features in whatever way is fastest, as long as the numbers
stay (nearly) the same: float32, bfloat16 (eager or compiled), int8 (:mod:`helpers.speed.int8`),
channels_last memory layout. On a CPU, which way is fastest is measured, not guessed from the
CPU's flags (:mod:`helpers.speed.measure`): once per machine, for a folder big enough to pay for
it, then remembered. :func:`choose_backbone` decides this once, for a device and a data set, and
returns a :class:`Backbone` that carries its number format, its part of the feature cache's key,
and the call that turns images into features. :func:`helpers.features.extract_features` only uses it.

None of this is needed to understand transfer learning; notebook 07 (optional) looks inside.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
from torch import nn

from helpers.dataset import default_transform
from helpers.feature_cache import weights_fingerprint
from helpers.model import backbone_of
from helpers.settings import int8_allowed, pick_device
from helpers.speed.fast_input import (
    DECODERS_MEASURED_FROM,
    DecoderTrial,
    can_decode_on_device,
    folder_of,
    measure_decoders,
)
from helpers.speed.int8 import (
    CALIBRATION_IMAGES,
    CALIBRATION_SEED,
    EAGER_CHUNK_SIZE,
    FIRST_CONV_BITS,
    CompiledBackbone,
    InChunks,
    first_conv_8bit_unsafe_reason,
    int8_unavailable_reason,
    int8_untested_reason,
    quantize_backbone,
    recipe,
)
from helpers.speed.measure import (
    MEASURE_MIN_IMAGES,
    QUICK_TO_BUILD,
    SMALL_FOLDER,
    TIMED_IMAGES,
    Measurement,
    decisions_file,
    machine_key,
    measure,
    remember,
    remembered,
)
from helpers.synthetic import make_image

NUMBER_FORMATS = ("float32", "bfloat16", "int8")
INT8_8BIT_CONV1 = "int8 8-bit conv1"  # the candidate whose first convolution's weights get 8 bits, not 7
FULL_SET = 40_000  # the real data set's size: what the printed saving is worked out for


@dataclass
class FastSettings:
    """How the backbone pass runs. None of these changes the features beyond float rounding, except bf16 and int8.

    channels_last: store images and weights as (N, H, W, C) in memory; faster convolutions on CPUs and GPUs.
    bf16: compute in bfloat16 (autocast). None = decide: on a CPU by measuring (see choose_number_format),
        on a GPU where the hardware does it fast (see bf16_is_fast).
    int8: run a quantised copy of the backbone in 8-bit integers (helpers.speed.int8), on an x86-64
        CPU. None = decide by measuring, unless WORKBOOK_INT8=0; building it takes 15-30 s.
    int8_first_conv_bits: int8's first convolution's weights in 7 or 8 bits. None = decide by
        measuring where the CPU has VNNI (8 bits saturate without it), else 7; with int8=True, 7.
    compile: run the float backbone through torch.compile. None = decide by measuring (bfloat16
        compiled is one of the candidates); True / False: always / never. It takes tens of seconds
        (and, on a CPU, a C++ compiler) before the first batch. int8 is always compiled.
    decode_on_device: decode the JPEGs on the device, in batches (helpers.speed.fast_input): the same
        pixels, read by nvJPEG on a GPU. None = on a CUDA GPU, where PIL's decoding is the slow part,
        when the data set can (see helpers.speed.fast_input.can_decode_on_device).
    num_threads: CPU threads for the backbone (torch.set_num_threads) while extracting; None = torch's default.
    """

    channels_last: bool = True
    bf16: bool | None = None
    int8: bool | None = None
    compile: bool | None = None
    num_threads: int | None = None
    decode_on_device: bool | None = None
    int8_first_conv_bits: int | None = None


@dataclass(frozen=True)
class FormatChoice:
    """How the backbone computes: its number format, whether it is compiled, and why (one sentence)."""

    number_format: str  # "float32", "bfloat16" or "int8"
    compiled: bool
    why: str
    first_conv_bits: int = FIRST_CONV_BITS  # int8 only: the first convolution's weight bits (helpers.speed.int8)

    @property
    def name(self) -> str:
        """The candidate's name, as measured (speed.measure.CANDIDATES): "float32", "bfloat16 compiled", "int8"..."""
        return _name(self.number_format, self.compiled, self.first_conv_bits)


def _name(number_format: str, compiled: bool, first_conv_bits: int = FIRST_CONV_BITS) -> str:
    if number_format == "int8":
        return INT8_8BIT_CONV1 if first_conv_bits == 8 else "int8"
    return f"{number_format} compiled" if compiled else number_format


def _choice(name: str, why: str) -> FormatChoice:
    """ "bfloat16 compiled" -> FormatChoice("bfloat16", True, why); "int8 8-bit conv1" -> int8 with first_conv_bits 8."""
    number_format = name.split()[0]
    compiled = name.endswith("compiled") or number_format == "int8"
    return FormatChoice(number_format, compiled, why, 8 if name == INT8_8BIT_CONV1 else FIRST_CONV_BITS)


def bf16_is_fast(device: torch.device | str) -> bool:
    """True when `device` has hardware support for bfloat16 matrix maths (never emulated).

    CUDA: GPUs from Ampere on. CPU: AVX512-BF16 or AMX instructions (recent Intel Xeons, AMD Zen 4);
    elsewhere oneDNN emulates bfloat16, which can be several times *slower* than float32 (6-9x
    slower for ResNet18 on 2-core AMD EPYCs with AVX2 only). On a CPU this only rules bfloat16
    out; whether it is the fastest is measured.
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


def candidates_here(settings: FastSettings, device: torch.device | str = "cpu") -> tuple[list[str], list[str]]:
    """(the candidates of speed.measure.CANDIDATES that may run here under `settings`, why the others may not).

    The CPU's flags only rule out (emulated bfloat16; 8-bit first-convolution weights without VNNI);
    they never rule a candidate in.
    """
    names, why_not = ["float32"], []
    if settings.bf16 is False:
        why_not.append("bfloat16 turned off in the settings")
    elif not bf16_is_fast(device):
        why_not.append("bfloat16 is emulated on this CPU (several times slower than float32)")
    else:
        names += [
            name
            for name, compiled in (("bfloat16", False), ("bfloat16 compiled", True))
            if settings.compile is None or settings.compile == compiled
        ]
    if settings.int8 is False:
        why_not.append("int8 turned off in the settings")
    elif not int8_allowed():
        why_not.append("WORKBOOK_INT8=0 turns int8 off")
    elif reason := int8_unavailable_reason(device) or int8_untested_reason():
        why_not.append(f"int8 is off: {reason}")
    elif settings.int8_first_conv_bits == 8:
        names.append(INT8_8BIT_CONV1)
    else:
        names.append("int8")
        if settings.int8_first_conv_bits == 7:
            why_not.append(f"{INT8_8BIT_CONV1} turned off in the settings")
        elif reason := first_conv_8bit_unsafe_reason():
            why_not.append(f"{INT8_8BIT_CONV1} is out: {reason}")
        else:
            names.append(INT8_8BIT_CONV1)
    return names, why_not


def choose_number_format(
    settings: FastSettings,
    device: torch.device | str,
    source_size: int | None = None,
    measure_here: Callable[[list[str]], Measurement] | None = None,
) -> FormatChoice:
    """How the backbone computes, with the settings' None ("auto") resolved for the device and the data's size.

    Explicit settings win (int8=True, bf16=True, or both False). On a CPU the others are measured
    (helpers.speed.measure): for a folder of SMALL_FOLDER images or more, the measurement
    remembered for this machine, when it covers what this folder would measure; else
    `measure_here(names)` times the candidates (one printed line), and the result is remembered:
    from MEASURE_MIN_IMAGES images all of them, from SMALL_FOLDER those QUICK_TO_BUILD.
    The way that finishes `source_size` images soonest, set-up included, wins. Otherwise float32.
    source_size: images in the data set's folder (both splits, so train and val decide alike);
    None (unknown) never measures nor builds. int8=True where int8 cannot run raises a RuntimeError.
    """
    if settings.int8 and settings.bf16:
        raise ValueError("Choose bf16 or int8, not both.")
    bits = settings.int8_first_conv_bits
    if bits not in (None, 7, 8):
        raise ValueError(f"FastSettings(int8_first_conv_bits=...) takes 7, 8 or None (measured), not {bits!r}.")
    if settings.int8:
        reason = int8_unavailable_reason(device)
        if reason:
            raise RuntimeError(f"FastSettings(int8=True) cannot run here: {reason}. Use int8=None or False.")
        asked = "FastSettings(int8=True" + (f", int8_first_conv_bits={bits})" if bits else ")")
        return FormatChoice("int8", True, f"asked for with {asked}", bits or FIRST_CONV_BITS)
    compiled = bool(settings.compile)
    if settings.bf16:
        return FormatChoice("bfloat16", compiled, "asked for with FastSettings(bf16=True)")
    device = torch.device(device)
    if settings.bf16 is False and settings.int8 is False:
        return FormatChoice("float32", compiled, "asked for with FastSettings(bf16=False, int8=False)")
    if device.type != "cpu":  # GPUs are not measured (yet): bfloat16 where the hardware has it
        if settings.bf16 is None and bf16_is_fast(device):
            return FormatChoice("bfloat16", compiled, f"this {device.type.upper()} computes bfloat16 fast")
        return FormatChoice("float32", compiled, f"bfloat16 is not fast on this {device.type.upper()}")
    names, why_not = candidates_here(settings, device)
    if names == ["float32"]:
        return FormatChoice("float32", compiled, "; ".join(why_not))
    if source_size is None or source_size < SMALL_FOLDER:
        count = "an unknown number of" if source_size is None else f"{source_size:,}"
        return FormatChoice(
            "float32",
            compiled,
            f"{count} images are too few to pay for measuring which number format is fastest here, or for building one",
        )
    wanted = names if source_size >= MEASURE_MIN_IMAGES else [name for name in names if name in QUICK_TO_BUILD]
    known = remembered(machine_key())
    if known is not None and known.covers(wanted):
        measured = [name for name in names if known.covers([name])]
        best = known.choose(source_size, measured)
        return _choice(
            best.name,
            f"the fastest for {source_size:,} images, set-up included, "
            f"measured on this machine earlier ({known.summary(measured)}; kept in {decisions_file()})",
        )
    if measure_here is None:
        return FormatChoice(
            "float32",
            compiled,
            "not measured on this machine yet (choose_backbone measures, "
            "once, when a folder this big meets this machine)",
        )
    if len(wanted) == 1:
        return FormatChoice(
            "float32",
            compiled,
            f"not measured on this machine yet: {', '.join(names[1:])} must be "
            f"compiled first (with measuring, about a minute: that pays from {MEASURE_MIN_IMAGES:,} "
            "images, and is remembered)",
        )
    measurement = measure_here(wanted)
    try:
        where = f"kept in {remember(measurement)}"
    except OSError as error:
        where = f"not kept: {error}"
    best = measurement.choose(source_size, wanted)
    left_out = [name for name in names if name not in wanted]
    later = (
        (
            f"; {', '.join(left_out)} not measured: {'they need' if len(left_out) > 1 else 'it needs'} compiling, "
            f"which pays from {MEASURE_MIN_IMAGES:,} images"
        )
        if left_out
        else ""
    )
    print(
        f"number formats measured on this machine in {measurement.seconds:.0f} s, once ({where}): "
        f"{measurement.summary(wanted)} -> {best.name}{_saving(measurement, best)}{later}"
    )
    return _choice(
        best.name,
        f"the fastest for {source_size:,} images, set-up included, measured here: {measurement.summary(wanted)}{later}",
    )


def _saving(measurement: Measurement, best) -> str:
    """ "; at 40,000 images it saves N min against float32 (...)", or "" when it saves under a minute or float32 failed."""
    float32 = next((trial for trial in measurement.usable(["float32"])), None)
    if float32 is None or best.name == "float32":
        return ""
    saved = float32.seconds_for(FULL_SET) - best.seconds_for(FULL_SET)
    if saved < 60:
        return ""
    return (
        f"; at {FULL_SET:,} images it saves {saved / 60:.0f} min against float32 "
        f"(measuring cost {100 * measurement.seconds / max(saved, 1e-9):.0f} % of that)"
    )


def choose_decoding(
    dataset, device: torch.device | str, settings: FastSettings, measure: bool = False
) -> tuple[bool, str]:
    """(decode in batches with decode_jpeg?, why): how the JPEGs of `dataset` are decoded for the backbone.

    Auto (settings.decode_on_device None): on a CUDA GPU, when the data set can. On a CPU, for a
    folder of DECODERS_MEASURED_FROM images or more, when `measure` is True: both decoders are
    timed on the first images (helpers.speed.fast_input.measure_decoders, once per folder and run,
    one printed line) and decode_jpeg is used where it is faster and gives the same tensors; else
    PIL. True where the data set cannot raises a ValueError that says why.
    """
    reason = can_decode_on_device(dataset)
    if settings.decode_on_device:
        if reason:
            raise ValueError(
                f"FastSettings(decode_on_device=True) cannot run here: {reason}. Use decode_on_device=None or False."
            )
        return True, "asked for with FastSettings(decode_on_device=True)"
    if settings.decode_on_device is False:
        return False, "decoding in batches turned off in the settings"
    device = torch.device(device)
    if reason:
        return False, reason
    if device.type == "cuda":
        return True, "on a GPU, decoding with PIL would be the slow part"
    if device.type != "cpu":
        return False, f"decode_jpeg does not decode on {device.type.upper()}"
    images = int(getattr(dataset, "source_size", len(dataset)))
    if images < DECODERS_MEASURED_FROM:
        return False, f"{images:,} images are too few to pay for measuring the two decoders"
    if not measure:
        return False, "not measured yet (the features pass measures both decoders on its first images)"
    folder = (folder_of(dataset), repr(getattr(dataset, "transform", None)))
    if folder not in _DECODERS:
        _DECODERS[folder] = trial = measure_decoders(dataset)
        print(
            f"JPEG decoders measured on the first {trial.images} images: {trial.summary()} -> "
            f"{'decode_jpeg in batches' if trial.batched_is_faster else 'PIL'}"
        )
    trial = _DECODERS[folder]
    return trial.batched_is_faster, f"measured on this folder: {trial.summary()}"


_DECODERS: dict[tuple[str, str], DecoderTrial] = {}  # per folder and transform: the CPU's decoders, measured once a run


def decoder_key_part(device: torch.device | str, settings: FastSettings, batched: bool) -> str:
    """What of the decoding goes into the feature cache's key: "" unless it may change a pixel.

    PIL and, on a CPU, the automatic choice of decode_jpeg (taken only where it gave the same
    tensors) add nothing; nvJPEG on a GPU, or decode_jpeg asked for on a CPU, name themselves.
    """
    device = torch.device(device)
    if not batched or (device.type == "cpu" and settings.decode_on_device is None):
        return ""
    return f"|decode_jpeg on {device.type}"


def calibration_images(
    transform: Callable | None, count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED
) -> torch.Tensor:
    """`count` synthetic concrete photos (half cracked), through `transform`: (count, 3, 227, 227).

    The int8 backbone is calibrated on these, never on the data being measured, so the training
    and validation features come from the very same int8 model.
    """
    transform = transform or default_transform()
    key = (repr(transform), count, seed)
    if key not in _CALIBRATION:  # drawing them takes seconds: measuring and the int8 build share them
        rng = np.random.default_rng(seed)
        recipes = ["crack", "no_crack"] * (count // 2) + ["crack"] * (count % 2)
        _CALIBRATION.clear()
        _CALIBRATION[key] = torch.stack([transform(make_image(rng, recipe)[0]) for recipe in recipes])
    return _CALIBRATION[key].clone()


_CALIBRATION: dict[tuple, torch.Tensor] = {}  # the last calibration images drawn


_BUILT: dict[str, tuple[tuple, Callable]] = {}  # per way ("int8", "bfloat16 compiled"...): (its key, the runner)


def forget_built_backbones() -> None:
    """Drop the backbones kept for reuse (the next pass builds, copies or compiles them again)."""
    _BUILT.clear()


class Backbone:
    """The frozen backbone, ready to turn images into features, and how it does it.

    number_format: "float32", "bfloat16" or "int8"; compiled: through torch.compile (int8 always);
    first_conv_bits: int8 only, the first convolution's weight bits (7 or 8, helpers.speed.int8).
    key_part: what of this goes into the feature cache's key (the number format, not the
    compilation: that changes no number). Call :meth:`prepare` before the first batch (it builds
    the int8 model, compiles, or copies the float one to the device, once per run for these
    weights: a second split or a second call reuses it); calling it returns (N, 512) float32
    features on the CPU.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        settings: FastSettings,
        number_format: str,
        why: str = "",
        weights: str | None = None,
        compiled: bool = False,
        first_conv_bits: int = FIRST_CONV_BITS,
    ):
        self.model, self.device, self.settings, self.number_format = model, device, settings, number_format
        self.compiled = compiled or number_format == "int8"
        self.first_conv_bits = first_conv_bits
        self.why = why  # one sentence: why this number format
        self.weights = weights or weights_fingerprint(model)  # the built copies' identity
        self.run: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def key_part(self) -> str:
        """The part of the feature cache's key that says how the features were computed."""
        return f"int8|{recipe(self.first_conv_bits)}" if self.number_format == "int8" else self.number_format

    @property
    def name(self) -> str:
        """ "float32", "bfloat16", "bfloat16 compiled", "int8" or "int8 8-bit conv1"."""
        return _name(self.number_format, self.compiled, self.first_conv_bits)

    def prepare(self, transform: Callable | None = None) -> Backbone:
        """Build what runs, or reuse the one built earlier in this run for the same weights (and transform).

        Under auto settings, an int8 build that fails warns and falls back to float32.
        """
        if self.run is not None:
            return self
        if self.number_format == "int8":
            try:
                self.run = self._built(
                    transform,
                    lambda: quantize_backbone(
                        backbone_of(self.model), calibration_images(transform), first_conv_bits=self.first_conv_bits
                    ),
                )
                return self
            except Exception as error:
                if self.settings.int8:  # asked for explicitly: do not quietly do something else
                    raise
                warnings.warn(
                    f"Could not build the int8 backbone ({type(error).__name__}: {error}); "
                    "computing the features in float32 instead."
                )
                self.number_format, self.compiled = "float32", False
                self.why = "the int8 build failed (see the warning)"
        self.run = self._built(None, self._float_copy)
        return self

    def _float_copy(self) -> Callable[[torch.Tensor], torch.Tensor]:
        backbone = deepcopy(backbone_of(self.model)).eval().to(self.device)  # the learner's model stays as it is
        if self.settings.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        if not self.compiled:
            return InChunks(backbone, EAGER_CHUNK_SIZE) if self.device.type == "cpu" else backbone
        if self.device.type == "cpu":  # chunks of a fixed size, weights frozen: one compilation, oneDNN kernels
            return CompiledBackbone(torch.compile(backbone, dynamic=False))
        return torch.compile(backbone)

    def _built(self, transform: Callable | None, build: Callable[[], Callable]) -> Callable:
        """The runner for this way and these weights: built by `build` once, then reused (the newest per way)."""
        key = (self.weights, str(self.device), self.settings.channels_last, repr(transform))
        kept = _BUILT.get(self.name)
        if kept is None or kept[0] != key:
            if self.number_format == "int8":
                print(
                    f"building the {self.name} backbone (calibration on synthetic images, then torch.compile): "
                    "about 30 s, once"
                )
            _BUILT.pop(self.name, None)  # each may hold a compiled model: keep only the newest
            _BUILT[self.name] = key, build()
        return _BUILT[self.name][1]

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
        with torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.number_format == "bfloat16"
        ):
            features = self.run(images)
        return features.float().cpu()


def choose_backbone(
    model: nn.Module,
    device: torch.device | str | None = None,
    settings: FastSettings | None = None,
    source_size: int | None = None,
    weights: str | None = None,
    transform: Callable | None = None,
) -> Backbone:
    """Decide once how `model`'s backbone runs on `device` for a folder of `source_size` images.

    On a CPU this may measure the candidates (choose_number_format), once per machine, on the
    calibration images through `transform` (the data set's; None: the default transform). The
    winner stays built for the run. Otherwise builds nothing yet (see Backbone.prepare), so a
    cache hit costs no int8 build.
    weights: the backbone's weights fingerprint (helpers.feature_cache.weights_fingerprint).
    """
    device = pick_device(device)
    settings = settings or FastSettings()
    weights = weights or weights_fingerprint(model)

    def measure_here(names: list[str]) -> Measurement:
        started = time.perf_counter()
        images = calibration_images(transform)[:TIMED_IMAGES]
        builds = {name: _builder(model, device, settings, name, weights, transform) for name in names}
        measurement = measure(builds, images, machine_key())
        measurement.seconds = time.perf_counter() - started  # drawing the calibration images included
        return measurement

    choice = choose_number_format(settings, device, source_size, measure_here)
    return Backbone(
        model, device, settings, choice.number_format, choice.why, weights, choice.compiled, choice.first_conv_bits
    )


def _builder(
    model: nn.Module, device: torch.device, settings: FastSettings, name: str, weights: str, transform: Callable | None
) -> Callable[[], Backbone]:
    """A function that prepares the candidate `name` (speed.measure.CANDIDATES) as a Backbone."""
    way = _choice(name, "measuring")
    explicit = replace(
        settings,
        bf16=way.number_format == "bfloat16",
        int8=way.number_format == "int8",
        compile=way.compiled,
        int8_first_conv_bits=way.first_conv_bits if way.number_format == "int8" else None,
    )
    return lambda: Backbone(
        model, device, explicit, way.number_format, way.why, weights, way.compiled, way.first_conv_bits
    ).prepare(transform)
