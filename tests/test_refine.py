"""Refiners: the reference pipelines' steps (against independent implementations), batching, output form.

The references are CartoonSegmentation's ``AnimeInsSeg._postprocess_refine``
(refine_last.ckpt) and SkyTNT's anime-seg ``get_mask`` with CartoonSegmentation's
``animeseg_refine`` combination (isnetis.ckpt). Their steps are written out
below, independently of :mod:`inference.refine`, and run on the same network.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inference.device import resolve_device
from inference.instances import Instances
from inference.isnet import ISNet
from inference.refine import (
    AnimeSegRefiner,
    AnimeSegSettings,
    RefineNetISNet,
    RefineNetSettings,
)
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
    np.testing.assert_array_equal(refined.scores, original.scores)
    assert refined.backend == original.backend
    for mask, box in zip(refined.masks, refined.boxes):
        x0, y0, x1, y1 = box
        assert mask.dtype == np.float32 and mask.shape == (y1 - y0, x1 - x0)
        assert np.isfinite(mask).all() and mask.min() >= 0.0 and mask.max() <= 1.0
        above = mask > 1e-3  # the box is the mask's own support
        assert above[0].any() and above[-1].any() and above[:, 0].any() and above[:, -1].any()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


# ------------------------------------------------------------------------------------------- references


def reference_refine_last(net: nn.Module, image: np.ndarray, masks: np.ndarray, size: int) -> np.ndarray:
    """CartoonSegmentation's refine_last pipeline, step by step; ``(N, H, W)`` probabilities.

    Facts of the reference (``AnimeInsSeg._postprocess_refine``, ``prepare_refine_batch``,
    ``utils/io_utils.resize_pad`` and ``scaledown_maxsize``):

    * input: the picture as OpenCV reads it (BGR uint8) and the detector's binary
      masks as float32 0/1;
    * ``scaledown_maxsize``: if ``size / max(H, W) < 1``, the long side becomes
      ``size`` and the short side ``max(1, int(round(short * ratio)))``, resized
      with ``cv2.resize`` (default ``INTER_LINEAR``) - the picture as uint8, each
      mask as float32; smaller pictures are not resized;
    * ``cv2.copyMakeBorder`` pads bottom and right with 0 to ``size x size``;
      the picture is then ``/ 255.`` in CHW;
    * each batch item is the 3 picture channels plus one mask (batches of 4);
    * ``refinenet(batch)[0][0].sigmoid()``: the first side output;
    * the output is sliced ``[pt:-pb, pl:-pr]`` (``pb = -H`` when 0) and resized
      to ``(H, W)`` with ``F.interpolate(mode='bilinear', align_corners=True)``;
    * then ``> 0.3`` (``mask_thr``) gives the reference's masks.
    """
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    height, width = bgr.shape[:2]
    ratio = size / max(height, width)
    new_h, new_w = height, width
    if ratio < 1:
        if height > width:
            new_h, new_w = size, max(1, int(round(width * ratio)))
        else:
            new_w, new_h = size, max(1, int(round(height * ratio)))

    def resize_pad(array: np.ndarray) -> np.ndarray:
        if (new_h, new_w) != (height, width):
            array = cv2.resize(array, (new_w, new_h))
        return cv2.copyMakeBorder(array, 0, size - new_h, 0, size - new_w, cv2.BORDER_CONSTANT, value=0)

    picture = resize_pad(bgr).transpose((2, 0, 1)).astype(np.float32) / 255.0
    outputs = []
    for start in range(0, len(masks), 4):
        batch = np.array([np.concatenate((picture, resize_pad(m.astype(np.float32))[None])) for m in masks[start:start + 4]])
        with torch.no_grad():
            preds = net(torch.from_numpy(batch))[0].sigmoid()
        pb, pr = size - new_h, size - new_w
        pb = -height if pb == 0 else pb
        pr = -width if pr == 0 else pr
        preds = preds[..., 0:-pb, 0:-pr]
        preds = F.interpolate(preds, (height, width), mode="bilinear", align_corners=True)
        outputs.append(preds[:, 0])
    return torch.cat(outputs).numpy()


def reference_animeseg_foreground(net: nn.Module, image: np.ndarray, s: int) -> np.ndarray:
    """SkyTNT anime-seg's ``get_mask``, step by step: ``(H, W)`` foreground probability.

    Facts of the reference (``inference.get_mask``; the model's forward is
    ``net(x)[0][0].sigmoid()``):

    * the RGB picture ``(input_img / 255).astype(np.float32)``;
    * ``h, w = (s, int(s * w / h)) if h > w else (int(s * h / w), s)``;
    * ``cv2.resize(img, (w, h))`` (default ``INTER_LINEAR``, on the float image)
      into a zero ``s x s`` float32 canvas at ``[ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]``;
    * the sigmoid of the first side output, sliced back the same way and
      resized to ``(w0, h0)`` with ``cv2.resize`` (``INTER_LINEAR``).
    """
    img = (image / 255).astype(np.float32)
    h0, w0 = img.shape[:2]
    h, w = (s, int(s * w0 / h0)) if h0 > w0 else (int(s * h0 / w0), s)
    ph, pw = s - h, s - w
    canvas = np.zeros([s, s, 3], dtype=np.float32)
    canvas[ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w] = cv2.resize(img, (w, h))
    with torch.no_grad():
        pred = net(torch.from_numpy(np.transpose(canvas, (2, 0, 1)))[None])[0].sigmoid()
    pred = pred.numpy()[0].transpose((1, 2, 0))[ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
    return cv2.resize(pred, (w0, h0))


def reference_animeseg_refine(foreground: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """CartoonSegmentation's ``animeseg_refine``: ``(N, H, W)`` bool.

    Facts: ``mask = get_mask(...) > 0.5``; ``refined = ins_masks & mask``; an instance
    takes its refined mask iff ``area_refined / area_original > 0.3``, else keeps its own.
    """
    fg = foreground > 0.5
    out = masks.copy()
    for i, mask in enumerate(masks):
        refined = mask & fg
        with np.errstate(divide="ignore", invalid="ignore"):
            if refined.sum() / mask.sum() > 0.3:
                out[i] = refined
    return out


def _detector_like_instances(size: tuple[int, int], seed: int) -> tuple[np.ndarray, Instances]:
    """A scene and soft instance masks that miss a rim of their characters (as a detector might)."""
    scene = make_scene(3, "busy", size=size, seed=seed)
    masks = []
    for alpha in scene.character_alphas:
        core = cv2.erode(alpha, np.ones((7, 7), np.uint8))
        masks.append(cv2.GaussianBlur(core, (0, 0), 1.5))
    return scene.image, Instances.from_full_masks(masks, [0.9, 0.6, 0.8], "rtmdet")


@pytest.mark.parametrize("size", [(300, 437), (437, 300), (200, 150)])
def test_refine_last_matches_the_reference_pipeline(size: tuple[int, int]) -> None:
    """Same network, same picture and masks: Nukki's refine_last == the reference's steps (see reference_refine_last).

    IoU of the reference's ``> 0.3`` masks >= 0.999 and mean gap <= 1e-3 on the whole
    picture (nothing is cut at the detector's box).
    """
    image, instances = _detector_like_instances(size, seed=5)
    net = _small_isnet(4, seed=11)
    refiner = RefineNetISNet(net, device="cpu", settings=RefineNetSettings(input_size=256))
    binary = np.stack([instances.full_mask(i) > 0.5 for i in range(len(instances))])

    expected = reference_refine_last(net, image, binary, 256)
    refined = refiner.refine(image, instances)

    assert len(refined) == len(instances)
    _assert_well_formed(refined, instances, "refinenet_isnet")
    for i in range(len(instances)):
        ours = refined.full_mask(i)
        assert np.abs(ours - expected[i]).mean() <= 1e-3
        assert _iou(ours > 0.3, expected[i] > 0.3) >= 0.999
        assert np.abs(ours - expected[i]).max() <= 1e-3  # at most the floor, where Nukki stores nothing
    # The premise: the refined masks reach beyond the detector masks' boxes.
    beyond = [np.count_nonzero((refined.full_mask(i) > 0.3) & (instances.full_mask(i) == 0)) for i in range(3)]
    assert max(beyond) > 100


@pytest.mark.parametrize("size", [(300, 437), (437, 300), (256, 256)])
def test_animeseg_matches_the_reference_pipeline(size: tuple[int, int]) -> None:
    """Same network: Nukki's foreground == SkyTNT's get_mask, and the refined masks == CartoonSegmentation's rule.

    Foreground mean gap <= 1e-3; refined masks (``> 0.5``) IoU >= 0.999 per instance.
    """
    image, instances = _detector_like_instances(size, seed=6)
    net = _small_isnet(3, seed=12)
    refiner = AnimeSegRefiner(net, device="cpu", settings=AnimeSegSettings(input_size=256))  # eval mode
    with torch.no_grad():  # stretch the random logits: a foreground that covers some of the picture, not all
        probability = torch.from_numpy(reference_animeseg_foreground(net, image, 256)).clamp(1e-6, 1 - 1e-6)
        logits = torch.log(probability / (1 - probability))
        gain = 4.0 / float(logits.std())
        net.side1.weight.mul_(gain)
        net.side1.bias.copy_((net.side1.bias - float(logits.median())) * gain)
    binary = np.stack([instances.full_mask(i) > 0.5 for i in range(len(instances))])

    foreground = reference_animeseg_foreground(net, image, 256)
    ours_foreground = refiner.foreground(image)
    assert np.abs(ours_foreground - foreground).mean() <= 1e-3
    assert 0.05 < (foreground > 0.5).mean() < 0.95  # the premise: the rule has something to cut

    expected = reference_animeseg_refine(foreground, binary)
    refined = refiner.refine(image, instances)
    for i in range(len(instances)):
        assert _iou(refined.full_mask(i) > 0.5, expected[i]) >= 0.999


def test_animeseg_keeps_a_mask_the_foreground_misses_and_takes_one_it_keeps() -> None:
    """The reference's 30% rule: refined iff ``area(M and F) / area(M) > 0.3``."""
    size = (100, 100)
    mask = _rect_mask(size, (0, 0, 100, 50))  # 5000 px
    instances = Instances.from_full_masks([mask, mask], [0.9, 0.8], "test")

    class Halves(AnimeSegRefiner):
        def foreground(self, image):  # rows 0..14 (30% of the mask) and 0..15 (32%)
            fg = np.zeros(size, np.float32)
            fg[: int(image[0, 0, 0])] = 1.0
            return fg

    refiner = Halves(_constant_isnet(3, 0.0), device="cpu", settings=AnimeSegSettings(input_size=64))
    kept = refiner.refine(np.full((*size, 3), 15, np.uint8), instances)  # exactly 30%: not more -> original
    np.testing.assert_array_equal(kept.full_mask(0), mask)
    taken = refiner.refine(np.full((*size, 3), 16, np.uint8), instances)  # 32% -> refined
    assert (taken.full_mask(0) > 0.5).sum() == 1600 and tuple(taken.boxes[0]) == (0, 0, 100, 16)


# ------------------------------------------------------------------------------------------- both


@pytest.mark.parametrize("kind", ["refinenet_isnet", "animeseg"])
def test_refiners_return_well_formed_soft_instances(kind: str) -> None:
    scene = make_scene(3, "gradient", size=(180, 320), seed=4)
    masks = [cv2.GaussianBlur(a, (0, 0), 1.5) for a in scene.character_alphas]
    image, instances = scene.image, Instances.from_full_masks(masks, [0.9, 0.6, 0.8], "test")
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
    scene = make_scene(3, "gradient", size=(180, 320), seed=4)
    image = scene.image
    instances = Instances.from_full_masks(scene.character_alphas, [0.9, 0.6, 0.8], "test")
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
        RefineNetISNet(MaskEcho(4, 3), device="tpu")
    with pytest.raises(ValueError, match="batch_size"):
        RefineNetSettings(batch_size=0)
    with pytest.raises(ValueError, match="edge_margin"):
        AnimeSegSettings(edge_margin=-0.1)
    with pytest.raises(ValueError, match="expected RefineNetSettings"):
        RefineNetISNet(MaskEcho(4, 3), device="cpu", settings=AnimeSegSettings())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable, match="--device cpu"):
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
    # Scale 1 both ways: the echoed masks come back exactly, on their own boxes.
    np.testing.assert_array_equal(refined.boxes, instances.boxes)
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
    soft[20:80, 30:120] = 0.5  # not above 0.5: not covered, as in the detector's `sigmoid > 0.5`
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
    image, instances = _detector_like_instances((180, 320), seed=4)
    instances = instances.appended(instances.subset([0, 1]))  # 5 instances
    results = {}
    for batch_size in (1, 2, 5):
        net = _small_isnet(4, seed=7)
        refiner = RefineNetISNet(net, device="cpu", settings=RefineNetSettings(input_size=192, batch_size=batch_size))
        results[batch_size] = refiner.refine(image, instances)
        assert net.batch_sizes == {1: [1] * 5, 2: [2, 2, 1], 5: [5]}[batch_size]
    for batch_size in (2, 5):
        for i in range(5):
            np.testing.assert_allclose(results[batch_size].full_mask(i), results[1].full_mask(i), atol=1e-5)


