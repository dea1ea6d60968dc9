"""Grad-CAM: which part of the photo made the model say "crack"?

Grad-CAM comes from Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization" (ICCV 2017). The idea, in four steps:

1. Run the image through the network and keep the activations A of a late convolutional
   layer (for ResNet18, `layer4`: 512 maps of 8x8 for a 227x227 photo). Each map says where
   in the image one kind of pattern was found.
2. Take the gradient of the chosen class's score (its logit) with respect to A: how much the
   score would rise if each map grew at each place.
3. Average that gradient over space: one weight alpha_k per map, "how much map k speaks for
   this class". The heatmap is sum_k alpha_k * A_k, and a ReLU keeps only the places that
   speak *for* the class (negative values are evidence for the other classes).
4. Upsample the small map to the image size (bilinear) and scale it to [0, 1] to lay it over
   the photo.

Two pitfalls with our model, handled here:

* The backbone is frozen (requires_grad=False everywhere but `fc`) and the images do not
  require gradients, so autograd records no graph through `layer4` and there would be no
  gradient to take. GradCAM therefore replaces the layer's output by a copy that requires
  gradients, and turns gradients on (`torch.enable_grad()`) even when called inside
  `torch.no_grad()`. It cannot work inside `torch.inference_mode()`, which forbids gradients
  outright: call it outside.
* Dropout and BatchNorm behave differently in training mode; the model is put in eval mode for
  the call, and every module gets its previous mode back afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from helpers.plots import denormalize


def channel_weights(gradients: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) gradients -> (N, K) weights alpha: the gradient of each map averaged over space."""
    return gradients.mean(dim=(2, 3))


def weighted_map(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k alpha_k * A_k): (N, K, h, w) activations and (N, K) weights -> (N, h, w) map."""
    return F.relu((weights[:, :, None, None] * activations).sum(dim=1))


def scale_to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Divide each (h, w) map by its maximum; a map of zeros (no evidence at all) stays zeros."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    safe_peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    return maps / safe_peak


class GradCAM:
    """Grad-CAM heatmaps for a model; by default from ResNet18's last block, `model.layer4`.

    Use it as a context manager, so the hook it puts on the layer is removed afterwards:

        with GradCAM(model) as cam:
            heatmaps = cam(images)          # (N, H, W), values in [0, 1]
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | None = None):
        self.model = model
        self.target_layer = target_layer if target_layer is not None else model.layer4
        self.activations: torch.Tensor | None = None
        self._recording = False
        self._handle = self.target_layer.register_forward_hook(self._keep_activations)

    def _keep_activations(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook: keep the layer's output A as a tensor that requires gradients.

        Only while GradCAM is running, so the hook changes nothing when the model is trained.
        A is a detached leaf: gradients are taken with respect to it (and stop there, which is
        all Grad-CAM needs). The rest of the network gets a copy of A, so an in-place operation
        further on (a ReLU(inplace=True)) cannot change the A we keep.
        """
        if not self._recording:
            return None
        self.activations = output.detach().requires_grad_(True)
        return self.activations.clone()

    def raw_maps(self, images: torch.Tensor, class_index: int | torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, h, w) maps at the layer's resolution: not upsampled, not scaled."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "Grad-CAM needs gradients, which torch.inference_mode() forbids: "
                "call it outside inference_mode (inside torch.no_grad() is fine)."
            )
        modes = {module: module.training for module in self.model.modules()}
        device = next(self.model.parameters()).device
        images = images.detach().clone().to(device)  # a plain copy, even of a tensor made in inference mode
        self.model.eval()
        self._recording = True
        try:
            with torch.enable_grad():
                logits = self.model(images)
                if self.activations is None:
                    raise RuntimeError("The target layer was not used by the model's forward pass.")
                classes = self._classes(logits, class_index)
                scores = logits.gather(1, classes[:, None]).sum()
                # Images do not mix in eval mode, so d(sum of scores)/dA[n] = d(score n)/dA[n].
                # autograd.grad leaves the parameters' .grad untouched (backward() would fill them).
                (gradients,) = torch.autograd.grad(scores, self.activations)
            return weighted_map(self.activations.detach(), channel_weights(gradients))
        finally:
            self._recording = False
            self.activations = None
            for module, was_training in modes.items():
                module.train(was_training)

    @staticmethod
    def _classes(logits: torch.Tensor, class_index: int | torch.Tensor | None) -> torch.Tensor:
        """(N,) class to explain for each image: the predicted one when class_index is None."""
        if class_index is None:
            return logits.argmax(dim=1)
        classes = torch.as_tensor(class_index, device=logits.device).long().flatten()
        if len(classes) == 1:
            classes = classes.expand(len(logits))
        if len(classes) != len(logits) or classes.min() < 0 or classes.max() >= logits.shape[1]:
            raise ValueError(f"class_index must be one class or one per image, between 0 and {logits.shape[1] - 1}")
        return classes

    def __call__(self, images: torch.Tensor, class_index: int | torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, H, W) heatmaps in [0, 1], upsampled (bilinear) to the image size.

        class_index: None explains each image's predicted class; an int or (N,) tensor picks one.
        """
        maps = self.raw_maps(images, class_index)
        upsampled = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
        return scale_to_unit(upsampled[:, 0])

    def remove(self) -> None:
        """Take the hook off the target layer."""
        self._handle.remove()

    def __enter__(self) -> "GradCAM":
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


def gradcam(
    model: nn.Module, image: torch.Tensor, class_index: int | None = None, target_layer: nn.Module | None = None
) -> np.ndarray:
    """The (H, W) heatmap of one normalised (3, H, W) image; the hook is removed afterwards."""
    with GradCAM(model, target_layer) as cam:
        return cam(image[None], class_index)[0].cpu().numpy()


def _as_float_rgb(image) -> np.ndarray:
    """A PIL image, an HxWx3 array (uint8, or float in [0, 1]) or a normalised (3, H, W) tensor -> HxWx3 floats in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    if isinstance(image, torch.Tensor):
        return denormalize(image.detach().float().cpu().reshape(1, 3, *image.shape[-2:]))[0].permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    return np.clip(array.astype(np.float32), 0, 1)


def overlay(image, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """The heatmap in colour over the image: HxWx3 uint8, `alpha` of the colour and 1 - alpha of the photo."""
    rgb = _as_float_rgb(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != rgb.shape[:2]:  # a map of another size: stretch it over the image
        resized = Image.fromarray(heat).resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR)
        heat = np.asarray(resized, dtype=np.float32)
    colours = matplotlib.colormaps[colormap](np.clip(heat, 0, 1))[..., :3]
    blended = (1 - alpha) * rgb + alpha * colours
    return np.round(255 * np.clip(blended, 0, 1)).astype(np.uint8)


def plot_gradcam(
    model: nn.Module, dataset, indices: Sequence[int], titles: Sequence[str] | None = None, ncols: int = 4
) -> Figure:
    """For each sample of `dataset`: the photo and, below it, Grad-CAM for the class the model predicted."""
    ncols = max(1, min(ncols, len(indices)))
    nrows = 2 * ((len(indices) + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.5 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, index in enumerate(indices):
        image, _ = dataset[index]
        row, col = 2 * (k // ncols), k % ncols
        axes[row][col].imshow(_as_float_rgb(image))
        axes[row][col].set_title(titles[k] if titles else dataset.samples[index].sample_id, fontsize=8)
        axes[row + 1][col].imshow(overlay(image, gradcam(model, image)))
    fig.suptitle("Photos (above) and where the model looked, by Grad-CAM (below)")
    fig.tight_layout()
    return fig
