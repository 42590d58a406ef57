"""Every named noise setting builds, programs, drifts and calibrates a tiny model; times and bad names."""

from pathlib import Path

import pytest
import torch
from torch import nn

import aihwkit_nabn as nb
from aihwkit_nabn.analog.hwa_preset import hwa_inference_config
from aihwkit_nabn.analog.noise_settings import (NOISE_SETTINGS, GaussianWeightNoiseModel, list_noise_settings,
                                                noise_setting)
from aihwkit_nabn.analog.presets import PCMInferencePreset
from aihwkit_nabn.errors import ConfigError, DriftTimeError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 4)).eval()


def test_the_table_has_every_kind_of_setting_the_issue_names():
    names = list_noise_settings()
    for expected in ("pcm", "pcm_custom_drift", "state_independent", "hermes_1dev", "hermes_2dev", "reram_cmo",
                     "reram_wan2022", "converter_4bit", "converter_6bit", "converter_8bit", "gauss_add_0.02",
                     "gauss_mul_0.1"):
        assert expected in names
    assert any(n.startswith("read_noise_") for n in names) and any(n.startswith("out_noise_") for n in names)


@pytest.mark.parametrize("name", list(NOISE_SETTINGS))
def test_every_setting_programs_drifts_and_calibrates(name):
    setting = noise_setting(name)
    base = PCMInferencePreset()
    config = setting.apply(base)
    assert type(base.noise_model) is type(PCMInferencePreset().noise_model)  # the input is not changed
    t = setting.times[-1] if setting.times else 86400.0
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for cfg in (config, setting.apply(hwa_inference_config())):
        chip = nb.Chip(nb.to_analog(_net(), cfg), seed=3).drift_to(t)
        before = chip.model[1].running_mean.clone()
        nb.calibrate_bn(chip.model, [x[:8], x[8:]], progress=False)
        with torch.no_grad():
            out = chip.model(x)
        assert torch.isfinite(out).all() and not torch.equal(before, chip.model[1].running_mean)


def test_the_settings_change_what_they_say():
    pcm = PCMInferencePreset()
    assert noise_setting("converter_4bit").apply(pcm).forward.inp_res == 14.0
    assert noise_setting("out_noise_0.08").apply(pcm).forward.out_noise == 0.08
    assert noise_setting("read_noise_x4").apply(pcm).noise_model.read_noise_scale == 4.0
    assert noise_setting("hermes_1dev").apply(pcm).noise_model.num_devices == 1


def test_gaussian_noise_has_the_stated_spread_and_no_drift():
    g = torch.full((200_000,), 10.0)
    torch.manual_seed(0)
    add = GaussianWeightNoiseModel(0.02, "additive").apply_programming_noise_to_conductance(g)
    mul = GaussianWeightNoiseModel(0.1, "multiplicative").apply_programming_noise_to_conductance(g)
    assert abs(add.std().item() - 0.02 * 25.0) < 0.01 and abs(mul.std().item() - 0.1 * 10.0) < 0.01
    model = GaussianWeightNoiseModel(0.05)
    assert torch.equal(model.apply_drift_noise_to_conductance(add, model.generate_drift_coefficients(g), 3.15e7), add)
    with pytest.raises(ValueError, match="mode"):
        GaussianWeightNoiseModel(0.1, "both")


def test_reram_wan2022_is_defined_at_its_fitted_times_only():
    setting = noise_setting("reram_wan2022")
    assert setting.times == (1.0, 86400.0, 172800.0)
    setting.check_times([1.0, 86400.0])
    with pytest.raises(DriftTimeError, match="1s, 1d, 2d only, not at 1h"):
        setting.check_times([3600.0])
    chip = nb.Chip(nb.to_analog(_net(), setting.apply(PCMInferencePreset())), seed=0)
    chip.drift_to(172800.0)
    with pytest.raises(DriftTimeError, match="ReRamWan2022NoiseModel.*not at 1y"):
        chip.drift_to(nb.parse_time("1y"))


def test_an_unknown_setting_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown noise setting 'pcm2'.*reram_cmo"):
        noise_setting("pcm2")


