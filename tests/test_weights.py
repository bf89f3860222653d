"""Weight registry, safe checkpoint loading, the download/status command line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.hf_api import RepoFile

from inference import registry, weight_install, weights
from inference.isnet import ISNet
from inference.refine import AnimeSegRefiner, RefineNetISNet
from inference.weights import CheckpointError

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_FOLDERS = (REPO_ROOT / "shared" / "checkpoints", Path("/work/shared/checkpoints"))


class TrainingHyperParameters:
    """A non-tensor object like the ones Lightning checkpoints hold (importable, so trusted loads work)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv(weights.MODELS_DIR_ENV, str(folder))
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _small_state(in_channels: int) -> OrderedDict[str, torch.Tensor]:
    torch.manual_seed(in_channels)
    return ISNet(in_channels, width_divisor=16).state_dict()


def _lightning_checkpoint(hyper_parameters: object, *, in_channels: int = 3) -> dict[str, object]:
    state = OrderedDict((f"net.{k}", v) for k, v in _small_state(in_channels).items())
    state["gt_encoder.conv_in.conv.weight"] = torch.ones(16, 1, 3, 3)
    state["gt_encoder.side1.bias"] = torch.ones(1)
    return {
        "epoch": 7,
        "global_step": 1234,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": state,
        "hyper_parameters": hyper_parameters,
    }


def _write_untrusted(path: Path) -> Path:
    """A Lightning-style checkpoint that weights_only=True refuses (it holds a Python object)."""
    torch.save(_lightning_checkpoint(TrainingHyperParameters(0.001)), path)
    return path


# ----------------------------------------------------------------------------------------- registry


def test_paths_follow_the_models_folder_override(models: Path) -> None:
    assert weights.models_dir() == models
    assert weights.weight_path("rtmdet") == models / "AnimeInstanceSegmentation" / "rtmdetl_e60.ckpt"
    assert weights.weight_path("refine") == models / "AnimeInstanceSegmentation" / "refine_last.ckpt"
    assert weights.weight_path("animeseg") == models / "anime-seg" / "isnetis.ckpt"
    assert weights.lock_path() == models / "weights.lock.json"


def test_default_models_folder_is_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(weights.MODELS_DIR_ENV, raising=False)
    assert weights.models_dir() == REPO_ROOT / "models"


def test_weights_follow_the_registry(models: Path) -> None:
    assert {spec.key: (spec.repo_id, spec.filename) for spec in registry.MODELS} == {
        "rtmdet": ("dreMaz/AnimeInstanceSegmentation", "rtmdetl_e60.ckpt"),
        "refine": ("dreMaz/AnimeInstanceSegmentation", "refine_last.ckpt"),
        "animeseg": ("skytnt/anime-seg", "isnetis.ckpt"),
        "sam2": ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt"),
        "sam2-small": ("facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt"),
        "sam2-base-plus": ("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt"),
    }
    assert weights.weight_path("sam2") == models / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt"
    assert "python -m inference.weights download all" in weights.INSTALL_HINT
    assert "\n" not in weights.INSTALL_HINT
    assert weights.install_hint("sam2").startswith("run `python -m inference.weights download sam2`")


def test_unknown_key_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"expected a weight key in \('rtmdet', 'refine', 'animeseg', 'sam2', .*got 'yolo'"):
        weights.weight_path("yolo")


def test_is_installed_needs_real_content(models: Path) -> None:
    path = weights.weight_path("refine")
    assert not weights.is_installed("refine")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert not weights.is_installed("refine")
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 176000000\n")
    assert not weights.is_installed("refine")
    torch.save(_small_state(4), path)
    assert weights.is_installed("refine")
    assert not weights.is_installed("rtmdet")


# ----------------------------------------------------------------------------------------- loading


