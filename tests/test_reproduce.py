"""`aihwkit-nabn reproduce`: the whole comparison end to end on a tiny config, and its bad input."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from aihwkit_nabn._aihwkit.state import input_ranges
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset
from aihwkit_nabn.errors import ConfigError
from aihwkit_nabn.evaluation.comparison import Comparison, load_config, run_comparison
from aihwkit_nabn.evaluation.journal import read_rows
from aihwkit_nabn.evaluation.methods import METHOD_NAMES as MAIN_METHODS
from aihwkit_nabn.tasks import get_task
from aihwkit_nabn.tasks.cifar10.data import CLASSES, balanced_order
from aihwkit_nabn.training.checkpoints import save_checkpoint
from aihwkit_nabn.training.hwa_checkpoint import save_hwa_checkpoint
from aihwkit_nabn.training.registry import create_model

CIFAR10 = get_task("cifar10")


def _tiny_cifar(root):
    """An ImageFolder copy of CIFAR-10's layout: 10 classes, 8 train and 4 test images each."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                pixels[..., c % 3] //= 2 + c  # a weak class signal; any labels do for this test
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def tiny_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("AIHWKIT_NABN_CACHE", str(tmp_path / "cache"))
    data = _tiny_cifar(tmp_path / "cifar")
    torch.manual_seed(0)
    digital = create_model("resnet20").eval()
    save_checkpoint(tmp_path / "r20.pt", digital, "resnet20", {"accuracy": 10.0})
    save_hwa_checkpoint(tmp_path / "r20_hwa.pt", to_analog(digital, TorchHWAPreset()), "resnet20", {"seconds": 12.5})
    overrides = {
        "data.source": str(data), "data.test_samples": 20, "data.calib_samples": 16, "data.labeled_samples": 16,
        "data.batch_size": 10, "hardware.input_range_samples": 16,
        "models": {"r20": {"digital": str(tmp_path / "r20.pt"), "hwa": str(tmp_path / "r20_hwa.pt")}},
        "sweep.times": ["1s", "1d"], "sweep.chips": 1, "bnft.steps": 2, "bnft.batch_size": 8,
        "retention.models": ["r20"], "retention.calibrate_at": ["1s"],
        "calib_size.models": ["r20"], "calib_size.sizes": [8, 16], "calib_size.time": "1d", "device": "cpu",
    }
    return tmp_path, load_config(CIFAR10.default_config, overrides)


