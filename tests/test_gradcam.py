"""Tests for helpers.gradcam: a map worked out by hand, localisation of a crack, and the pitfalls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.gradcam import GradCAM, gradcam, overlay
from helpers.model import build_resnet18
from helpers.synthetic import draw_crack, make_surface

# ----------------------------------------------------------------------------- a map by hand
# The "target layer" is an identity, so its activations A are the input: 2 maps of 3x3.
A0 = [[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]]
A1 = [[0.0, 2.0, 0.0], [1.0, 0.0, 1.0], [4.0, 0.0, 0.0]]
# score_c = sum_k V[c, k] * sum_ij W[i, j] * A[k, i, j], so dscore_c / dA[k, i, j] = V[c, k] * W[i, j]
# varies over space, and the Grad-CAM weight is alpha_ck = V[c, k] * mean(W) = V[c, k] * 0.5.
W = [[0.5, 1.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.5, 1.0]]  # sum 4.5, mean 0.5
V = [
    [1.0, -2.0],  # class 0: alpha = ( 0.5, -1.0)
    [-1.0, 1.0],  # class 1: alpha = (-0.5,  0.5)
    [-1.0, -1.0],
]  # class 2: alpha = (-0.5, -0.5): no positive evidence anywhere
# Scores: sum W*A0 = 4, sum W*A1 = 2.5, so class 0: 4 - 5 = -1, class 1: -4 + 2.5 = -1.5,
# class 2: -6.5. The predicted class is 0.
#
# class 0: 0.5 * A0 - A1 = [[.5, -2, 1], [-1, 1.5, -1], [-3.5, .5, 0]]  -> ReLU:
MAP_0 = [[0.5, 0.0, 1.0], [0.0, 1.5, 0.0], [0.0, 0.5, 0.0]]
# class 1: 0.5 * (A1 - A0) = [[-.5, 1, -1], [.5, -1.5, .5], [1.5, -.5, 0]]  -> ReLU:
MAP_1 = [[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [1.5, 0.0, 0.0]]


class LinearScoreNet(nn.Module):
    """A frozen network whose scores are a known linear function of the target layer's output."""

    def __init__(self):
        super().__init__()
        self.target = nn.Identity()
        self.V = nn.Parameter(torch.tensor(V), requires_grad=False)
        self.W = nn.Parameter(torch.tensor(W), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nkij,ck,ij->nc", self.target(x), self.V, self.W)


def hand_input() -> torch.Tensor:
    return torch.tensor([A0, A1])[None]  # (1, 2, 3, 3); the input size is the map size: no resizing


def test_hand_made_map_matches_tensor_arithmetic():
    net, x = LinearScoreNet(), hand_input()
    a, v, w = x[0], net.V, net.W
    for c in range(3):
        alpha = v[c] * w.mean()  # gradient averaged over space
        expected = torch.relu((alpha[:, None, None] * a).sum(0))
        with GradCAM(net, net.target) as cam:
            assert torch.allclose(cam.raw_maps(x, c)[0], expected)
    assert torch.allclose(torch.relu(0.5 * a[0] - a[1]), torch.tensor(MAP_0))


def test_hand_made_map_raw_and_scaled():
    net, x = LinearScoreNet(), hand_input()
    with GradCAM(net, net.target) as cam:
        assert torch.allclose(cam.raw_maps(x, 0)[0], torch.tensor(MAP_0))
        assert torch.allclose(cam.raw_maps(x, 1)[0], torch.tensor(MAP_1))
        assert torch.allclose(cam.raw_maps(x)[0], torch.tensor(MAP_0))  # None = predicted class (0)
        assert torch.allclose(cam(x, 0)[0], torch.tensor(MAP_0) / 1.5)  # scaled so the peak is 1
        assert torch.allclose(cam(x, 1)[0], torch.tensor(MAP_1) / 1.5)
        two = torch.cat([x, x])
        per_image = cam(two, torch.tensor([1, 0]))
        assert torch.allclose(per_image[0], torch.tensor(MAP_1) / 1.5)
        assert torch.allclose(per_image[1], torch.tensor(MAP_0) / 1.5)


def test_a_map_without_positive_evidence_stays_zero():
    net, x = LinearScoreNet(), hand_input()
    with GradCAM(net, net.target) as cam:
        heatmap = cam(x, 2)
    assert torch.equal(heatmap, torch.zeros(1, 3, 3))


def test_class_index_out_of_range_is_an_error():
    net = LinearScoreNet()
    with GradCAM(net, net.target) as cam, pytest.raises(ValueError):
        cam(hand_input(), 3)


# ----------------------------------------------------------------------------- the pitfalls
@pytest.fixture(scope="module")
def frozen_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_resnet18(weights=None)  # backbone frozen, only fc trainable, as in the workbook


def test_frozen_backbone_under_no_grad(frozen_resnet):
    model = frozen_resnet
    model.train()
    model.layer1.eval()  # a mixed state, which must come back as it was
    modes_before = [m.training for m in model.modules()]
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), GradCAM(model) as cam:
        heatmaps = cam(images)
    assert heatmaps.shape == (2, 64, 64)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert torch.all(heatmaps.amax(dim=(1, 2)) == 1.0)  # the random net still finds something
    assert [m.training for m in model.modules()] == modes_before
    assert all(p.grad is None for p in model.parameters())  # no .grad left behind
    assert not images.requires_grad


