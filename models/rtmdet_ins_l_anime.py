# RTMDet-Ins-L with one class ("character"): the architecture of rtmdetl_e60.ckpt
# (Hugging Face dreMaz/AnimeInstanceSegmentation), as a flat mmengine config (no _base_).
#
# inference/rtmdet.py uses this file when a checkpoint carries no usable embedded config; it is read, never
# executed, by inference/rtmdet_config.py (plain literals and dict(...) only).
# A model built from it has exactly the keys and shapes of the real file
# (../shared/checkpoints/rtmdetl_e60.keys.json; tests/test_rtmdet.py checks it).
#
# Differences from mmdet 3.3.0's rtmdet-ins_l_8xb32-300e_coco.py, all inference-neutral:
#   * num_classes = 1;
#   * BN instead of SyncBN (same parameters and buffers; SyncBN needs a process group);
#   * test_cfg of the anime model (nms_pre 1000, score_thr 0.05, NMS IoU 0.6, 100 per image);
#   * no training parts (train_cfg, dataloaders, optimiser, schedules, hooks).
# inference/rtmdet.py builds bbox_head as its subclass of RTMDetInsSepBNHead that guards
# against NaN/Inf at inference (same parameters).

model = dict(
    type='RTMDet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        # BGR input (bgr_to_rgb=False): the reference pipeline reads images with OpenCV.
        mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395],
        bgr_to_rgb=False,
        batch_augments=None),
    backbone=dict(
        type='CSPNeXt',
        arch='P5',
        expand_ratio=0.5,
        deepen_factor=1,
        widen_factor=1,
        channel_attention=True,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='SiLU', inplace=True)),
    neck=dict(
        type='CSPNeXtPAFPN',
        in_channels=[256, 512, 1024],
        out_channels=256,
        num_csp_blocks=3,
        expand_ratio=0.5,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='SiLU', inplace=True)),
    bbox_head=dict(
        type='RTMDetInsSepBNHead',
        num_classes=1,
        in_channels=256,
        stacked_convs=2,
        share_conv=True,
        pred_kernel_size=1,
        feat_channels=256,
        act_cfg=dict(type='SiLU', inplace=True),
        norm_cfg=dict(type='BN', requires_grad=True),
        anchor_generator=dict(
            type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(
            type='QualityFocalLoss',
            use_sigmoid=True,
            beta=2.0,
            loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_mask=dict(
            type='DiceLoss', loss_weight=2.0, eps=5e-6, reduction='mean')),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100,
        mask_thr_binary=0.5),
)

# Test-time input: long side resized to 640 keeping the aspect ratio (bilinear), padded
# at the bottom and right to 640x640 with 114; BGR, normalised by the data_preprocessor.
# inference/rtmdet.py implements these steps itself with mmcv's rounding (det_size replaces 640);
# tests/test_rtmdet.py runs this very pipeline through mmdet as the reference.
test_pipeline = [
    dict(type='LoadImageFromNDArray'),
    dict(type='Resize', scale=(640, 640), keep_ratio=True),
    dict(type='Pad', size=(640, 640), pad_val=dict(img=(114, 114, 114))),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
