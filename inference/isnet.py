"""IS-Net (the DIS "ISNetDIS" network), written for Nukki.

Two anime checkpoints use this architecture:

* ``refine_last.ckpt`` (CartoonSegmentation's mask refiner): 4 input channels
  (BGR in ``[0, 1]`` plus one instance-mask channel), state-dict keys unprefixed.
* ``isnetis.ckpt`` (SkyTNT's anime-seg): 3 input channels (RGB in ``[0, 1]``),
  keys under ``net.`` in a Lightning checkpoint.

The network is a U-Net of U-Nets: six encoder stages of "residual U blocks"
(RSU-L: a small U-Net of depth L whose output is added to its input
projection), five decoder stages, and one 3x3 side convolution per decoder level
that predicts a one-channel logit map. All side outputs are upsampled to the
input size. :meth:`ISNet.forward` returns the six logit maps, finest first; the
callers apply the sigmoid to the first one.

Sub-module names (``conv_in``, ``stageN``, ``rebnconvK``, ``conv_s1``,
``bn_s1``, ``sideN``) are fixed by the checkpoints: ``state_dict()`` of
``ISNet(in_channels=4)`` has exactly the keys and shapes of ``refine_last.ckpt``.

Geometry notes (matching the reference forward pass):

* ``conv_in`` has stride 2; the reference also computes a max-pool of its output
  but never uses it, so stage 1 runs at half the input resolution.
* Pooling is 2x2 max-pooling with ``ceil_mode=True``; upsampling is bilinear with
  ``align_corners=False`` to the exact size of the skip connection, so any input
  size works (multiples of 32 waste nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Channel widths of the full-size network: (input, middle, output) per stage.
_ENCODER = {
    "stage1": (64, 32, 64),
    "stage2": (64, 32, 128),
    "stage3": (128, 64, 256),
    "stage4": (256, 128, 512),
    "stage5": (512, 256, 512),
    "stage6": (512, 256, 512),
}
_DECODER = {
    "stage5d": (1024, 256, 512),
    "stage4d": (1024, 128, 256),
    "stage3d": (512, 64, 128),
    "stage2d": (256, 32, 64),
    "stage1d": (128, 16, 64),
}
#: Depth L of the residual U block of each stage; 0 means the dilated, pool-free "RSU-4F".
_DEPTH = {
    "stage1": 7, "stage2": 6, "stage3": 5, "stage4": 4, "stage5": 0, "stage6": 0,
    "stage5d": 0, "stage4d": 4, "stage3d": 5, "stage2d": 6, "stage1d": 7,
}
#: Which feature map each side output reads, and its channel count.
_SIDES = (("side1", "stage1d", 64), ("side2", "stage2d", 64), ("side3", "stage3d", 128),
          ("side4", "stage4d", 256), ("side5", "stage5d", 512), ("side6", "stage6", 512))

WIDTH_DIVISORS = (1, 2, 4, 8, 16)


def _resize_like(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``(N, C, h, w)`` ``source`` to the spatial size of ``target``."""
    if source.shape[2:] == target.shape[2:]:
        return source
    return F.interpolate(source, size=target.shape[2:], mode="bilinear", align_corners=False)


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling, rounding odd sizes up."""
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class ConvBnRelu(nn.Module):
    """3x3 convolution (optionally dilated), batch norm, ReLU.

    Attribute names ``conv_s1`` / ``bn_s1`` are the checkpoints' ("REBNCONV").
    """

    def __init__(self, in_channels: int, out_channels: int, *, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in, h, w)`` -> ``(N, out, h, w)``."""
        return F.relu(self.bn_s1(self.conv_s1(x)), inplace=True)


