"""Tests of HWA training: the torch preset vs aihwkit's StandardHWATrainingPreset (from the field
table), HWA fine-tuning, resume, HWA checkpoints (weights_only, exact rebuild), the CLI and bad input."""

# pylint: disable=missing-function-docstring, redefined-outer-name

import json
import math
import re
import sys
from functools import reduce
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aihwkit.exceptions import ConfigError, TorchTileConfigError
from aihwkit.inference import PCMLikeNoiseModel
from aihwkit.nn import AnalogLinear
from aihwkit.nn.conversion import convert_to_digital
from aihwkit.simulator.configs import InferenceRPUConfig
from aihwkit.simulator.parameters.enums import WeightModifierType
from aihwkit.simulator.presets import StandardHWATrainingPreset

from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

from aihwkit_nabn import cli
from aihwkit_nabn._aihwkit import mvm
from aihwkit_nabn._aihwkit.accelerated import acceleration_report
from aihwkit_nabn._aihwkit.input_range_fix import input_range_fix_status, remove_input_range_fix
from aihwkit_nabn._aihwkit.input_ranges import init_input_ranges
from aihwkit_nabn._aihwkit.state import analog_state, input_ranges
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import (
    COPIED,
    HWA_PRESET_FIELDS,
    HWA_WEIGHT_NOISE_STD,
    NOT_SUPPORTED,
    REPLACED,
    TILE_CLASS,
    TorchHWAPreset,
    hwa_inference_config,
)
from aihwkit_nabn.analog.presets import config_fields
from aihwkit_nabn.errors import CheckpointError
from aihwkit_nabn.tasks.cifar10.data import CLASSES
from aihwkit_nabn.tasks.cifar10.recipe import range_init_batches, train_hwa, train_hwa_cifar10
from aihwkit_nabn.training.checkpoints import load_checkpoint, save_checkpoint
from aihwkit_nabn.training.hwa_checkpoint import load_hwa_model, save_hwa_checkpoint
from aihwkit_nabn.training.registry import create_model
from aihwkit_nabn.training.schedule import PlateauSchedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_net  # noqa: E402  pylint: disable=wrong-import-position

torch.set_num_threads(min(2, torch.get_num_threads()))


def small_config() -> TorchHWAPreset:
    """TorchHWAPreset with 2 range-initialisation batches instead of 100 (fast CPU tests)."""
    return hwa_inference_config(pre_post__input_range__init_from_data=2)


def data(n: int, size: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen),
            torch.randint(0, 10, (n,), generator=gen))


def field(config, path):
    return reduce(getattr, path.split("."), config)


# ----------------------------------------------------------------- the preset and its table


def test_copied_fields_equal_standard_preset():
    ours, theirs = TorchHWAPreset(), StandardHWATrainingPreset()
    copied = [f for f in HWA_PRESET_FIELDS if f.status == COPIED]
    assert len(copied) > 40
    for row in copied:
        assert config_fields(field(ours, row.path)) == config_fields(field(theirs, row.path)), row.path


def test_not_supported_fields_differ_and_are_refused_by_the_torch_tile():
    rows = [f for f in HWA_PRESET_FIELDS if f.status == NOT_SUPPORTED]
    assert {r.path for r in rows} == {"forward.w_noise", "forward.w_noise_type", "forward.ir_drop"}
    AnalogLinear(4, 3, rpu_config=TorchHWAPreset())  # the preset itself is accepted
    for row in rows:
        theirs = field(StandardHWATrainingPreset(), row.path)
        assert field(TorchHWAPreset(), row.path) != theirs, row.path
        config = TorchHWAPreset()
        section, name = row.path.split(".")
        setattr(getattr(config, section), name, theirs)
        with pytest.raises((ConfigError, TorchTileConfigError)) as err:
            AnalogLinear(4, 3, rpu_config=config)
        quoted = re.findall(r"'([^']+)'", row.note)
        if quoted:  # the table quotes the torch tile's own message
            assert str(err.value) in quoted, row.path


