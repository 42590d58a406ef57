"""`aihwkit-nabn reproduce`: the whole comparison end to end on a tiny config, and its bad input."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aihwkit_nabn as nb
from aihwkit_nabn._aihwkit.state import input_ranges
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset
from aihwkit_nabn.errors import ConfigError
from aihwkit_nabn.evaluation.comparison import Comparison, finished, load_config, run_comparison
from aihwkit_nabn.evaluation.journal import read_rows
from aihwkit_nabn.evaluation.methods import METHOD_NAMES as MAIN_METHODS
from aihwkit_nabn.tasks import get_task
from aihwkit_nabn.tasks.cifar10.data import CLASSES, balanced_order, normalize
from aihwkit_nabn.utils.batches import TensorBatches
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
    setup = run["model_setup_seconds"]  # each model set up once, its input ranges calibrated within that time
    assert set(setup) == set(config["models"])
    assert all(s["seconds"] >= s["input_range_seconds"] + s["input_range_lock_wait_seconds"] for s in setup.values())
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


def test_input_range_batch_regroups_the_same_images_and_is_recorded(tiny_setup):
    # hardware.input_range_batch: the same input-range images in smaller batches (to fit memory), recorded in
    # the sweep's settings because aihwkit draws its cached rows per batch (another, equally drawn deployment)
    tmp_path, _ = tiny_setup
    base = {**config_overrides(tiny_setup), "retention.models": [], "calib_size.models": []}
    one, split = (Comparison(CIFAR10, load_config(CIFAR10.default_config, {**base, **extra}), base=tmp_path,
                             progress=False) for extra in ({}, {"hardware.input_range_batch": 6}))
    assert [len(b) for b in one.ir_batches] == [16] and [len(b) for b in split.ir_batches] == [6, 6, 4]
    assert torch.equal(torch.cat(list(split.ir_batches)), next(iter(one.ir_batches)))
    rows = split.sweep("main", ["r20"], [split.method("gdc")], [1.0], 1, tmp_path / "split")
    assert rows and json.loads((tmp_path / "split" / "sweep_config.json").read_text())["input_range_batch"] == 6
    with pytest.raises(ConfigError, match="input_range_batch"):
        load_config(CIFAR10.default_config, {**base, "hardware.input_range_batch": 0})


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


def test_a_held_out_val_split_is_disjoint_stratified_and_seeded():
    from aihwkit_nabn.tasks.cifar10.data import split_off_val

    labels = torch.arange(10).repeat_interleave(20)  # 10 classes x 20
    keep, val = split_off_val(labels, 50)
    assert len(val) == 50 and len(keep) == 150 and not set(keep.tolist()) & set(val.tolist())
    assert torch.bincount(labels[val]).tolist() == [5] * 10
    assert torch.equal(val, torch.sort(val).values) and torch.equal(split_off_val(labels, 50)[1], val)
    assert not torch.equal(split_off_val(labels, 50, seed=1)[1], val)
    with pytest.raises(ValueError, match="val_samples"):
        split_off_val(labels, 200)


def test_cifar10_model_inputs_are_the_normalised_head_of_the_split():
    from aihwkit_nabn.tasks.cifar10.data import normalize
    from aihwkit_nabn.tasks.cifar10.task import SHIPPED_SAMPLE

    task = type(CIFAR10)(SHIPPED_SAMPLE)
    x = task.model_inputs("test", 3)
    assert x.shape == (3, 3, 32, 32) and torch.equal(x, normalize(task.split("test")[0][:3]))
    with pytest.raises(ConfigError, match="val_samples"):  # no val split unless one is held out
        task.model_inputs("val", 3)


def test_the_comparison_on_the_val_split_names_its_rows_and_never_calibrates_on_val(tiny_setup):
    tmp_path, config = tiny_setup
    config = load_config(CIFAR10.default_config, {
        **config_overrides(tiny_setup),
        "data.val_samples": 20, "data.eval_split": "val", "data.test_samples": 0, "data.calib_samples": 16,
        "calib_size.models": [], "retention.models": []})
    run = run_comparison(CIFAR10, config, tmp_path / "val", parts=("main",), progress=False, command="test")
    rows = json.loads((tmp_path / "val" / "main" / "rows.json").read_text())
    assert {r["metric"] for r in rows} == {"val_top1"} and run["config"]["data"]["eval_split"] == "val"
    task = type(CIFAR10)(config["data"]["source"]).with_val_split(20)  # as the comparison builds it
    train_x, _ = task.split("train")
    val_x, val_y = task.split("val")
    assert len(train_x) == 60 and len(val_x) == 20 and torch.bincount(val_y).tolist() == [2] * 10
    calib = torch.cat([b for b in task.calibration_data(16, seed=0, batch_size=8)])
    val_set = {tuple(v.flatten()[:64].tolist()) for v in val_x}
    # calibration views are augmented crops: compare the images they came from
    idx = task.training_subset(16, seed=0)
    assert all(tuple(train_x[i].flatten()[:64].tolist()) not in val_set for i in idx.tolist())
    assert len(calib) == 16
    with pytest.raises(ConfigError, match="val split"):
        type(CIFAR10)(config["data"]["source"]).split("val")
    with pytest.raises(ConfigError, match="eval_split"):
        load_config(CIFAR10.default_config, {"data.eval_split": "train"})


def config_overrides(tiny_setup):
    tmp_path, _ = tiny_setup
    return {
        "data.source": str(tmp_path / "cifar"), "data.test_samples": 20, "data.calib_samples": 16,
        "data.labeled_samples": 16, "data.batch_size": 10, "hardware.input_range_samples": 16,
        "models": {"r20": {"digital": str(tmp_path / "r20.pt"), "hwa": str(tmp_path / "r20_hwa.pt")}},
        "sweep.times": ["1s"], "sweep.chips": 1, "bnft.steps": 2, "bnft.batch_size": 8, "device": "cpu",
    }


def test_training_on_the_rest_evaluates_val_every_epoch_and_test_once(tmp_path, monkeypatch):
    from aihwkit_nabn.tasks.cifar10 import train_baseline

    monkeypatch.setenv("AIHWKIT_NABN_CACHE", str(tmp_path / "cache"))
    data = _tiny_cifar(tmp_path / "cifar")
    out = tmp_path / "r.pt"
    result = train_baseline("resnet20", epochs=1, out_path=out, data_source=data, device="cpu", batch_size=16,
                            val_samples=20, progress=False)
    meta = result["meta"]
    assert meta["val_samples"] == 20 and meta["n_train"] == 60 and meta["n_test"] == 40
    assert set(meta["history"][0]) == {"epoch", "val_acc", "train_loss"} and meta["val_accuracy"] == result["top1"]
    assert 0.0 <= meta["accuracy"] <= 100.0 and meta["hparams"]["val_samples"] == 20
    assert "val_samples=20" in meta["command"]
    # a resume state of another split is refused
    out2 = tmp_path / "r2.pt"
    train_baseline("resnet20", epochs=2, out_path=out2, data_source=data, device="cpu", batch_size=16,
                   val_samples=20, progress=False, stop_after_epochs=1)
    with pytest.raises(Exception, match="val_samples"):
        train_baseline("resnet20", epochs=2, out_path=out2, data_source=data, device="cpu", batch_size=16,
                       val_samples=10, progress=False)


def test_fresh_labeled_views_change_every_pass_and_repeat_under_the_same_seed(tiny_setup):
    from aihwkit_nabn.tasks.cifar10.task import FreshViewBatches

    tmp_path, config = tiny_setup
    task = type(CIFAR10)(config["data"]["source"])
    data = task.labeled_data(16, seed=1, batch_size=8, fresh_views=True)
    assert isinstance(data, FreshViewBatches) and len(data) == 2
    torch.manual_seed(3)
    first, second = [torch.cat([x for x, _ in data]) for _ in range(2)]
    assert not torch.equal(first, second)  # another augmentation and order each pass
    torch.manual_seed(3)
    assert torch.equal(torch.cat([x for x, _ in data]), first)  # ... yet reproducible
    labels = torch.cat([y for _, y in data])
    assert sorted(labels.tolist()) == sorted(task.split("train")[1][task.training_subset(16, seed=1)].tolist())
    assert not get_task("camvid").supports_fresh_views


def test_bnft_with_fresh_views_and_label_smoothing_is_recorded(tiny_setup):
    tmp_path, _ = tiny_setup
    config = load_config(CIFAR10.default_config, {
        **config_overrides(tiny_setup), "sweep.methods": ["bnft"], "bnft.fresh_views": True,
        "bnft.label_smoothing": 0.1, "calib_size.models": [], "retention.models": []})
    run_comparison(CIFAR10, config, tmp_path / "ft", parts=("main",), progress=False, command="test")
    recorded = json.loads((tmp_path / "ft" / "main" / "sweep_config.json").read_text())
    text = json.dumps(recorded)
    assert "FreshViewBatches" in text and "label_smoothing=0.1" in text
    with pytest.raises(ConfigError, match="true or false"):
        load_config(CIFAR10.default_config, {"bnft.fresh_views": 1})


def test_bnft_cuda_graph_is_a_launch_option_a_finished_run_and_its_journal_ignore(tiny_setup):
    """bnft.cuda_graph (off CUDA: the eager steps) gives the same rows; the journal's settings do not carry it, so
    a journal written without it resumes with it, and a finished comparison counts as finished; run.json records it."""
    tmp_path, _ = tiny_setup
    overrides = {**config_overrides(tiny_setup), "sweep.methods": ["bnft"], "calib_size.models": [],
                 "retention.models": []}
    plain = load_config(CIFAR10.default_config, overrides)
    graphed = load_config(CIFAR10.default_config, {**overrides, "bnft.cuda_graph": True})
    run_comparison(CIFAR10, plain, tmp_path / "eager", parts=("main",), progress=False)
    assert finished(tmp_path / "eager", graphed) and not finished(tmp_path / "eager", {**graphed, "seed": 1})
    run_comparison(CIFAR10, graphed, tmp_path / "graph", parts=("main",), progress=False)
    rows = [json.loads((tmp_path / d / "main" / "rows.json").read_text()) for d in ("eager", "graph")]
    assert [r["value"] for r in rows[0]] == [r["value"] for r in rows[1]]
    configs = [(tmp_path / d / "main" / "sweep_config.json").read_text() for d in ("eager", "graph")]
    assert configs[0] == configs[1] and "cuda_graph" not in configs[0]
    assert json.loads((tmp_path / "graph" / "run.json").read_text())["config"]["bnft"]["cuda_graph"] is True
    with pytest.raises(ConfigError, match="true or false"):
        load_config(CIFAR10.default_config, {"bnft.cuda_graph": "yes"})


def _sweep_script(name):
    """The module of ``examples/reproduce/<name>.py`` (a script, not a package module)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "examples" / "reproduce"
                                                  / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep_sets(tiny_setup):
    """The tiny setup's config as ``--set`` arguments, its one model named r20."""
    tmp_path, _ = tiny_setup
    sets = [f"{k}={json.dumps(v)}" for k, v in config_overrides(tiny_setup).items() if k != "models"]
    sets += [f'models.r20.digital="{tmp_path / "r20.pt"}"', f'models.r20.hwa="{tmp_path / "r20_hwa.pt"}"']
    return [arg for item in sets for arg in ("--set", item)]