def test_refined_mask_depends_on_the_instance_channel() -> None:
    image, instances = _detector_like_instances((180, 320), seed=4)
    refined = RefineNetISNet(_small_isnet(4), device="cpu", settings=RefineNetSettings(input_size=192)).refine(
        image, instances
    )
    # Same picture, different instance masks: the network's answers differ per instance.
    assert not np.allclose(refined.full_mask(0), refined.full_mask(1), atol=1e-3)


def test_an_instance_with_nothing_left_is_dropped_with_a_note() -> None:
    image, instances = _detector_like_instances((120, 160), seed=2)
    refined = RefineNetISNet(_constant_isnet(4, -20.0), device="cpu", settings=RefineNetSettings(input_size=128)).refine(
        image, instances
    )
    assert len(refined) == 0 and refined.refined_by == "refinenet_isnet"
    assert any("found nothing left of 3 instance(s)" in note for note in refined.notes)


# ------------------------------------------------------------------------------------------- animeseg


def test_animeseg_input_is_rgb_float_centred_square_and_runs_once_per_picture() -> None:
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
    assert box.scaled_size == (614, 1024) and box.offset == (0, 205)  # int(1024 * 300 / 500), centred
    assert not x[0, :, :205].any() and not x[0, :, 205 + 614 :].any()
    assert x[0, 0, 512, 200] == 1.0 and x[0, 1:, 512, 200].max() == 0.0  # RGB order, /255
    # The float picture is resized (values between 0 and 1 along edges, not uint8 steps).
    edge = x[0, 0, 205:205 + 614, 76:88].numpy()
    assert ((edge > 0.01) & (edge < 0.99)).any()
    # The coarse rectangles are cut down to the red characters, and the boxes follow.
    for i, (x0, y0, x1, y1) in enumerate([(40, 50, 200, 250), (300, 80, 460, 260)]):
        full = refined.full_mask(i)
        assert full[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3].min() > 0.99
        outside = coarse[i].astype(bool) & ~_rect_mask(size, (x0 - 3, y0 - 3, x1 + 3, y1 + 3)).astype(bool)
        assert full[outside].max() < 0.01
        assert np.abs(refined.boxes[i] - np.array([x0, y0, x1, y1])).max() <= 3


