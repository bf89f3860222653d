"""The RTMDet-Ins anime model: config, strict loading of the real checkpoint format, fast decoding.

The real ``rtmdetl_e60.ckpt`` cannot be downloaded here, so these tests write
files in its format (mmengine dict: ``state_dict`` plus ``meta['cfg']``, a
3.0-era config string) from models with random weights. End-to-end runs use a
small model (RTMDet-tiny widths); one test loads a real-size file.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict

from inference import rtmdet
from inference.letterbox import plan_letterbox
from inference.rtmdet import CheckpointError, RTMDetSegmenter
from tests.scenes import make_scene

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*torch.cuda.amp.autocast.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning"),
]

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "checkpoints" / "rtmdetl_e60.keys.json",
    REPO_ROOT / "shared" / "checkpoints" / "rtmdetl_e60.keys.json",
)

#: RTMDet-Ins-tiny widths, for fast end-to-end forwards.
TINY = dict(deepen=0.167, widen=0.375, neck_in=[96, 192, 384], width=96, csp=1)
#: RTMDet-Ins-L, the real model.
LARGE = dict(deepen=1, widen=1, neck_in=[256, 512, 1024], width=256, csp=3)

# A training config as the anime model's mmengine 0.7 / mmdet 3.0 run dumped it: old
# `file_client_args`, `custom_imports` of a package users do not have, the custom head
# type, SyncBN, a pretrained init_cfg, and every training-only part.
OLD_CONFIG_TEMPLATE = """default_scope = 'mmdet'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='DetLocalVisualizer',
    vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=60, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
base_lr = 0.004
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-05, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', eta_min=base_lr * 0.05, begin=30, end=60, T_max=30, by_epoch=True,
         convert_to_iter_based=True)
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=0.004, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0, bypass_duplicate=True))
auto_scale_lr = dict(enable=False, base_batch_size=16)
dataset_type = 'AnimeMangaMixedDataset'
data_root = 'data/dataset/'
file_client_args = dict(backend='disk')
train_pipeline = [
    dict(type='LoadImageFromFile', file_client_args=dict(backend='disk')),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='CachedMosaic', img_scale=(640, 640), pad_val=114.0),
    dict(type='RandomResize', scale=(1280, 1280), ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='Pad', size=(640, 640), pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', file_client_args=dict(backend='disk')),
    dict(type='Resize', scale=(640, 640), keep_ratio=True),
    dict(type='Pad', size=(640, 640), pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='AnimeMangaMixedDataset', data_root='data/dataset/', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    dataset=dict(type='AnimeMangaMixedDataset', test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(
    type='RTMDet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395],
        bgr_to_rgb=False,
        batch_augments=None),
    backbone=dict(
        type='CSPNeXt',
        arch='P5',
        expand_ratio=0.5,
        deepen_factor={deepen},
        widen_factor={widen},
        channel_attention=True,
        norm_cfg=dict(type='SyncBN'),
        act_cfg=dict(type='SiLU', inplace=True),
        init_cfg=dict(type='Pretrained', prefix='backbone.',
                      checkpoint='https://download.openmmlab.com/mmdetection/v3.0/rtmdet/cspnext.pth')),
    neck=dict(
        type='CSPNeXtPAFPN',
        in_channels={neck_in},
        out_channels={width},
        num_csp_blocks={csp},
        expand_ratio=0.5,
        norm_cfg=dict(type='SyncBN'),
        act_cfg=dict(type='SiLU', inplace=True)),
    bbox_head=dict(
        type='RTMDetInsSepBNHeadCustom',
        num_classes=1,
        in_channels={width},
        stacked_convs=2,
        share_conv=True,
        pred_kernel_size=1,
        feat_channels={width},
        act_cfg=dict(type='SiLU', inplace=True),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_mask=dict(type='DiceLoss', loss_weight=2.0, eps=5e-06, reduction='mean')),
    train_cfg=dict(
        assigner=dict(type='DynamicSoftLabelAssigner', topk=13),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100,
        mask_thr_binary=0.5))
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0002, update_buffers=True, priority=49),
    dict(type='PipelineSwitchHook', switch_epoch=50, switch_pipeline=train_pipeline)
]
custom_imports = dict(imports=['animeinsseg.models.rtmdet_inshead_custom'], allow_failed_imports=False)
launcher = 'pytorch'
work_dir = './work_dirs/rtmdetl_e60'
"""


def old_config_text(size: dict) -> str:
    return OLD_CONFIG_TEMPLATE.format(**size)


def small_model_config() -> dict:
    config = rtmdet.load_model_config()
    config["backbone"].update(deepen_factor=TINY["deepen"], widen_factor=TINY["widen"])
    config["neck"].update(in_channels=TINY["neck_in"], out_channels=TINY["width"], num_csp_blocks=TINY["csp"])
    config["bbox_head"].update(in_channels=TINY["width"], feat_channels=TINY["width"])
    return config


def perturb_buffers(model: torch.nn.Module) -> None:
    """Give BN statistics non-default values, so a load that skipped them would show."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(1 + torch.rand(buffer.shape, generator=generator))


