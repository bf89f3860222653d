"""SAM 2.1 helpers for tests: checkpoints in the real format, and networks whose outputs a test controls.

* :func:`write_test_sam2_checkpoint` puts a SAM 2.1 tiny checkpoint (``{"model": state_dict}``,
  the format Meta publishes, about 156 MB) where the registry expects it in a models folder,
  so ``sam2`` counts as installed and ``--prompt-model auto`` picks it. The weights are
  random, except that with ``colour=(r, g, b)`` a few layers are set by hand so the real
  network cuts out exactly the pixels within ``tolerance`` grey levels of that colour in
  every channel (wherever the click is): a browser or CLI test can click a red ball and
  know which pixels come back. Written once per process and hard-linked (or copied) after.
* :class:`ScriptedNetwork` stands in for the network inside :class:`Sam2Prompter`: it records
  every embed and decode call and answers with logits the test chose (or a disk around
  the first include point, mapped back through the same geometry), in microseconds.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from inference.registry import model_spec
from inference.sam2_prompt import (
    PIXEL_MEAN,
    PIXEL_STD,
    DecoderOutput,
    ImageFeatures,
    Sam2Prompter,
    build_sam2_model,
)

#: Seed of the random weights, so every test checkpoint is the same file.
SEED = 20241211

_WRITTEN: dict[tuple, Path] = {}
_WRITE_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------- checkpoints


def random_state_dict(variant: str = "tiny", *, seed: int = SEED) -> dict[str, torch.Tensor]:
    """State dict of the ``variant`` network built by the ``sam2`` package's own config, random weights."""
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in build_sam2_model(variant).state_dict().items()}


def colour_picking_state_dict(
    colour: tuple[int, int, int], *, tolerance: int = 24, seed: int = SEED
) -> dict[str, torch.Tensor]:
    """Tiny-variant weights with which the real SAM 2.1 network segments one colour.

    Random weights, except for the path from the input to the decoder's highest-resolution
    features and the decoder heads:

    * the patch embedding's centre tap recovers each pixel's R, G, B in grey levels (undoing
      the input normalisation); the first Hiera block passes it through (its attention and MLP
      outputs are zero) with no position embedding; the neck's level-0 convolution and the
      decoder's ``conv_s0`` turn it into six hinge features ``(|c - colour_c| - tolerance) / 8``
      and a constant;
    * the decoder adds nothing from the low-resolution path (last upscaling convolution zero),
      and every mask token's hypernetwork outputs the same fixed vector, so each mask's logit
      is ``6 - 4 * sum_c GELU(hinge_c)``: about +6 within the tolerance, below 0 once a channel
      is more than about 12 levels beyond it;
    * the IoU head predicts ``sigmoid([0, 2, 1, 0])`` (multimask: the first of the three wins)
      and the object head says "an object is there".
    """
    if len(colour) != 3 or not all(0 <= int(c) <= 255 for c in colour):
        raise ValueError(f"expected colour as (r, g, b) in 0..255, got {colour!r}")
    state = random_state_dict("tiny", seed=seed)
    trunk, decoder = "image_encoder.trunk.", "sam_mask_decoder."
    zero = ("pos_embed", "pos_embed_window", "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias",
            "blocks.0.mlp.layers.1.weight", "blocks.0.mlp.layers.1.bias")
    for name in zero:
        state[trunk + name].zero_()

    patch_w, patch_b = state[trunk + "patch_embed.proj.weight"], state[trunk + "patch_embed.proj.bias"]
    patch_w.zero_()
    patch_b.zero_()
    centre = patch_w.shape[-1] // 2  # kernel 7, stride 4, padding 3: the centre tap is the pixel itself
    for c in range(3):  # grey level = 255 * (normalised * std + mean)
        patch_w[c, c, centre, centre] = 255.0 * PIXEL_STD[c]
        patch_b[c] = 255.0 * PIXEL_MEAN[c]

    neck_w, neck_b = state["image_encoder.neck.convs.3.conv.weight"], state["image_encoder.neck.convs.3.conv.bias"]
    neck_w.zero_()
    neck_b.zero_()
    for c in range(3):
        neck_w[c, c, 0, 0] = 1.0

    s0_w, s0_b = state[decoder + "conv_s0.weight"], state[decoder + "conv_s0.bias"]
    s0_w.zero_()
    s0_b.zero_()
    slope = 1.0 / 8.0
    for c in range(3):
        above, below = 2 * c, 2 * c + 1
        s0_w[above, c, 0, 0] = slope  # (value - colour - tolerance) / 8
        s0_b[above] = -slope * (colour[c] + tolerance)
        s0_w[below, c, 0, 0] = -slope  # (colour - tolerance - value) / 8
        s0_b[below] = slope * (colour[c] - tolerance)
    s0_b[6] = 1.0  # constant feature: GELU(1)
    gelu_one = 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))

    state[decoder + "output_upscaling.3.weight"].zero_()
    state[decoder + "output_upscaling.3.bias"].zero_()
    hyper = torch.zeros(state[decoder + "output_hypernetworks_mlps.0.layers.2.bias"].shape)
    hyper[:6] = -4.0
    hyper[6] = 6.0 / gelu_one
    for i in range(4):
        state[decoder + f"output_hypernetworks_mlps.{i}.layers.2.weight"].zero_()
        state[decoder + f"output_hypernetworks_mlps.{i}.layers.2.bias"].copy_(hyper)
    state[decoder + "iou_prediction_head.layers.2.weight"].zero_()
    state[decoder + "iou_prediction_head.layers.2.bias"].copy_(torch.tensor([0.0, 2.0, 1.0, 0.0]))
    state[decoder + "pred_obj_score_head.layers.2.weight"].zero_()
    state[decoder + "pred_obj_score_head.layers.2.bias"].fill_(10.0)
    return state


