"""The frozen backbone in 8-bit integers on an x86-64 CPU, with PyTorch 2's export quantisation (torchao). Taught in
notebook 07: fold each BatchNorm into its convolution, `torch.export` the backbone, let calibration images record each
activation's range, `convert_pt2e`, then `torch.compile` (oneDNN's int8 convolutions).

The first convolution's weights get 7 bits, not 8: its input is the image itself, large everywhere, and CPUs without
VNNI add 8-bit products in pairs that must fit in 16 bits (2 x 255 x 127 does not, 2 x 255 x 64 does). The features
differ from float32's by rounding only; :func:`check_rounding` refuses a build whose features drift further.
"""

import contextlib
import copy
import dataclasses
import importlib.util
import logging
import platform
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

RECIPE = "torchao pt2e, first convolution in 7 bits, 64 synthetic calibration images, seed 0"  # in the cache key
CHUNK_SIZE = 10  # images per call of the compiled graph: it is compiled for this one shape
MAX_ROUNDING_ERROR = 1e-2  # mean 1 - cosine similarity against float32 above which a build is refused


def int8_unavailable_reason(device: torch.device | str = "cpu") -> str | None:
    """None when the int8 backbone can be built for `device`, else a sentence saying why not."""
    if torch.device(device).type != "cpu":
        return f"int8 is a CPU speed-up; on {torch.device(device).type} the backbone runs in float32"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the int8 kernels need an x86-64 CPU, and this one is {platform.machine()}"
    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        with _quiet_torch_logs():
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer  # noqa: F401
        get_cpp_compiler()
    except Exception as error:  # an old torch, a torchao not made for it, no C++ compiler on the PATH
        return f"this PyTorch cannot build it ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
    return None


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Hide two log lines that say nothing to a learner (a pytree deprecation notice from torchao's
    import, and "No CUDA runtime is found" when a CUDA build of PyTorch compiles on a CPU)."""
    loggers = [logging.getLogger(name) for name in ("torch.utils._pytree", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class FoldedBasicBlock(nn.Module):
    """A ResNet BasicBlock with its BatchNorms folded into its convolutions (the same numbers in eval mode).

    Each ReLU is called once: torchvision's block calls one ReLU module twice, which the quantiser cannot tell apart.
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
        self.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
        down = block.downsample
        self.shortcut = nn.Identity() if down is None else fuse_conv_bn_eval(down[0], down[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


def fold_batchnorm(backbone: nn.Sequential) -> nn.Sequential:
    """A copy of a ResNet18 backbone (helpers.model.backbone_of) without BatchNorm; ValueError for other layers."""
    children, folded = list(copy.deepcopy(backbone).eval().children()), []
    while children:
        layer = children.pop(0)
        if isinstance(layer, nn.Conv2d) and children and isinstance(children[0], nn.BatchNorm2d):
            folded.append(fuse_conv_bn_eval(layer, children.pop(0)))
        elif isinstance(layer, nn.Sequential) and all(hasattr(b, "bn2") and not hasattr(b, "bn3") for b in layer):
            folded.append(nn.Sequential(*(FoldedBasicBlock(block) for block in layer)))
        elif isinstance(layer, (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
            folded.append(layer)
        else:
            raise ValueError(f"fold_batchnorm knows ResNet18's layers only, not {type(layer).__name__}")
    return nn.Sequential(*folded).eval()


class Int8Backbone:
    """The compiled int8 graph, called `CHUNK_SIZE` images at a time: (N, 3, H, W) -> (N, 512) float32.

    torch.compile specialises on the input's shape, so a short last chunk is padded to full size (no
    second compilation). In eval mode an image's features do not depend on the others in its chunk.
    """

    training = False

    def __init__(self, compiled, rounding_error: float = float("nan")):
        self.compiled = compiled
        self.rounding_error = rounding_error  # mean 1 - cosine similarity against float32, on the calibration images

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        outputs = []
        with torch._inductor.config.patch(freezing=True), _quiet_torch_logs(), torch.no_grad():
            for chunk in images.split(CHUNK_SIZE):
                short = CHUNK_SIZE - len(chunk)
                padded = torch.cat([chunk, chunk.new_zeros((short, *chunk.shape[1:]))]) if short else chunk
                outputs.append(self.compiled(padded.contiguous(memory_format=torch.channels_last))[: len(chunk)])
        return torch.cat(outputs).float()


def quantize_backbone(backbone: nn.Sequential, calibration: torch.Tensor) -> Int8Backbone:
    """An int8 copy of a float ResNet18 backbone, calibrated on `calibration` images, compiled.

    Takes tens of seconds on a small CPU (most of it torch.compile writing C++); pays for itself after
    a few hundred images. RuntimeError with one sentence where it cannot be built or rounds too much.
    """
    reason = int8_unavailable_reason("cpu")
    if reason:
        raise RuntimeError(f"Cannot build the int8 backbone: {reason}.")
    with _quiet_torch_logs():
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    folded = fold_batchnorm(backbone.cpu())
    batch = torch.export.Dim("batch", min=1, max=max(CHUNK_SIZE, len(calibration)))
    with torch.no_grad():
        graph = torch.export.export(folded, (calibration[:2],), dynamic_shapes=({0: batch},)).module()
        config = x86.get_default_x86_inductor_quantization_config()
        weight = dataclasses.replace(config.weight, quant_min=-64, quant_max=63)  # 7 bits (the docstring says why)
        quantizer = x86.X86InductorQuantizer().set_global(config)
        quantizer.set_module_name_qconfig("0", dataclasses.replace(config, weight=weight))  # "0": the first conv
        with warnings.catch_warnings():  # "The input of maxpool2d is not quantized": as intended
            warnings.simplefilter("ignore")
            observed = prepare_pt2e(graph, quantizer)
        for images in calibration.split(32):
            observed(images)
        quantized = convert_pt2e(observed)
        int8_backbone = Int8Backbone(torch.compile(quantized, dynamic=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compile-time notices
            int8_features = int8_backbone(calibration[:CHUNK_SIZE])  # compile now, not inside a progress bar
        int8_backbone.rounding_error = check_rounding(int8_features, folded(calibration[:CHUNK_SIZE]))
    return int8_backbone


def check_rounding(int8_features: torch.Tensor, float_features: torch.Tensor) -> float:
    """Mean 1 - cosine similarity of int8 and float32 features; RuntimeError where it is too large (or NaN)."""
    error = (1 - nn.functional.cosine_similarity(int8_features.float(), float_features.float(), dim=1)).mean().item()
    if not error <= MAX_ROUNDING_ERROR:
        raise RuntimeError(
            f"The int8 backbone's features differ too much from float32's (mean 1 - cosine {error:.1e}, more than "
            f"{MAX_ROUNDING_ERROR:.0e}): keep float32 (helpers.speed.disable())."
        )
    return error