def write_real_format(path: Path, model: torch.nn.Module, cfg_text: str | None) -> Path:
    meta = {"epoch": 60, "iter": 123456, "mmengine_version": "0.7.2"}
    if cfg_text is not None:
        meta["cfg"] = cfg_text
    torch.save({"meta": meta, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = rtmdet.build_detector(small_model_config())
    rtmdet.set_fixed_box_predictions(model, box_size=(60, 90))
    perturb_buffers(model)
    return model


@pytest.fixture(scope="module")
def rigged_segmenter() -> RTMDetSegmenter:
    """A tiny detector whose priors predict 120x200 canvas-pixel boxes with diamond masks."""
    torch.manual_seed(1)
    model = rtmdet.build_detector(small_model_config())
    rtmdet.set_fixed_box_predictions(model, box_size=(120, 200))
    return RTMDetSegmenter.from_model(model, det_size=320, score_threshold=0.3, max_instances=5, device="cpu")


# ----------------------------------------------------------------------------- config and loading


def manifest_path() -> Path:
    for candidate in MANIFEST_CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.skip(f"rtmdetl_e60.keys.json not found in {[str(c.parent) for c in MANIFEST_CANDIDATES]}")


@pytest.fixture(scope="module")
def large_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return rtmdet.build_detector(rtmdet.load_model_config())


def test_project_config_builds_the_real_checkpoints_keys_and_shapes(large_model: torch.nn.Module) -> None:
    manifest = json.loads(manifest_path().read_text())
    state = large_model.state_dict()

    assert list(state) == list(manifest)  # same keys, same order (942)
    assert {k: list(v.shape) for k, v in state.items()} == manifest
    assert type(large_model.bbox_head).__name__ == "GuardedRTMDetInsSepBNHead"
    assert large_model.bbox_head.num_classes == 1
    # The shared convolutions: several keys, one tensor.
    assert large_model.bbox_head.cls_convs[2][0].conv is large_model.bbox_head.cls_convs[0][0].conv


def test_real_size_checkpoint_in_the_real_format_loads(large_model: torch.nn.Module, tmp_path: Path) -> None:
    perturb_buffers(large_model)
    path = write_real_format(tmp_path / "rtmdetl_e60.ckpt", large_model, old_config_text(LARGE))

    segmenter = RTMDetSegmenter(path, device="cpu")

    assert segmenter.config_origin == "config embedded in rtmdetl_e60.ckpt"
    loaded = segmenter.model.state_dict()
    assert list(loaded) == list(large_model.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in large_model.state_dict().items())
    assert not any("SyncBatchNorm" in type(m).__name__ for m in segmenter.model.modules())
    assert type(segmenter.model.bbox_head).__name__ == "GuardedRTMDetInsSepBNHead"
    assert segmenter.decode_settings.nms_pre == 1000 and segmenter.decode_settings.max_instances == 100
    assert segmenter.decode_settings.nms_iou_threshold == pytest.approx(0.6)


def test_old_config_is_read_not_executed_and_modernised() -> None:
    literals = rtmdet.read_config_literals(old_config_text(TINY))
    # Arithmetic on earlier names works; nothing was imported (animeinsseg does not exist here).
    assert literals["param_scheduler"][1]["eta_min"] == pytest.approx(0.004 * 0.05)
    assert literals["custom_imports"]["imports"] == ["animeinsseg.models.rtmdet_inshead_custom"]

    with_old_name = {**literals, "model": {**literals["model"], "extra": {"file_client_args": 1}}}
    model = rtmdet.inference_model_config(with_old_name)

    assert model["bbox_head"]["type"] == "GuardedRTMDetInsSepBNHead"
    assert model["extra"] == {"backend_args": 1}
    assert "train_cfg" not in model and "init_cfg" not in model["backbone"]
    assert model["backbone"]["norm_cfg"]["type"] == "BN" and model["bbox_head"]["norm_cfg"]["type"] == "BN"
    assert model["test_cfg"]["nms"]["iou_threshold"] == 0.6


def test_config_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = (
        "import os\n"
        f"os.system('touch {marker}')\n"
        f"model = __import__('os').system('touch {marker}')\n"
        f"stolen = open({str(marker)!r}, 'w')\n"
        "safe = dict(a=1, b=[1, 2], c=(3, -4.5), d=2 * 3)\n"
    )

    literals = rtmdet.read_config_literals(text)

    assert not marker.exists()
    assert literals == {"safe": {"a": 1, "b": [1, 2], "c": (3, -4.5), "d": 6}}
    with pytest.raises(ValueError, match="model dict"):
        rtmdet.inference_model_config(literals)


def test_small_checkpoint_in_the_real_format_loads_and_segments(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    path = write_real_format(tmp_path / "small.ckpt", tiny_model, old_config_text(TINY))

    segmenter = RTMDetSegmenter(path, det_size=256, device="cpu", score_threshold=0.0, max_instances=3)

    assert segmenter.config_origin == "config embedded in small.ckpt"
    loaded = segmenter.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_model.state_dict().items())
    instances = segmenter.segment(make_scene(1, size=(120, 200)).image)
    assert instances.backend == "rtmdet" and instances.image_size == (120, 200) and len(instances) == 3


def test_checkpoint_without_usable_config_uses_the_fallback_config(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    fallback = tmp_path / "tiny_config.py"
    fallback.write_text(f"model = {small_model_config()!r}\n")
    bare = write_real_format(tmp_path / "bare.ckpt", tiny_model, None)
    broken = write_real_format(tmp_path / "broken.ckpt", tiny_model, "model = dict(type='RTMDet', bbox_head=open('x'))")

    for path in (bare, broken):
        segmenter = RTMDetSegmenter(path, device="cpu", fallback_config=fallback)
        assert segmenter.config_origin.startswith("project config tiny_config.py")
        loaded = segmenter.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in tiny_model.state_dict().items())
    # The project's own (large) config does not fit these small weights: a clear error, not a silent partial load.
    with pytest.raises(CheckpointError, match="does not fit"):
        RTMDetSegmenter(bare, device="cpu")


def test_create_segmenter_loads_the_installed_checkpoint(
    tiny_model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference import weights
    from inference.segmenter import DetectionSettings, create_segmenter

    monkeypatch.setenv(weights.MODELS_DIR_ENV, str(tmp_path / "models"))
    path = weights.weight_path("rtmdet")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_real_format(path, tiny_model, old_config_text(TINY))

    settings = DetectionSettings(backend="rtmdet", det_size=256, tta=True, score_threshold=0.4, device="cpu")
    segmenter, choice = create_segmenter(settings)

    assert choice.name == "rtmdet" and isinstance(segmenter, RTMDetSegmenter)
    assert segmenter.det_size == 256 and segmenter.tta and segmenter.decode_settings.score_threshold == 0.4
    assert segmenter.config_origin == f"config embedded in {path.name}"
    instances = segmenter.segment(make_scene(1, size=(120, 200)).image)
    assert instances.backend == "rtmdet" and (instances.scores >= 0.4).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sd: sd.pop("bbox_head.rtm_cls.0.weight"), r"does not fit.*missing.*bbox_head\.rtm_cls\.0\.weight"),
        (
            lambda sd: sd.__setitem__("bbox_head.rtm_extra.weight", torch.zeros(1)),
            r"does not fit.*bbox_head\.rtm_extra\.weight",
        ),
        (
            lambda sd: sd.__setitem__("bbox_head.rtm_cls.0.weight", torch.zeros(80, 96, 1, 1)),
            r"does not fit.*shape.*rtm_cls\.0\.weight",
        ),
        (
            lambda sd: sd.__setitem__(
                "bbox_head.cls_convs.1.0.conv.weight", sd["bbox_head.cls_convs.0.0.conv.weight"] + 1
            ),
            r"shared convolution",
        ),
    ],
    ids=["missing", "unexpected", "shape", "shared-disagree"],
)
def test_weights_that_do_not_fit_are_a_clear_error(
    tiny_model: torch.nn.Module, tmp_path: Path, change, message: str
) -> None:
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    change(state)
    path = tmp_path / "wrong.ckpt"
    torch.save({"meta": {"cfg": old_config_text(TINY)}, "state_dict": state}, path)

    with pytest.raises(CheckpointError, match=message):
        RTMDetSegmenter(path, device="cpu")