def test_replaced_and_tile_class_fields():
    ours, theirs = TorchHWAPreset(), StandardHWATrainingPreset()
    replaced = {f.path for f in HWA_PRESET_FIELDS if f.status == REPLACED}
    assert replaced == {"modifier.type", "modifier.std_dev"}
    assert theirs.modifier.type == WeightModifierType.NONE and theirs.modifier.std_dev == 0.0
    assert ours.modifier.type == WeightModifierType.ADD_NORMAL and ours.modifier.std_dev == HWA_WEIGHT_NOISE_STD
    for row in (f for f in HWA_PRESET_FIELDS if f.status == TILE_CLASS):
        assert config_fields(field(ours, row.path)) != config_fields(getattr(theirs, row.path, None))


def test_table_accounts_for_every_difference():
    """Every setting not marked COPIED in the table is identical in both presets."""
    ours, theirs = config_fields(TorchHWAPreset()), config_fields(StandardHWATrainingPreset())
    not_copied = [f.path for f in HWA_PRESET_FIELDS if f.status != COPIED]
    differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k, "<absent>") != theirs.get(k, "<absent>"))
    assert differing
    for key in differing:
        assert any(key == p or key.startswith(p + ".") for p in not_copied), key
    for row in HWA_PRESET_FIELDS:  # no row names a field that does not exist
        assert any(k == row.path or k.startswith(row.path + ".") for k in ours), row.path


def test_weight_noise_std_rationale():
    """HWA_WEIGHT_NOISE_STD's docstring numbers come from the deployment noise model."""
    model = PCMLikeNoiseModel()
    g_max = model.g_max

    def sigma(g):  # programming noise std in uS (aihwkit's polynomial)
        poly = sum(c * (g / g_max) ** i for i, c in enumerate(model.prog_coeff))
        return poly * g_max / model.prog_coeff_g_max_reference

    rel = {w: math.hypot(sigma(w * g_max), sigma(0.0)) / g_max for w in (0.5, 0.75, 1.0)}
    assert [round(rel[w], 3) for w in (0.5, 0.75, 1.0)] == [0.040, 0.044, 0.044]
    combined = math.hypot(rel[1.0], StandardHWATrainingPreset().forward.w_noise)
    assert round(combined, 3) == 0.047 and combined <= HWA_WEIGHT_NOISE_STD < combined + 0.005


def test_inference_config_and_preset_runs_accelerated():
    assert config_fields(hwa_inference_config()) == config_fields(TorchHWAPreset())
    assert hwa_inference_config(forward__out_noise=0.0).forward.out_noise == 0.0
    model = to_analog(tiny_net(), TorchHWAPreset())
    assert set(acceleration_report(model).values()) == {"accelerated"}
    x = torch.randn(4, 3, 8, 8)
    model.train()
    assert torch.isfinite(model(x)).all()
    model.eval()
    assert torch.isfinite(model(x)).all()


# ----------------------------------------------------------------- training


def test_train_hwa_step_changes_weights_and_input_ranges(digital):
    x, y = data(16)
    before = {k: v.clone() for k, v in digital.state_dict().items()}
    # 8x8 images: a 4x4 Cutout square (the default 16 would cover the whole image)
    res = train_hwa(digital, x, y, x[:8], y[:8], epochs=1, batch_size=8, rpu_config=small_config(), lr=0.05,
                    seed=3, device="cpu", progress=False, cutout_size=4)
    assert all(torch.equal(v, digital.state_dict()[k]) for k, v in before.items())  # input untouched
    # the state right before the first step: same seed, conversion and range initialisation
    torch.manual_seed(3)
    start = to_analog(digital, small_config())
    batches = range_init_batches(x, batch_size=8, seed=3, device=torch.device("cpu"), cutout_size=4)
    assert init_input_ranges(start, batches) == 2 == res["init_batches"]
    r0, r1 = input_ranges(start), res["input_ranges"]
    assert r0.keys() == r1.keys() and len(r0) == 3
    assert all(v != 3.0 for v in r0.values())  # initialised from data, not init_value
    assert all(r0[k] != r1[k] for k in r0)  # learned
    w0, w1 = convert_to_digital(start).state_dict(), convert_to_digital(res["model"]).state_dict()
    assert all(not torch.equal(w0[k], w1[k]) for k in w0 if k.endswith("weight") and w0[k].dim() > 1)
    hist = res["history"]
    assert len(hist) == 1 and math.isfinite(hist[0]["train_loss"]) and 0.0 <= hist[0]["test_acc"] <= 100.0
    assert res["finished"] and not res["model"].training and res["top1"] == hist[0]["test_acc"]
    assert res["input_range_fix"]["stock_correct"] and res["input_range_fix"]["accelerated_correct"]


