"""Grad-CAM: which part of the photo made the model say what it said?

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" (ICCV 2017), in four steps:

1. keep the activations A of the last convolutional block (ResNet18's `layer4`: 512 maps of 8x8
   for a 227x227 photo), each saying where one kind of pattern was found;
2. take the gradient of the predicted class's score (its logit) with respect to A;
3. average it over space: one weight per map; the heat map is ReLU(sum_k weight_k * A_k), the
   places that speak *for* the class;
4. stretch the small map to the photo's size (bilinear) and divide by its peak.

Our backbone is frozen, so autograd would record nothing through `layer4`: the hook hands the
rest of the network a copy of A that requires gradients, and `torch.enable_grad()` turns them on
even inside `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from helpers.plots import denormalize, image_grid


def gradcam(model: nn.Module, image: torch.Tensor) -> np.ndarray:
    """The (H, W) Grad-CAM heat map, in [0, 1], of one normalised (3, H, W) image for its predicted class."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grad-CAM needs gradients: call it outside torch.inference_mode() (no_grad() is fine).")
    kept = []

    def keep_activations(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        kept.append(output.detach().requires_grad_())  # A, a leaf we can take the gradient against
        return kept[0].clone()  # the network goes on with a copy: an in-place ReLU cannot change A

    modes = {module: module.training for module in model.modules()}
    handle = model.layer4.register_forward_hook(keep_activations)
    model.eval()  # dropout off, BatchNorm on its running statistics
    try:
        with torch.enable_grad():
            logits = model(image[None].to(next(model.parameters()).device))[0]
            (gradient,) = torch.autograd.grad(logits[logits.argmax()], kept[0])  # leaves .grad alone
    finally:
        handle.remove()
        for module, training in modes.items():
            module.training = training
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    heat = F.relu((weights * kept[0].detach()).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    heat = F.interpolate(heat, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (heat / heat.max() if heat.max() > 0 else heat).cpu().numpy()


def overlay(image: torch.Tensor, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map in colour ("jet") over the normalised (3, H, W) image, as an HxWx3 uint8 picture."""
    photo = denormalize(image.detach().float().cpu()[None])[0].permute(1, 2, 0).numpy()
    colours = matplotlib.colormaps["jet"](heat)[..., :3]
    return np.round(255 * ((1 - alpha) * photo + alpha * colours)).astype(np.uint8)


def plot_gradcam(model: nn.Module, dataset, indices: Sequence[int], titles: Sequence[str]) -> Figure:
    """Samples `indices` of `dataset`: the photos, and below them Grad-CAM for the class the model predicted."""
    images = [dataset[index][0] for index in indices]
    photos = [(denormalize(image[None])[0].permute(1, 2, 0).numpy(), title) for image, title in zip(images, titles)]
    heat = [(overlay(image, gradcam(model, image)), "") for image in images]
    return image_grid([("photo", photos), ("Grad-CAM", heat)], "Photos and where the model looked (Grad-CAM)")
