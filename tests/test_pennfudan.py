"""Penn-Fudan, the detection task: data checks, the split, box AP on a hand-made case, BN calibration and
fine-tuning of a detector through the public API, and `reproduce pennfudan` end to end on a tiny copy."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aihwkit_nabn as nb
from aihwkit_nabn.evaluation.comparison import load_config, run_comparison
from aihwkit_nabn.evaluation.metrics import DetectionAP
from aihwkit_nabn.tasks.pennfudan import load_pennfudan, split_names
from aihwkit_nabn.tasks.pennfudan.data import ARCHIVE_NAME, boxes_from_mask

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / ARCHIVE_NAME
SMALL = {"min_size": 48, "max_size": 64}


def _write_pennfudan(root: Path, n: int = 12, hw=(40, 56), bad=None) -> Path:
    """A Penn-Fudan-layout folder: random images with one or two rectangular 'pedestrians' each."""
    rng = np.random.default_rng(0)
    (root / "PennFudanPed" / "PNGImages").mkdir(parents=True)
    (root / "PennFudanPed" / "PedMasks").mkdir(parents=True)
    for i in range(n):
        name = f"Ped{i:05d}"
        image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        mask = np.zeros(hw, dtype=np.uint8)
        mask[5:30, 4:14] = 1
        if i % 2:
            mask[8:36, 30:44] = 2
        image[mask > 0] = 255 - image[mask > 0] // 4  # something to find
        if bad == "empty" and i == 3:
            mask[:] = 0
        Image.fromarray(image).save(root / "PennFudanPed" / "PNGImages" / f"{name}.png")
        if not (bad == "nomask" and i == 5):
            Image.fromarray(mask).save(root / "PennFudanPed" / "PedMasks" / f"{name}_mask.png")
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIHWKIT_NABN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny(tmp_path):
    return _write_pennfudan(tmp_path / "pf")


def test_model_inputs_are_a_list_of_normalised_images(tiny):
    from aihwkit_nabn.tasks.pennfudan.data import normalize  # pylint: disable=import-outside-toplevel

    task = nb.get_task("pennfudan", tiny)
    x = task.model_inputs("val", 2)
    val = task.split("val")[0]
    assert isinstance(x, list) and len(x) == min(2, len(val))
    assert all(torch.equal(a, normalize(b)) and a.dtype == torch.float32 for a, b in zip(x, val))


def test_reads_boxes_from_the_masks_and_splits_deterministically(tiny):
    splits = {s: load_pennfudan(s, tiny) for s in ("train", "val", "test")}
    names = [n for s in splits.values() for n in s[2]]
    assert sorted(names) == [f"Ped{i:05d}" for i in range(12)] and len(set(names)) == 12  # disjoint, complete
    images, boxes, train_names = splits["train"]
    assert images[0].shape == (3, 40, 56) and images[0].dtype == torch.uint8
    first = boxes[0].tolist()
    assert first[0] == [4.0, 5.0, 14.0, 30.0]  # x0, y0, x1, y1 of the pixels 4..13 x 5..29
    assert train_names == split_names(names, "train")


@pytest.mark.skipif(not SHARED.is_file(), reason=f"the Penn-Fudan archive is not at {SHARED}")
def test_the_shared_archive_split():
    counts = {s: load_pennfudan(s, SHARED, progress=False) for s in ("train", "val", "test")}
    assert {s: len(v[0]) for s, v in counts.items()} == {"train": 100, "val": 20, "test": 50}
    assert sum(len(b) for v in counts.values() for b in v[1]) == 423  # every pedestrian of the database


@pytest.mark.parametrize("bad, error, message", [
    ("empty", nb.DataFormatError, r"Ped00003_mask\.png holds no pedestrian"),
    ("nomask", nb.DataNotFoundError, r"Ped00005_mask\.png is missing"),
])
def test_bad_data_names_the_file_and_nothing_is_cached(tmp_path, bad, error, message):
    root = _write_pennfudan(tmp_path / "bad", bad=bad)
    failures = 0
    for split in ("train", "val", "test"):
        try:
            load_pennfudan(split, root)
        except error as exc:
            assert __import__("re").search(message, str(exc)), str(exc)
            failures += 1
    assert failures == 1  # the split holding the bad image fails, naming it
    assert len(list((tmp_path / "cache").glob("pennfudan_*.pt"))) == 2


def test_degenerate_box():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[3, 2:8] = 1  # one row of pixels
    with pytest.raises(nb.DataFormatError, match="pedestrian 1 has a degenerate box"):
        boxes_from_mask(mask, "m.png")


class _Fixed(torch.nn.Module):
    """A 'detector' returning fixed detections."""

    def __init__(self, detections):
        super().__init__()
        self.detections = detections
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        return self.detections


def test_box_ap_on_a_hand_made_case():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 90.0], [60.0, 10.0, 100.0, 90.0]])
    target = {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64)}
    data = [([torch.zeros(3, 100, 120)], [target])]
    # both found, plus a lower-scored false positive: AP 100 at every IoU threshold
    found = {"boxes": torch.cat([boxes, torch.tensor([[0.0, 0.0, 5.0, 5.0]])]), "scores": torch.tensor([0.9, 0.8, 0.1]),
             "labels": torch.ones(3, dtype=torch.int64)}
    assert DetectionAP(data)(_Fixed([found])) == {"ap50": pytest.approx(100.0), "map": pytest.approx(100.0)}
    # one of the two found: precision 1 up to recall 0.5, COCO's 101-point interpolation gives 51/101
    half = {"boxes": boxes[:1], "scores": torch.tensor([0.9]), "labels": torch.ones(1, dtype=torch.int64)}
    result = DetectionAP(data)(_Fixed([half]))
    assert result["ap50"] == pytest.approx(100 * 51 / 101, abs=1e-4) and result["map"] == pytest.approx(100 * 51 / 101, abs=1e-4)


def test_calibrate_and_finetune_a_detector_through_the_public_api(tiny):
    torch.manual_seed(0)
    task = nb.get_task("pennfudan", tiny)
    chip = nb.Chip(nb.to_analog(nb.create_model("fcos_resnet18_fpn", **SMALL)), seed=0).drift_to(86400.0)
    before = nb.snapshot_bn(chip.model)
    calib = task.calibration_data(4, batch_size=2)
    undo = nb.calibrate_bn(chip.model, calib, num_samples=4, **task.calibrate_kwargs())
    assert undo.info["samples"] == 4 and not nb.snapshot_bn(chip.model).equals(before)
    undo.restore(chip.model)
    labeled = task.labeled_data(4, batch_size=2)
    snap = nb.finetune_bn(chip.model, labeled, loss_fn=task.bnft_loss(), steps=2, train="affine",
                          **{k: v for k, v in task.finetune_kwargs().items() if k != "calib_input_fn"})
    assert snap.info["steps"] == 2 and snap.info["labeled_samples"] == 4
    assert not nb.snapshot_bn(chip.model).equals(before)  # gamma/beta trained on the detector's losses
    assert not any(m.training for m in chip.model.modules())  # the chip is back in inference mode
    snap.restore(chip.model)
    assert nb.snapshot_bn(chip.model).equals(before)


def test_input_range_batches_keep_calibration_batches_or_regroup_the_same_images(tiny):
    task = nb.get_task("pennfudan", tiny)
    calib = [[torch.full((3, 2, 2), float(4 * b + i)) for i in range(4)] for b in range(3)]
    kept = task.input_range_batches(calib, 10)
    assert [len(b) for b in kept] == [4, 4, 2]
    regrouped = task.input_range_batches(calib, 10, batch_size=3)
    assert [len(b) for b in regrouped] == [3, 3, 3, 1]
    assert [float(x[0, 0, 0]) for b in regrouped for x in b] == [float(x[0, 0, 0]) for b in kept for x in b]


def test_reproduce_pennfudan_end_to_end_writes_every_file(tmp_path, tiny):
    torch.manual_seed(0)
    digital = nb.create_model("fcos_small", **SMALL).eval()
    nb.save_checkpoint(tmp_path / "d.pt", digital, "fcos_small", {"accuracy": 0.0})
    nb.save_hwa_checkpoint(tmp_path / "d_hwa.pt", nb.to_analog(digital, nb.TorchHWAPreset()), "fcos_small",
                           {"seconds": 2.0})
    task = nb.get_task("pennfudan", tiny)
    config = load_config(task.default_config, {
        "data.calib_samples": 4, "data.labeled_samples": 4, "data.batch_size": 2, "hardware.input_range_samples": 4,
        "device": "cpu", "sweep.times": ["1s", "1y"], "sweep.chips": 1, "bnft.steps": 1, "bnft.batch_size": 2,
        "models": {"d": {"digital": str(tmp_path / "d.pt"), "hwa": str(tmp_path / "d_hwa.pt")}},
        "retention.models": ["d"], "retention.calibrate_at": ["1s"], "calib_size.models": ["d"],
        "calib_size.sizes": [2, 4],
    })
    out = tmp_path / "out"
    run_comparison(task, config, out, progress=False, command="test")
    for part in ("main", "retention", "calib_size"):
        for name in ("rows.csv", "rows.json", "summary.csv", "summary.json", "summary.md", "sweep.png"):
            assert (out / part / name).stat().st_size > 0, (part, name)
    for name in ("costs.json", "costs.md", "accuracy_vs_cost.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    rows = json.loads((out / "main" / "rows.json").read_text())
    assert {r["metric"] for r in rows} == {"ap50", "map"} and len(rows) == 8 * 2 * 2
    assert all(0.0 <= r["value"] <= 100.0 for r in rows)
    assert "| metric |" in (out / "main" / "summary.md").read_text()
    loaded, meta = nb.load_checkpoint(tmp_path / "d.pt")
    assert meta["model_kwargs"] == {"num_classes": 2, "min_size": 48, "max_size": 64}
    assert loaded.transform.min_size == (48,)  # rebuilt with its own sizes


def test_detection_figure_script_draws_every_panel(tmp_path, tiny):
    import importlib.util

    torch.manual_seed(0)
    nb.save_checkpoint(tmp_path / "d.pt", nb.create_model("fcos_small", **SMALL).eval(), "fcos_small",
                       {"accuracy": 0.0})
    path = Path(__file__).resolve().parents[1] / "examples" / "reproduce" / "pennfudan_figure.py"
    spec = importlib.util.spec_from_file_location("pennfudan_figure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "fig.png"
    module.main(["--model", str(tmp_path / "d.pt"), "--data", str(tiny), "--images", "2", "--calib-samples", "4",
                 "--score", "0.0", "--device", "cpu", "--out", str(out)])
    assert out.stat().st_size > 1000


def test_train_and_hwa_from_the_command_line(tmp_path, tiny, capsys):
    from aihwkit_nabn import cli

    out = tmp_path / "d.pt"
    status = cli.main(["train", "--task", "pennfudan", "--arch", "fcos_small", "--epochs", "1",
                       "--batch-size", "4", "--min-size", "48", "--max-size", "64", "--data", str(tiny), "--out",
                       str(out), "--device", "cpu", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and result["finished"] and 0.0 <= result["val_ap50"] <= 100.0
    assert 0.0 <= result["test_ap50"] <= 100.0 and 0.0 <= result["test_map"] <= 100.0
    model, meta = nb.load_checkpoint(out)
    assert meta["task"] == "pennfudan" and meta["seed"] == 0 and "train --task pennfudan" in meta["command"]
    assert model.transform.min_size == (48,) and model.transform.max_size == 64  # rebuilt with its sizes
    hwa = tmp_path / "d_hwa.pt"
    status = cli.main(["hwa", "--task", "pennfudan", "--model", str(out), "--epochs", "1", "--batch-size", "4",
                       "--data", str(tiny), "--out", str(hwa), "--device", "cpu", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and result["finished"] and 0.0 <= result["test_ap50"] <= 100.0
    analog, meta = nb.load_hwa_model(hwa)
    assert meta["task"] == "pennfudan" and analog.transform.min_size == (48,)
