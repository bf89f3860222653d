"""The RTMDet-Ins anime model: strict loading of the real checkpoint format, and the reference's results.

The real ``rtmdetl_e60.ckpt`` cannot be downloaded here, so these tests write
files in its format (mmengine dict: ``state_dict`` plus ``meta['cfg']``, a
3.0-era config string) from models with random weights. End-to-end runs use a
small model (RTMDet-tiny widths) whose output convolutions are rigged
(:mod:`tests.rtmdet_rigging`) so that dozens of instances pass the threshold;
one test loads a real-size file. The reference is mmdet's own code: its test
pipeline and ``test_step`` (``predict_by_feat`` with ``rescale=True``), as
CartoonSegmentation runs it.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmcv.transforms import Compose
from mmengine.registry import DefaultScope

from inference import rtmdet
from inference.instances import Instances
from inference.rtmdet import CheckpointError, DecodeSettings, RTMDetSegmenter
from tests.rtmdet_rigging import LARGE, TINY, model_config, reference_test_pipeline_steps, set_fixed_box_predictions
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
    model = rtmdet.build_detector(model_config(TINY))
    set_fixed_box_predictions(model, box_size=(60, 90))
    perturb_buffers(model)
    return model


@pytest.fixture(scope="module")
def rigged_model() -> torch.nn.Module:
    """A tiny detector whose priors predict ~48x64 canvas-pixel boxes with masks reaching 1.6x beyond them.

    Scores vary with the picture; the letterbox padding scores sigmoid(-2.5), so
    that 40-70 instances pass 0.3 after NMS on the test pictures, a third of
    them reaching into the padding. Box sizes and mask shapes vary with the
    picture (random box and dynamic-conv weights on top of the rigging).
    """
    torch.manual_seed(1)
    model = rtmdet.build_detector(model_config(TINY))
    set_fixed_box_predictions(
        model, box_size=(48, 64), score_logit=0.0, score_spread=2.0, mask_reach=1.6, box_noise=0.02,
        kernel_noise=0.3, padding_logit=-2.5, seed=1,
    )
    return model


@pytest.fixture(scope="module")
def rigged_segmenter(rigged_model: torch.nn.Module) -> RTMDetSegmenter:
    return RTMDetSegmenter.from_model(rigged_model, det_size=320, score_threshold=0.3, device="cpu")


# ----------------------------------------------------------------------------- the reference


def mmdet_test_pipeline(det_size: int) -> Compose:
    """mmdet's own test pipeline of the project config at ``det_size`` (as CartoonSegmentation's ``set_detect_size``)."""
    steps = reference_test_pipeline_steps(det_size)
    with DefaultScope.overwrite_default_scope("mmdet"):
        return Compose(steps)


def mmdet_reference(model: torch.nn.Module, image: np.ndarray, det_size: int, score_threshold: float) -> dict:
    """What the reference pipeline gives for an RGB picture: mmdet's results, then ``scores > threshold``.

    Returns ``boxes``, ``scores``, ``masks`` (``(N, H, W)`` bool on the picture:
    mmdet's masks, padded with False where mmdet's mask array is smaller than the
    picture) and ``soft`` (mmdet's mask probabilities before ``> 0.5``,
    recomputed with mmdet's own calls from the kept kernels and priors).
    """
    height, width = image.shape[:2]
    data = mmdet_test_pipeline(det_size)(dict(img=np.ascontiguousarray(image[:, :, ::-1]), img_id=0))
    batch = dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]])
    head = model.bbox_head
    with torch.no_grad():
        results = model.test_step(batch)[0].pred_instances
        results = results[results.scores > score_threshold]  # CartoonSegmentation's pred_score_thr
        # mmdet's soft masks: the steps of _bbox_mask_post_process before its `> mask_thr_binary`.
        inputs = model.data_preprocessor(batch, False)["inputs"]
        mask_feat = head(model.extract_feat(inputs))[3][0]
        logits = head._mask_predict_by_feat_single(mask_feat, results.kernels, results.priors)
        logits = F.interpolate(logits.unsqueeze(0), scale_factor=8, mode="bilinear")
        w_scale, h_scale = data["data_samples"].metainfo["scale_factor"]
        size = [math.ceil(logits.shape[-2] / w_scale), math.ceil(logits.shape[-1] / h_scale)]
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[..., :height, :width]
    soft = np.zeros((len(results), height, width), np.float32)
    soft[:, : logits.shape[-2], : logits.shape[-1]] = logits.sigmoid()[0].numpy()
    masks = np.zeros((len(results), height, width), bool)
    theirs = results.masks.numpy()
    masks[:, : theirs.shape[1], : theirs.shape[2]] = theirs
    return dict(
        boxes=results.bboxes.numpy(), scores=results.scores.numpy(), masks=masks, soft=soft,
        mask_shape=tuple(theirs.shape[1:]), metainfo=data["data_samples"].metainfo,
    )


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


# Picture sizes: (121, 290) and (290, 121) are sizes where mmdet's resized mask is one column / row
# short of the picture (its ceil(S / h_scale) with the rounded short side); (173, 300) is not.
@pytest.mark.parametrize("size, seed", [((121, 290), 0), ((290, 121), 1), ((173, 300), 2)])
def test_same_instances_and_masks_as_mmdet(rigged_segmenter: RTMDetSegmenter, size: tuple[int, int], seed: int) -> None:
    """Nukki vs mmdet's own pipeline (test pipeline, test_step, predict_by_feat with rescale) on one network.

    Same instances in the same order with the same scores; every mask's IoU >= 0.999;
    soft masks within 1e-3 everywhere on the picture (Nukki's value outside its
    stored crop is 0, the reference's is at most the 1e-3 mask floor there).
    """
    image = make_scene(3, background="busy", size=size, seed=seed).image
    height, width = size
    reference = mmdet_reference(rigged_segmenter.model, image, 320, 0.3)

    ours = rigged_segmenter.segment(image)

    # The premise: dozens of instances, boxes reaching into the letterbox padding, masks beyond their boxes.
    count = len(reference["scores"])
    assert 24 <= count < 100
    boxes = reference["boxes"]
    assert ((boxes[:, 2] > width + 1) | (boxes[:, 3] > height + 1)).sum() >= 3
    inside = np.zeros_like(reference["masks"])
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        inside[i, max(0, int(y0)) : math.ceil(y1), max(0, int(x0)) : math.ceil(x1)] = True
    assert (reference["masks"] & ~inside).any(axis=(1, 2)).sum() >= count // 2
    assert reference["masks"].any(axis=(1, 2)).all()
    assert reference["mask_shape"] != (height, width) or size == (173, 300)

    assert len(ours) == count
    np.testing.assert_allclose(ours.scores, reference["scores"], rtol=0, atol=1e-6)  # same instances, same order
    for i in range(count):
        full = ours.full_mask(i)
        assert mask_iou(full > 0.5, reference["masks"][i]) >= 0.999, i
        assert np.abs(full - reference["soft"][i]).max() <= 1e-3, i
    # Boxes as mmdet reports them: clipped to the padded canvas, scaled, not clipped to the picture.
    prepared = rigged_segmenter.preprocess(image)
    detections = rtmdet.select_detections(
        rigged_segmenter.model.bbox_head, rigged_segmenter.forward(prepared.batch), 0, prepared.letterbox,
        rigged_segmenter.decode_settings,
    )
    np.testing.assert_allclose(detections.boxes.numpy(), boxes, rtol=0, atol=1e-3)
    # The soft reference is mmdet's: binarised, it is exactly mmdet's own masks.
    np.testing.assert_array_equal(reference["soft"] > 0.5, reference["masks"])


def test_masks_are_stored_on_their_support_not_their_box(rigged_segmenter: RTMDetSegmenter) -> None:
    """Each stored crop is the tight box of the mask's values above the floor; memory stays far below full masks."""
    image = make_scene(3, background="busy", size=(173, 300), seed=2).image
    instances = rigged_segmenter.segment(image)
    floor = rigged_segmenter.decode_settings.mask_floor

    for (x0, y0, x1, y1), mask in zip(instances.boxes, instances.masks):
        assert mask.dtype == np.float32 and mask.shape == (y1 - y0, x1 - x0)
        above = mask > floor
        # Tight: every border row and column of the crop holds a value above the floor.
        assert above[0].any() and above[-1].any() and above[:, 0].any() and above[:, -1].any()
        assert 0.0 <= mask.min() and mask.max() <= 1.0 and np.unique(mask).size > 10
    assert instances.nbytes() < 0.5 * len(instances) * 173 * 300 * 4


def test_only_the_support_is_resampled(rigged_segmenter: RTMDetSegmenter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full-resolution work per instance covers its support, never the whole picture."""
    regions: list[int] = []
    real = rtmdet._resample_region
    image = make_scene(3, background="busy", size=(400, 700), seed=3).image

    def spy(resampling, logits, rows, cols):
        regions.append((rows[1] - rows[0]) * (cols[1] - cols[0]))
        return real(resampling, logits, rows, cols)

    monkeypatch.setattr(rtmdet, "_resample_region", spy)
    instances = rigged_segmenter.segment(image)

    assert len(regions) == len(instances) >= 24
    assert max(regions) < 0.6 * 400 * 700
    assert sum(regions) < 0.4 * len(instances) * 400 * 700


def test_score_threshold_is_strict_and_applied_before_any_mask_is_decoded(
    rigged_segmenter: RTMDetSegmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = make_scene(2, size=(200, 320)).image
    prepared = rigged_segmenter.preprocess(image)
    outputs = rigged_segmenter.forward(prepared.batch)
    head = rigged_segmenter.model.bbox_head
    everything = rtmdet.select_detections(head, outputs, 0, prepared.letterbox, DecodeSettings(score_threshold=0.05))
    score = float(everything.scores[len(everything) // 2])  # an exact score of the picture

    exactly = rigged_segmenter.with_options(score_threshold=score)
    detections = rtmdet.select_detections(head, outputs, 0, prepared.letterbox, exactly.decode_settings)
    assert (detections.scores > score).all() and len(detections) < len(everything)  # `>`: the score itself is out

    decoded: list[int] = []
    real = type(head)._mask_predict_by_feat_single
    monkeypatch.setattr(
        type(head), "_mask_predict_by_feat_single",
        lambda self, feat, kernels, priors: decoded.append(len(kernels)) or real(self, feat, kernels, priors),
    )
    assert len(rigged_segmenter.with_options(score_threshold=1.0).segment(image)) == 0
    assert decoded == []
    instances = rigged_segmenter.segment(image)
    assert decoded == [len(instances)]


def test_extend_to_edges_fills_only_the_reference_gap(rigged_segmenter: RTMDetSegmenter) -> None:
    """At (121, 290) mmdet's mask is 289 columns wide; the option fills column 289 from column 288 and nothing else."""
    image = make_scene(3, background="busy", size=(121, 290), seed=0).image
    exact = rigged_segmenter.segment(image)
    extended = rigged_segmenter.with_options(
        decode_settings=DecodeSettings(score_threshold=0.3, extend_to_edges=True)
    ).segment(image)

    assert len(exact) == len(extended)
    changed = 0
    for i in range(len(exact)):
        a, b = exact.full_mask(i), extended.full_mask(i)
        np.testing.assert_allclose(a[:, :289], b[:, :289], rtol=0, atol=1e-6)  # same values, other crops
        assert (a[:, 289] == 0).all()
        np.testing.assert_array_equal(b[:, 289], b[:, 288])
        changed += int((b[:, 289] > 0.5).any())
    assert changed >= 1


# ----------------------------------------------------------------------------- one network, many options


def test_with_options_shares_the_loaded_network(tiny_model: torch.nn.Module, tmp_path: Path, monkeypatch) -> None:
    """Changing det size, threshold or TTA must not load the weights again (it did: one reload per option)."""
    from inference import weights

    path = write_real_format(tmp_path / "small.ckpt", tiny_model, old_config_text(TINY))
    loads: list[Path] = []
    real = weights.load_checkpoint
    monkeypatch.setattr(rtmdet, "load_checkpoint", lambda p, **kw: loads.append(Path(p)) or real(p, **kw))

    base = RTMDetSegmenter.from_checkpoint(path, device="cpu")
    variants = [
        base.with_options(tta=True),
        base.with_options(det_size=256, score_threshold=0.5),
        base.with_options(det_size=256).with_options(tta=True, max_instances=3),
    ]

    assert loads == [path]
    assert all(v.network is base.network and v.model is base.model for v in variants)
    assert (base.det_size, base.tta, base.decode_settings.score_threshold) == (640, False, 0.3)
    assert variants[0].tta and variants[0].det_size == 640
    assert variants[1].det_size == 256 and variants[1].decode_settings.score_threshold == 0.5
    assert variants[2].tta and variants[2].det_size == 256 and variants[2].decode_settings.max_instances == 3
    image = make_scene(1, size=(120, 200)).image
    assert len(variants[2].with_options(tta=False).segment(image)) <= 3
    with pytest.raises(ValueError, match="det_size"):
        base.with_options(det_size=100)
    with pytest.raises(ValueError, match="score_threshold"):
        base.with_options(score_threshold=2.0)


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


def test_small_checkpoint_in_the_real_format_loads_and_segments(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    path = write_real_format(tmp_path / "small.ckpt", tiny_model, old_config_text(TINY))

    segmenter = RTMDetSegmenter(path, det_size=256, device="cpu", score_threshold=0.0, max_instances=3)

    assert segmenter.config_origin == "config embedded in small.ckpt"
    loaded = segmenter.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_model.state_dict().items())
    instances = segmenter.segment(make_scene(1, size=(120, 200)).image)
    assert instances.backend == "rtmdet" and instances.image_size == (120, 200) and len(instances) == 3
    # The reference applies the config's score_thr (0.05) before its own 0.3: a lower user threshold cannot undercut it.
    assert segmenter.decode_settings.score_threshold == 0.05


def test_checkpoint_without_usable_config_uses_the_fallback_config(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    fallback = tmp_path / "tiny_config.py"
    fallback.write_text(f"model = {model_config(TINY)!r}\n")
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
    assert instances.backend == "rtmdet" and (instances.scores > 0.4).all()


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


@pytest.mark.parametrize("source", [(1080, 1920), (1000, 1500), (333, 517), (517, 333), (50, 100), (121, 290)])
@pytest.mark.parametrize("det_size", [320, 640])
def test_letterbox_geometry_is_mmcvs(source: tuple[int, int], det_size: int) -> None:
    """Scaled size and scale factor as mmcv's imrescale computes them (golden values from mmcv itself)."""
    image = np.zeros(source + (3,), np.uint8)
    rescaled, _ = mmcv.imrescale(image, (det_size, det_size), return_scale=True)
    geometry = rtmdet.mmdet_letterbox(source, det_size)

    assert geometry.scaled_size == rescaled.shape[:2] and geometry.offset == (0, 0)
    assert geometry.scale == (rescaled.shape[1] / source[1], rescaled.shape[0] / source[0])


def test_letterbox_canvas_is_the_reference_input(rigged_segmenter: RTMDetSegmenter) -> None:
    """The network input equals what mmdet's test pipeline and data preprocessor make of the picture."""
    image = make_scene(2, background="textured", size=(121, 290)).image
    prepared = rigged_segmenter.preprocess(image, with_mirror=True)
    data = mmdet_test_pipeline(320)(dict(img=np.ascontiguousarray(image[:, :, ::-1]), img_id=0))
    batch = dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]])
    expected = rigged_segmenter.model.data_preprocessor(batch, False)["inputs"]

    assert prepared.batch.shape == (2, 3, 320, 320)
    torch.testing.assert_close(prepared.batch[:1], expected, rtol=0, atol=1e-5)
    h, w = prepared.letterbox.scaled_size
    # Item 1 is the mirrored picture: its content flipped, its padding where it was.
    torch.testing.assert_close(prepared.batch[1][:, :h, :w], prepared.batch[0][:, :h, :w].flip(-1))
    torch.testing.assert_close(prepared.batch[1][:, h:], prepared.batch[0][:, h:])


# ----------------------------------------------------------------------------- end to end


def test_det_size_changes_the_network_input(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(1, size=(200, 300)).image
    bigger = rigged_segmenter.with_options(det_size=448, max_instances=2)

    prepared = bigger.preprocess(image)
    outputs = bigger.forward(prepared.batch)

    assert prepared.batch.shape == (1, 3, 448, 448)
    assert outputs.mask_feat.shape[-2:] == (56, 56)
    assert [tuple(c.shape[-2:]) for c in outputs.cls_scores] == [(56, 56), (28, 28), (14, 14)]
    result = bigger.segment(image)
    assert result.image_size == (200, 300) and len(result) == 2


def test_flip_tta_merges_the_mirrored_view(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(2, size=(180, 320)).image
    with_tta = rigged_segmenter.with_options(tta=True, max_instances=8)

    instances = with_tta.segment(image)

    assert instances.notes and instances.notes[-1].startswith("Flip TTA: merged")
    assert len(instances) >= 1
    for (x0, y0, x1, y1), mask in zip(instances.boxes, instances.masks):
        assert mask.shape == (y1 - y0, x1 - x0) and 0.0 <= mask.min() and mask.max() <= 1.0
    assert (instances.scores > 0.3).all()


def test_segment_is_safe_from_several_threads(rigged_segmenter: RTMDetSegmenter) -> None:
    image = make_scene(2, size=(150, 200)).image
    segmenter = rigged_segmenter.with_options(max_instances=10)
    expected = segmenter.segment(image)
    results: list = [None] * 3
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            results[slot] = segmenter.segment(image)
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
    segmenter = rigged_segmenter.with_options(max_instances=5)
    with torch.no_grad():
        saved = head.rtm_cls[0].bias.clone()
        head.rtm_cls[0].bias.fill_(float("nan"))  # every stride-8 prior is NaN
    try:
        prepared = segmenter.preprocess(image)
        outputs = segmenter.forward(prepared.batch)
        instances = segmenter.decode(outputs, prepared.letterbox)
    finally:
        with torch.no_grad():
            head.rtm_cls[0].bias.copy_(saved)

    assert torch.isneginf(outputs.cls_scores[0]).all()
    assert all(torch.isfinite(t).all() for t in outputs.bbox_preds + outputs.kernel_preds)
    assert len(instances) == 5  # the stride-16 and stride-32 priors still work
    assert (instances.scores > 0.3).all()
    assert any("NaN/Inf for 1600 candidate(s)" in note for note in instances.notes)


def test_bad_inputs_and_options_are_value_errors(rigged_segmenter: RTMDetSegmenter) -> None:
    model = rigged_segmenter.model
    with pytest.raises(ValueError, match="det_size"):
        RTMDetSegmenter.from_model(model, det_size=100)
    with pytest.raises(ValueError, match="score_threshold"):
        RTMDetSegmenter.from_model(model, score_threshold=1.5)
    with pytest.raises(ValueError, match="device"):
        RTMDetSegmenter.from_model(model, device="tpu")
    with pytest.raises(ValueError, match="mask_floor"):
        DecodeSettings(mask_floor=0.0)
    with pytest.raises(ValueError, match="DecodeSettings"):
        rigged_segmenter.with_options(decode_settings={"score_threshold": 0.3})
    with pytest.raises(ValueError, match="uint8 RGB"):
        rigged_segmenter.segment(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        rigged_segmenter.segment(np.zeros((10, 10), np.uint8))
    assert isinstance(rigged_segmenter.segment(np.zeros((10, 10, 3), np.uint8)), Instances)