def test_truncated_checkpoint_is_a_clear_error(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    path = write_real_format(tmp_path / "cut.ckpt", tiny_model, old_config_text(TINY))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CheckpointError, match="damaged|truncated"):
        RTMDetSegmenter(path, device="cpu")


# ----------------------------------------------------------------------------- preprocessing and geometry


def test_letterbox_canvas_follows_det_size_and_the_reference_pipeline(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(2, background="textured", size=(180, 400)).image
    prepared = rigged_segmenter.preprocess(image, with_mirror=True)

    assert prepared.batch.shape == (2, 3, 320, 320)
    geometry = prepared.letterbox
    assert geometry.scaled_size == (144, 320) and geometry.offset == (0, 0)
    canvas, same = rtmdet.letterbox_image(image, 320)
    assert same == geometry
    assert (canvas[144:] == 114).all()  # padded at the bottom with 114
    mean = torch.tensor([103.53, 116.28, 123.675]).reshape(3, 1, 1)
    std = torch.tensor([57.375, 57.12, 58.395]).reshape(3, 1, 1)
    bgr = torch.from_numpy(canvas[:, :, ::-1].copy()).permute(2, 0, 1).float()
    torch.testing.assert_close(prepared.batch[0], (bgr - mean) / std)
    # Item 1 is the mirrored picture: its content flipped, its padding where it was.
    torch.testing.assert_close(prepared.batch[1][:, :144], prepared.batch[0][:, :144].flip(-1))
    torch.testing.assert_close(prepared.batch[1][:, 144:], prepared.batch[0][:, 144:])


@pytest.mark.parametrize("source, det_size", [((1080, 1920), 640), ((333, 517), 320), ((50, 100), 256)])
def test_letterbox_round_trip_is_exact(source: tuple[int, int], det_size: int) -> None:
    geometry = plan_letterbox(source, det_size)
    sx, sy = geometry.scale
    boxes = np.array([[0, 0, source[1], source[0]], [10.5, 3.25, 40, 30]], np.float32)
    on_canvas = boxes * np.array([sx, sy, sx, sy], np.float32)

    np.testing.assert_allclose(geometry.boxes_to_source(on_canvas), boxes, rtol=0, atol=1e-4)
    # The picture fills the canvas along its long side and stays inside it.
    assert max(geometry.scaled_size) == det_size and geometry.canvas_size == det_size


def test_masks_are_centred_on_their_prior_points(rigged_segmenter: RTMDetSegmenter) -> None:
    """The diamond masks peak exactly at their prior point: checks cells, resampling and letterbox together."""
    image = make_scene(2, background="busy", size=(333, 517)).image
    prepared = rigged_segmenter.preprocess(image, with_mirror=False)
    outputs = rigged_segmenter.forward(prepared.batch)
    geometry = prepared.letterbox
    head = rigged_segmenter.model.bbox_head
    detections = rtmdet.select_detections(head, outputs, 0, geometry, rigged_segmenter.decode_settings)
    boxes, masks, kept = rtmdet.decode_instance_masks(head, outputs.mask_feat[0], detections, geometry)

    assert len(detections) == 5 and kept == list(range(5))
    sx, sy = geometry.scale
    for box, mask, prior, canvas_box in zip(boxes, masks, detections.priors.numpy(), detections.boxes.numpy()):
        peak_y, peak_x = np.unravel_index(np.argmax(mask), mask.shape)
        # Source pixel x samples canvas point (x + 0.5) * sx. Mask cell i holds the logit computed
        # for canvas point 8i and, as in mmdet (and in its training loss), stands for canvas point
        # 8i + 4. So the peak is the picture's pixel nearest prior + 4 (which may lie in the
        # padding below the picture).
        assert abs(box[0] + peak_x - np.clip((prior[0] + 4) / sx - 0.5, 0, 516)) <= 1.0
        assert abs(box[1] + peak_y - np.clip((prior[1] + 4) / sy - 0.5, 0, 332)) <= 1.0
        # The box is the detector box plus one stride-8 cell, in source pixels, clipped to the picture.
        expected = geometry.boxes_to_source(canvas_box[None])[0] + np.array([-8 / sx, -8 / sy, 8 / sx, 8 / sy])
        expected = np.clip(expected, 0, [517, 333, 517, 333])
        assert np.abs(box - expected).max() <= 1.0


def test_decoding_matches_mmdet_predict_by_feat(rigged_segmenter: RTMDetSegmenter) -> None:
    """Same boxes, scores and masks as mmdet's own (slow, full-picture) post-processing."""
    model = rigged_segmenter.model
    head = model.bbox_head
    with torch.no_grad():  # random dynamic-conv weights on top of the diamonds: masks that are not pure shapes
        original = [k.weight.clone() for k in head.rtm_kernel]
        for kernel in head.rtm_kernel:
            kernel.weight.normal_(0, 0.01, generator=torch.Generator().manual_seed(3))
    try:
        image = make_scene(2, background="busy", size=(400, 400)).image
        prepared = rigged_segmenter.preprocess(image, with_mirror=False)
        outputs = rigged_segmenter.forward(prepared.batch)
    finally:
        with torch.no_grad():
            for kernel, weight in zip(head.rtm_kernel, original):
                kernel.weight.copy_(weight)
    geometry = prepared.letterbox
    settings = rigged_segmenter.decode_settings
    detections = rtmdet.select_detections(head, outputs, 0, geometry, settings)
    boxes, masks, _ = rtmdet.decode_instance_masks(head, outputs.mask_feat[0], detections, geometry)
    sx, sy = geometry.scale
    meta = dict(img_shape=geometry.scaled_size, ori_shape=geometry.source_size, scale_factor=(sx, sy))
    cfg = ConfigDict(nms_pre=1000, min_bbox_size=0, score_thr=settings.score_threshold,
                     nms=dict(type="nms", iou_threshold=0.6), max_per_img=settings.max_instances, mask_thr_binary=0.5)
    with torch.inference_mode():
        reference = head.predict_by_feat(
            outputs.cls_scores, outputs.bbox_preds, outputs.kernel_preds, outputs.mask_feat,
            batch_img_metas=[meta], cfg=cfg, rescale=True,
        )[0]
        # mmdet's soft masks before binarising: logits upsampled x8, rescaled to the picture.
        logits = head._mask_predict_by_feat_single(outputs.mask_feat[0], reference.kernels, reference.priors)
        logits = F.interpolate(logits[None], scale_factor=8, mode="bilinear")
        logits = F.interpolate(logits, size=[math.ceil(logits.shape[-2] / sy), math.ceil(logits.shape[-1] / sx)],
                               mode="bilinear", align_corners=False)[0, :, :400, :400]
        soft_reference = logits.sigmoid().numpy()

    assert len(reference) == len(detections) == 5
    np.testing.assert_allclose(geometry.boxes_to_source(detections.boxes.numpy()), reference.bboxes.numpy(), atol=1e-3)
    np.testing.assert_allclose(detections.scores.numpy(), reference.scores.numpy(), atol=1e-6)
    for i, (box, mask) in enumerate(zip(boxes, masks)):
        x0, y0, x1, y1 = box
        assert np.abs(mask - soft_reference[i, y0:y1, x0:x1]).max() < 0.02
        ours = np.zeros((400, 400), bool)
        ours[y0:y1, x0:x1] = mask >= 0.5
        theirs = reference.masks[i].numpy()
        assert (ours & theirs).sum() / (ours | theirs).sum() > 0.98
        assert theirs.sum() == theirs[y0:y1, x0:x1].sum()  # mmdet's whole mask lies inside our box


# ----------------------------------------------------------------------------- end to end


def test_segment_returns_well_formed_instances(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(3, background="gradient", size=(360, 640)).image

    instances = rigged_segmenter.segment(image)

    assert instances.backend == "rtmdet" and instances.image_size == (360, 640)
    assert len(instances) == 5  # max_instances
    assert (instances.scores >= 0.3).all() and (instances.scores <= 1).all()
    assert list(instances.scores) == sorted(instances.scores, reverse=True)
    for (x0, y0, x1, y1), mask in zip(instances.boxes, instances.masks):
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360
        assert mask.dtype == np.float32 and mask.shape == (y1 - y0, x1 - x0)
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        assert 0.0 < mask.mean() < 1.0  # soft, not binarised, not empty
        assert np.unique(mask).size > 10
    assert instances.nbytes() < 5 * 360 * 640 * 4  # box crops, not full-picture masks


def test_score_threshold_is_applied_before_any_mask_is_decoded(
    rigged_segmenter: RTMDetSegmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    windows: list[tuple[int, int]] = []
    real = rtmdet._dynamic_mask_logits

    def spy(head, cell_feat, *args):
        windows.append(tuple(cell_feat.shape[-2:]))
        return real(head, cell_feat, *args)

    monkeypatch.setattr(rtmdet, "_dynamic_mask_logits", spy)
    image = make_scene(2, size=(360, 640)).image

    instances = rigged_segmenter.segment(image)
    assert len(windows) == len(instances) == 5  # masks only for the kept instances
    # Each window covers the box's cells, never the full 40x40 prototype map.
    assert all(h * w < 40 * 40 / 2 for h, w in windows)

    windows.clear()
    strict = RTMDetSegmenter.from_model(rigged_segmenter.model, det_size=320, score_threshold=1.0, device="cpu")
    assert len(strict.segment(image)) == 0
    assert windows == []


def test_det_size_changes_the_network_input(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(1, size=(200, 300)).image
    bigger = RTMDetSegmenter.from_model(rigged_segmenter.model, det_size=448, max_instances=2, device="cpu")

    prepared = bigger.preprocess(image)
    outputs = bigger.forward(prepared.batch)

    assert prepared.batch.shape == (1, 3, 448, 448)
    assert outputs.mask_feat.shape[-2:] == (56, 56)
    assert [tuple(c.shape[-2:]) for c in outputs.cls_scores] == [(56, 56), (28, 28), (14, 14)]
    assert bigger.segment(image).image_size == (200, 300)


def test_flip_tta_merges_the_mirrored_view(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(2, size=(360, 640)).image
    with_tta = RTMDetSegmenter.from_model(rigged_segmenter.model, det_size=320, max_instances=5, tta=True, device="cpu")

    instances = with_tta.segment(image)

    assert instances.notes and instances.notes[-1].startswith("Flip TTA: merged")
    assert len(instances) >= 1
    for (x0, y0, x1, y1), mask in zip(instances.boxes, instances.masks):
        assert mask.shape == (y1 - y0, x1 - x0) and 0.0 <= mask.min() and mask.max() <= 1.0
    assert (instances.scores >= 0.3).all()


def test_segment_is_safe_from_several_threads(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(2, size=(240, 320)).image
    expected = rigged_segmenter.segment(image)
    results: list = [None] * 3
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            results[slot] = rigged_segmenter.segment(image)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    for result in results:
        np.testing.assert_array_equal(result.boxes, expected.boxes)
        np.testing.assert_array_equal(result.scores, expected.scores)
        for a, b in zip(result.masks, expected.masks):
            np.testing.assert_array_equal(a, b)


def test_non_finite_predictions_are_ignored_with_a_note(rigged_segmenter: RTMDetSegmenter) -> None:
    head = rigged_segmenter.model.bbox_head
    image = make_scene(2, size=(240, 320)).image
    with torch.no_grad():
        saved = head.rtm_cls[0].bias.clone()
        head.rtm_cls[0].bias.fill_(float("nan"))  # every stride-8 prior is NaN
    try:
        prepared = rigged_segmenter.preprocess(image)
        outputs = rigged_segmenter.forward(prepared.batch)
        instances = rigged_segmenter.decode(outputs, prepared.letterbox)
    finally:
        with torch.no_grad():
            head.rtm_cls[0].bias.copy_(saved)

    assert torch.isneginf(outputs.cls_scores[0]).all()
    assert all(torch.isfinite(t).all() for t in outputs.bbox_preds + outputs.kernel_preds)
    assert len(instances) == 5  # the stride-16 and stride-32 priors still work
    assert (instances.scores >= 0.3).all()
    assert any("NaN/Inf for 1600 candidate(s)" in note for note in instances.notes)


def test_bad_inputs_and_options_are_value_errors(rigged_segmenter: RTMDetSegmenter) -> None:
    model = rigged_segmenter.model
    with pytest.raises(ValueError, match="det_size"):
        RTMDetSegmenter.from_model(model, det_size=100)
    with pytest.raises(ValueError, match="score_threshold"):
        RTMDetSegmenter.from_model(model, score_threshold=1.5)
    with pytest.raises(ValueError, match="device"):
        RTMDetSegmenter.from_model(model, device="tpu")
    with pytest.raises(ValueError, match="uint8 RGB"):
        rigged_segmenter.segment(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        rigged_segmenter.segment(np.zeros((10, 10), np.uint8))
