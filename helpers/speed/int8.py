"""Run the frozen backbone in 8-bit integers on a CPU: about twice the images per second.

A frozen backbone never learns, so its numbers need not be float32. Int8 quantisation stores
each convolution's weights as 8-bit integers with a scale, and rounds each activation to 8 bits
as well; CPUs multiply 8-bit integers several times faster than 32-bit floats (AVX2 / AVX-512
VNNI instructions through oneDNN). The recipe is PyTorch 2's export quantisation (torchao):

1. fold every BatchNorm into the convolution before it (in eval mode a BatchNorm is just a
   per-channel scale and shift, so the folded convolution computes the same numbers);
2. ``torch.export`` captures the backbone as a graph, and ``X86InductorQuantizer`` marks where
   the graph should round to int8;
3. calibration: a few images flow through the graph while observers record the range of every
   activation; the ranges become the int8 scales;
4. ``convert_pt2e`` writes the quantise / dequantise steps into the graph, and ``torch.compile``
   (with weight freezing) turns them into oneDNN's int8 convolutions.

One choice is left to the machine: the first convolution's weights get 7 bits or 8. Its input is
the image itself, whose 8-bit values are large everywhere (after ReLU, later layers' inputs are
mostly small). On CPUs without VNNI (AVX2 only) oneDNN multiplies 8-bit numbers in pairs whose sum
must fit in 16 bits: 2 x 255 x 127 does not, so large pixels times large weights saturate. This is
what ``reduce_range`` in torchao's config is for; with 7-bit weights (2 x 255 x 64 fits) nothing
saturates, and the features round no more than with a float32 first convolution, which is
slower (measured: benchmarks/README.md). CPUs with VNNI (AVX512-VNNI, AVX-VNNI, AMX) add in 32
bits and never saturate, so there both are candidates and :mod:`helpers.speed.measure` times them
(:func:`first_conv_8bit_unsafe_reason` says where 8 bits are ruled out). 7 bits is the default,
safe everywhere.

The features differ from float32 by rounding only: tests check that their cosine similarity
stays near 1 and that a head's predictions agree on at least 99 % of the images. The caller
passes the calibration images (:func:`helpers.speed.backbone.calibration_images`: synthetic concrete
drawn with a fixed seed, never the data being measured).

It needs an x86-64 CPU, torchao and a C++ compiler (torch.compile writes C++); elsewhere
:func:`int8_unavailable_reason` says why and the workbook stays in float32.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.metadata
import importlib.util
import logging
import platform
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

CALIBRATION_IMAGES = 64  # enough for stable activation ranges; a few seconds on a CPU
CALIBRATION_SEED = 0
CHUNK_SIZE = 10  # images per call of the compiled backbone on a CPU: few enough for the activations to stay in cache
# The eager float backbone: 8 images' largest activation (64 x 114 x 114 float32 each, 3.3 MB) stays
# under the 32 MiB above which glibc's malloc maps fresh memory, page by page, at every call.
EAGER_CHUNK_SIZE = 8
FIRST_CONV_BITS = 7  # the default, safe on every CPU; 8 is measured where it cannot saturate (see above)


def recipe(first_conv_bits: int | None = FIRST_CONV_BITS) -> str:
    """What decides the int8 features' numbers: part of the feature cache's key (helpers.features)."""
    conv1 = "in float32" if first_conv_bits is None else f"weights in {first_conv_bits} bits"
    return (
        f"int8 calibrated on {CALIBRATION_IMAGES} synthetic images, seed {CALIBRATION_SEED}, "
        f"first convolution's {conv1}"
    )


# The int8 features' mean 1 - cosine similarity against float32 must lie in this range: below it
# nothing was rounded (the graph did not become int8 kernels), above it something went wrong.
ROUNDING_ERROR_RANGE = (1e-7, 1e-2)


# torch and torchao pairs (major.minor of each) whose int8 path was measured. Auto mode builds the
# int8 backbone only for a known-good pair: a pair not made for each other may export a graph that
# never becomes int8 kernels, and the build (15-30 s) would be wasted.
KNOWN_GOOD_VERSIONS = {((2, 14), (0, 18))}  # 2-core AMD EPYC: 2-3x float32's speed, agreement tests pass
KNOWN_BAD_VERSIONS = {((2, 11), (0, 18))}  # a lent Xeon: the graph stayed float (rounds nothing)


def _major_minor(version: str) -> tuple[int, int]:
    """'2.14.1+cu130' -> (2, 14)."""
    parts = (version.split("+")[0].split(".") + ["0", "0"])[:2]
    return tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in parts)  # type: ignore[return-value]


def torchao_version() -> str | None:
    """The installed torchao's version (read from its metadata, without importing it), or None."""
    try:
        return importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def torchao_import_error() -> str | None:
    """None when torchao's quantisation modules import, else what went wrong (asked once per process)."""
    try:
        with _quiet_torch_logs():
            import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer  # noqa: F401
    except Exception as error:  # ImportError, but also whatever a mismatched build raises
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
    return None


