"""Refiners: input geometry, batching, output form, and the anime-seg combination rule."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from inference.instances import Instances
from inference.isnet import ISNet
from inference.refine import AnimeSegRefiner, AnimeSegSettings, RefineNetISNet, RefineNetSettings, resolve_device
from inference.segmenter import ModelUnavailable, Refiner
from tests.scenes import make_scene


class MaskEcho(nn.Module):
    """A "network" whose logits are a steep function of one input channel; records every input.

    With ``channel=3`` a refiner built on it returns the instance mask it was
    given (after the round trip through the network's input geometry); with
    ``channel=0`` the foreground is the first colour channel.
    """

    def __init__(self, in_channels: int, channel: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channel = channel
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.inputs.append(x.detach().clone())
        logits = (x[:, self.channel : self.channel + 1] * 2 - 1) * 40
        return [logits, torch.zeros_like(logits)]


class CountingISNet(ISNet):
    """An ISNet that remembers the batch size of every forward pass."""

    def __init__(self, in_channels: int, *, width_divisor: int) -> None:
        super().__init__(in_channels, width_divisor=width_divisor)
        self.batch_sizes: list[int] = []

    def full_resolution_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(int(x.shape[0]))
        return super().full_resolution_logits(x)


def _small_isnet(in_channels: int, seed: int = 0) -> CountingISNet:
    torch.manual_seed(seed)
    return CountingISNet(in_channels, width_divisor=8)


def _constant_isnet(in_channels: int, logit: float) -> ISNet:
    """A small real ISNet whose first side output is ``logit`` everywhere."""
    net = ISNet(in_channels, width_divisor=16)
    with torch.no_grad():
        net.side1.weight.zero_()
        net.side1.bias.fill_(logit)
    return net


def _rect_mask(size: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(size, np.float32)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = 1.0
    return mask


def _scene_instances() -> tuple[np.ndarray, Instances]:
    scene = make_scene(3, "gradient", size=(180, 320), seed=4)
    masks = [cv2.GaussianBlur(a, (0, 0), 1.5) for a in scene.character_alphas]
    return scene.image, Instances.from_full_masks(masks, [0.9, 0.6, 0.8], "test")


def _assert_well_formed(refined: Instances, original: Instances, name: str) -> None:
    assert refined.refined_by == name
    assert refined.image_size == original.image_size
    np.testing.assert_array_equal(refined.boxes, original.boxes)
    np.testing.assert_array_equal(refined.scores, original.scores)
    assert refined.backend == original.backend
    for mask, box in zip(refined.masks, refined.boxes):
        x0, y0, x1, y1 = box
        assert mask.dtype == np.float32 and mask.shape == (y1 - y0, x1 - x0)
        assert np.isfinite(mask).all() and mask.min() >= 0.0 and mask.max() <= 1.0


# ------------------------------------------------------------------------------------------- both


@pytest.mark.parametrize("kind", ["refinenet_isnet", "animeseg"])
def test_refiners_return_well_formed_soft_instances(kind: str) -> None:
    image, instances = _scene_instances()
    if kind == "refinenet_isnet":
        refiner = RefineNetISNet(_small_isnet(4), device="cpu", settings=RefineNetSettings(input_size=256))
    else:
        refiner = AnimeSegRefiner(_small_isnet(3), device="cpu", settings=AnimeSegSettings(input_size=256))
    assert isinstance(refiner, Refiner) and refiner.name == kind
    refined = refiner.refine(image, instances)
    _assert_well_formed(refined, instances, kind)
    # Kept soft: a random network's probabilities are not thresholded to 0/1.
    values = np.concatenate([m.ravel() for m in refined.masks])
    assert ((values > 0.01) & (values < 0.99)).any()


@pytest.mark.parametrize("refiner_class", [RefineNetISNet, AnimeSegRefiner])
def test_no_instances_means_no_forward(refiner_class: type) -> None:
    net = _small_isnet(4 if refiner_class is RefineNetISNet else 3)
    refiner = refiner_class(net, device="cpu")
    empty = Instances.empty((50, 60), "test")
    refined = refiner.refine(np.zeros((50, 60, 3), np.uint8), empty)
    assert len(refined) == 0 and refined.refined_by == refiner.name
    assert net.batch_sizes == []


def test_input_errors_raise_value_error() -> None:
    image, instances = _scene_instances()
    refiner = RefineNetISNet(MaskEcho(4, 3), device="cpu")
    with pytest.raises(ValueError, match=r"expected an image of size \(180, 320\)"):
        refiner.refine(image[:100], instances)
    with pytest.raises(ValueError, match="expected image as an \\(H, W, 3\\) uint8 RGB image"):
        refiner.refine(image.astype(np.float32), instances)
    with pytest.raises(ValueError, match="expected a network with 4 input channels, got 3"):
        RefineNetISNet(_small_isnet(3), device="cpu")
    with pytest.raises(ValueError, match="expected a network with 3 input channels, got 4"):
        AnimeSegRefiner(_small_isnet(4), device="cpu")
    with pytest.raises(ValueError, match="expected device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="batch_size"):
        RefineNetSettings(batch_size=0)
    with pytest.raises(ValueError, match="edge_margin"):
        AnimeSegSettings(edge_margin=-0.1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable, match="no CUDA GPU"):
        RefineNetISNet(MaskEcho(4, 3), device="cuda")


def test_default_device_is_cpu_without_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected


# ------------------------------------------------------------------------------------------- refinenet_isnet


def test_small_picture_is_not_upscaled_and_padded_bottom_right() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    instances = Instances.from_full_masks([_rect_mask((200, 300), (20, 30, 120, 170)),
                                           _rect_mask((200, 300), (150, 10, 290, 60))], [0.9, 0.8], "test")
    echo = MaskEcho(4, channel=3)
    refined = RefineNetISNet(echo, device="cpu").refine(image, instances)

    (x,) = echo.inputs  # both instances in one forward
    assert x.shape == (2, 4, 720, 720)
    bgr = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(x[0, :3, :200, :300], bgr) and torch.equal(x[0, :3], x[1, :3])
    assert not x[:, :, 200:].any() and not x[:, :, :, 300:].any()  # zero padding bottom and right
    for i in range(2):
        assert torch.equal(x[i, 3, :200, :300], torch.from_numpy(instances.full_mask(i)))
    # Scale 1 both ways: the echoed masks come back exactly.
    for got, want in zip(refined.masks, instances.masks):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_large_picture_is_scaled_down_to_720_and_mapped_back() -> None:
    size = (960, 1440)  # (H, W): scale 0.5
    image = np.full((*size, 3), 128, np.uint8)
    mask = _rect_mask(size, (200, 100, 700, 800), (900, 400, 1300, 600))
    instances = Instances.from_full_masks([mask], [0.9], "test")
    echo = MaskEcho(4, channel=3)
    refiner = RefineNetISNet(echo, device="cpu")
    assert refiner.plan(size).scaled_size == (480, 720) and refiner.plan(size).offset == (0, 0)
    refined = refiner.refine(image, instances)

    (x,) = echo.inputs
    assert x.shape == (1, 4, 720, 720)
    assert x[0, 3, 50:400, 100:350].min() == 1.0  # first rectangle at half scale
    assert not x[0, :, 480:].any()
    back = refined.full_mask(0)
    differs = np.abs(back - mask) > 0.02
    assert differs.mean() < 0.01  # only along the edges
    edges = cv2.dilate(cv2.Canny((mask * 255).astype(np.uint8), 50, 150), np.ones((5, 5), np.uint8)) > 0
    assert not (differs & ~edges).any()


def test_instance_mask_is_binarised_before_scaling_unless_asked_otherwise() -> None:
    size = (100, 150)
    soft = np.zeros(size, np.float32)
    soft[20:80, 30:120] = 0.3
    soft[40:60, 50:100] = 0.9
    instances = Instances.from_full_masks([soft], [0.9], "test")
    image = np.zeros((*size, 3), np.uint8)

    echo = MaskEcho(4, channel=3)
    RefineNetISNet(echo, device="cpu").refine(image, instances)
    assert set(np.unique(echo.inputs[0][0, 3].numpy())) == {0.0, 1.0}
    assert echo.inputs[0][0, 3, 50, 75] == 1.0 and echo.inputs[0][0, 3, 25, 35] == 0.0

    echo = MaskEcho(4, channel=3)
    RefineNetISNet(echo, device="cpu", settings=RefineNetSettings(mask_input_threshold=None)).refine(image, instances)
    assert torch.equal(echo.inputs[0][0, 3, :100, :150], torch.from_numpy(soft))


def test_batches_give_the_same_result_as_one_at_a_time() -> None:
    image, instances = _scene_instances()
    instances = instances.appended(instances.subset([0, 1]))  # 5 instances
    results = {}
    for batch_size in (1, 2, 5):
        net = _small_isnet(4, seed=7)
        refiner = RefineNetISNet(net, device="cpu", settings=RefineNetSettings(input_size=192, batch_size=batch_size))
        results[batch_size] = refiner.refine(image, instances)
        assert net.batch_sizes == {1: [1] * 5, 2: [2, 2, 1], 5: [5]}[batch_size]
    for batch_size in (2, 5):
        for got, want in zip(results[batch_size].masks, results[1].masks):
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_refined_mask_depends_on_the_instance_channel() -> None:
    image, instances = _scene_instances()
    refined = RefineNetISNet(_small_isnet(4), device="cpu", settings=RefineNetSettings(input_size=192)).refine(
        image, instances
    )
    # Same picture, different instance masks: the network's answers differ per instance.
    first, second = refined.full_mask(0), refined.full_mask(1)
    assert not np.allclose(first[refined.boxes[0][1]:refined.boxes[0][3], refined.boxes[0][0]:refined.boxes[0][2]],
                           second[refined.boxes[0][1]:refined.boxes[0][3], refined.boxes[0][0]:refined.boxes[0][2]])


# ------------------------------------------------------------------------------------------- animeseg


def test_animeseg_input_is_rgb_centred_square_and_runs_once_per_picture() -> None:
    size = (300, 500)
    image = np.zeros((*size, 3), np.uint8)
    image[50:250, 40:200] = (255, 0, 0)  # red character
    image[80:260, 300:460] = (255, 0, 0)  # another red character
    coarse = [_rect_mask(size, (30, 30, 220, 270)), _rect_mask(size, (280, 60, 480, 280))]
    instances = Instances.from_full_masks(coarse, [0.9, 0.8], "test")
    echo = MaskEcho(3, channel=0)  # foreground = red channel
    refiner = AnimeSegRefiner(echo, device="cpu")
    refined = refiner.refine(image, instances)

    (x,) = echo.inputs
    assert x.shape == (1, 3, 1024, 1024)
    box = refiner.plan(size)
    assert box.scaled_size == (614, 1024) and box.offset == (0, 205)  # scaled up to fit, centred
    assert not x[0, :, :205].any() and not x[0, :, 205 + 614 :].any()
    assert x[0, 0, 512, 200] == 1.0 and x[0, 1:, 512, 200].max() == 0.0  # RGB order, /255
    # The coarse rectangles are cut down to the red characters.
    for i, (x0, y0, x1, y1) in enumerate([(40, 50, 200, 250), (300, 80, 460, 260)]):
        full = refined.full_mask(i)
        assert full[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3].min() > 0.99
        outside = coarse[i].astype(bool) & ~_rect_mask(size, (x0 - 3, y0 - 3, x1 + 3, y1 + 3)).astype(bool)
        assert full[outside].max() < 0.01


def test_animeseg_cannot_extend_a_mask_beyond_its_allowed_region() -> None:
    size = (400, 400)
    image = np.full((*size, 3), 200, np.uint8)
    # Character A is L-shaped, so its box also covers character B's square.
    a = _rect_mask(size, (20, 20, 60, 380), (20, 340, 380, 380))
    b = _rect_mask(size, (200, 100, 300, 200))
    instances = Instances.from_full_masks([a, b], [0.9, 0.8], "test")
    settings = AnimeSegSettings(input_size=128, edge_margin=0.02)  # 8 px
    refiner = AnimeSegRefiner(_constant_isnet(3, 20.0), device="cpu", settings=settings)  # foreground everywhere
    assert refiner.margin_px(size) == 8
    refined = refiner.refine(image, instances)

    for i, original in enumerate((a, b)):
        full = refined.full_mask(i)
        assert full[original > 0].min() > 0.99  # keeps the instance
        distance = cv2.distanceTransform((original == 0).astype(np.uint8), cv2.DIST_L2, 5)
        assert full[distance > 8.5].max() == 0.0  # nothing farther than the margin
        x0, y0, x1, y1 = refined.boxes[i]
        in_box = np.zeros(size, bool)
        in_box[y0:y1, x0:x1] = True
        margin = (distance > 0) & (distance <= 7) & in_box
        if i == 0:  # B's box is tight around its square, so only A has margin inside its box
            assert margin.sum() > 1000 and full[margin].min() > 0.99  # the edge margin is used
        assert full[~in_box].max() == 0.0  # boxes are kept, so masks stay inside them
    # A does not swallow B although B lies inside A's box and is foreground.
    assert refined.full_mask(0)[b > 0].max() == 0.0


def test_animeseg_keeps_the_original_mask_when_the_foreground_misses_the_character() -> None:
    image, instances = _scene_instances()
    refiner = AnimeSegRefiner(_constant_isnet(3, -20.0), device="cpu", settings=AnimeSegSettings(input_size=128))
    refined = refiner.refine(image, instances)
    for got, want in zip(refined.masks, instances.masks):
        np.testing.assert_array_equal(got, want)
    assert refined.refined_by == "animeseg"


def test_animeseg_soft_instance_confidence_limits_the_result() -> None:
    size = (120, 120)
    soft = _rect_mask(size, (20, 20, 100, 100)) * 0.6
    instances = Instances.from_full_masks([soft], [0.9], "test")
    refiner = AnimeSegRefiner(_constant_isnet(3, 20.0), device="cpu",
                              settings=AnimeSegSettings(input_size=64, min_kept_fraction=0.0))
    refined = refiner.refine(np.zeros((*size, 3), np.uint8), instances)
    assert refined.masks[0].max() == pytest.approx(0.6, abs=1e-4)
