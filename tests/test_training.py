"""Tests of the fast trainer: augmentation, evaluation, logging, resume and train_baseline."""

import io
import json
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from aihwkit_nabn.errors import CheckpointError
from aihwkit_nabn.tasks.cifar10.data import CIFAR10_MEAN, CLASSES
from aihwkit_nabn.tasks.cifar10.recipe import evaluate_top1, train_baseline, train_classifier
from aihwkit_nabn.tasks.cifar10.sample import load_demo_sample
from aihwkit_nabn.tasks.cifar10.views import augment_like_training, cutout, random_crop_flip, training_view
from aihwkit_nabn.training.checkpoints import load_checkpoint
from aihwkit_nabn.training.registry import create_model


@pytest.fixture(scope="module")
def sample():
    s = load_demo_sample()
    return s["calib_images"][:256], s["calib_labels"][:256], s["test_images"][::10], s["test_labels"][::10]


def test_random_crop_flip_matches_reference():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    shifts = torch.randint(0, 9, (5, 2))
    flips = torch.tensor([True, False, True, False, True])
    out = random_crop_flip(x, shifts, flips)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(5):
        dy, dx = shifts[i].tolist()
        ref = padded[i, :, dy:dy + 32, dx:dx + 32]
        assert torch.equal(out[i], ref.flip(-1) if flips[i] else ref)


def test_cutout_matches_reference_and_clips_at_the_border():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    centers = torch.tensor([[16, 16], [0, 0], [31, 5], [3, 30]])
    out = cutout(x, centers, 16)
    fill = torch.tensor([round(m * 255) for m in CIFAR10_MEAN], dtype=torch.uint8).view(3, 1, 1)
    for i in range(4):
        cy, cx = centers[i].tolist()
        ref = x[i].clone()
        ref[:, max(0, cy - 8):cy + 8, max(0, cx - 8):cx + 8] = fill  # DeVries & Taylor's clipped square
        assert torch.equal(out[i], ref)
    assert torch.equal(cutout(x, centers, 0), x)
    assert not torch.equal(out, x) and x.dtype == out.dtype  # the input is not modified in place


def test_training_view_is_crop_flip_then_cutout_and_calibration_view_is_seeded():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    shifts, flips = torch.randint(0, 9, (6, 2)), torch.rand(6) < 0.5
    centers = torch.randint(0, 32, (6, 2))
    assert torch.equal(training_view(x, shifts, flips, centers), cutout(random_crop_flip(x, shifts, flips), centers))
    a, b = augment_like_training(x, seed=1), augment_like_training(x, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, augment_like_training(x, seed=2))
    plain = augment_like_training(x, seed=1, cutout_size=0)  # same crops and flips, no squares
    fill = torch.tensor([round(m * 255) for m in CIFAR10_MEAN], dtype=torch.uint8).view(1, 3, 1, 1).expand_as(a)
    changed = a != plain
    assert changed.any() and torch.equal(a[changed], fill[changed])


def test_evaluate_top1_is_percent_and_restores_mode():
    model = create_model("resnet20").train()
    x = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (37,))
    acc = evaluate_top1(model, x, y, batch_size=16)
    assert 0.0 <= acc <= 100.0 and model.training
    const = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with torch.no_grad():
        const[1].weight.zero_()
        const[1].bias.copy_(torch.eye(10)[3])  # always predicts class 3
    assert evaluate_top1(const, x, y, batch_size=8) == pytest.approx(100.0 * (y == 3).sum().item() / 37)


def test_train_one_epoch_writes_log_and_resumes(sample, tmp_path):
    xtr, ytr, xte, yte = sample
    log, state = tmp_path / "log.jsonl", tmp_path / "state.pt"
    torch.manual_seed(0)
    first = train_classifier(create_model("resnet20"), xtr, ytr, xte, yte, epochs=2, batch_size=64,
                             lr=0.05, log_path=log, resume_path=state, progress=False,
                             stop_after_epochs=1)
    assert first["epochs_done"] == 1 and not first["finished"] and len(first["history"]) == 1
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["epoch"] == 1 and 0 <= lines[0]["test_acc"] <= 100
    assert torch.load(state, weights_only=True)["epoch"] == 1  # resumable state is plain too

    second = train_classifier(create_model("resnet20"), xtr, ytr, xte, yte, epochs=2, batch_size=64,
                              lr=0.05, log_path=log, resume_path=state, progress=False)
    assert second["resumed_from_epoch"] == 1 and second["finished"]
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert [json.loads(l)["epoch"] for l in log.read_text().splitlines()] == [1, 2]
    assert second["top1"] == second["history"][-1]["test_acc"]
    for key in ("seconds", "epochs", "seed", "hparams", "device", "torch_version"):
        assert key in second
    # The schedule reached zero at the end of the run.
    assert second["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-9)

    with pytest.raises(CheckpointError, match="other settings"):
        train_classifier(create_model("resnet20"), xtr, ytr, xte, yte, epochs=3, batch_size=64,
                         lr=0.05, resume_path=state, progress=False)


def test_train_baseline_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, k in (("train", 8), ("test", 2)):
            for c, name in enumerate(CLASSES):
                for i in range(k):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.png")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    out = tmp_path / "resnet20_tiny.pt"
    result = train_baseline("resnet20", epochs=1, out_path=out, data_source=archive,
                            cache_dir=tmp_path / "cache", batch_size=32, progress=False)
    assert out.is_file() and Path(str(out) + ".log.jsonl").is_file()
    model, meta = load_checkpoint(out)
    assert meta["arch"] == "resnet20" and meta["epochs"] == 1 and meta["seed"] == 0
    assert meta["dataset"] == "CIFAR-10 (JPEG q75 copy)" and meta["accuracy"] == result["top1"]
    for key in ("hparams", "command", "seconds", "device", "torch_version"):
        assert key in meta
    assert not model.training and model.fc.out_features == 10


def test_compile_failure_falls_back_to_eager_with_a_warning(sample, monkeypatch):
    xtr, ytr, xte, yte = sample

    def broken_compile(model, mode=None):
        def forward(x):
            raise RuntimeError("no compiler here")
        return forward

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = create_model("resnet20")
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        res = train_classifier(model, xtr[:64], ytr[:64], xte[:32], yte[:32], epochs=1, batch_size=32,
                               device="cpu", progress=False, compile="reduce-overhead")
    torch.manual_seed(0)
    eager = train_classifier(create_model("resnet20"), xtr[:64], ytr[:64], xte[:32], yte[:32], epochs=1,
                             batch_size=32, device="cpu", progress=False)
    # the failed trial left no trace: the run equals an uncompiled one
    assert res["history"][0]["train_loss"] == eager["history"][0]["train_loss"]
    assert res["hparams"]["compile"] == "reduce-overhead"