def int8_unavailable_reason(device: torch.device | str = "cpu") -> str | None:
    """None when the int8 backbone can run on `device`, else a sentence saying why not."""
    device = torch.device(device)
    if device.type != "cpu":
        return f"int8 is a CPU speed-up; on {device.type} the workbook uses float32 or bfloat16"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the int8 kernels need an x86-64 CPU, and this one is {platform.machine()}"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (mkldnn), which runs the int8 convolutions"
    version = torchao_version()
    if version is None or importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    pair = (_major_minor(torch.__version__), _major_minor(version))
    if pair in KNOWN_BAD_VERSIONS:
        return (
            f"torch {torch.__version__} with torchao {version} does not turn the graph into int8 kernels "
            "(install versions made for each other)"
        )
    problem = torchao_import_error()
    if problem:
        return f"torchao {version} is installed but cannot be imported with torch {torch.__version__} ({problem})"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # torch < 2.5: its export gives aten.convolution, which torchao's quantiser refuses
        return f"the int8 backbone needs torch 2.5 or newer, and this is {torch.__version__}"
    try:
        get_cpp_compiler()
    except Exception as error:  # no g++ / clang++ / MSVC on the PATH
        return f"torch.compile needs a C++ compiler and found none ({type(error).__name__}: {error})"
    return None


def first_conv_8bit_unsafe_reason() -> str | None:
    """None when this CPU adds 8-bit products in 32 bits (VNNI), so 8-bit first-convolution weights
    cannot saturate; else a sentence saying why they are ruled out (the flags only rule out)."""
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()  # torch 2.8 or newer; else no flags known
    if capabilities.get("avx512_vnni") or capabilities.get("avx_vnni") or capabilities.get("amx_int8"):
        return None
    return "this CPU has no VNNI, so 8-bit weights times pixels would saturate in the first convolution"


def int8_untested_reason() -> str | None:
    """None when this torch and torchao pair is known to give int8 kernels, else a sentence saying so.

    Auto mode picks int8 only for a known pair; FastSettings(int8=True) still tries any other.
    """
    version = torchao_version() or "(none)"
    if (_major_minor(torch.__version__), _major_minor(version)) in KNOWN_GOOD_VERSIONS:
        return None
    known = ", ".join(f"torch {t[0]}.{t[1]} + torchao {a[0]}.{a[1]}" for t, a in sorted(KNOWN_GOOD_VERSIONS))
    return (
        f"torch {torch.__version__} with torchao {version} has not been checked with the int8 path "
        f"(known to work: {known}); FastSettings(int8=True) tries it anyway"
    )


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Hide two log lines that say nothing to a learner: torchao's import registers an Enum with
    torch's pytree (a deprecation notice), and compiling on a CUDA build of PyTorch without a GPU
    announces "No CUDA runtime is found"."""
    loggers = [logging.getLogger(name) for name in ("torch.utils._pytree", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# ----------------------------------------------------------------------------- fold BatchNorm
class FoldedBasicBlock(nn.Module):
    """A ResNet BasicBlock whose BatchNorms are folded into its convolutions.

    Computes relu(conv2(relu(conv1(x))) + shortcut(x)), the same numbers as the block in eval
    mode. Each ReLU is called once (torchvision's block calls one ReLU module twice, which the
    quantiser cannot tell apart).
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
        self.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
        self.shortcut = (
            nn.Identity() if block.downsample is None else fuse_conv_bn_eval(block.downsample[0], block.downsample[1])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv1(x))
        return torch.relu(self.conv2(out) + self.shortcut(x))


