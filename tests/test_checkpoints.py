"""Tests of plain checkpoints: round trip, and a helpful CheckpointError for every bad input."""

import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import pytest
import torch

from aihwkit_nabn.training.checkpoints import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_pretrained,
    pretrained_path,
    save_checkpoint,
)
from aihwkit_nabn.errors import CheckpointError
from aihwkit_nabn.training.registry import MODELS, create_model, register_model


class _Arbitrary:
    """An object that torch.load(weights_only=True) must refuse to build."""

    def __init__(self):
        self.payload = [1, 2, 3]


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = create_model("resnet20")
    m.train()
    m(torch.randn(8, 3, 32, 32))  # non-trivial BN running statistics
    return m


def test_round_trip(model, tmp_path):
    path = tmp_path / "ckpt.pt"
    meta = {"accuracy": 91.5, "hparams": {"lr": 0.2, "nesterov": True}, "history": [1, 2]}
    save_checkpoint(path, model.to(memory_format=torch.channels_last), "resnet20", meta)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["arch"] == "resnet20"
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_save_refuses_non_plain_meta_and_unknown_arch(model, tmp_path):
    with pytest.raises(CheckpointError, match="_Arbitrary"):
        save_checkpoint(tmp_path / "a.pt", model, "resnet20", {"obj": _Arbitrary()})
    with pytest.raises(CheckpointError, match="resnet20"):
        save_checkpoint(tmp_path / "a.pt", model, "vgg11", {})
    assert not (tmp_path / "a.pt").exists()


def _err(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    return str(info.value)


def test_missing_file(tmp_path):
    assert "does not exist" in _err(tmp_path / "nope.pt")


def test_not_a_torch_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello world, I am not a checkpoint\n")
    assert "not a" in _err(text) and "PyTorch checkpoint" in _err(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "PyTorch checkpoint" in _err(empty)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unsafe_files_are_refused(tmp_path):
    torch_file = tmp_path / "unsafe.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "resnet20", "state_dict": {}, "x": _Arbitrary()}, torch_file)
    raw_pickle = tmp_path / "unsafe.pkl"
    with open(raw_pickle, "wb") as f:
        pickle.dump(_Arbitrary(), f)
    for path in (torch_file, raw_pickle):
        msg = _err(path)
        assert "weights_only=True" in msg and "unsafe" in msg and "never unpickles" in msg


def test_wrong_or_missing_format(model, tmp_path):
    no_format = tmp_path / "plain.pt"
    torch.save(model.state_dict(), no_format)  # a bare state_dict is not our checkpoint
    assert "no 'format' key" in _err(no_format)
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "other/v9", "arch": "resnet20", "state_dict": {}}, wrong)
    assert "other/v9" in _err(wrong) and CHECKPOINT_FORMAT in _err(wrong)


def test_unknown_arch(model, tmp_path):
    path = tmp_path / "arch.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "resnet1000", "state_dict": model.state_dict(), "meta": {}}, path)
    msg = _err(path)
    assert "resnet1000" in msg and "resnet20" in msg


def test_state_dict_mismatch_lists_keys(model, tmp_path):
    state = dict(model.state_dict())
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["fc.bias"] = torch.zeros(10)
    state["layer2.0.bn1.weight"] = torch.zeros(5)
    path = tmp_path / "mismatch.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "resnet20", "state_dict": state, "meta": {}}, path)
    msg = _err(path)
    assert "missing keys: layer1.0.conv1.weight" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "layer2.0.bn1.weight" in msg and "shape" in msg


def test_pretrained_path_and_missing_pretrained(tmp_path):
    path = pretrained_path("resnet56")
    assert path.name == "resnet56_cifar10.pt" and path.parent.name == "assets" and path.is_file()
    # a registered model whose shipped file is missing, and one with no shipped weights at all
    missing = tmp_path / "gone.pt"
    register_model(pretrained=missing)(_test_missing_weights)
    register_model()(_test_no_weights)
    try:
        with pytest.raises(CheckpointError) as info:
            load_pretrained("_test_missing_weights")
        assert str(missing) in str(info.value) and "resnet20" in str(info.value)  # names what is shipped
        with pytest.raises(CheckpointError, match="no pretrained weights for '_test_no_weights'"):
            pretrained_path("_test_no_weights")
    finally:
        for name in ("_test_missing_weights", "_test_no_weights"):
            MODELS.unregister(name)
    with pytest.raises(CheckpointError):
        load_pretrained("no_such_arch")


def _test_missing_weights(num_classes: int = 10):
    return create_model("resnet20", num_classes=num_classes)


def _test_no_weights(num_classes: int = 10):
    return create_model("resnet20", num_classes=num_classes)


def test_shipped_resnet20_loads_and_is_accurate():
    from aihwkit_nabn.tasks.cifar10.sample import load_demo_sample
    from aihwkit_nabn.tasks.cifar10.recipe import evaluate_top1

    model, meta = load_pretrained("resnet20")
    sample = load_demo_sample()
    assert meta["arch"] == "resnet20"
    assert evaluate_top1(model, sample["test_images"], sample["test_labels"]) > 80.0