def test_train_hwa_resume_is_exact(digital, tmp_path):
    x, y = data(16, seed=1)
    kw = dict(epochs=2, batch_size=8, rpu_config=small_config(), lr=0.05, seed=0, device="cpu", progress=False)
    straight = train_hwa(digital, x, y, x[:8], y[:8], **kw)
    log, state = tmp_path / "log.jsonl", tmp_path / "state.pt"
    first = train_hwa(digital, x, y, x[:8], y[:8], log_path=log, resume_path=state, stop_after_epochs=1, **kw)
    assert not first["finished"] and first["epochs_done"] == 1
    assert torch.load(state, weights_only=True)["epoch"] == 1
    second = train_hwa(digital, x, y, x[:8], y[:8], log_path=log, resume_path=state, **kw)
    assert second["resumed_from_epoch"] == 1 and second["finished"]
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]
    a, b = analog_state(straight["model"]), analog_state(second["model"])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["test_acc"] for h in straight["history"]] == [h["test_acc"] for h in second["history"]]
    with pytest.raises(CheckpointError, match="other settings"):
        train_hwa(digital, x, y, x[:8], y[:8], log_path=log, resume_path=state, **{**kw, "lr": 0.1})


def test_plateau_schedule_rule():
    rule = PlateauSchedule(patience=2, factor=0.5, stop_patience=3, min_epochs=5)
    # epoch: 1 2 3 4 5 6 7 8; best at 2 (60.0); 3, 4 without improvement -> cut; 5 not better; stop at 5 would be
    # due (best 3 epochs old) but min_epochs=5 allows it only from epoch 5 on
    metrics = [50.0, 60.0, 60.0, 55.0, 59.0, 61.0, 61.0, 61.0, 61.0]
    stops, scales = [], []
    for epoch, metric in enumerate(metrics, 1):
        stops.append(rule.epoch_end(metric, epoch))
        scales.append(rule(0))
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert stops == [False, False, False, False, True, False, False, False, True]
    assert rule.best == 61.0 and rule.best_epoch == 6 and rule.cuts == 2
    early = PlateauSchedule(patience=1, stop_patience=1, min_epochs=0)
    assert early.epoch_end(1.0, 1) is False and early.epoch_end(1.0, 2) is True  # equal is not better
    with pytest.raises(FloatingPointError, match="epoch 3"):
        early.epoch_end(float("nan"), 3)
    for kwargs, what in (({"patience": 0}, "patience"), ({"stop_patience": 1.5}, "stop_patience"),
                         ({"min_epochs": -1}, "min_epochs"), ({"factor": 1.0}, "factor"), ({"min_delta": -1}, "min_delta")):
        with pytest.raises(ValueError, match=what):
            PlateauSchedule(**kwargs)