def test_bnft_sweep_chooses_on_val_only(tiny_setup):
    tmp_path, _ = tiny_setup
    sweep, sets = _sweep_script("bnft_sweep"), _sweep_sets(tiny_setup)
    out = tmp_path / "sweep"
    sweep.main(["--out", str(out), "--model", "r20", "--steps", "1,2", "--lrs", "1e-3", "--smoothing", "0",
                "--fresh", "0,1", "--time", "1s", "--chips", "2", "--val-samples", "20", "--quiet", *sets])
    record = json.loads((out / "bnft_sweep.json").read_text())
    assert len(record["settings"]) == 4 and record["chosen"] in {s["setting"] for s in record["settings"]}
    assert all(s["n_chips"] == 2 and s["ci_low"] is not None for s in record["settings"])
    rows = read_rows(out / record["chosen"] / "main" / "rows.csv")
    assert {r["metric"] for r in rows} == {"val_top1"}  # measured on val, never on test
    # the zero-step reference runs once: fine-tuning settings do not change nabn (same chips, same calibration)
    joint = {**config_overrides(tiny_setup), "data.val_samples": 20, "data.eval_split": "val", "data.test_samples": 0,
             "sweep.chips": 2, "sweep.methods": ["nabn", "bnft"], "bnft.steps": 1, "bnft.fresh_views": True,
             "retention.models": [], "calib_size.models": []}
    run_comparison(CIFAR10, load_config(CIFAR10.default_config, joint), tmp_path / "joint", parts=("main",),
                   progress=False)
    nabn = lambda folder: {r["chip_seed"]: r["value"] for r in read_rows(folder / "main" / "rows.csv")  # noqa: E731
                           if r["method"] == "nabn"}
    assert nabn(tmp_path / "joint") == nabn(out / "reference") and len(nabn(out / "reference")) == 2