class ResidualUBlock(nn.Module):
    """RSU-L: a depth-L U-Net whose output is added to its input projection.

    With ``depth >= 4``: ``rebnconv1 .. rebnconv{L-1}`` run at halving
    resolutions, ``rebnconv{L}`` (dilation 2) at the coarsest one, then the
    decoder ``rebnconv{L-1}d .. rebnconv1d`` upsamples back, concatenating the
    matching encoder map each time.

    With ``depth == 0`` ("RSU-4F"): four levels at full resolution, growing the
    receptive field with dilations 1, 2, 4, 8 instead of pooling.

    Input ``(N, in_channels, h, w)``, output ``(N, out_channels, h, w)``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, *, depth: int) -> None:
        super().__init__()
        if depth != 0 and depth < 4:
            raise ValueError(f"expected depth 0 (dilated RSU-4F) or >= 4, got {depth}")
        self.dilated = depth == 0
        self.levels = 4 if self.dilated else depth
        levels = self.levels
        dilations = [1, 2, 4, 8] if self.dilated else [1] * (levels - 1) + [2]
        # Registration order matters only for state_dict() order, which then equals the files'.
        self.rebnconvin = ConvBnRelu(in_channels, out_channels)
        for level in range(1, levels + 1):
            source = out_channels if level == 1 else mid_channels
            self.add_module(f"rebnconv{level}", ConvBnRelu(source, mid_channels, dilation=dilations[level - 1]))
        for level in range(levels - 1, 0, -1):
            target = out_channels if level == 1 else mid_channels
            self.add_module(f"rebnconv{level}d", ConvBnRelu(2 * mid_channels, target, dilation=dilations[level - 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in, h, w)`` -> ``(N, out, h, w)``."""
        projected = self.rebnconvin(x)
        skips = []
        hx = projected
        for level in range(1, self.levels):
            hx = getattr(self, f"rebnconv{level}")(hx)
            skips.append(hx)
            if not self.dilated and level < self.levels - 1:
                hx = _halve(hx)
        hx = getattr(self, f"rebnconv{self.levels}")(hx)
        for level in range(self.levels - 1, 0, -1):
            skip = skips[level - 1]
            hx = getattr(self, f"rebnconv{level}d")(torch.cat((_resize_like(hx, skip), skip), dim=1))
        return hx + projected


class ISNet(nn.Module):
    """IS-Net segmentation network.

    Args:
        in_channels: input channels (4 for refine_last.ckpt, 3 for isnetis.ckpt).
        width_divisor: divides every channel width; 1 is the full-size network
            whose state dict matches the checkpoints, larger values (2, 4, 8, 16)
            give small networks of the same structure for tests.

    ``forward``: ``(N, in_channels, H, W)`` float in, list of six ``(N, 1, H, W)``
    logit maps out (finest first; apply ``sigmoid`` to get probabilities).
    """

    def __init__(self, in_channels: int = 3, *, width_divisor: int = 1) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"expected a positive number of input channels, got {in_channels!r}")
        if width_divisor not in WIDTH_DIVISORS:
            raise ValueError(f"expected width_divisor in {WIDTH_DIVISORS}, got {width_divisor!r}")
        self.in_channels = in_channels
        self.width_divisor = width_divisor

        def width(channels: int) -> int:
            return channels // width_divisor

        self.conv_in = nn.Conv2d(in_channels, width(64), 3, stride=2, padding=1)
        for name, (cin, cmid, cout) in {**_ENCODER, **_DECODER}.items():
            self.add_module(name, ResidualUBlock(width(cin), width(cmid), width(cout), depth=_DEPTH[name]))
        for side, _, channels in _SIDES:
            self.add_module(side, nn.Conv2d(width(channels), 1, 3, padding=1))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a (N, {self.in_channels}, H, W) tensor, got shape {tuple(x.shape)}")

    def _decode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run encoder and decoder; return the feature map of every stage by name."""
        features: dict[str, torch.Tensor] = {}
        hx = self.conv_in(x)
        for index in range(1, 7):
            name = f"stage{index}"
            hx = getattr(self, name)(hx)
            features[name] = hx
            if index < 6:
                hx = _halve(hx)
        for index in range(5, 0, -1):
            skip = features[f"stage{index}"]
            hx = getattr(self, f"stage{index}d")(torch.cat((_resize_like(hx, skip), skip), dim=1))
            features[f"stage{index}d"] = hx
        return features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, in_channels, H, W)`` -> six ``(N, 1, H, W)`` logit maps, finest (side1) first."""
        self._check_input(x)
        features = self._decode(x)
        return [_resize_like(getattr(self, side)(features[source]), x) for side, source, _ in _SIDES]

    def full_resolution_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Only the first side output: ``(N, in_channels, H, W)`` -> ``(N, 1, H, W)`` logits.

        Equal to ``forward(x)[0]`` without computing the five coarser side outputs.
        """
        self._check_input(x)
        features = self._decode(x)
        return _resize_like(self.side1(features["stage1d"]), x)