def test_reproduce_end_to_end_writes_every_file(tiny_setup):
    tmp_path, config = tiny_setup
    out = tmp_path / "out"
    run = run_comparison(CIFAR10, config, out, progress=False, command="test")
    for part in ("main", "retention", "calib_size"):
        for name in ("rows.csv", "rows.json", "summary.csv", "summary.json", "summary.md", "sweep.png"):
            assert (out / part / name).stat().st_size > 0, (part, name)
    for name in ("costs.json", "costs.md", "accuracy_vs_cost.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    rows = json.loads((out / "main" / "rows.json").read_text())
    assert sorted({r["method"] for r in rows}) == sorted(MAIN_METHODS)
    assert len(rows) == len(MAIN_METHODS) * 2
    by = {(r["method"], r["time_s"]): r for r in rows}
    assert by[("bnft", 1.0)]["labeled_samples"] == 16 and by[("bnft", 1.0)]["trained_params"] > 0
    assert by[("hwa+nabn", 1.0)]["source"] == "hwa" and by[("nabn", 1.0)]["unlabeled_samples"] == 16
    costs = {c["method"]: c for c in json.loads((out / "costs.json").read_text())}
    assert costs["hwa"]["hwa_training_seconds_once"] == 12.5 and costs["nabn"]["hwa_training_seconds_once"] is None
    assert costs["hwa+bnft"]["hwa_trained_params_once"] == sum(p.numel() for p in create_model("resnet20").parameters())
    retention = {r["method"] for r in json.loads((out / "retention" / "rows.json").read_text())}
    assert retention == {"gdc", "nabn", "nabn@1s"}
    sizes = {r["method"]: r["unlabeled_samples"] for r in json.loads((out / "calib_size" / "rows.json").read_text())}
    assert sizes == {"gdc": 0, "nabn[8]": 8, "nabn[16]": 16}
    assert run["wall_seconds"] > 0 and set(run["part_seconds"]) == {"main", "retention", "calib_size"}
    # a second run resumes every journal and adds nothing
    again = run_comparison(CIFAR10, config, out, progress=False, command="test")
    assert len(json.loads((out / "main" / "rows.json").read_text())) == len(rows)
    assert again["config"] == run["config"]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown methods"):
        load_config(CIFAR10.default_config, {"sweep.methods": ["nabn", "magic"]})
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\ncalib_samples = 1\n")
    with pytest.raises(ConfigError, match=r"no \[sweep\] section"):
        load_config(bad)
    bad.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("key, value, message", [
    ("sweep.chips", "abc", "sweep.chips must be an integer"),
    ("sweep.chips", 0, "sweep.chips must be an integer >= 1"),
    ("sweep.times", ["1s", "abc"], "cannot read drift time 'abc'"),
    ("sweep.times", ["-5"], "finite number of seconds >= 0"),
    ("sweep.times", [], "sweep.times must not be empty"),
    ("sweep.chip", 1, "unknown key sweep.chip"),
    ("sweep.methods", ["nabn", "nabn"], "given more than once"),
    ("bnft.lr", 0.0, "bnft.lr must be > 0"),
    ("bnft.steps", 2.5, "bnft.steps must be an integer"),
    ("data.calib_samples", 1, "data.calib_samples must be an integer >= 2"),
    ("hardware.preset", "magic", "hardware.preset must be one of"),
    ("retention.models", ["resnet99"], "retention.models ['resnet99'] are not in [models]"),
    ("calib_size.sizes", [32, 0], "calib_size.sizes[1] must be an integer >= 1"),
    ("seeds", 1, "unknown key 'seeds'"),
    ("models.resnet20.hwa", "no/such/file.pt", "does not exist"),
])
def test_every_config_value_is_checked(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(CIFAR10.default_config, {key: value})


def test_balanced_order_prefixes_hold_every_class():
    labels = torch.arange(10).repeat_interleave(30)  # sorted by class, like the CIFAR-10 archive
    order = balanced_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(300))
    for k in (10, 32, 128):
        counts = torch.bincount(labels[order[:k]], minlength=10)
        assert counts.max() - counts.min() <= 1, (k, counts)
    assert not torch.equal(order, balanced_order(labels, seed=4))


def test_comparison_calibration_prefix_is_class_balanced(tiny_setup):
    tmp_path, config = tiny_setup
    cmp = Comparison(CIFAR10, config, base=tmp_path, device="cpu", progress=False)
    # calibration takes the first num_samples images: they must not be the first classes only
    _, train_y = cmp.task.split("train")
    calib_labels = train_y[cmp.task.training_subset(len(cmp.calib.inputs), seed=cmp.seed)]
    assert len(torch.unique(calib_labels[:10])) == 10
    labeled = [batch[1] for batch in cmp.labeled]
    assert all(len(torch.unique(y)) > 1 for y in labeled)


def test_deployed_input_ranges_do_not_depend_on_the_process_history(tiny_setup):
    # A resumed comparison runs in a new process; it must deploy the very model the first one did.
    tmp_path, config = tiny_setup
    deployed = []
    for draws in (0, 7):
        torch.rand(draws)  # a different global random state, as in another process
        cmp = Comparison(CIFAR10, config, base=tmp_path, device="cpu", progress=False)
        deployed.append(input_ranges(cmp.model("r20", needs_hwa=False).analog["default"]))
    assert deployed[0].keys() == deployed[1].keys() and len(deployed[0]) > 0
    assert deployed[0] == deployed[1]


def test_merge_comparison_joins_per_model_folders(tiny_setup, tmp_path):
    # examples/reproduce/merge_comparison.py merges folders of `reproduce --models <m>` run in parallel
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "reproduce" / "merge_comparison.py"
    spec = importlib.util.spec_from_file_location("merge_comparison", script)
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    base, config = tiny_setup
    run = base / "run"
    run_comparison(CIFAR10, config, run, parts=("main",), progress=False, command="test")
    merge.main([str(tmp_path / "merged"), str(run), str(run)])  # the same folder twice: every row twice
    rows, merged = read_rows(run / "main" / "rows.csv"), read_rows(tmp_path / "merged" / "main" / "rows.csv")
    assert len(merged) == 2 * len(rows) > 0 and merged[: len(rows)] == rows
    costs = json.loads((tmp_path / "merged" / "costs.json").read_text())
    assert len(costs) == 2 * len(json.loads((run / "costs.json").read_text()))
    for name in ("main/summary.md", "main/sweep.png", "accuracy_vs_cost.png", "run.json"):
        assert (tmp_path / "merged" / name).stat().st_size > 0, name
    with pytest.raises(SystemExit, match="did not finish"):
        merge.main([str(tmp_path / "m2"), str(tmp_path / "nothing_here")])
