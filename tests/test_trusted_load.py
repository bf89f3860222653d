"""Loading the real isnetis.ckpt format: a Lightning checkpoint whose pickle holds objects beyond tensors.

SkyTNT's ``isnetis.ckpt`` is written by PyTorch Lightning: besides ``state_dict``
(``net.*`` and the training-only ``gt_encoder.*``) its pickle holds
``hyper_parameters`` as Lightning's ``AttributeDict``, loop and callback state,
and the Lightning version. ``torch.load(weights_only=True)`` refuses such a file.
Nukki must refuse it too unless the user trusts it (``--trust-checkpoint``) or
its sha256 was recorded by the download command in ``weights.lock.json``.

The file here is written with a stand-in ``pytorch_lightning.utilities.parsing.AttributeDict``
module that exists only while saving, so loading meets a class this environment
lacks, as users without Lightning do.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import pytest
import torch

from inference import weights
from inference.isnet import ISNet
from inference.refine import AnimeSegRefiner
from inference.weights import CheckpointError

_LIGHTNING_MODULE = "pytorch_lightning.utilities.parsing"


def write_lightning_isnetis(path: Path, *, epoch: int = 29) -> dict[str, torch.Tensor]:
    """An isnetis-format file (small widths): Lightning's layout and pickled non-tensor objects.

    Returns the network's state dict (what a correct load must give back).
    """
    torch.manual_seed(3)
    net = ISNet(3, width_divisor=16)
    gt_encoder = ISNet(1, width_divisor=16)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"gt_encoder.{k}": v for k, v in gt_encoder.state_dict().items()})

    module = types.ModuleType(_LIGHTNING_MODULE)

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = _LIGHTNING_MODULE
    AttributeDict.__qualname__ = "AttributeDict"
    module.AttributeDict = AttributeDict
    saved = {name: sys.modules.get(name) for name in ("pytorch_lightning", "pytorch_lightning.utilities", _LIGHTNING_MODULE)}
    for name in saved:
        sys.modules[name] = module if name == _LIGHTNING_MODULE else types.ModuleType(name)
    try:
        checkpoint = {
            "epoch": epoch,
            "global_step": 123456,
            "pytorch-lightning_version": "1.7.7",
            "state_dict": state,
            "hyper_parameters": AttributeDict(net_name="isnet_is", img_size=1024, lr=1e-4),
            "hparams_name": "kwargs",
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 29}}}},
            "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.97), "monitor": "val/f1"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}],
            "lr_schedulers": [],
            "cli_arguments": argparse.Namespace(net="isnet_is", img_size=1024),
        }
        torch.save(checkpoint, path)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return net.state_dict()


def _small_refiner_from(path: Path, *, trust: bool) -> AnimeSegRefiner:
    """Load through the refiner's own steps (public weights functions), into a small network."""
    checkpoint = weights.load_checkpoint(path, trust=trust)
    state = weights.extract_state_dict(
        checkpoint, strip_prefix=AnimeSegRefiner._strip_prefix, drop_prefixes=AnimeSegRefiner._drop_prefixes
    )
    model = ISNet(3, width_divisor=16)
    weights.load_weights_strict(model, state, source=str(path))
    return AnimeSegRefiner(model, device="cpu")


@pytest.fixture()
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(weights.MODELS_DIR_ENV, str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def test_the_file_really_needs_full_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "isnetis.ckpt"
    write_lightning_isnetis(path)
    assert _LIGHTNING_MODULE not in sys.modules
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        torch.load(path, map_location="cpu", weights_only=True)


def test_refused_without_trust(models_dir: Path) -> None:
    path = models_dir / "isnetis.ckpt"
    write_lightning_isnetis(path)

    with pytest.raises(CheckpointError, match=r"Python objects besides tensors.*--trust-checkpoint"):
        weights.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="Python objects besides tensors"):
        AnimeSegRefiner.from_checkpoint(path, device="cpu")


def test_loaded_with_trust(models_dir: Path) -> None:
    path = models_dir / "isnetis.ckpt"
    expected = write_lightning_isnetis(path)

    checkpoint = weights.load_checkpoint(path, trust=True)
    refiner = _small_refiner_from(path, trust=True)

    assert checkpoint["epoch"] == 29 and checkpoint["hyper_parameters"]["net_name"] == "isnet_is"
    loaded = refiner.model.state_dict()
    assert list(loaded) == list(expected)
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_loaded_when_its_sha256_is_recorded_in_the_lock_file(models_dir: Path) -> None:
    path = models_dir / "isnetis.ckpt"
    expected = write_lightning_isnetis(path)
    weights.record_download("animeseg", path, size=path.stat().st_size, sha256=weights.file_sha256(path),
                            source="test")

    refiner = _small_refiner_from(path, trust=False)

    loaded = refiner.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    # A different file with the same name is not covered by that hash.
    write_lightning_isnetis(path, epoch=30)
    with pytest.raises(CheckpointError, match="Python objects besides tensors"):
        weights.load_checkpoint(path)