def test_bare_state_dict_loads_without_unpickling(tmp_path: Path) -> None:
    state = _small_state(4)
    path = tmp_path / "refine_last.ckpt"
    torch.save(state, path)
    checkpoint = weights.load_checkpoint(path)
    extracted = weights.extract_state_dict(checkpoint)
    assert list(extracted) == list(state)
    model = ISNet(4, width_divisor=16)
    weights.load_weights_strict(model, extracted, source=str(path))
    assert torch.equal(model.conv_in.weight, state["conv_in.weight"])


def test_lightning_checkpoint_of_plain_values_loads_and_drops_the_training_encoder(tmp_path: Path) -> None:
    path = tmp_path / "isnetis.ckpt"
    torch.save(_lightning_checkpoint({"net_name": "isnet_is", "img_size": 1024, "lr": 1e-4}), path)
    checkpoint = weights.load_checkpoint(path)
    assert checkpoint["epoch"] == 7
    extracted = weights.extract_state_dict(checkpoint, strip_prefix="net.", drop_prefixes=("gt_encoder.",))
    assert list(extracted) == list(_small_state(3))
    assert not any(k.startswith(("net.", "gt_encoder.")) for k in extracted)


def test_mmengine_checkpoint_gives_its_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "rtmdet.ckpt"
    torch.save({"meta": {"cfg": "model = dict(type='RTMDet')", "epoch": 60},
                "state_dict": OrderedDict(w=torch.ones(2, 2))}, path)
    extracted = weights.extract_state_dict(weights.load_checkpoint(path))
    assert list(extracted) == ["w"] and torch.equal(extracted["w"], torch.ones(2, 2))


def test_extract_rejects_something_that_is_not_a_state_dict() -> None:
    with pytest.raises(CheckpointError, match=r"non-tensor entries \['model'\]"):
        weights.extract_state_dict({"model": {"w": torch.ones(1)}})
    with pytest.raises(CheckpointError, match="got none"):
        weights.extract_state_dict({"gt_encoder.w": torch.ones(1)}, drop_prefixes=("gt_encoder.",))


def test_untrusted_pickle_is_refused_with_how_to_trust_it(tmp_path: Path, models: Path) -> None:
    path = _write_untrusted(tmp_path / "isnetis.ckpt")
    with pytest.raises(CheckpointError) as caught:
        weights.load_checkpoint(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "TrainingHyperParameters" in message  # says what it would have to unpickle
    assert "--trust-checkpoint" in message
    assert "python -m inference.weights download" in message


def test_explicit_trust_opens_the_pickle(tmp_path: Path, models: Path) -> None:
    path = _write_untrusted(tmp_path / "isnetis.ckpt")
    checkpoint = weights.load_checkpoint(path, trust=True)
    assert isinstance(checkpoint["hyper_parameters"], TrainingHyperParameters)
    assert checkpoint["hyper_parameters"].lr == 0.001
    state = weights.extract_state_dict(checkpoint, strip_prefix="net.", drop_prefixes=("gt_encoder.",))
    assert list(state) == list(_small_state(3))


def test_hash_recorded_by_download_trusts_the_file_wherever_it_is(tmp_path: Path, models: Path) -> None:
    path = _write_untrusted(tmp_path / "isnetis.ckpt")
    weights.record_download("animeseg", weights.weight_path("animeseg"), size=path.stat().st_size,
                            sha256=_sha256(path), source="https://example.invalid/isnetis.ckpt")
    assert weights.load_checkpoint(path)["epoch"] == 7
    # A different file is still refused.
    other = tmp_path / "other.ckpt"
    torch.save(_lightning_checkpoint(TrainingHyperParameters(0.5)), other)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        weights.load_checkpoint(other)


def test_trusted_load_survives_classes_this_environment_lacks(tmp_path: Path, models: Path) -> None:
    # Lightning's AttributeDict, pickled while a stand-in module existed, loaded without it.
    fake = types.ModuleType("lightning_stand_in_for_tests")
    attribute_dict = type("AttributeDict", (dict,), {"__module__": fake.__name__})
    fake.AttributeDict = attribute_dict
    sys.modules[fake.__name__] = fake
    try:
        path = tmp_path / "isnetis.ckpt"
        torch.save(_lightning_checkpoint(attribute_dict(net_name="isnet_is", img_size=1024)), path)
    finally:
        del sys.modules[fake.__name__]
    with pytest.raises(CheckpointError, match="AttributeDict"):
        weights.load_checkpoint(path)
    checkpoint = weights.load_checkpoint(path, trust=True)
    assert dict(checkpoint["hyper_parameters"]) == {"net_name": "isnet_is", "img_size": 1024}
    assert len(weights.extract_state_dict(checkpoint, strip_prefix="net.", drop_prefixes=("gt_encoder.",))) == len(
        _small_state(3)
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"", r"is empty \(0 bytes\)"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n", "Git LFS pointer"),
        (b"<!DOCTYPE html><html><body>Rate limited</body></html>", "not a PyTorch checkpoint.*web page"),
        (b"hello, not weights", "not a PyTorch checkpoint"),
    ],
)
def test_files_that_are_not_checkpoints_give_checkpoint_error(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "x.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        weights.load_checkpoint(path, trust=True)


def test_truncated_checkpoint_gives_checkpoint_error(tmp_path: Path) -> None:
    whole = tmp_path / "whole.ckpt"
    torch.save(_small_state(4), whole)
    data = whole.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        truncated = tmp_path / f"cut{cut}.ckpt"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"damaged or truncated"):
            weights.load_checkpoint(truncated)