def test_bnft_sweep_drops_a_recipe_only_after_it_lost_at_consecutive_step_counts():
    reason = _sweep_script("bnft_sweep").prune_reason
    lost, won = ("1e-3", 0, True), ("1e-4", 0, True)
    history = {(lost, 20): 0.0, (lost, 50): -0.4, (won, 20): 0.2, (won, 50): -0.1}
    assert reason(history, lost, 100, 2) == "bnft - nabn <= 0 on val at steps 20, 50"
    assert reason(history, won, 100, 2) is None  # it won at 20
    assert reason(history, lost, 100, 0) is None and reason(history, lost, 100, 3) is None  # off; too few counts
    assert reason(history, lost, 50, 2) is None  # one earlier count only
    history[lost, 100] = None  # dropped at 100: a loss for the next count
    assert reason(history, lost, 300, 2) == "bnft - nabn <= 0 on val at steps 50, 100"
    history[won, 100] = 0.3
    assert reason(history, won, 300, 2) is None


def test_bnft_sweep_records_the_dropped_settings_and_never_runs_them(tmp_path, monkeypatch):
    """The sweep's wiring of the prune rule: a recipe that lost to nabn at steps 1 and 2 is not run at 3, the record
    and the table list it with the reason, and the choice is made among the settings that ran."""
    sweep = _sweep_script("bnft_sweep")
    ran = []

    def fake_run_setting(task, args, name, overrides, part, script):
        ran.append(name)
        method = overrides["sweep.methods"][0]
        # lr 1e-3 is 0.5 points below nabn on every chip, lr 1e-4 0.5 above (the values differ between chips)
        shift = 0.0 if method == "nabn" else (-0.5 if overrides["bnft.lr"] == 1e-3 else 0.5)
        return [{"model": "r20", "method": method, "time_s": 1.0, "time_label": "1s", "chip": c, "chip_seed": c,
                 "metric": "val_top1", "value": 80.0 + c + shift + 0.01 * c * c, "method_seconds": 0.0,
                 "eval_seconds": 0.0, "unlabeled_samples": 0, "labeled_samples": 0} for c in range(3)]

    monkeypatch.setattr(sweep, "run_setting", fake_run_setting)
    out = tmp_path / "sweep"
    sweep.main(["--out", str(out), "--steps", "1,2,3", "--lrs", "1e-4,1e-3", "--smoothing", "0", "--fresh", "1",
                "--quiet"])
    dropped = "steps3_lr0.001_ls0_fresh"
    assert dropped not in ran and "steps3_lr0.0001_ls0_fresh" in ran and ran[0] == "reference"
    record = json.loads((out / "bnft_sweep.json").read_text())
    assert record["skipped"] == [{"setting": dropped, "reason": "bnft - nabn <= 0 on val at steps 1, 2"}]
    assert dropped not in {s["setting"] for s in record["settings"]} and len(record["settings"]) == 5
    assert record["chosen"].endswith("lr0.0001_ls0_fresh") and record["chosen_beats_nabn"]
    assert f"| {dropped} | skipped: bnft - nabn <= 0 on val at steps 1, 2 | |" in (out / "bnft_sweep.md").read_text()