def fold_batchnorm(backbone: nn.Sequential) -> nn.Sequential:
    """A copy of a ResNet18 backbone (helpers.features.backbone_of) with no BatchNorm left.

    Raises ValueError for layers it does not know, rather than quantising them wrongly.
    """
    children = list(backbone.children())
    folded: list[nn.Module] = []
    i = 0
    while i < len(children):
        layer = children[i]
        if isinstance(layer, nn.Conv2d) and i + 1 < len(children) and isinstance(children[i + 1], nn.BatchNorm2d):
            folded.append(fuse_conv_bn_eval(layer.eval(), children[i + 1].eval()))
            i += 2
            continue
        if isinstance(layer, nn.Sequential) and all(hasattr(b, "bn2") and not hasattr(b, "bn3") for b in layer):
            folded.append(nn.Sequential(*(FoldedBasicBlock(block.eval()) for block in layer)))
        elif isinstance(layer, (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
            folded.append(layer)
        else:
            raise ValueError(f"fold_batchnorm knows ResNet18's layers only, not {type(layer).__name__}")
        i += 1
    return nn.Sequential(*folded).eval()


# ----------------------------------------------------------------------------- quantise
class InChunks:
    """A frozen backbone called on `chunk_size` images at a time, whatever the batch size: (N, 3, H, W) -> (N, 512).

    Small chunks keep each layer's activations in the CPU's cache (and, in float32, under the size
    from which malloc maps fresh memory at every call); 100 images' do not. Measured on 2 cores:
    int8 compiled, 10 images per call beat 100 by 9-18 % (Zen 4); float32 eager (channels_last),
    8 images beat 100 by 22 % (40.9 against 33.6 images/s) and 10 by 9 % (AVX2-only EPYC;
    benchmarks/README.md). In eval mode each image's features do not depend on the others in its
    chunk. Used on CPUs only.
    Not an nn.Module: nothing in it can be trained, moved or switched to train mode.
    """

    training = False  # like a backbone in eval mode (helpers.features checks this)

    def __init__(self, run: Callable, chunk_size: int = CHUNK_SIZE):
        self.run = run
        self.chunk_size = chunk_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.run(chunk) for chunk in images.split(self.chunk_size)])


class CompiledBackbone(InChunks):
    """A compiled backbone (int8, or float under autocast), called in chunks like :class:`InChunks`.

    torch.compile specialises on the input's shape, so the last chunk is padded to full size (no
    second compilation for a short last batch). Inductor's freezing turns the weights into
    constants, which is what gives oneDNN's int8 (and prepacked bfloat16) convolutions.
    """

    def __init__(self, compiled: Callable, chunk_size: int = CHUNK_SIZE):
        super().__init__(compiled, chunk_size)
        self.rounding_error = float("nan")  # int8: mean 1 - cosine vs float32, measured by quantize_backbone

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        outputs = []
        with torch._inductor.config.patch(freezing=True), _quiet_torch_logs():
            for chunk in images.split(self.chunk_size):
                padding = self.chunk_size - len(chunk)
                if padding:
                    chunk = torch.cat([chunk, chunk.new_zeros((padding, *chunk.shape[1:]))])
                outputs.append(self.run(chunk.contiguous(memory_format=torch.channels_last))[: len(chunk) - padding])
        return torch.cat(outputs)