def test_checkpoint_that_is_not_a_dict_gives_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="got Tensor"):
        weights.load_checkpoint(path)


def test_folder_gives_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="expected a checkpoint file, got the folder"):
        weights.load_checkpoint(tmp_path)


def test_strict_load_lists_missing_unexpected_and_reshaped_keys() -> None:
    state = dict(_small_state(4))
    del state["side6.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["conv_in.weight"] = torch.zeros(4, 3, 3, 3)
    with pytest.raises(CheckpointError) as caught:
        weights.load_weights_strict(ISNet(4, width_divisor=16), state, source="file.ckpt")
    message = str(caught.value)
    assert "1 missing from the file (e.g. side6.bias)" in message
    assert "1 unknown to the model (e.g. extra.weight)" in message
    assert "conv_in.weight: file (4, 3, 3, 3), model (4, 4, 3, 3)" in message


# ----------------------------------------------------------------------------------------- full size


def _manifest(name: str) -> dict[str, list[int]] | None:
    for folder in MANIFEST_FOLDERS:
        path = folder / f"{name}.keys.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _full_state(layout: dict[str, list[int]]) -> OrderedDict[str, torch.Tensor]:
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in layout.items():
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        state[key] = torch.zeros(shape, dtype=dtype)
    return state


@pytest.fixture(scope="module")
def full_size_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files with the real layouts: refine_last (bare state dict) and isnetis (Lightning, net.* + gt_encoder.*)."""
    folder = tmp_path_factory.mktemp("full")
    refine_layout = _manifest("refine_last") or {k: list(v.shape) for k, v in ISNet(4).state_dict().items()}
    isnetis_layout = _manifest("isnetis") or {
        **{f"net.{k}": list(v.shape) for k, v in ISNet(3).state_dict().items()},
        "gt_encoder.conv_in.conv.weight": [16, 1, 3, 3],
    }
    refine = _full_state(refine_layout)
    refine["conv_in.weight"] = torch.arange(64 * 4 * 9, dtype=torch.float32).reshape(64, 4, 3, 3)
    torch.save(refine, folder / "refine_last.ckpt")
    del refine
    isnetis = _full_state(isnetis_layout)
    isnetis["net.side1.bias"] = torch.tensor([0.25])
    torch.save({"epoch": 30, "global_step": 99, "pytorch-lightning_version": "1.7.7", "state_dict": isnetis,
                "hyper_parameters": {"net_name": "isnet_is", "img_size": 1024}}, folder / "isnetis.ckpt")
    return {"refine": folder / "refine_last.ckpt", "animeseg": folder / "isnetis.ckpt"}


def test_full_size_refine_last_loads_strictly(full_size_files: dict[str, Path]) -> None:
    refiner = RefineNetISNet.from_checkpoint(full_size_files["refine"], device="cpu")
    weight = refiner.model.conv_in.weight
    assert weight.shape == (64, 4, 3, 3)
    assert torch.equal(weight, torch.arange(64 * 4 * 9, dtype=torch.float32).reshape(64, 4, 3, 3))
    assert not refiner.model.training


def test_full_size_isnetis_loads_strictly_ignoring_the_training_encoder(full_size_files: dict[str, Path]) -> None:
    refiner = AnimeSegRefiner.from_checkpoint(full_size_files["animeseg"], device="cpu")
    assert refiner.model.conv_in.weight.shape == (64, 3, 3, 3)
    assert refiner.model.side1.bias.item() == 0.25


def test_wrong_file_for_the_model_gives_checkpoint_error(full_size_files: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"conv_in.weight: file \(64, 4, 3, 3\), model \(64, 3, 3, 3\)"):
        AnimeSegRefiner.from_checkpoint(full_size_files["refine"], device="cpu")
    with pytest.raises(CheckpointError, match="unknown to the model"):
        RefineNetISNet.from_checkpoint(full_size_files["animeseg"], device="cpu")


# ----------------------------------------------------------------------------------------- download


class _FakeHub:
    """Monkeypatched huggingface_hub: serves local files with the size/sha256 the hub would report."""

    def __init__(self, files: dict[str, Path], *, reported_sha256: dict[str, str] | None = None) -> None:
        self.files = files
        self.reported_sha256 = reported_sha256 or {}
        self.downloads: list[tuple[str, str, Path]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hub = self

        class FakeApi:
            def get_paths_info(self, repo_id: str, paths: list[str], **_: object) -> list[RepoFile]:
                found = []
                for name in paths:
                    source = hub.files.get(f"{repo_id}/{name}")
                    if source is not None:
                        sha = hub.reported_sha256.get(name, _sha256(source))
                        size = source.stat().st_size
                        found.append(RepoFile(path=name, size=size, oid="0" * 40,
                                              lfs={"size": size, "oid": sha, "pointerSize": 134}))
                return found

        def fake_download(repo_id: str, filename: str, *, local_dir: str | Path, **_: object) -> str:
            target = Path(local_dir) / filename
            shutil.copyfile(hub.files[f"{repo_id}/{filename}"], target)
            hub.downloads.append((repo_id, filename, Path(local_dir)))
            return str(target)

        monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)


def test_download_writes_the_file_and_the_lock(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_untrusted(tmp_path / "isnetis.ckpt")
    hub = _FakeHub({"skytnt/anime-seg/isnetis.ckpt": source})
    hub.install(monkeypatch)
    assert weights.main(["download", "animeseg"]) == 0
    target = models / "anime-seg" / "isnetis.ckpt"
    assert target.read_bytes() == source.read_bytes()
    assert hub.downloads == [("skytnt/anime-seg", "isnetis.ckpt", models / "anime-seg")]
    lock = json.loads((models / "weights.lock.json").read_text())
    entry = lock["animeseg"]
    assert entry["path"] == "anime-seg/isnetis.ckpt"
    assert entry["size"] == source.stat().st_size
    assert entry["sha256"] == _sha256(source)
    assert "skytnt/anime-seg" in entry["source"]
    assert entry["downloaded_at"].endswith("+00:00")
    assert "animeseg: ok" in capsys.readouterr().out
    # What our command downloaded is trusted for full unpickling.
    assert weights.load_checkpoint(target)["epoch"] == 7


def _fake_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for spec in registry.MODELS:
        files[f"{spec.repo_id}/{spec.filename}"] = tmp_path / spec.filename
        torch.save({"which": torch.tensor([len(spec.key)])}, tmp_path / spec.filename)
    return files


def test_download_all_fetches_the_default_set(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _FakeHub(_fake_files(tmp_path))
    hub.install(monkeypatch)
    assert weights.main(["download", "all"]) == 0
    assert set(weights.read_lock()) == {"rtmdet", "refine", "animeseg", "sam2"}
    assert [key for key in registry.model_keys() if weights.is_installed(key)] == ["rtmdet", "refine", "animeseg", "sam2"]
    assert [filename for _, filename, _ in hub.downloads] == [
        "rtmdetl_e60.ckpt", "refine_last.ckpt", "isnetis.ckpt", "sam2.1_hiera_tiny.pt"]


@pytest.mark.parametrize("key", ["sam2", "sam2-small", "sam2-base-plus"])
def test_download_sam2_works_like_the_others(key: str, tmp_path: Path, models: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    files = _fake_files(tmp_path)
    hub = _FakeHub(files)
    hub.install(monkeypatch)
    spec = registry.model_spec(key)
    assert weights.main(["download", key]) == 0
    target = weights.weight_path(key)
    assert hub.downloads == [(spec.repo_id, spec.filename, target.parent)]
    assert target.read_bytes() == files[f"{spec.repo_id}/{spec.filename}"].read_bytes()
    entry = weights.read_lock()[key]
    assert entry["path"] == spec.relative_path and entry["sha256"] == _sha256(target)
    assert entry["source"] == f"https://huggingface.co/{spec.repo_id}/resolve/main/{spec.filename}"
    assert f"{key}: ok" in capsys.readouterr().out
    assert weight_install.weight_status(key).state == "verified"
    assert [k for k in registry.model_keys() if weights.is_installed(k)] == [key]


def test_download_several_keys_at_once(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _FakeHub(_fake_files(tmp_path))
    hub.install(monkeypatch)
    assert weights.main(["download", "sam2-small", "refine", "sam2-small"]) == 0
    assert [filename for _, filename, _ in hub.downloads] == ["sam2.1_hiera_small.pt", "refine_last.ckpt"]


def test_unknown_download_key_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        weights.main(["download", "sam3"])
    assert caught.value.code == 2
    assert "invalid choice: 'sam3'" in capsys.readouterr().err


def test_file_already_present_is_verified_not_downloaded_again(tmp_path: Path, models: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "refine_last.ckpt"
    torch.save(_small_state(4), source)
    hub = _FakeHub({"dreMaz/AnimeInstanceSegmentation/refine_last.ckpt": source})
    hub.install(monkeypatch)
    target = weights.weight_path("refine")
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)  # e.g. a manual git-lfs clone
    assert weights.main(["download", "refine"]) == 0
    assert hub.downloads == []
    assert weights.read_lock()["refine"]["sha256"] == _sha256(source)


def test_hash_mismatch_is_refused_and_the_file_removed(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_untrusted(tmp_path / "isnetis.ckpt")
    _FakeHub({"skytnt/anime-seg/isnetis.ckpt": source}, reported_sha256={"isnetis.ckpt": "ab" * 32}).install(monkeypatch)
    assert weights.main(["download", "animeseg"]) == 1
    err = capsys.readouterr().err
    assert "failed verification" in err and "deleted" in err
    assert not weights.weight_path("animeseg").exists()
    assert weights.read_lock() == {}
    with pytest.raises(CheckpointError):  # nothing became trusted
        weights.load_checkpoint(source)


@pytest.mark.parametrize(
    "error",
    [
        huggingface_hub.errors.OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled."),
        huggingface_hub.errors.HTTPError("[Errno -2] Name or service not known"),
        huggingface_hub.errors.LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub"),
    ],
    ids=["offline-mode", "connect-error", "local-entry-not-found"],
)
@pytest.mark.parametrize("failing", ["metadata", "download"])
def test_unreachable_hub_prints_one_line_with_the_manual_alternative(
    error: Exception, failing: str, tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "rtmdetl_e60.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, source)
    _FakeHub({"dreMaz/AnimeInstanceSegmentation/rtmdetl_e60.ckpt": source}).install(monkeypatch)

    def fail(*_: object, **__: object) -> None:
        raise error

    if failing == "metadata":
        monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", fail)
    else:
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    assert weights.main(["download", "rtmdet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: rtmdet:")
    folder = models / "AnimeInstanceSegmentation"
    assert f"git lfs install && git clone https://huggingface.co/dreMaz/AnimeInstanceSegmentation {folder}" in err
    assert not weights.is_installed("rtmdet")
    assert weights.read_lock() == {}


def test_offline_command_line_exits_1_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", weights.MODELS_DIR_ENV: str(tmp_path / "models")}
    result = subprocess.run(
        [sys.executable, "-m", "inference.weights", "download", "all"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "https://huggingface.co/dreMaz/AnimeInstanceSegmentation" in result.stderr
    assert "https://huggingface.co/skytnt/anime-seg" in result.stderr


def test_status_reports_each_file(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "refine_last.ckpt"
    torch.save(_small_state(4), source)
    _FakeHub({"dreMaz/AnimeInstanceSegmentation/refine_last.ckpt": source}).install(monkeypatch)
    assert weights.main(["download", "refine"]) == 0
    rtmdet = weights.weight_path("rtmdet")
    rtmdet.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    animeseg = weights.weight_path("animeseg")
    animeseg.parent.mkdir(parents=True)
    shutil.copyfile(source, animeseg)
    capsys.readouterr()

    assert weights.main(["status"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "verified" in lines["refine"]
    assert "LFS pointer" in lines["rtmdet"]
    assert "no hash recorded" in lines["animeseg"]

    with weights.weight_path("refine").open("ab") as handle:
        handle.write(b"tampered")
    animeseg.unlink()
    assert weights.main(["status"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "CHANGED" in lines["refine"]
    assert "missing" in lines["animeseg"]
    assert "missing" in lines["sam2-base-plus"] and "download sam2-base-plus" in lines["sam2-base-plus"]


def test_weight_status_states_and_plain_labels(tmp_path: Path, models: Path) -> None:
    states = {key: weight_install.weight_status(key) for key in registry.model_keys()}
    assert {s.state for s in states.values()} == {"missing"}
    assert states["sam2"].label == "Not installed" and not states["sam2"].installed
    assert states["sam2"].advice == "run `python -m inference.weights download sam2`"
    path = weights.weight_path("sam2")
    path.parent.mkdir(parents=True)
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    assert weight_install.weight_status("sam2").state == "lfs-pointer" and not weight_install.weight_status("sam2").installed
    torch.save({"w": torch.ones(3)}, path)
    status = weight_install.weight_status("sam2")
    assert (status.state, status.installed, status.size) == ("installed", True, path.stat().st_size)
    weights.record_download("sam2", path, size=path.stat().st_size, sha256=_sha256(path), source="x")
    assert weight_install.weight_status("sam2").state == "verified" and weight_install.weight_status("sam2").advice == ""
    torch.save({"w": torch.zeros(5)}, path)  # replaced: another size and mtime, so hashed again
    assert weight_install.weight_status("sam2").state == "changed"
    labels = [weight_install.weight_status(k).label for k in registry.model_keys()]
    assert all(label.isascii() for label in labels)  # no emoji: every font shows them
    assert {s.installed for s in map(weight_install.weight_status, registry.model_keys())} == {False, True}
    assert [weight_install.weight_status(k).installed for k in registry.model_keys()] == [
        weights.is_installed(k) for k in registry.model_keys()]


@pytest.fixture(scope="module")
def isnetis_with_objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """isnetis.ckpt in its real layout whose pickle holds a Lightning ``AttributeDict`` (a class this environment
    lacks when loading), like the real Lightning checkpoint."""
    layout = _manifest("isnetis") or {
        **{f"net.{k}": list(v.shape) for k, v in ISNet(3).state_dict().items()},
        "gt_encoder.conv_in.conv.weight": [16, 1, 3, 3],
    }
    state = _full_state(layout)
    state["net.side1.bias"] = torch.tensor([0.75])
    fake = types.ModuleType("lightning_fabric_stand_in_for_isnetis")
    attribute_dict = type("AttributeDict", (dict,), {"__module__": fake.__name__})
    fake.AttributeDict = attribute_dict
    sys.modules[fake.__name__] = fake
    try:
        path = tmp_path_factory.mktemp("isnetis") / "isnetis.ckpt"
        torch.save({"epoch": 30, "global_step": 99, "pytorch-lightning_version": "1.7.7", "state_dict": state,
                    "hyper_parameters": attribute_dict(net_name="isnet_is", img_size=1024)}, path)
    finally:
        del sys.modules[fake.__name__]
    return path


def test_real_isnetis_with_python_objects_needs_trust_through_every_door(
    isnetis_with_objects: Path, models: Path
) -> None:
    from inference import model_cache
    from inference.segmenter import create_refiner

    target = weights.weight_path("animeseg")
    target.parent.mkdir(parents=True)
    shutil.copyfile(isnetis_with_objects, target)
    model_cache.clear()
    try:
        for load in (lambda: create_refiner("animeseg"), lambda: model_cache.get_refiner("animeseg")):
            with pytest.raises(CheckpointError, match=r"AttributeDict.*--trust-checkpoint"):
                load()
        trusted = model_cache.get_refiner("animeseg", device="cpu", trust=True)  # --trust-checkpoint
        assert isinstance(trusted, AnimeSegRefiner) and trusted.model.side1.bias.item() == 0.75
        # A hash recorded by the download command trusts the file without the flag.
        weights.record_download("animeseg", target, size=target.stat().st_size, sha256=_sha256(target),
                                source=registry.model_spec("animeseg").url)
        recorded = create_refiner("animeseg", device="cpu")
        assert isinstance(recorded, AnimeSegRefiner) and recorded.model.side1.bias.item() == 0.75
    finally:
        model_cache.clear()


# ----------------------------------------------------------------------------------------- studio download


def test_studio_download_reports_progress_installs_and_verifies(tmp_path: Path, models: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.weight_download import download_with_progress

    hub = _FakeHub(_fake_files(tmp_path))
    hub.install(monkeypatch)
    seen: list[tuple[float, str]] = []
    outcome = download_with_progress("sam2", lambda fraction, text: seen.append((fraction, text)), poll_s=0.01)
    assert outcome.ok and outcome.message.startswith("sam2 installed and verified")
    assert "sam2: ok" in outcome.log
    assert seen[-1][0] == 1.0 and seen[-1][1].endswith("verified")
    assert all(0.0 <= fraction <= 1.0 for fraction, _ in seen)
    assert weight_install.weight_status("sam2").state == "verified"


def test_studio_download_offline_says_so_and_gives_the_manual_way(models: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.weight_download import download_with_progress

    def offline(*_: object, **__: object) -> None:
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", offline)
    outcome = download_with_progress("sam2-small", lambda *_: None)
    assert not outcome.ok
    assert outcome.message.startswith("Could not download sam2-small: could not reach huggingface.co/facebook/")
    assert "classic segmenter" in outcome.message
    assert "git clone https://huggingface.co/facebook/sam2.1-hiera-small" in outcome.message
    assert not weights.is_installed("sam2-small")


def test_studio_download_that_fails_verification_is_reported(tmp_path: Path, models: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.weight_download import download_with_progress

    _FakeHub(_fake_files(tmp_path), reported_sha256={"isnetis.ckpt": "cd" * 32}).install(monkeypatch)
    outcome = download_with_progress("animeseg", lambda *_: None, poll_s=0.01)
    assert not outcome.ok and outcome.message.startswith("Could not download animeseg: isnetis.ckpt failed verification")
    assert "offline" not in outcome.message  # the hub was reached: not a network problem
    assert not weights.weight_path("animeseg").exists() and weights.read_lock() == {}
