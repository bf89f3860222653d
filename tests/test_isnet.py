"""IS-Net: the full-size network has exactly the state-dict layout of the real checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inference.isnet import ISNet

MANIFESTS = Path("/work/shared/checkpoints")
REPO_MANIFESTS = Path(__file__).resolve().parent.parent / "shared" / "checkpoints"


def _manifest(name: str) -> dict[str, list[int]]:
    for folder in (REPO_MANIFESTS, MANIFESTS):
        path = folder / f"{name}.keys.json"
        if path.is_file():
            return json.loads(path.read_text())
    pytest.skip(f"{name}.keys.json is not available on this machine")


def _layout(module: torch.nn.Module, prefix: str = "") -> list[tuple[str, list[int]]]:
    return [(prefix + key, list(value.shape)) for key, value in module.state_dict().items()]


@pytest.fixture(scope="module")
def refine_net() -> ISNet:
    return ISNet(4).eval()


@pytest.fixture(scope="module")
def animeseg_net() -> ISNet:
    return ISNet(3).eval()


def test_full_size_4_channel_layout_equals_refine_last_manifest(refine_net: ISNet) -> None:
    manifest = _manifest("refine_last")
    assert len(manifest) == 798
    # Same keys, same shapes, same order as the file.
    assert _layout(refine_net) == [(key, shape) for key, shape in manifest.items()]


def test_full_size_3_channel_layout_equals_isnetis_net_part(animeseg_net: ISNet) -> None:
    manifest = _manifest("isnetis")
    net_part = [(key, shape) for key, shape in manifest.items() if key.startswith("net.")]
    ignored = [key for key in manifest if not key.startswith("net.")]
    assert ignored and all(key.startswith("gt_encoder.") for key in ignored)
    assert _layout(animeseg_net, prefix="net.") == net_part


def test_full_size_sizes_without_manifest(refine_net: ISNet, animeseg_net: ISNet) -> None:
    # Facts of the real files, checked even where the manifests are not available.
    assert len(refine_net.state_dict()) == 798
    assert sum(p.numel() for p in refine_net.parameters()) == 44_047_366
    assert sum(p.numel() for p in animeseg_net.parameters()) == 44_047_366 - 64 * 3 * 3


def test_first_input_layer_takes_the_requested_channels(refine_net: ISNet, animeseg_net: ISNet) -> None:
    assert refine_net.conv_in.weight.shape == (64, 4, 3, 3)
    assert animeseg_net.conv_in.weight.shape == (64, 3, 3, 3)
    assert refine_net.in_channels == 4 and animeseg_net.in_channels == 3


def test_full_size_forward_on_tiny_input_gives_six_full_resolution_logit_maps(refine_net: ISNet) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 4, 32, 48)
    with torch.inference_mode():
        outputs = refine_net(x)
        first_only = refine_net.full_resolution_logits(x)
    assert len(outputs) == 6
    assert all(tuple(o.shape) == (2, 1, 32, 48) for o in outputs)
    assert torch.equal(first_only, outputs[0])
    # Logits, not probabilities: the sigmoid is the caller's job.
    assert all(torch.isfinite(o).all() for o in outputs)
    assert any((o < 0).any() or (o > 1).any() for o in outputs)


@pytest.mark.parametrize("size", [(33, 47), (64, 64), (1, 5)])
def test_small_network_handles_odd_sizes(size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    net = ISNet(3, width_divisor=8).eval()
    with torch.inference_mode():
        outputs = net(torch.rand(1, 3, *size))
    assert [tuple(o.shape) for o in outputs] == [(1, 1, *size)] * 6


def test_small_network_has_the_full_structure_at_reduced_width() -> None:
    full = ISNet(4)
    small = ISNet(4, width_divisor=4)
    assert list(small.state_dict()) == list(full.state_dict())
    assert small.conv_in.weight.shape == (16, 4, 3, 3)
    assert small.side1.weight.shape == (1, 16, 3, 3)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 10


def test_batch_items_are_independent_in_eval_mode() -> None:
    torch.manual_seed(2)
    net = ISNet(4, width_divisor=8).eval()
    x = torch.rand(3, 4, 48, 40)
    with torch.inference_mode():
        together = net.full_resolution_logits(x)
        alone = torch.cat([net.full_resolution_logits(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_output_depends_on_the_mask_channel() -> None:
    torch.manual_seed(3)
    net = ISNet(4, width_divisor=8).eval()
    x = torch.rand(1, 4, 32, 32)
    y = x.clone()
    y[:, 3] = 0
    with torch.inference_mode():
        assert not torch.allclose(net.full_resolution_logits(x), net.full_resolution_logits(y))


def test_invalid_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="width_divisor"):
        ISNet(3, width_divisor=3)
    with pytest.raises(ValueError, match="input channels"):
        ISNet(0)
    net = ISNet(4, width_divisor=16)
    with pytest.raises(ValueError, match=r"expected a \(N, 4, H, W\) tensor, got shape \(1, 3, 8, 8\)"):
        net(torch.zeros(1, 3, 8, 8))