def save_sam2_checkpoint(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write ``{"model": state_dict}`` with ``torch.save`` (the format of Meta's ``sam2.1_hiera_*.pt``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict}, path)
    return path


def write_test_sam2_checkpoint(
    models_dir: Path, *, colour: tuple[int, int, int] | None = None, tolerance: int = 24
) -> Path:
    """Put a SAM 2.1 tiny test checkpoint where the registry's ``sam2`` entry expects it.

    Args:
        models_dir: the models folder (what ``NUKKI_MODELS_DIR`` names in the test).
        colour: ``None`` for random weights; ``(r, g, b)`` for weights that segment the pixels
            within ``tolerance`` of that colour in every channel (:func:`colour_picking_state_dict`).
        tolerance: grey levels, with ``colour``.

    Returns:
        The checkpoint's path (``models_dir / "sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt"``). Its
        presence is what makes ``sam2`` count as installed; no lock entry is written, so it
        shows as "Installed (not verified)" (it loads with ``weights_only=True``, no trust needed).
    """
    target = Path(models_dir) / model_spec("sam2").relative_path
    key = (None, None) if colour is None else (tuple(int(c) for c in colour), int(tolerance))
    with _WRITE_LOCK:
        source = _WRITTEN.get(key)
        if source is None or not source.is_file():
            folder = Path(tempfile.mkdtemp(prefix=f"nukki-sam2-test-{os.getpid()}-"))
            atexit.register(shutil.rmtree, folder, True)  # hard links made from it stay valid
            state = random_state_dict() if colour is None else colour_picking_state_dict(colour, tolerance=tolerance)
            source = save_sam2_checkpoint(folder / "sam2.1_hiera_tiny.pt", state)
            _WRITTEN[key] = source
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


# ---------------------------------------------------------------------------------------------- scripted network


@dataclass
class DecodeCall:
    """One decode call as :class:`ScriptedNetwork` saw it."""

    coords: torch.Tensor  # (N, 2) float32, model pixel-index space (before the encoder's + 0.5)
    labels: list[int]
    multimask: bool
    features: ImageFeatures


@dataclass
class ScriptedNetwork:
    """A stand-in SAM 2 network: records calls and answers what the test scripted.

    Attributes:
        respond: ``respond(call) -> (logits (M, h, w), iou (M,))``; by default a disk of
            radius ``disk_radius`` (input pixels) around the first include point (logit +8
            inside, -8 outside) at the decoder's 4x-downsampled resolution, with IoU
            ``0.9`` for one mask or ``(0.2, 0.9, 0.5)`` for three (the disk is repeated).
        object_logit: what the object head says (negative: nothing there).
        embeds: the ``(1, 3, S, S)`` inputs embedded, in order.
        decodes: every :class:`DecodeCall`.
    """

    input_size: int = 1024
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    respond: Callable[[DecodeCall], tuple[torch.Tensor, torch.Tensor]] | None = None
    object_logit: float = 5.0
    disk_radius: float = 64.0
    embeds: list[torch.Tensor] = field(default_factory=list)
    decodes: list[DecodeCall] = field(default_factory=list)

    def embed(self, pixels: torch.Tensor) -> ImageFeatures:
        self.embeds.append(pixels)
        marker = torch.full((1, 1, 1, 1), float(len(self.embeds)))
        return ImageFeatures(image_embed=marker, high_res=())

    def decode(
        self, features: ImageFeatures, coords: torch.Tensor, labels: torch.Tensor, *, multimask: bool
    ) -> DecoderOutput:
        call = DecodeCall(coords[0].clone(), [int(v) for v in labels[0]], multimask, features)
        self.decodes.append(call)
        logits, iou = (self.respond or self._disk)(call)
        return DecoderOutput(logits=logits.float(), iou=iou.float(), object_logit=self.object_logit)

    def _disk(self, call: DecodeCall) -> tuple[torch.Tensor, torch.Tensor]:
        side = self.input_size // 4
        include = [i for i, label in enumerate(call.labels) if label == 1]
        cx, cy = (call.coords[include[0]] + 0.5).tolist()  # the encoder's pixel-centre shift
        # decoder cell (i, j) covers input pixels [4j, 4j + 4): its centre is 4j + 2
        centres = torch.arange(side, dtype=torch.float32) * 4.0 + 2.0
        inside = (centres[None, :] - cx) ** 2 + (centres[:, None] - cy) ** 2 <= self.disk_radius**2
        disk = torch.where(inside, 8.0, -8.0)
        if call.multimask:
            return disk.expand(3, side, side).clone(), torch.tensor([0.2, 0.9, 0.5])
        return disk[None].clone(), torch.tensor([0.9])


def scripted_prompter(network: ScriptedNetwork | None = None, *, cache_size: int = 4) -> Sam2Prompter:
    """A :class:`Sam2Prompter` around a :class:`ScriptedNetwork` (a fresh default one if ``None``)."""
    return Sam2Prompter(network if network is not None else ScriptedNetwork(), cache_size=cache_size)
