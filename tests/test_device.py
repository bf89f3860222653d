"""The one device rule (inference.device) and that every model goes through it."""

from __future__ import annotations

import pytest
import torch

from inference.device import resolve_device, use_half_precision
from inference.errors import ModelUnavailable


def test_none_means_cuda_when_available_else_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected


def test_cpu_is_cpu_and_half_precision_only_on_cuda() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert use_half_precision(torch.device("cpu")) is False
    assert use_half_precision(torch.device("cuda")) is True


@pytest.mark.parametrize("bad", ["tpu", "CUDA", "cuda:", "cuda:x", "", 0, "gpu"])
def test_other_values_are_value_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="expected device None, 'cpu' or 'cuda', got"):
        resolve_device(bad)  # type: ignore[arg-type]


def _pretend_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cuda_without_cuda_is_model_unavailable_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_no_cuda(monkeypatch)
    with pytest.raises(ModelUnavailable, match=r"expected a CUDA device for --device cuda, but torch sees none.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ModelUnavailable, match="--device cpu"):
        resolve_device("cuda:0")


def test_rtmdet_with_cuda_without_cuda_is_model_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before inference.device, the detector moved itself to CUDA and died in torch's AssertionError."""
    from inference.rtmdet import RTMDetSegmenter, build_detector, load_model_config

    config = load_model_config()
    config["backbone"].update(deepen_factor=0.167, widen_factor=0.375)
    config["neck"].update(in_channels=[96, 192, 384], out_channels=96, num_csp_blocks=1)
    config["bbox_head"].update(in_channels=96, feat_channels=96)
    model = build_detector(config)
    _pretend_no_cuda(monkeypatch)
    with pytest.raises(ModelUnavailable, match="--device cpu"):
        RTMDetSegmenter.from_model(model, device="cuda")


def test_refiners_with_cuda_without_cuda_are_model_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.isnet import ISNet
    from inference.refine import AnimeSegRefiner, RefineNetISNet

    _pretend_no_cuda(monkeypatch)
    with pytest.raises(ModelUnavailable, match="--device cpu"):
        RefineNetISNet(ISNet(4, width_divisor=16), device="cuda")
    with pytest.raises(ModelUnavailable, match="--device cpu"):
        AnimeSegRefiner(ISNet(3, width_divisor=16), device="cuda")


def test_loading_the_detector_for_cuda_without_cuda_fails_before_reading_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """What `extract.py --backend rtmdet --device cuda` does: a clear ModelUnavailable, not an AssertionError."""
    from inference.rtmdet import RTMDetSegmenter

    _pretend_no_cuda(monkeypatch)
    missing = tmp_path / "rtmdetl_e60.ckpt"  # not even read
    with pytest.raises(ModelUnavailable, match="--device cpu"):
        RTMDetSegmenter(missing, device="cuda")
    with pytest.raises(ModelUnavailable, match="--device cpu"):
        RTMDetSegmenter.from_checkpoint(missing, device="cuda")