def test_reproduce_noise_runs_a_tiny_table_end_to_end(tmp_path, monkeypatch, capsys):
    import json

    import numpy as np
    from PIL import Image

    from aihwkit_nabn import cli
    from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset
    from aihwkit_nabn.tasks.cifar10.data import CLASSES
    from aihwkit_nabn.training.checkpoints import save_checkpoint
    from aihwkit_nabn.training.hwa_checkpoint import save_hwa_checkpoint

    monkeypatch.setenv("AIHWKIT_NABN_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for name in CLASSES:
            folder = tmp_path / "cifar" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    torch.manual_seed(0)
    digital = nb.create_model("resnet20").eval()
    save_checkpoint(tmp_path / "r.pt", digital, "resnet20")
    save_hwa_checkpoint(tmp_path / "h.pt", nb.to_analog(digital, TorchHWAPreset()), "resnet20")
    out = tmp_path / "noise"
    sets = {"data.source": f'"{tmp_path / "cifar"}"', "data.test_samples": "20", "data.calib_samples": "8",
            "data.labeled_samples": "8", "data.batch_size": "10", "data.val_samples": "10",
            "hardware.input_range_samples": "8",
            "models": f'{{r = {{digital = "{tmp_path / "r.pt"}", hwa = "{tmp_path / "h.pt"}"}}}}',
            "sweep.times": '["1s", "1y"]', "sweep.chips": "2", "bnft.steps": "1", "bnft.batch_size": "4",
            "noise.settings": '["pcm", "reram_wan2022", "gauss_mul_0.1"]', "device": '"cpu"'}
    # processes sharing a GPU take turns at the input-range calibration through the lock the driver names
    monkeypatch.setenv("AIHWKIT_NABN_DEPLOY_LOCK", str(tmp_path / "deploy.lock"))
    argv = ["reproduce", "noise", "--out", str(out), "--quiet"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert cli.main(argv) == 0
    assert (tmp_path / "deploy.lock").exists()
    table = json.loads((out / "table.json").read_text())
    assert [e["setting"] for e in table] == ["pcm", "reram_wan2022", "gauss_mul_0.1"]
    assert table[1]["time_label"] == "2d" and table[0]["time_label"] == "1y"  # Wan2022 at its own times
    assert set(table[0]["methods"]) == {"digital", "gdc", "nabn", "bnft", "hwa", "hwa+nabn"}
    assert "nabn recovers" in (out / "table.md").read_text() and (out / "recovered.png").stat().st_size > 0
    run = json.loads((out / "run.json").read_text())
    assert run["commit"] and "reram_wan2022" in run["descriptions"]
    # the rows' own commits are recorded beside the table's (a re-render may come from a later commit)
    assert set(run["setting_commits"]) == {"pcm", "reram_wan2022", "gauss_mul_0.1"} and run["target"]["loss"] == 2.0
    assert all(e["target"] in ("met", "missed", "n/a") for e in table)
    paired = json.loads((out / "paired.json").read_text())
    # each setting's paired differences at its own last time: Wan2022 at 2 d, the others at 1 y
    assert {(p["setting"], p["time_label"]) for p in paired} == {("pcm", "1y"), ("reram_wan2022", "2d"),
                                                                 ("gauss_mul_0.1", "1y")}
    assert {(p["a"], p["b"]) for p in paired} >= {("nabn", "gdc"), ("hwa+nabn", "hwa")}
    assert "nabn − gdc" in (out / "paired.md").read_text()
    sweep = json.loads((out / "settings" / "gauss_mul_0.1" / "main" / "sweep_config.json").read_text())
    assert "gauss_mul_0.1" in json.dumps(sweep)
    # a rerun reads the finished settings back without re-entering them (several processes, one table) ...
    from aihwkit_nabn.evaluation import noise_table

    entered = []
    monkeypatch.setattr(noise_table, "run_comparison", lambda task, sub, folder, **kw: entered.append(folder.name))
    before = (out / "table.json").read_text()
    assert cli.main(argv) == 0 and entered == [] and (out / "table.json").read_text() == before
    # ... but a setting finished under another config is run again
    done = out / "settings" / "pcm" / "run.json"
    record = json.loads(done.read_text())
    record["config"]["sweep"]["chips"] = 3
    done.write_text(json.dumps(record))
    assert cli.main(argv) == 0 and entered == ["pcm"]
    # a setting that cannot run at a configured time is refused before anything runs
    assert cli.main(["reproduce", "cifar10", "--out", str(tmp_path / "x"), "--set", 'hardware.noise="reram_wan2022"']) == 2
    assert "defined at 1s, 1d, 2d only" in capsys.readouterr().err


def test_a_setting_config_does_not_depend_on_the_list_it_came_from():
    # a table's settings list may grow between calls: its finished settings must still be read back
    from aihwkit_nabn.evaluation.comparison import load_config
    from aihwkit_nabn.evaluation.noise_table import setting_config

    config = load_config(Path(nb.__file__).resolve().parent / "tasks" / "camvid" / "noise.toml")
    longer = {**config, "noise": {**config["noise"], "settings": config["noise"]["settings"] + ["gauss_add_0.02"]}}
    shorter = {**config, "noise": {**config["noise"], "settings": ["pcm"]}}
    assert setting_config(config, "pcm") == setting_config(longer, "pcm") == setting_config(shorter, "pcm")
    assert setting_config(config, "pcm")["hardware"]["noise"] == "pcm" and "noise" not in setting_config(config, "pcm")


def test_the_target_applies_only_where_gdc_loses_more_than_its_threshold():
    from aihwkit_nabn.evaluation.noise_table import _markdown, _table, recovered_fraction, target_status

    assert target_status(7.5, 0.70, (2.0, 0.5)) == "met" and target_status(75.0, 0.41, (2.0, 0.5)) == "missed"
    assert target_status(2.0, 0.10, (2.0, 0.5)) == "n/a" and target_status(0.0, None, (2.0, 0.5)) == "n/a"
    assert target_status(5.0, 0.49, (2.0, 0.5)) == "missed" and target_status(5.0, 0.6, (2.0, 0.7)) == "missed"

    def summary(digital, gdc, nabn):
        return [{"model": "m", "metric": "acc", "method": k, "time_s": 31536000.0, "mean": v, "std": 0.0,
                 "n_chips": 5} for k, v in (("digital", digital), ("gdc", gdc), ("nabn", nabn))]

    table = _table({"big": summary(91.0, 81.0, 81.04), "small": summary(91.0, 90.0, 89.0)})
    assert [e["target"] for e in table] == ["missed", "n/a"]
    text = _markdown(table)
    # a share that rounds to zero from below prints as 0 %, not -0 %
    assert recovered_fraction(91.0, 81.0, 80.99) < 0 and "| 0 % | missed |" in _markdown(
        _table({"x": summary(91.0, 81.0, 80.99)}))
    assert "| 0 % | missed |" in text and "| -100 % | n/a |" in text and "more than 2 points" in text
    # a task with two metrics (detection: ap50 and map) gets one row per metric, each named
    assert "| big | m | acc | 1y |" in text


def test_sweep_and_reproduce_take_a_noise_setting(tmp_path, capsys):
    import json

    from aihwkit_nabn import cli

    bad = ["sweep", "--models", "resnet20", "--noise", "reram_wan2022", "--times", "1s,1h", "--out", str(tmp_path),
           "--data", "shipped-sample", "--calib-samples", "64"]
    assert cli.main(bad) == 2 and "defined at 1s, 1d, 2d only, not at 1h" in capsys.readouterr().err
    argv = ["sweep", "--models", "resnet20", "--noise", "gauss_mul_0.1", "--times", "1s", "--chips", "1", "--methods",
            "gdc,nabn", "--test-samples", "50", "--calib-samples", "32", "--out", str(tmp_path / "s"), "--data",
            "shipped-sample", "--quiet", "--device", "cpu"]
    assert cli.main(argv) == 0
    recorded = json.loads((tmp_path / "s" / "sweep_config.json").read_text())
    assert "GaussianWeightNoiseModel" in json.dumps(recorded) and "object at" not in json.dumps(recorded)
    cmo = [str(tmp_path / "c") if a == str(tmp_path / "s") else ("reram_cmo" if a == "gauss_mul_0.1" else a)
           for a in argv]
    assert cli.main(cmo) == 0 and cli.main(cmo) == 0  # the same command again resumes (stable settings)
    assert cli.main(["reproduce", "cifar10", "--noise", "reram_wan2022", "--out", str(tmp_path / "r")]) == 2
    assert "hardware.noise" in capsys.readouterr().err