def test_animeseg_edge_margin_option_reaches_beyond_the_mask_but_not_farther() -> None:
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
        margin = (distance > 0) & (distance <= 7)
        assert full[margin].min() > 0.99  # the margin is used, also outside the instance's box
    # A does not swallow B although B lies inside A's box and is foreground.
    assert refined.full_mask(0)[b > 0].max() == 0.0
    # Off by default: the reference's rule never grows a mask.
    plain = AnimeSegRefiner(_constant_isnet(3, 20.0), device="cpu", settings=AnimeSegSettings(input_size=128))
    assert plain.margin_px(size) == 0
    grown = plain.refine(image, instances)
    np.testing.assert_array_equal(grown.full_mask(0) > 0.5, a > 0.5)


def test_animeseg_soft_instance_confidence_limits_the_result() -> None:
    size = (120, 120)
    soft = _rect_mask(size, (20, 20, 100, 100)) * 0.6
    instances = Instances.from_full_masks([soft], [0.9], "test")
    refiner = AnimeSegRefiner(_constant_isnet(3, 20.0), device="cpu", settings=AnimeSegSettings(input_size=64))
    refined = refiner.refine(np.zeros((*size, 3), np.uint8), instances)
    assert refined.masks[0].max() == pytest.approx(0.6, abs=1e-4)