def test_calibration_views_differ_only_as_described(tiny_setup):
    tmp_path, config = tiny_setup
    task = type(CIFAR10)(config["data"]["source"])
    raw = task.split("train")[0][task.training_subset(16, seed=0)]
    views = {v: torch.cat([x for x in task.calibration_data(16, seed=0, batch_size=8, view=v)])
             for v in ("train", "crop_flip", "plain")}
    default = torch.cat([x for x in task.calibration_data(16, seed=0, batch_size=8)])
    assert torch.equal(views["train"], default)  # the default is the training view, as before
    plain = torch.cat([x for x in TensorBatches(raw, batch_size=8, transform=normalize)])
    assert torch.equal(views["plain"], plain)  # no augmentation at all
    differ = (views["train"] != views["crop_flip"]).any(1)  # [N, H, W]: pixels the cutout painted
    assert differ.any() and not torch.equal(views["crop_flip"], plain)  # crop + flip only, same draws
    painted = views["train"].permute(0, 2, 3, 1)[differ]
    assert torch.allclose(painted, painted[:1].expand_as(painted))  # ... one colour: the cutout square
    with pytest.raises(ConfigError, match="calibration view 'blur'"):
        task.calibration_data(16, view="blur")


def test_calib_view_option_is_checked_before_data_and_recorded(tiny_setup, monkeypatch):
    tmp_path, _ = tiny_setup
    overrides = {**config_overrides(tiny_setup), "sweep.methods": ["nabn"], "retention.models": [],
                 "calib_size.models": []}
    with pytest.raises(ConfigError, match=r"data.calib_view 'blur': task cifar10 has the views \['crop_flip'"):
        run_comparison(CIFAR10, load_config(CIFAR10.default_config, {**overrides, "data.calib_view": "blur"}),
                       tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "main").exists()  # nothing half-written
    with pytest.raises(ConfigError, match="task camvid has its own view only"):
        run_comparison(get_task("camvid"), {**load_config(CIFAR10.default_config, overrides),
                                            "data": {"calib_view": "plain"}}, tmp_path / "bad2", progress=False)
    plain = load_config(CIFAR10.default_config, {**overrides, "data.calib_view": "plain"})
    assert not finished(tmp_path / "plain", plain)  # nothing there yet
    run_comparison(CIFAR10, plain, tmp_path / "plain", parts=("main",), progress=False)
    assert finished(tmp_path / "plain", plain)  # a rerun of a sweep skips it ...
    assert not finished(tmp_path / "plain", {**plain, "seed": 1})  # ... but not under another config
    recorded = json.loads((tmp_path / "plain" / "main" / "sweep_config.json").read_text())
    assert "no augmentation" in json.dumps(recorded)


