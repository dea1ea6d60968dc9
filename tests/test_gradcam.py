"""helpers.explorer's Grad-CAM: a map worked out by hand, a crack found, the frozen backbone, and the overlay."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from helpers.explorer import gradcam, overlay
from helpers.model import build_resnet18
from helpers.workbook import denormalize
from helpers.synthetic import draw_crack, make_surface

# `layer4` is an identity, so its activations A are the input: 2 maps of 3x3.
A0 = [[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]]
A1 = [[0.0, 2.0, 0.0], [1.0, 0.0, 1.0], [4.0, 0.0, 0.0]]
# score_c = sum_k V[c, k] * sum_ij W[i, j] * A[k, i, j]: the gradient V[c, k] * W[i, j] varies over space,
# and its mean, the weight of map k, is V[c, k] * mean(W) = V[c, k] * 0.5.
W = [[0.5, 1.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.5, 1.0]]
# Scores: sum W*A0 = 4, sum W*A1 = 2.5; class 0 scores 4 - 5 = -1, class 1 scores -4 + 2.5 = -1.5: 0 is predicted.
V = [[1.0, -2.0], [-1.0, 1.0]]
# Class 0's weights are (0.5, -1): 0.5 * A0 - A1 = [[.5, -2, 1], [-1, 1.5, -1], [-3.5, .5, 0]], then the ReLU.
MAP_0 = [[0.5, 0.0, 1.0], [0.0, 1.5, 0.0], [0.0, 0.5, 0.0]]


class LinearScoreNet(nn.Module):
    """A frozen network whose scores are a known linear function of `layer4`'s output."""

    def __init__(self, v: list[list[float]]):
        super().__init__()
        self.layer4 = nn.Identity()
        self.V = nn.Parameter(torch.tensor(v), requires_grad=False)
        self.W = nn.Parameter(torch.tensor(W), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nkij,ck,ij->nc", self.layer4(x), self.V, self.W)


def test_the_map_worked_out_by_hand_scaled_so_its_peak_is_one():
    heat = gradcam(LinearScoreNet(V), torch.tensor([A0, A1]))
    assert np.allclose(heat, np.array(MAP_0) / 1.5)


def test_a_map_without_evidence_for_the_class_stays_zero():
    heat = gradcam(LinearScoreNet([[-1.0, -1.0]]), torch.tensor([A0, A1]))  # both weights negative
    assert np.array_equal(heat, np.zeros((3, 3)))


def test_frozen_resnet_under_no_grad_gives_a_map_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = build_resnet18(weights=None)  # backbone frozen, only fc trainable, as in the workbook
    model.train()
    model.layer1.eval()  # a mixed state, which must come back as it was
    modes = [m.training for m in model.modules()]
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        heat = gradcam(model, image)
    assert heat.shape == (64, 64) and heat.min() >= 0 and heat.max() == 1
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert not model.layer4._forward_hooks
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        gradcam(model, image)


def test_the_overlay_lays_jet_colours_over_the_photo():
    image = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(2))
    heat = np.zeros((4, 5))
    heat[0, 0] = 1.0
    photo = np.round(255 * denormalize(image[None])[0].permute(1, 2, 0).numpy())
    assert np.array_equal(overlay(image, heat, alpha=0.0), photo)
    coloured = overlay(image, heat, alpha=1.0)
    assert coloured.dtype == np.uint8 and coloured.shape == (4, 5, 3)
    assert tuple(coloured[0, 0]) == (128, 0, 0) and tuple(coloured[1, 1]) == (0, 0, 128)  # hot is red, cold blue


# A small CNN trained on cracks anywhere learns to find them: Grad-CAM should point at the crack.
SIZE, HALF = 64, 32


def concrete(rng: np.random.Generator) -> np.ndarray:
    """A 64x64 surface; cracked and intact ones share a brightness range, so only the crack tells."""
    return make_surface(rng, SIZE, SIZE, brightness=float(rng.uniform(150, 210)))


def cracked_anywhere(rng: np.random.Generator) -> np.ndarray:
    surface = concrete(rng)
    start = (rng.uniform(8, SIZE - 8), rng.uniform(8, SIZE - 8))
    angle, length, width = rng.uniform(0, 2 * np.pi), rng.uniform(15, 30), rng.uniform(1.5, 4)
    draw_crack(surface, rng, start=start, angle=angle, length=length, width=width)
    return surface


def cracked_in_quadrant(rng: np.random.Generator, row: int, col: int) -> np.ndarray:
    """A surface with a short crack that stays (90% of its pixels or more) in one quadrant."""
    while True:
        surface = concrete(rng)
        centre = (col * HALF + HALF / 2 + rng.uniform(-4, 4), row * HALF + HALF / 2 + rng.uniform(-4, 4))
        mask = draw_crack(surface, rng, start=centre, angle=rng.uniform(0, 2 * np.pi), length=12, width=2.5)
        if mask[row * HALF : (row + 1) * HALF, col * HALF : (col + 1) * HALF].sum() >= 0.9 * mask.sum():
            return surface


def as_batch(surfaces: list[np.ndarray]) -> torch.Tensor:
    return (torch.from_numpy(np.stack(surfaces)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25


def test_gradcam_finds_the_crack():
    rng = np.random.default_rng(0)
    images = as_batch([cracked_anywhere(rng) for _ in range(150)] + [concrete(rng) for _ in range(150)])
    labels = torch.tensor([1] * 150 + [0] * 150)
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            middle=nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            layer4=nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
            head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2)),
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order_generator = torch.Generator().manual_seed(0)
    for _epoch in range(8):
        order = torch.randperm(len(labels), generator=order_generator)
        for start in range(0, len(labels), 32):
            batch = order[start : start + 32]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    rng = np.random.default_rng(123)
    quadrants = [divmod(i % 4, 2) for i in range(12)]  # each quadrant three times
    cracks = as_batch([cracked_in_quadrant(rng, row, col) for row, col in quadrants])
    with torch.no_grad():
        assert (model.eval()(cracks).argmax(dim=1) == 1).float().mean() > 0.9  # it sees the cracks
    share = np.array(
        [
            (heat := gradcam(model, image))[r * HALF : (r + 1) * HALF, c * HALF : (c + 1) * HALF].sum() / heat.sum()
            for image, (r, c) in zip(cracks, quadrants)
        ]
    )
    print(f"heat in the crack's quadrant: mean {share.mean():.2f}, min {share.min():.2f} (chance 0.25)")
    assert share.mean() > 0.6 and (share > 0.5).mean() >= 0.75