def test_hooks_are_removed_and_change_nothing_meanwhile(frozen_resnet):
    model = frozen_resnet.eval()
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(images)
    with GradCAM(model):
        assert len(model.layer4._forward_hooks) == 1
        with torch.no_grad():
            assert torch.equal(model(images), before)
    assert len(model.layer4._forward_hooks) == 0 and len(model._forward_hooks) == 0
    heatmap = gradcam(model, images[0], class_index=1)
    assert isinstance(heatmap, np.ndarray) and heatmap.shape == (64, 64)
    assert len(model.layer4._forward_hooks) == 0


def test_inference_mode_is_refused_with_a_clear_message(frozen_resnet):
    with GradCAM(frozen_resnet) as cam, torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        cam(torch.zeros(1, 3, 32, 32))


# ----------------------------------------------------------------------------- localisation
SIZE = 64
HALF = SIZE // 2


def concrete(rng: np.random.Generator) -> np.ndarray:
    """A 64x64 surface; cracked and intact ones share a brightness range, so only the crack tells."""
    return make_surface(rng, SIZE, SIZE, brightness=float(rng.uniform(150, 210)))


def cracked_anywhere(rng: np.random.Generator) -> np.ndarray:
    surface = concrete(rng)
    start = (rng.uniform(8, SIZE - 8), rng.uniform(8, SIZE - 8))
    draw_crack(
        surface,
        rng,
        start=start,
        angle=rng.uniform(0, 2 * np.pi),
        length=rng.uniform(15, 30),
        width=rng.uniform(1.5, 4),
    )
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
    images = torch.from_numpy(np.stack(surfaces)).permute(0, 3, 1, 2).float() / 255
    return (images - 0.5) / 0.25


def small_cnn() -> nn.Sequential:
    """Three conv blocks, global average pooling, a linear head; index 6 is the last conv block."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


@pytest.fixture(scope="module")
def crack_detector() -> nn.Module:
    """A small CNN trained from scratch (a few seconds) on cracks anywhere vs plain surfaces."""
    rng = np.random.default_rng(0)
    images = as_batch([cracked_anywhere(rng) for _ in range(150)] + [concrete(rng) for _ in range(150)])
    labels = torch.tensor([1] * 150 + [0] * 150)
    torch.manual_seed(0)
    model = small_cnn()
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
    return model.eval()


@pytest.fixture(scope="module")
def corner_cracks() -> tuple[torch.Tensor, list[tuple[int, int]]]:
    rng = np.random.default_rng(123)
    quadrants = [divmod(i % 4, 2) for i in range(12)]  # each quadrant three times
    return as_batch([cracked_in_quadrant(rng, row, col) for row, col in quadrants]), quadrants


def heat_in_quadrant(heatmaps: torch.Tensor, quadrants: list[tuple[int, int]]) -> np.ndarray:
    return np.array(
        [
            float(h[r * HALF : (r + 1) * HALF, c * HALF : (c + 1) * HALF].sum() / h.sum())
            for h, (r, c) in zip(heatmaps, quadrants)
        ]
    )


def test_gradcam_finds_the_crack(crack_detector, corner_cracks):
    images, quadrants = corner_cracks
    with torch.no_grad():
        assert torch.softmax(crack_detector(images), dim=1)[:, 1].mean() > 0.7  # it sees the cracks
    with GradCAM(crack_detector, crack_detector[6]) as cam:
        heatmaps = cam(images, class_index=1)
    share = heat_in_quadrant(heatmaps, quadrants)
    print(f"heat in the crack's quadrant: mean {share.mean():.2f}, min {share.min():.2f} (chance 0.25)")
    assert share.mean() > 0.6
    assert (share > 0.5).mean() >= 0.75


def test_class_index_changes_the_map(crack_detector, corner_cracks):
    images, _ = corner_cracks
    with GradCAM(crack_detector, crack_detector[6]) as cam:
        crack, no_crack = cam(images, 1), cam(images, 0)
    assert (crack - no_crack).abs().mean() > 0.1


# ----------------------------------------------------------------------------- overlay
def test_overlay_accepts_pil_arrays_and_normalised_tensors():
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    heatmap = np.linspace(0, 1, 16 * 20).reshape(16, 20)
    for image in (Image.fromarray(pixels), pixels, pixels / 255.0):
        blended = overlay(image, heatmap)
        assert blended.shape == (16, 20, 3) and blended.dtype == np.uint8
    assert np.array_equal(overlay(pixels, heatmap, alpha=0.0), pixels)
    assert not np.array_equal(overlay(pixels, heatmap, alpha=0.5), pixels)
    tensor = torch.randn(3, 16, 20)
    assert overlay(tensor, heatmap).shape == (16, 20, 3)
    assert overlay(pixels, heatmap[::2, ::2]).shape == (16, 20, 3)  # a smaller map is stretched