def test_calib_sweep_chooses_view_and_size_on_val_only(tiny_setup):
    tmp_path, _ = tiny_setup
    sweep, sets = _sweep_script("calib_sweep"), _sweep_sets(tiny_setup)
    out = tmp_path / "csweep"
    sweep.main(["--out", str(out), "--model", "r20", "--views", "train,plain", "--sizes", "8,16", "--time", "1s",
                "--chips", "2", "--val-samples", "20", "--quiet", *sets])
    record = json.loads((out / "calib_sweep.json").read_text())
    assert [s["setting"] for s in record["settings"]] == ["train:8", "train:16", "plain:8", "plain:16"]
    assert record["reference"] == "train:16" and record["chosen"] in {s["setting"] for s in record["settings"]}
    assert all(s["n_chips"] == 2 for s in record["settings"])
    assert all(s["ci_low"] is not None for s in record["settings"] if s["setting"] != "train:16")
    rows = {v: read_rows(out / v / "calib_size" / "rows.csv") for v in ("train", "plain")}
    assert {r["metric"] for v in rows.values() for r in v} == {"val_top1"}  # measured on val, never on test
    gdc = {v: [r["value"] for r in rs if r["method"] == "gdc"] for v, rs in rows.items()}
    assert gdc["train"] == gdc["plain"]  # the input ranges do not depend on the BN calibration view
    # ... while the BN calibration images do (the untrained model's val accuracy is too coarse to show it)
    overrides = {**config_overrides(tiny_setup), "retention.models": [], "calib_size.models": []}
    own, plain = (Comparison(CIFAR10, load_config(CIFAR10.default_config, {**overrides, **extra}), base=tmp_path,
                             progress=False) for extra in ({}, {"data.calib_view": "plain"}))
    first = lambda batches: next(iter(batches))  # noqa: E731
    assert own.bn_calib is own.calib and not torch.equal(first(plain.bn_calib), first(plain.calib))
    assert torch.equal(first(plain.calib), first(own.calib))
    assert all(torch.equal(a, b) for a, b in zip(plain.ir_batches, own.ir_batches))