def quantize_backbone(
    backbone: nn.Sequential,
    calibration: torch.Tensor,
    chunk_size: int = CHUNK_SIZE,
    first_conv_bits: int | None = FIRST_CONV_BITS,
) -> CompiledBackbone:
    """An int8 copy of a float ResNet18 backbone, calibrated on `calibration` images, compiled.

    Takes tens of seconds on a small CPU (most of it torch.compile writing and compiling C++);
    pays for itself after a few hundred images. first_conv_bits: the first convolution's weight
    bits, 7 by default (see the module's docstring); 8 is the quantiser's default, which saturates
    on CPUs without VNNI; None keeps the first convolution in float32 (slower, as accurate as 7).
    """
    if first_conv_bits not in (None, 7, 8):
        raise ValueError(f"first_conv_bits must be 7, 8 or None (float32), not {first_conv_bits!r}")
    reason = int8_unavailable_reason("cpu")
    if reason:
        raise RuntimeError(f"Cannot build the int8 backbone: {reason}.")
    with _quiet_torch_logs():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    folded = fold_batchnorm(copy.deepcopy(backbone).cpu())  # a copy: the learner's model stays as it is
    batch = torch.export.Dim("batch", min=1, max=max(chunk_size, len(calibration)))
    with torch.no_grad():
        graph = torch.export.export(folded, (calibration[:2],), dynamic_shapes=({0: batch},)).module()
        config = x86.get_default_x86_inductor_quantization_config()
        quantizer = x86.X86InductorQuantizer().set_global(config)
        quantizer.set_module_name_qconfig("0", first_conv_config(config, first_conv_bits))  # "0": the first conv
        with warnings.catch_warnings():  # with a float32 first conv: "The input of maxpool2d is not quantized"
            warnings.filterwarnings("ignore", message="The input of maxpool2d is not quantized")
            observed = prepare_pt2e(graph, quantizer)
        for images in calibration.split(32):
            observed(images)
        quantized = convert_pt2e(observed)
    int8_backbone = CompiledBackbone(torch.compile(quantized, dynamic=False), chunk_size)
    with torch.inference_mode(), _quiet_torch_logs():
        int8_features = int8_backbone(calibration[:8])  # compile now, not inside the first progress bar
        float_features = folded(calibration[:8])
    int8_backbone.rounding_error = check_rounding(int8_features, float_features)
    return int8_backbone


def first_conv_config(config, bits: int | None):
    """The quantiser's config for the first convolution: its weights in `bits` bits, or None (float32)."""
    if bits is None:
        return None
    weight = dataclasses.replace(config.weight, quant_min=-(2 ** (bits - 1)), quant_max=2 ** (bits - 1) - 1)
    return dataclasses.replace(config, weight=weight)


def rounding_error(features: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean of 1 - cosine similarity between each image's features and its reference (float32) features."""
    return (1 - nn.functional.cosine_similarity(features.float(), reference.float(), dim=1)).mean().item()


def check_rounding(int8_features: torch.Tensor, float_features: torch.Tensor) -> float:
    """Mean 1 - cosine similarity of int8 and float32 features; raises or warns when it is implausible.

    Too large (above ROUNDING_ERROR_RANGE): a RuntimeError, since the int8 model is broken.
    Too small: a warning, since nothing was rounded: this pair of torch and torchao versions did
    not turn the graph into int8 kernels, so it runs (correctly) at float32's speed.
    """
    error = rounding_error(int8_features, float_features)
    low, high = ROUNDING_ERROR_RANGE
    if not error <= high:  # also catches NaN
        raise RuntimeError(
            f"The int8 backbone's features differ too much from float32's (mean 1 - cosine "
            f"{error:.1e}, more than {high:.0e}); use FastSettings(int8=False)."
        )
    if error < low:
        warnings.warn(
            f"The int8 backbone rounds nothing (mean 1 - cosine {error:.1e}): with torch "
            f"{torch.__version__} and torchao {importlib.metadata.version('torchao')} the graph did not become int8 "
            "kernels, so it runs at float32's speed. Install versions made for each other, or use "
            "FastSettings(int8=False)."
        )
    return error
