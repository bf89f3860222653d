"""Random-weight RTMDet-Ins detectors that predict plausible instances (for tests and ``bench/detect.py``).

Not part of the engine: a detector with random weights predicts nothing useful,
so tests and benchmarks rig its output convolutions. Models are built by
:func:`inference.rtmdet.build_detector`; configs come from
:mod:`inference.rtmdet_config`.
"""

from __future__ import annotations

import torch
from torch import nn

from inference.rtmdet_config import DEFAULT_CONFIG_PATH, load_model_config, read_config_literals

#: RTMDet-Ins-tiny widths, for fast end-to-end forwards.
TINY = dict(deepen=0.167, widen=0.375, neck_in=[96, 192, 384], width=96, csp=1)
#: RTMDet-Ins-L, the real model.
LARGE = dict(deepen=1, widen=1, neck_in=[256, 512, 1024], width=256, csp=3)


def reference_test_pipeline_steps(det_size: int) -> list[dict]:
    """mmdet's test-pipeline steps of the project config at ``det_size`` (as CartoonSegmentation's
    ``set_detect_size`` sets them), with mmdet's scope on each type, ready for ``Compose`` or ``model.cfg``."""
    steps = []
    for step in read_config_literals(DEFAULT_CONFIG_PATH.read_text())["test_pipeline"]:
        step = dict(step)
        if step["type"] == "Resize":
            step["scale"] = (det_size, det_size)
        if step["type"] == "Pad":
            step["size"] = (det_size, det_size)
        step["type"] = "mmdet." + step["type"]
        steps.append(step)
    return steps


def model_config(size: dict = TINY) -> dict:
    """The project's RTMDet-Ins config with the widths of ``size`` (:data:`TINY` or :data:`LARGE`)."""
    config = load_model_config()
    config["backbone"].update(deepen_factor=size["deepen"], widen_factor=size["widen"])
    config["neck"].update(in_channels=size["neck_in"], out_channels=size["width"], num_csp_blocks=size["csp"])
    config["bbox_head"].update(in_channels=size["width"], feat_channels=size["width"])
    return config


def set_fixed_box_predictions(
    model: nn.Module,
    *,
    box_size: tuple[float, float],
    score_logit: float = 2.0,
    score_spread: float = 1.0,
    mask_sharpness: float = 8.0,
    mask_reach: float = 1.0,
    box_noise: float = 0.0,
    kernel_noise: float = 0.0,
    calibration_size: int = 256,
    padding_logit: float | None = None,
    seed: int = 0,
) -> None:
    """Make a randomly initialised detector predict plausible instances.

    Afterwards every prior predicts:

    * a box of about ``box_size = (width, height)`` canvas pixels centred on its
      point (``box_noise`` > 0 adds picture-dependent random size changes);
    * a class logit that still depends on the picture (the random cls weights,
      rescaled on a seeded noise image so that the logits have mean
      ``score_logit`` and standard deviation ``score_spread``): scores are
      distinct, so NMS and top-k behave as on a real picture;
    * a diamond-shaped mask centred on its point whose tips lie ``mask_reach``
      half-box-sizes away (``> 1``: the mask reaches beyond its box):
      mask logit ``mask_sharpness * (1 - |dx| / (reach * width / 2) - |dy| / (reach * height / 2))``;
      ``kernel_noise`` > 0 adds random dynamic-conv weights, so masks also follow
      the mask prototypes (shaped by the picture).

    With ``padding_logit``, each level's class bias is then shifted so that a
    canvas of letterbox padding (grey 114) has that mean logit: far from the
    picture no instance passes a threshold above ``sigmoid(padding_logit)``,
    near and on the picture the scores still vary with its content.
    """
    head = model.bbox_head
    width, height = box_size
    prototypes = head.num_prototypes
    generator = torch.Generator().manual_seed(seed)
    cls_statistics: dict[int, tuple[float, float]] = {}
    hooks = [
        cls.register_forward_hook(
            lambda _module, _inputs, output, level=level: cls_statistics.__setitem__(
                level, (float(output.float().mean()), float(output.float().std()))
            )
        )
        for level, cls in enumerate(head.rtm_cls)
    ]
    noise = torch.randn(1, 3, calibration_size, calibration_size, generator=torch.Generator().manual_seed(0))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            head(model.extract_feat(noise.to(device)))
    finally:
        for hook in hooks:
            hook.remove()
    reach_x, reach_y = mask_reach * width / 2, mask_reach * height / 2
    with torch.no_grad():
        for level, (reg, cls, kernel) in enumerate(zip(head.rtm_reg, head.rtm_cls, head.rtm_kernel)):
            stride = float(head.prior_generator.strides[level][0])
            if box_noise > 0:
                reg.weight.normal_(0.0, box_noise, generator=generator)
            else:
                reg.weight.zero_()
            reg.bias.copy_(torch.tensor([width / 2, height / 2, width / 2, height / 2]) / stride)
            mean, std = cls_statistics[level]
            gain = score_spread / max(std, 1e-12)
            cls.weight.mul_(gain)
            cls.bias.copy_(score_logit - gain * (mean - cls.bias))
            # Dynamic convs: layer 0 gives (rx, -rx, ry, -ry), layer 1 passes them through
            # (ReLU makes |rx| and |ry| out of the pairs), layer 2 sums them into the diamond.
            layer0 = torch.zeros(head.dyconv_channels, prototypes + 2)
            layer0[0, 0], layer0[1, 0], layer0[2, 1], layer0[3, 1] = 1.0, -1.0, 1.0, -1.0
            layer1 = torch.eye(head.dyconv_channels)
            layer2 = torch.zeros(1, head.dyconv_channels)
            unit = stride * 8  # relative coordinates are in units of 8 strides
            layer2[0, :2] = -mask_sharpness * unit / reach_x
            layer2[0, 2:4] = -mask_sharpness * unit / reach_y
            if kernel_noise > 0:
                # Prototype channels feed the spare dynamic channels 4.., which add to the diamond.
                layer0[4:, 2:] = torch.randn(head.dyconv_channels - 4, prototypes, generator=generator)
                layer2[0, 4:] = kernel_noise
            zeros = torch.zeros(head.dyconv_channels)
            biases = [zeros, zeros, torch.tensor([mask_sharpness])]
            params = torch.cat([layer0.flatten(), layer1.flatten(), layer2.flatten(), *biases])
            if params.numel() != head.num_gen_params:
                raise ValueError(f"expected a head with 3 dynamic conv layers, got {head.num_gen_params} parameters")
            kernel.weight.zero_()
            kernel.bias.copy_(params)
    if padding_logit is not None:
        _shift_class_bias_on_padding(model, padding_logit, calibration_size)


def _shift_class_bias_on_padding(model: nn.Module, padding_logit: float, size: int) -> None:
    head = model.bbox_head
    preprocessor = model.data_preprocessor
    grey = torch.full((1, 3, size, size), 114.0)
    grey = (grey - preprocessor.mean.cpu().reshape(1, 3, 1, 1)) / preprocessor.std.cpu().reshape(1, 3, 1, 1)
    device = next(model.parameters()).device
    with torch.no_grad():
        cls_scores = head(model.extract_feat(grey.to(device)))[0]
        for cls, logits in zip(head.rtm_cls, cls_scores):
            cls.bias.add_(padding_logit - float(logits.float().mean()))
