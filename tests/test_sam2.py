"""SAM 2.1 point prompts: checkpoint loading, prompt geometry, labels, caching and mask form.

The prompt handling is tested with :class:`tests.sam2_fixtures.ScriptedNetwork`, whose
outputs each test chooses. The real network (built by the ``sam2`` package from its own
config) is loaded from checkpoints in Meta's format, and runs forward once in the suite
(about 3 s on 2 cores) with weights set so that its answer is known.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference import sam2_prompt
from inference.errors import ModelUnavailable
from inference.instances import Click
from inference.prompt import PointPrompter
from inference.registry import model_spec
from inference.sam2_prompt import (
    CONFIGS,
    MASK_FLOOR,
    PIXEL_MEAN,
    PIXEL_STD,
    Sam2Prompter,
    load_sam2_model,
    model_box_coords,
    model_input,
    model_point_coords,
    soft_mask,
    soft_mask_crop,
)
from inference.weights import CheckpointError
from tests.sam2_fixtures import (
    ScriptedNetwork,
    random_state_dict,
    save_sam2_checkpoint,
    scripted_prompter,
    write_test_sam2_checkpoint,
)

REPO = Path(__file__).resolve().parent.parent
S = 1024

#: (H, W): landscape, portrait, square, tiny, a single row, an odd size.
SIZES = [(300, 500), (500, 300), (1024, 1024), (5, 3), (1, 40), (1081, 1917)]


def _picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- geometry


def test_point_coords_known_answers() -> None:
    # 2048 x 1024 picture -> 1024 x 1024 input: x halves, y stays. Pixel (1023, 511) has its
    # centre at (1023.5, 511.5) -> input (511.75, 511.5) -> index space minus 0.5.
    got = model_point_coords([Click(1023, 511), Click(0, 0, False)], (1024, 2048), S)
    np.testing.assert_allclose(got, [[511.25, 511.0], [-0.25, 0.0]], atol=1e-6)
    # a 2 x 4 (W x H) picture: each pixel is 512 x 256 input pixels; centre of (1, 3) -> (768, 896)
    got = model_point_coords([Click(1, 3)], (4, 2), S)
    np.testing.assert_allclose(got, [[767.5, 895.5]], atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
def test_point_coords_land_on_the_pixel_centre_in_every_orientation(size: tuple[int, int]) -> None:
    height, width = size
    clicks = [Click(0, 0), Click(width - 1, height - 1), Click(width // 2, height // 3, False)]
    coords = model_point_coords(clicks, size, S)
    # after the prompt encoder's own +0.5, scale back to the picture: the click's pixel centre
    back = (coords.astype(np.float64) + 0.5) * np.array([width / S, height / S])
    np.testing.assert_allclose(back, [[c.x + 0.5, c.y + 0.5] for c in clicks], atol=1e-3)


def test_box_corners_are_pixel_edges() -> None:
    np.testing.assert_allclose(model_box_coords((0, 0, 500, 300), (300, 500), S), [[-0.5, -0.5], [S - 0.5, S - 0.5]])
    np.testing.assert_allclose(model_box_coords((250, 150, 375, 300), (300, 500), S), [[511.5, 511.5], [767.5, S - 0.5]])


def test_model_input_is_normalised_and_resized_per_axis() -> None:
    # portrait: top half red, bottom half blue; landscape: left third white
    portrait = np.zeros((600, 200, 3), np.uint8)
    portrait[:300] = (255, 0, 0)
    portrait[300:] = (0, 0, 255)
    x = model_input(portrait, S)
    assert x.shape == (1, 3, S, S) and x.dtype == torch.float32
    red = [(v - m) / s for v, m, s in zip((1.0, 0.0, 0.0), PIXEL_MEAN, PIXEL_STD)]
    blue = [(v - m) / s for v, m, s in zip((0.0, 0.0, 1.0), PIXEL_MEAN, PIXEL_STD)]
    np.testing.assert_allclose(x[0, :, 10, 500].numpy(), red, atol=1e-5)
    np.testing.assert_allclose(x[0, :, 505, 3].numpy(), red, atol=1e-5)
    np.testing.assert_allclose(x[0, :, 519, 1000].numpy(), blue, atol=1e-5)
    landscape = np.zeros((200, 600, 3), np.uint8)
    landscape[:, :200] = 255
    x = model_input(landscape, S)
    white = [(1.0 - m) / s for m, s in zip(PIXEL_MEAN, PIXEL_STD)]
    black = [(0.0 - m) / s for m, s in zip(PIXEL_MEAN, PIXEL_STD)]
    np.testing.assert_allclose(x[0, :, 700, 335].numpy(), white, atol=1e-5)
    np.testing.assert_allclose(x[0, :, 3, 348].numpy(), black, atol=1e-5)


def test_model_input_matches_a_float_resize_within_one_grey_level() -> None:
    picture = _picture(1333, 1777, seed=4)  # shrunk on both axes: the antialiasing filter matters
    x = model_input(picture, S)
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(picture).permute(2, 0, 1)[None].float(), size=(S, S), mode="bilinear",
        antialias=True, align_corners=False,
    )
    got = (x * torch.tensor(PIXEL_STD).view(1, 3, 1, 1) + torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) * 255
    assert float((got - reference).abs().max()) <= 1.0 + 1e-3


@pytest.mark.parametrize("size", SIZES)
def test_mask_comes_back_around_the_click_in_every_orientation(size: tuple[int, int]) -> None:
    """The scripted network draws a disk around the point it receives; the prompter must map
    the click in and the mask out so the disk is centred on the clicked pixel."""
    height, width = size
    network = ScriptedNetwork(disk_radius=96.0)
    prompter = scripted_prompter(network)
    picture = _picture(height, width)
    for click in (Click(width // 2, height // 2), Click(0, 0), Click(width - 1, height - 1), Click(width // 5, height - 1)):
        found = prompter.segment_points(picture, "p", [click])
        assert len(found) == 1
        mask = found.full_mask(0)
        assert mask[click.y, click.x] >= 0.99
        # the disk is an ellipse of radii 96 * W / S and 96 * H / S picture pixels around the centre
        rx, ry = 96.0 * width / S, 96.0 * height / S
        cell_x, cell_y = 4.0 * width / S, 4.0 * height / S  # one decoder cell, in picture pixels
        x0, y0, x1, y1 = (int(v) for v in found.boxes[0])
        cx, cy = click.x + 0.5, click.y + 0.5
        assert max(0.0, cx - rx) - cell_x - 1 <= x0 <= max(0.0, cx - rx) + cell_x + 1
        assert min(width, cx + rx) - cell_x - 1 <= x1 <= min(width, cx + rx) + cell_x + 1
        assert max(0.0, cy - ry) - cell_y - 1 <= y0 <= max(0.0, cy - ry) + cell_y + 1
        assert min(height, cy + ry) - cell_y - 1 <= y1 <= min(height, cy + ry) + cell_y + 1
    assert len(network.embeds) == 1
    assert network.embeds[0].shape == (1, 3, S, S)


# ---------------------------------------------------------------------------------------------- prompts


def test_include_and_exclude_points_become_labels_1_and_0() -> None:
    network = ScriptedNetwork()
    prompter = scripted_prompter(network)
    picture = _picture(300, 500)
    clicks = [Click(100, 50), Click(400, 250, False), Click(120, 60)]
    prompter.segment_points(picture, "p", clicks)
    call = network.decodes[-1]
    assert call.labels == [1, 0, 1]
    np.testing.assert_allclose(call.coords.numpy(), model_point_coords(clicks, (300, 500), S))
    assert call.multimask is False  # several prompts: the single-mask output


def test_box_is_passed_as_two_corner_prompts_before_the_points() -> None:
    network = ScriptedNetwork()
    prompter = scripted_prompter(network)
    picture = _picture(300, 500)
    prompter.segment_points(picture, "p", [Click(100, 50)], box=(50, 20, 250, 200))
    call = network.decodes[-1]
    assert call.labels == [2, 3, 1]
    np.testing.assert_allclose(call.coords[:2].numpy(), model_box_coords((50, 20, 250, 200), (300, 500), S))
    np.testing.assert_allclose(call.coords[:2].numpy(), [[50 * S / 500 - 0.5, 20 * S / 300 - 0.5],
                                                          [250 * S / 500 - 0.5, 200 * S / 300 - 0.5]], atol=1e-4)
    assert call.multimask is False


def test_box_alone_is_a_prompt_but_exclude_points_alone_are_not() -> None:
    network = ScriptedNetwork(respond=lambda call: (torch.full((1, 256, 256), 5.0), torch.tensor([0.7])))
    prompter = scripted_prompter(network)
    picture = _picture(300, 500)
    assert len(prompter.segment_points(picture, "p", [], box=(10, 10, 100, 100))) == 1
    assert network.decodes[-1].labels == [2, 3]
    assert len(prompter.segment_points(picture, "q", [Click(5, 5, False)])) == 0
    assert len(prompter.segment_points(picture, "q", [])) == 0
    assert prompter.embed_count == 1  # nothing to prompt: the second picture was not embedded


def test_one_point_takes_the_multimask_output_with_the_best_predicted_iou() -> None:
    side = 256
    masks = torch.full((3, side, side), -10.0)
    masks[0, :, :64] = 10.0  # left quarter
    masks[1, :, 64:128] = 10.0  # second quarter: best predicted IoU
    masks[2, :, 128:] = 10.0
    network = ScriptedNetwork(respond=lambda call: (masks, torch.tensor([0.30, 0.95, 0.60])))
    prompter = scripted_prompter(network)
    found = prompter.segment_points(_picture(100, 400), "p", [Click(150, 50)])
    assert network.decodes[-1].multimask is True
    assert found.scores.tolist() == pytest.approx([0.95])
    assert found.boxes[0].tolist() == [100, 0, 200, 100]
    assert found.backend == "sam2"


def test_mask_is_the_sigmoid_of_the_upsampled_logits() -> None:
    rng = np.random.default_rng(7)
    logits = torch.from_numpy(rng.normal(0.0, 4.0, (256, 256)).astype(np.float32))
    network = ScriptedNetwork(respond=lambda call: (logits[None], torch.tensor([0.8])))
    prompter = scripted_prompter(network)
    height, width = 300, 500
    found = prompter.segment_points(_picture(height, width), "p", [Click(10, 10), Click(20, 20)])
    mask = found.full_mask(0)
    # independent reference: OpenCV's bilinear resize (half-pixel centres) and a numpy sigmoid
    upsampled = cv2.resize(logits.numpy(), (width, height), interpolation=cv2.INTER_LINEAR)
    expected = 1.0 / (1.0 + np.exp(-upsampled.astype(np.float64)))
    expected[expected < MASK_FLOOR] = 0.0
    assert mask.dtype == np.float32
    np.testing.assert_allclose(mask, expected, atol=1e-4)
    assert ((mask > 0.05) & (mask < 0.95)).mean() > 0.1  # soft, not thresholded


@pytest.mark.parametrize("size", SIZES + [(2160, 3840)])
def test_cropped_soft_mask_equals_torch_upsampling_of_the_whole_picture(size: tuple[int, int]) -> None:
    """Only the reachable window is upsampled; it must give exactly the full-picture answer."""
    rng = np.random.default_rng(sum(size))
    logits = torch.full((256, 256), -20.0)
    logits[90:150, 40:47] = torch.from_numpy(rng.normal(2.0, 6.0, (60, 7)).astype(np.float32))
    logits[200, 250] = 3.0  # a lone cell far away widens the window
    reference = torch.sigmoid(
        torch.nn.functional.interpolate(logits[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    ).numpy()
    reference[reference < MASK_FLOOR] = 0.0
    found = soft_mask_crop(logits, size)
    assert found is not None
    (x0, y0, x1, y1), crop = found
    rows, cols = np.flatnonzero(reference.any(axis=1)), np.flatnonzero(reference.any(axis=0))
    assert (x0, y0, x1, y1) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    np.testing.assert_allclose(crop, reference[y0:y1, x0:x1], atol=2e-4)  # float32 rounding
    np.testing.assert_allclose(soft_mask(logits, size), reference, atol=2e-4)
    assert soft_mask_crop(torch.full((256, 256), -9.0), size) is None
    # logits on a GPU take another route (whole picture upsampled there); same answer (run here on the CPU)
    on_device = sam2_prompt._soft_mask_crop_on_device(logits, size)
    assert on_device is not None and on_device[0] == (x0, y0, x1, y1)
    np.testing.assert_allclose(on_device[1], crop, atol=2e-4)
    assert sam2_prompt._soft_mask_crop_on_device(torch.full((256, 256), -9.0), size) is None


def test_soft_mask_floor_makes_the_box_the_segmented_region() -> None:
    logits = torch.full((256, 256), -12.0)
    logits[100:140, 30:60] = 12.0
    soft = soft_mask(logits, (256, 256))
    assert soft[0, 0] == 0.0 and soft[120, 45] == pytest.approx(1.0, abs=1e-5)
    assert (soft > 0).sum() < 40 * 30 * 1.3


def test_nothing_there_gives_no_instance() -> None:
    picture = _picture(300, 500)
    negative = ScriptedNetwork(respond=lambda call: (torch.full((3, 256, 256), -3.0), torch.tensor([0.5, 0.5, 0.5])))
    assert len(scripted_prompter(negative).segment_points(picture, "p", [Click(5, 5)])) == 0
    no_object = ScriptedNetwork(object_logit=-2.0)
    assert len(scripted_prompter(no_object).segment_points(picture, "p", [Click(5, 5)])) == 0


def test_bad_input_raises_value_error() -> None:
    prompter = scripted_prompter()
    picture = _picture(30, 50)
    with pytest.raises(ValueError, match="inside the 50x30 picture"):
        prompter.segment_points(picture, "p", [Click(50, 3)])
    with pytest.raises(ValueError, match="inside the 50x30 picture"):
        prompter.segment_points(picture, "p", [Click(3, -1)])
    with pytest.raises(ValueError, match="expected"):
        prompter.segment_points(picture[..., 0], "p", [Click(3, 3)])
    with pytest.raises(ValueError, match="box"):
        prompter.segment_points(picture, "p", [Click(3, 3)], box=(10, 10, 5, 20))
    with pytest.raises(ValueError, match="Click"):
        prompter.segment_points(picture, "p", [(3, 3)])  # type: ignore[list-item]
    assert prompter.embed_count == 0


# ---------------------------------------------------------------------------------------------- caching


def test_second_click_on_the_same_picture_does_not_embed_again() -> None:
    network = ScriptedNetwork()
    prompter = scripted_prompter(network)
    picture = _picture(300, 500)
    assert not prompter.has_embedding(picture, "one")
    prompter.segment_points(picture, "one", [Click(10, 10)])
    assert prompter.has_embedding(picture, "one")
    prompter.segment_points(picture, "one", [Click(200, 100), Click(10, 10, False)])
    prompter.embed(picture, "one")
    assert prompter.embed_count == 1 and len(network.embeds) == 1
    # every decode of that picture used the features of its one embedding
    assert all(call.features is network.decodes[0].features for call in network.decodes)
    other = _picture(300, 500, seed=1)
    prompter.segment_points(other, "two", [Click(10, 10)])
    assert prompter.embed_count == 2
    assert network.decodes[-1].features is not network.decodes[0].features
    # the same digest with another picture size is another picture
    prompter.segment_points(_picture(500, 300), "one", [Click(10, 10)])
    assert prompter.embed_count == 3


def test_embedding_cache_is_bounded_least_recently_used_first_out() -> None:
    prompter = scripted_prompter(cache_size=2)
    picture = _picture(40, 60)
    for digest in ("a", "b", "a", "c"):  # "a" was used after "b", so "b" leaves
        prompter.segment_points(picture, digest, [Click(1, 1)])
    assert prompter.embed_count == 3
    assert prompter.has_embedding(picture, "a") and prompter.has_embedding(picture, "c")
    assert not prompter.has_embedding(picture, "b")
    prompter.clear()
    assert not prompter.has_embedding(picture, "a")


def test_concurrent_first_clicks_embed_once() -> None:
    class SlowNetwork(ScriptedNetwork):
        def embed(self, pixels):
            time.sleep(0.05)
            return super().embed(pixels)

    network = SlowNetwork()
    prompter = scripted_prompter(network)
    picture = _picture(60, 80)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(len(prompter.segment_points(picture, "same", [Click(i, i)]))))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [1, 1, 1, 1]
    assert len(network.embeds) == 1


# ---------------------------------------------------------------------------------------------- the real network


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """SAM 2.1 tiny with random weights, built from the package's own config, saved as Meta does."""
    state = random_state_dict("tiny")
    path = save_sam2_checkpoint(tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt", state)
    return path, state


def test_registry_loader_builds_tiny_from_the_package_config_and_loads_it_strictly(tiny_checkpoint) -> None:
    path, state = tiny_checkpoint
    assert set(CONFIGS) >= {"tiny", "small", "base_plus"}
    prompter = model_spec("sam2").load(path, device="cpu", trust=False)
    assert isinstance(prompter, Sam2Prompter) and isinstance(prompter, PointPrompter)
    assert prompter.name == "sam2" and prompter.variant == "tiny" and prompter.device.type == "cpu"
    loaded = prompter.network.model.state_dict()
    assert loaded.keys() == state.keys()
    for name in ("image_encoder.trunk.patch_embed.proj.weight", "sam_mask_decoder.iou_token.weight", "no_mem_embed"):
        assert torch.equal(loaded[name], state[name])
    assert sum(v.numel() for v in loaded.values()) > 38_000_000  # the tiny model's size


def test_missing_or_unknown_weight_names_fail_the_strict_load(tiny_checkpoint, tmp_path) -> None:
    _, state = tiny_checkpoint
    missing = dict(state)
    del missing["sam_mask_decoder.iou_token.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing from the file.*iou_token"):
        load_sam2_model(save_sam2_checkpoint(tmp_path / "missing.pt", missing))
    extra = dict(state)
    extra["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 unknown to the model.*extra_head"):
        load_sam2_model(save_sam2_checkpoint(tmp_path / "extra.pt", extra))


def test_wrong_shapes_and_wrong_formats_are_refused(tiny_checkpoint, tmp_path) -> None:
    _, state = tiny_checkpoint
    reshaped = dict(state)
    reshaped["image_encoder.trunk.patch_embed.proj.weight"] = torch.zeros(112, 3, 7, 7)  # small/base+ width
    with pytest.raises(CheckpointError, match=r"of another shape.*loaded as SAM 2.1 tiny"):
        load_sam2_model(save_sam2_checkpoint(tmp_path / "reshaped.pt", reshaped), variant="tiny")
    bare = tmp_path / "bare.pt"
    torch.save({"sam_mask_decoder.iou_token.weight": torch.zeros(1, 256)}, bare)
    with pytest.raises(CheckpointError, match=r"\{'model': state_dict\}"):
        load_sam2_model(bare)
    with pytest.raises(ValueError, match="variant"):
        load_sam2_model(bare, variant="huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_model_unavailable(tiny_checkpoint) -> None:
    with pytest.raises(ModelUnavailable, match="--device cpu"):
        Sam2Prompter.from_checkpoint(tiny_checkpoint[0], device="cuda")


def _ball_picture() -> tuple[np.ndarray, np.ndarray]:
    """A red ball (radius 40, centre (350, 120)) on a blue 500 x 300 picture, and its mask."""
    picture = np.full((300, 500, 3), (90, 160, 220), np.uint8)
    yy, xx = np.mgrid[:300, :500]
    ball = (xx - 350) ** 2 + (yy - 120) ** 2 <= 40**2
    picture[ball] = (220, 40, 40)
    return picture, ball


def test_real_network_cuts_out_the_clicked_ball_and_embeds_once(tmp_path, monkeypatch) -> None:
    """The one forward pass of the real network in the suite: weights set so it segments red."""
    monkeypatch.setenv("NUKKI_MODELS_DIR", str(tmp_path))
    path = write_test_sam2_checkpoint(tmp_path, colour=(220, 40, 40))
    assert path == tmp_path / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt"
    from inference import weights

    assert weights.is_installed("sam2")
    picture, ball = _ball_picture()
    prompter = model_spec("sam2").load(path, device="cpu", trust=False)
    found = prompter.segment_points(picture, "ball", [Click(350, 120)])
    assert len(found) == 1
    chosen = found.full_mask(0) >= 0.5
    assert (chosen & ball).sum() / (chosen | ball).sum() > 0.9
    assert found.scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-3)  # the best of three IoUs
    again = prompter.segment_points(picture, "ball", [Click(340, 110), Click(30, 30, False)])
    assert len(again) == 1 and prompter.embed_count == 1


def test_building_the_model_and_its_input_never_imports_torchvision() -> None:
    """torchvision's PyPI wheels do not load beside the CPU build of torch, so Nukki must not need it."""
    code = (
        "import sys, numpy, torch; from inference.sam2_prompt import Sam2Network, build_sam2_model, model_input; "
        "Sam2Network(build_sam2_model('tiny'), torch.device('cpu')); model_input(numpy.zeros((8, 8, 3), numpy.uint8), 1024); "
        "sys.exit('torchvision' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_registry_variant_has_a_package_config() -> None:
    for key in ("sam2", "sam2-small", "sam2-base-plus"):
        variant = dict(model_spec(key).loader_options)["variant"]
        assert variant in CONFIGS
        from importlib.resources import files

        assert files("sam2").joinpath(CONFIGS[variant]).is_file()



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_with_autocast_gives_the_cpu_answer(tmp_path) -> None:
    path = write_test_sam2_checkpoint(tmp_path, colour=(220, 40, 40))
    picture, ball = _ball_picture()
    clicks = [Click(350, 120)]
    on_cpu = Sam2Prompter.from_checkpoint(path, device="cpu").segment_points(picture, "ball", clicks)
    gpu = Sam2Prompter.from_checkpoint(path, device="cuda")
    assert gpu.device.type == "cuda"
    on_gpu = gpu.segment_points(picture, "ball", clicks)
    assert len(on_cpu) == len(on_gpu) == 1
    a, b = on_cpu.full_mask(0) >= 0.5, on_gpu.full_mask(0) >= 0.5
    assert (a & b).sum() / (a | b).sum() > 0.98
    assert (b & ball).sum() / (b | ball).sum() > 0.9
    assert on_gpu.scores[0] == pytest.approx(on_cpu.scores[0], abs=0.01)