def test_train_hwa_plateau_follows_its_rule_and_resumes_exactly(digital, tmp_path):
    x, y = data(16, seed=2)
    kw = dict(epochs=8, batch_size=8, rpu_config=small_config(), lr=0.05, seed=0, device="cpu", progress=False,
              val_samples=8, schedule="plateau", patience=1, stop_patience=2, min_epochs=3)
    straight = train_hwa(digital, x, y, x[:8], y[:8], **kw)
    hist = straight["history"]
    # replay the rule on the logged val accuracies: every epoch's lr and the stop must follow from it
    rule, lrs, stop_at = PlateauSchedule(patience=1, stop_patience=2, min_epochs=3), [], None
    for rec in hist:
        lrs.append(0.05 * rule.scale)
        if rule.epoch_end(rec["val_acc"], rec["epoch"]):
            stop_at = rec["epoch"]
            break
    assert [rec["lr"] for rec in hist] == pytest.approx(lrs, rel=1e-12)
    assert rule.cuts >= 1  # the rule acted in this run (the test would say nothing otherwise)
    assert straight["finished"] and straight["stopped"] == (stop_at is not None)
    assert len(hist) == (stop_at or 8) and bool(hist[-1].get("stopped")) == straight["stopped"]
    assert straight["hparams"]["schedule"].startswith("plateau on val_acc: lr x0.5 after 1 epochs")
    log, state = tmp_path / "log.jsonl", tmp_path / "state.pt"
    first = train_hwa(digital, x, y, x[:8], y[:8], log_path=log, resume_path=state, stop_after_epochs=2, **kw)
    assert first["epochs_done"] == 2 and not first["finished"]
    second = train_hwa(digital, x, y, x[:8], y[:8], log_path=log, resume_path=state, **kw)
    assert [h["val_acc"] for h in second["history"]] == [h["val_acc"] for h in hist]
    assert [h["lr"] for h in second["history"]] == [h["lr"] for h in hist]
    a, b = analog_state(straight["model"]), analog_state(second["model"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    if straight["stopped"]:  # a stopped run, resumed, trains no more
        again = train_hwa(digital, x, y, x[:8], y[:8], log_path=log, resume_path=state, **kw)
        assert again["epochs_done"] == len(hist) and again["stopped"] and again["finished"]
    with pytest.raises(CheckpointError, match="other settings"):  # the schedule is part of the run's identity
        train_hwa(digital, x, y, x[:8], y[:8], log_path=log, resume_path=state, **{**kw, "schedule": "cosine"})


def test_train_hwa_plateau_needs_a_val_split(digital):
    x, y = data(8)
    ok = dict(epochs=2, batch_size=4, progress=False, rpu_config=small_config(), device="cpu")
    with pytest.raises(ValueError, match="validation metric"):
        train_hwa(digital, x, y, x, y, schedule="plateau", **ok)  # evaluates on test: refused
    with pytest.raises(ValueError, match="schedule must be one of"):
        train_hwa(digital, x, y, x, y, schedule="step", **ok)
    with pytest.raises(ValueError, match="min_epochs"):
        train_hwa(digital, x, y, x, y, schedule="plateau", val_samples=4, min_epochs=3, **ok)


def test_bad_input(digital):
    x, y = data(8)
    ok = dict(epochs=1, batch_size=4, progress=False, rpu_config=small_config(), device="cpu")
    for epochs in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="epochs"):
            train_hwa(digital, x, y, x, y, **{**ok, "epochs": epochs})
    for lr in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="lr"):
            train_hwa(digital, x, y, x, y, lr=lr, **ok)
    with pytest.raises(ValueError, match="batch_size"):
        train_hwa(digital, x, y, x, y, **{**ok, "batch_size": 0})
    with pytest.raises(ValueError, match="max_seconds"):
        train_hwa(digital, x, y, x, y, max_seconds=0, **ok)
    with pytest.raises(TypeError, match="uint8"):
        train_hwa(digital, x.float(), y, x, y, **ok)
    with pytest.raises(ValueError, match="labels"):
        train_hwa(digital, x, y[:3], x, y, **ok)
    with pytest.raises(TypeError, match="digital"):
        train_hwa(to_analog(digital), x, y, x, y, **ok)
    with pytest.raises(TypeError, match="TorchInferenceRPUConfig"):
        train_hwa(digital, x, y, x, y, **{**ok, "rpu_config": InferenceRPUConfig()})


# ----------------------------------------------------------------- checkpoints and CLI


@pytest.fixture(scope="module")
def hwa_run(tmp_path_factory):
    """train_hwa_cifar10 on a resnet20 checkpoint and a 4-image CIFAR-10 folder (1 step, CPU)."""
    root = tmp_path_factory.mktemp("hwa")
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("test", 2)):
        for i in range(n):
            folder = root / "data" / split / CLASSES[i]
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "0.png")
    torch.manual_seed(0)
    source = save_checkpoint(root / "digital.pt", create_model("resnet20"), "resnet20", {"accuracy": 12.5})
    out = root / "hwa.pt"
    result = train_hwa_cifar10(str(source), epochs=1, out_path=out, data_source=root / "data",
                               cache_dir=root / "cache", rpu_config=small_config(), batch_size=2, device="cpu",
                               progress=False)
    return result, out