def test_fair_config_is_valid_and_holds_its_decisions(tiny_setup):
    from pathlib import Path

    tmp_path, _ = tiny_setup
    fair = Path(CIFAR10.default_config).with_name("fair.toml")
    models = {m: {"digital": str(tmp_path / "r20.pt"), "hwa": str(tmp_path / "r20_hwa.pt")}
              for m in ("resnet20", "resnet32", "resnet56")}
    config = load_config(fair, {"models": models})
    assert config["data"]["test_samples"] == 0 and config["data"]["val_samples"] == 5000  # full test, val held out
    assert config["sweep"]["chips"] == 10 and max(config["calib_size"]["sizes"]) == 4096
    assert "fair.toml" in Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text()  # shipped


def test_fair_targets_read_the_grid_at_its_last_time(tmp_path, monkeypatch):
    """examples/reproduce/fair_targets.py: paired targets at the latest time only, met by the mean and by the
    whole interval, and the unprogrammed HWA gap from the checkpoints' test accuracy."""
    import csv

    script = _sweep_script("fair_targets")
    offsets = {"digital": 0.0, "hwa": -2.0, "hwa+nabn": -0.8, "nabn": -2.5, "bnft": -2.2}  # at 1 y
    rows = []
    for chip, noise in enumerate([0.1, -0.1, 0.2]):
        for method, off in offsets.items():
            for t, scale in ((1.0, 0.0), (31536000.0, 1.0)):  # at 1 s every method equals digital
                rows.append({"model": "resnet32", "time_s": t, "metric": "top1", "method": method, "chip_seed": chip,
                             "value": 90.0 + scale * (off + (noise if method != "digital" else 0.0))})
    (tmp_path / "grid" / "main").mkdir(parents=True)
    with open(tmp_path / "grid" / "main" / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    accuracy = {"resnet32.pt": 91.0, "resnet32_hwa.pt": 90.2}
    monkeypatch.setattr(script, "_accuracy", lambda path: accuracy[path.name])
    script.main([str(tmp_path / "grid"), "--digital", "d", "--hwa", "h", "--out", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "targets.json").read_text())
    by = {t["target"]: t for t in record["targets"]}
    assert record["time_s"] == 31536000.0
    assert by["hwa - digital >= -3"]["met"] and by["hwa - digital >= -3"]["met_with_confidence"]
    assert by["hwa+nabn - digital >= -1"]["met"] and not by["hwa+nabn - digital >= -1"]["met_with_confidence"]
    assert not by["nabn - digital >= -2"]["met"]
    assert abs(by["bnft - nabn >= +0"]["mean"] - 0.3) < 1e-9 and by["bnft - nabn >= +0"]["met"]
    assert record["unprogrammed"] == [{"model": "resnet32", "digital_test": 91.0, "hwa_unprogrammed_test": 90.2,
                                      "difference": pytest.approx(-0.8), "met": False}]
    assert "| hwa - digital >= -3 | -1.93 | [-2.31, -1.55] | 3 | yes | yes |" in (tmp_path / "out" / "targets.md").read_text()


REPO = Path(__file__).resolve().parents[1]  # the checkout, whether or not the package is installed from it
SHIPPED_CONFIGS = sorted((REPO / "aihwkit_nabn" / "tasks").glob("*/*.toml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_names_models_that_exist(path):
    """A config's models resolve from the repository root: a checkpoint path that exists, or a registry name whose
    weights are shipped (a registered architecture without them fails only when the run starts)."""
    import tomllib  # pylint: disable=import-outside-toplevel

    task = nb.get_task(path.parent.name)
    for name, spec in tomllib.loads(path.read_text())["models"].items():
        if task.has_model(spec["digital"]):
            task.load_model(spec["digital"])  # raises where the weights are not shipped
        else:
            assert (REPO / spec["digital"]).is_file(), f"{path.name}: {name}.digital {spec['digital']}"
        if "hwa" in spec:
            assert (REPO / spec["hwa"]).is_file(), f"{path.name}: {name}.hwa {spec['hwa']}"
