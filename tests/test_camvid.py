"""CamVid, the segmentation task: data checks, the joint view, mIoU, BN calibration/fine-tuning of a dense
model, and `reproduce camvid` end to end on a tiny synthetic copy (the real data is never needed here,
except for the one loader test, which skips without it)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aihwkit_nabn as nb
from aihwkit_nabn.evaluation.comparison import load_config, run_comparison
from aihwkit_nabn.evaluation.metrics import MeanIoU
from aihwkit_nabn.tasks.camvid import CLASSES, VOID, load_camvid, logits_of, training_view, unet_small
from aihwkit_nabn.tasks.camvid.data import ARCHIVE_NAME, find_camvid_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / ARCHIVE_NAME


def _write_camvid(root: Path, sizes=(("train", 6), ("val", 2), ("test", 3)), hw=(24, 32), bad=None):
    """A CamVid-layout folder of random images whose labels follow the image (a learnable rule)."""
    rng = np.random.default_rng(0)
    for split, n in sizes:
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
            label = (image[..., 0] // 24).astype(np.uint8)  # 0..10, plus some void
            label[:2, :2] = VOID
            if bad == "label" and split == "val" and i == 1:
                label[0, 5] = 13
            if bad == "size" and split == "test" and i == 2:
                label = label[:-1]
            Image.fromarray(image).save(root / split / f"{split}{i}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{split}{i}.png")
            lines.append(f"{split}/{split}{i}.png {split}annot/{split}{i}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIHWKIT_NABN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny(tmp_path):
    return _write_camvid(tmp_path / "camvid")


def test_model_inputs_are_the_normalised_head_of_the_split(tiny):
    from aihwkit_nabn.tasks.camvid.data import normalize  # pylint: disable=import-outside-toplevel

    task = nb.get_task("camvid", tiny)
    x = task.model_inputs("val", 1)
    assert x.dtype == torch.float32 and torch.equal(x, normalize(task.split("val")[0][:1]))
    assert not torch.equal(x, normalize(task.split("test")[0][:1]))  # the split asked for, not another


def test_reads_a_camvid_folder_and_caches_it(tiny, tmp_path):
    images, labels, names = load_camvid("train", tiny)
    assert images.shape == (6, 3, 24, 32) and images.dtype == torch.uint8
    assert labels.shape == (6, 24, 32) and int(labels.max()) == VOID and names[0] == "train0"
    assert list((tmp_path / "cache").glob("camvid_train_*.pt"))  # decoded once
    again = load_camvid("train", tiny)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)


@pytest.mark.skipif(not SHARED.is_file(), reason=f"the CamVid archive is not at {SHARED}")
def test_the_shared_archive_has_the_segnet_split():
    sizes = {split: load_camvid(split, SHARED, progress=False)[0].shape for split in ("train", "val", "test")}
    assert sizes == {"train": (367, 3, 180, 240), "val": (101, 3, 180, 240), "test": (233, 3, 180, 240)}
    assert find_camvid_source(SHARED) == SHARED


@pytest.mark.parametrize("bad, split, message", [
    ("label", "val", r"val1\.png holds label 13: CamVid labels are 0-10 and 11 \(void\)"),
    ("size", "test", r"testannot/test2\.png is 32x23 but its image test/test2\.png is 32x24"),
])
def test_bad_labels_name_the_file_and_nothing_is_cached(tmp_path, bad, split, message):
    root = _write_camvid(tmp_path / "bad", bad=bad)
    with pytest.raises(nb.DataFormatError, match=message):
        load_camvid(split, root)
    assert not list((tmp_path / "cache").glob(f"camvid_{split}_*.pt"))


def test_missing_split_file_and_missing_source(tmp_path, tiny):
    (tiny / "val.txt").unlink()
    with pytest.raises(nb.DataNotFoundError, match=r"val\.txt is missing"):
        load_camvid("val", tiny)
    with pytest.raises(nb.DataNotFoundError, match="does not exist"):
        load_camvid("train", tmp_path / "nowhere")


def test_training_view_moves_image_and_label_together():
    x = torch.randint(0, 256, (2, 3, 18, 24), dtype=torch.uint8)
    y = torch.randint(0, 12, (2, 18, 24), dtype=torch.uint8)
    views = torch.tensor([[1.0, 0.5, 0.5, 0.0], [1.0, 0.5, 0.5, 1.0]])  # scale 1, centred, flip the second
    a, b = training_view(x, y, views, (18, 24))
    assert torch.equal(a[0], x[0]) and torch.equal(b[0], y[0].long())
    assert torch.equal(a[1], x[1].flip(-1)) and torch.equal(b[1], y[1].flip(-1).long())
    a, b = training_view(x[:1], y[:1], torch.tensor([[1.0, 1.0, 1.0, 0.0]]), (10, 12))  # the bottom-right crop
    assert torch.equal(a[0], x[0, :, -10:, -12:]) and torch.equal(b[0], y[0, -10:, -12:].long())
    a, b = training_view(x, y, torch.tensor([[1.5, 0.3, 0.6, 1.0]] * 2), (10, 12))  # scaled: labels stay labels
    assert set(b.unique().tolist()) <= set(y.unique().tolist()) and b.dtype == torch.int64


class _Fixed(torch.nn.Module):
    """A 'model' that returns fixed logits (one-hot predictions), for checking the metric."""

    def __init__(self, pred):
        super().__init__()
        self.pred = pred
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return {"out": torch.nn.functional.one_hot(self.pred, 3).permute(0, 3, 1, 2).float()}


def test_mean_iou_against_a_hand_computation_and_torchmetrics():
    from torchmetrics.classification import MulticlassJaccardIndex

    labels = torch.tensor([[[0, 0, 1, 1], [2, 2, 1, 3]]])  # 3 = ignored
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 1, 2]]])
    metric = MeanIoU([(torch.zeros(1, 1, 2, 4), labels)], num_classes=3, ignore_index=3, output_fn=logits_of)
    value = metric(_Fixed(pred))
    # class 0: TP 1, FP 1 (the 0 predicted at a 2), FN 1 -> 1/3; class 1: TP 3, FP 1, FN 0 -> 3/4; class 2: TP 1, FN 1 -> 1/2
    assert value == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert metric.last["pixel_acc"] == pytest.approx(100 * 5 / 7)
    reference = MulticlassJaccardIndex(3, ignore_index=3, average="macro")(pred, labels)
    assert value == pytest.approx(100 * float(reference))


def test_calibrate_and_finetune_a_segmentation_model_through_the_public_api(tiny):
    torch.manual_seed(0)
    model = nb.to_analog(unet_small(width=4))
    task = nb.get_task("camvid", tiny)
    chip = nb.Chip(model, seed=0).drift_to(86400.0)
    calib = task.calibration_data(6, batch_size=3)
    before = nb.snapshot_bn(chip.model)
    undo = nb.calibrate_bn(chip.model, calib, num_samples=6)
    assert not nb.snapshot_bn(chip.model).equals(before) and undo.info["samples"] == 6
    undo.restore(chip.model)
    labeled = task.labeled_data(6, batch_size=3)
    snap = nb.finetune_bn(chip.model, labeled, loss_fn=task.bnft_loss(), steps=2, train="affine")
    assert snap.info["steps"] == 2 and snap.info["trained_params"] > 0
    snap.restore(chip.model)
    assert nb.snapshot_bn(chip.model).equals(before)


def test_reproduce_camvid_end_to_end_writes_every_file(tmp_path, tiny):
    torch.manual_seed(0)
    digital = unet_small(width=4).eval()
    nb.save_checkpoint(tmp_path / "u.pt", digital, "unet_small", {"accuracy": 1.0})
    nb.save_hwa_checkpoint(tmp_path / "u_hwa.pt", nb.to_analog(digital, nb.TorchHWAPreset()), "unet_small",
                           {"seconds": 3.0})
    task = nb.get_task("camvid", tiny)
    config = load_config(task.default_config, {
        "data.test_samples": 0, "data.calib_samples": 4, "data.labeled_samples": 4, "data.batch_size": 2,
        "hardware.input_range_samples": 4, "device": "cpu", "sweep.times": ["1s", "1y"], "sweep.chips": 1,
        "bnft.steps": 2, "bnft.batch_size": 2,
        "models": {"u": {"digital": str(tmp_path / "u.pt"), "hwa": str(tmp_path / "u_hwa.pt")}},
        "retention.models": ["u"], "retention.calibrate_at": ["1s"], "calib_size.models": ["u"],
        "calib_size.sizes": [2, 4],
    })
    out = tmp_path / "out"
    run = run_comparison(task, config, out, progress=False, command="test")
    for part in ("main", "retention", "calib_size"):
        for name in ("rows.csv", "rows.json", "summary.csv", "summary.json", "summary.md", "sweep.png"):
            assert (out / part / name).stat().st_size > 0, (part, name)
    for name in ("costs.json", "costs.md", "accuracy_vs_cost.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    rows = json.loads((out / "main" / "rows.json").read_text())
    assert {r["metric"] for r in rows} == {"miou"} and len(rows) == 8 * 2
    assert all(0.0 <= r["value"] <= 100.0 for r in rows)
    by = {(r["method"], r["time_s"]): r for r in rows}
    assert by[("nabn", 1.0)]["unlabeled_samples"] == 4 and by[("bnft", 1.0)]["labeled_samples"] == 4
    assert run["task"] == "camvid" and run["commit"] and re.search(r"miou at last time", (out / "costs.md").read_text())
    assert len(CLASSES) == 11


def test_train_and_hwa_from_the_command_line(tmp_path, tiny, capsys):
    from aihwkit_nabn import cli

    out = tmp_path / "u.pt"
    argv = ["train", "--task", "camvid", "--arch", "unet_small", "--width", "4", "--epochs", "2",
            "--batch-size", "3", "--data", str(tiny), "--out", str(out), "--device", "cpu", "--quiet"]
    # --stop-after-epochs: one epoch now (no checkpoint yet), the same command without it resumes
    status = cli.main(argv + ["--stop-after-epochs", "1"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and not result["finished"] and result["epochs_done"] == 1 and not out.exists()
    status = cli.main(argv)
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and result["finished"] and result["epochs_done"] == 2 and 0.0 <= result["val_miou"] <= 100.0
    model, meta = nb.load_checkpoint(out)
    assert meta["task"] == "camvid" and meta["hparams"]["optimizer"] == "AdamW" and len(meta["history"]) == 2
    assert 0.0 <= meta["test_miou"] <= 100.0 and len(meta["test_iou"]) == len(CLASSES)
    assert model.enc1[0].out_channels == 4  # rebuilt from the checkpoint's shapes
    hwa = tmp_path / "u_hwa.pt"
    status = cli.main(["hwa", "--task", "camvid", "--model", str(out), "--epochs", "1", "--batch-size", "3",
                       "--data", str(tiny), "--out", str(hwa), "--device", "cpu", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and result["finished"] and 0.0 <= result["test_miou"] <= 100.0
    analog, meta = nb.load_hwa_model(hwa)
    assert meta["task"] == "camvid" and nb.conversion_report(analog)["counts"]["digital_layers"] == 0


def test_segmentation_figure_script_draws_every_panel(tmp_path, tiny):
    import importlib.util

    torch.manual_seed(0)
    nb.save_checkpoint(tmp_path / "u.pt", unet_small(width=4).eval(), "unet_small", {"accuracy": 1.0})
    path = Path(__file__).resolve().parents[1] / "examples" / "reproduce" / "camvid_figure.py"
    spec = importlib.util.spec_from_file_location("camvid_figure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "fig.png"
    module.main(["--model", str(tmp_path / "u.pt"), "--data", str(tiny), "--images", "2", "--calib-samples", "4",
                 "--device", "cpu", "--out", str(out)])
    assert out.stat().st_size > 1000


def test_the_noise_table_of_another_task_from_its_config(tmp_path, tiny, capsys):
    from aihwkit_nabn import cli

    torch.manual_seed(0)
    digital = unet_small(width=4).eval()
    nb.save_checkpoint(tmp_path / "u.pt", digital, "unet_small")
    nb.save_hwa_checkpoint(tmp_path / "u_hwa.pt", nb.to_analog(digital, nb.TorchHWAPreset()), "unet_small")
    sets = {"data.calib_samples": "4", "data.labeled_samples": "4", "data.batch_size": "2",
            "hardware.input_range_samples": "4", "device": '"cpu"', "sweep.chips": "2", "bnft.steps": "1",
            "bnft.batch_size": "2", "noise.settings": '["pcm", "gauss_mul_0.1"]',
            "models": f'{{u = {{digital = "{tmp_path / "u.pt"}", hwa = "{tmp_path / "u_hwa.pt"}"}}}}'}
    config = Path(nb.__file__).resolve().parent / "tasks" / "camvid" / "noise.toml"
    argv = ["reproduce", "noise", "--config", str(config), "--data", str(tiny),
            "--out", str(tmp_path / "n"), "--quiet"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert cli.main(argv) == 0
    table = json.loads((tmp_path / "n" / "table.json").read_text())
    assert [(e["setting"], e["metric"], e["time_label"]) for e in table] == [("pcm", "miou", "1y"),
                                                                             ("gauss_mul_0.1", "miou", "1y")]
    assert json.loads((tmp_path / "n" / "run.json").read_text())["task"] == "camvid"