def test_hwa_checkpoint_rebuilds_the_trained_model_exactly(hwa_run):
    result, path = hwa_run
    assert result["out_path"] == str(path) and Path(str(path) + ".log.jsonl").is_file()
    trained = result["model"]
    rebuilt, meta = load_hwa_model(path, small_config())
    assert not rebuilt.training and acceleration_report(rebuilt) == acceleration_report(trained)
    a, b = analog_state(trained), analog_state(rebuilt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.manual_seed(9)
        y_trained = trained.eval()(x)
        torch.manual_seed(9)
        y_rebuilt = rebuilt(x)
    assert torch.equal(y_trained, y_rebuilt)  # same noise draws, bitwise equal
    assert meta["accuracy"] == result["top1"] and meta["digital_accuracy"] == 12.5


def test_hwa_checkpoint_is_plain_with_meta_and_digital_weights(hwa_run):
    result, path = hwa_run
    blob = torch.load(path, map_location="cpu", weights_only=True)
    hwa, meta = blob["hwa"], blob["meta"]
    assert blob["arch"] == "resnet20" and hwa["preset"] == "TorchHWAPreset"
    assert hwa["format"] == "aihwkit-nabn/hwa/v1"  # a modified preset: the full form, rebuildable without it
    assert hwa["tiles"].keys() == result["input_ranges"].keys()
    assert all(hwa["tiles"][k]["input_range"] == v for k, v in result["input_ranges"].items())
    assert all(t["out_scales"].dim() == 1 for t in hwa["tiles"].values())
    for key in ("arch", "epochs", "seed", "lr", "preset", "seconds", "accuracy", "command", "torch_version",
                "aihwkit_version", "input_range_fix", "history", "hparams"):
        assert key in meta, key
    assert meta["epochs"] == 1 and meta["lr"] == 0.02 and meta["arch"] == "resnet20"
    digital, _ = load_checkpoint(path)  # also a regular digital checkpoint
    expected = convert_to_digital(result["model"]).state_dict()
    assert all(torch.equal(v, expected[k].cpu()) for k, v in digital.state_dict().items())


def test_load_hwa_model_errors(hwa_run, tmp_path):
    _, path = hwa_run
    with pytest.raises(CheckpointError, match="init_from_data"):  # trained with a modified preset
        load_hwa_model(path)
    plain = save_checkpoint(tmp_path / "plain.pt", create_model("resnet20"), "resnet20")
    with pytest.raises(CheckpointError, match="not an HWA checkpoint"):
        load_hwa_model(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hwa_model(tmp_path / "missing.pt")
    other = TorchHWAPreset()
    other.mapping.max_input_size = 128  # another tile layout
    with pytest.raises(CheckpointError, match="does not match"):
        load_hwa_model(path, other)


def test_default_preset_roundtrip_and_save_errors(tmp_path):
    torch.manual_seed(0)
    model = to_analog(create_model("resnet20"), TorchHWAPreset())
    with torch.no_grad():  # stand-ins for learned values
        for i, tile in enumerate(t for t in model.modules() if hasattr(t, "input_range_update_idx")):
            tile.input_range.fill_(1.0 + 0.1 * i)
            tile.out_scaling_alpha.mul_(0.9)
    path = save_hwa_checkpoint(tmp_path / "h.pt", model, "resnet20", {"note": "untrained"})
    rebuilt, meta = load_hwa_model(path)  # default TorchHWAPreset
    assert meta == {"note": "untrained"}
    # compact form: the converted weights are not stored twice, and come back bit for bit
    blob = torch.load(path, weights_only=True)
    assert blob["hwa"]["format"] == "aihwkit-nabn/hwa/v2" and blob["hwa"]["derived_keys"]
    assert not set(blob["hwa"]["derived_keys"]) & set(blob["state_dict"])
    digital, _ = load_checkpoint(path)
    expected = convert_to_digital(model).state_dict()
    assert digital.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in digital.state_dict().items())
    full = {**blob, "state_dict": digital.state_dict(), "hwa": {**blob["hwa"], "format": "aihwkit-nabn/hwa/v1"}}
    torch.save(full, tmp_path / "full.pt")
    assert path.stat().st_size < 0.7 * (tmp_path / "full.pt").stat().st_size
    old, _ = load_hwa_model(tmp_path / "full.pt")  # the full v1 form still loads, to the same model
    a, b = analog_state(old), analog_state(rebuilt)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(2)
        y0 = model(x)
        torch.manual_seed(2)
        assert torch.equal(y0, rebuilt(x))
    with pytest.raises(CheckpointError, match="unknown arch"):
        save_hwa_checkpoint(tmp_path / "x.pt", model, "resnet99")
    with pytest.raises(CheckpointError, match="no analog tile"):
        save_hwa_checkpoint(tmp_path / "x.pt", create_model("resnet20"), "resnet20")
    with pytest.raises(CheckpointError, match="tensors, str"):
        save_hwa_checkpoint(tmp_path / "x.pt", model, "resnet20", {"bad": object()})
    model.fc.program_analog_weights()
    with pytest.raises(CheckpointError, match="before programming"):
        save_hwa_checkpoint(tmp_path / "x.pt", model, "resnet20")


def test_cli_hwa_wiring(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake(model, **kwargs):
        seen.update(kwargs, model=model)
        return {"top1": 50.0, "seconds": 1.0, "out_path": kwargs["out_path"], "epochs_done": 2, "finished": True,
                "input_range_fix": {"installed": True}}

    monkeypatch.setattr("aihwkit_nabn.tasks.cifar10.task.train_hwa_cifar10", fake)
    out = str(tmp_path / "h.pt")
    argv = ["hwa", "--model", "resnet20", "--epochs", "2", "--out", out, "--lr", "0.01", "--batch-size", "64",
            "--max-seconds", "30", "--seed", "1", "--device", "cpu", "--quiet", "--val-samples", "5000",
            "--schedule", "plateau", "--patience", "4", "--stop-patience", "12", "--min-epochs", "1"]
    assert cli.main(argv) == 0
    assert (seen["schedule"], seen["patience"], seen["stop_patience"], seen["min_epochs"]) == ("plateau", 4, 12, 1)
    assert seen["model"] == "resnet20" and seen["epochs"] == 2 and seen["out_path"] == out
    assert seen["lr"] == 0.01 and seen["batch_size"] == 64 and seen["max_seconds"] == 30.0
    assert seen["seed"] == 1 and seen["device"] == "cpu" and seen["progress"] is False
    assert seen["command"].startswith("aihwkit-nabn hwa --model resnet20")
    assert json.loads(capsys.readouterr().out)["top1"] == 50.0
    assert cli.main(["hwa", "--model", "resnet20", "--epochs", "2", "--out", out, "--schedule", "step"]) == 2
    assert "expected one of cosine, plateau" in capsys.readouterr().err
    assert cli.main(["hwa", "--model", "resnet20", "--out", out]) == 2  # --epochs is required
    err = capsys.readouterr().err
    assert err.startswith("aihwkit-nabn: error: ") and "--epochs" in err and err.count("\n") == 1
    assert cli.main(["hwa", "--model", "no_such_model", "--epochs", "1", "--out", out]) == 2
    assert "neither a checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        train_hwa_cifar10("no_such_model", epochs=1, out_path=out)


def test_train_hwa_leaves_aihwkit_as_it_found_it(digital):
    """The input-range fix is installed for the training call only (and left alone if it was installed)."""
    remove_input_range_fix()
    stock_prepare, stock_clamp = AnalogMVM.__dict__["_prepare_input"], mvm.input_clamp()
    x, y = data(16)
    res = train_hwa(digital, x, y, x[:8], y[:8], epochs=1, batch_size=8, rpu_config=small_config(), lr=0.05,
                    seed=3, device="cpu", progress=False, cutout_size=4)
    assert res["input_range_fix"]["stock_correct"]  # it was active during training ...
    assert AnalogMVM.__dict__["_prepare_input"] is stock_prepare and mvm.input_clamp() is stock_clamp  # ... not after
    assert not input_range_fix_status()["installed"]
