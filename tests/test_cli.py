"""The command line as a shell user meets it: every subcommand end to end on tiny inputs, and bad input.

A bad argument or config value is one line ``aihwkit-nabn: error: ...`` on stderr and exit status 2,
before any data is read; an error during the work is one line and exit status 1; ``--debug`` shows the
traceback; ``python -m aihwkit_nabn`` is the same command.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aihwkit_nabn import cli
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset
from aihwkit_nabn.evaluation.journal import read_rows
from aihwkit_nabn.tasks.cifar10.data import CLASSES
from aihwkit_nabn.training.checkpoints import load_checkpoint, save_checkpoint
from aihwkit_nabn.training.hwa_checkpoint import save_hwa_checkpoint
from aihwkit_nabn.training.registry import create_model

SAMPLE = ["--data", "shipped-sample"]


def run(capsys, *argv):
    """Run the command in this process; return (exit status, stdout, stderr)."""
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aihwkit-nabn: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """An ImageFolder copy of CIFAR-10's layout: 10 classes, 2 train and 1 test image each."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("test", 1)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIHWKIT_NABN_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------- every subcommand, end to end


def test_train_end_to_end(capsys, tmp_path, tiny_cifar):
    out = tmp_path / "r20.pt"
    status, stdout, _ = run(capsys, "train", "--arch", "resnet20", "--epochs", "1", "--out", str(out), "--data",
                            str(tiny_cifar), "--batch-size", "8", "--cutout-size", "0", "--device", "cpu", "--quiet")
    assert status == 0
    result = json.loads(stdout)
    assert result["finished"] and result["out"] == str(out) and 0.0 <= result["top1"] <= 100.0
    model, meta = load_checkpoint(out)
    assert meta["arch"] == "resnet20" and meta["hparams"]["batch_size"] == 8 and meta["hparams"]["cutout_size"] == 0


def test_calibrate_end_to_end(capsys, tmp_path):
    out = tmp_path / "bn.pt"
    status, stdout, _ = run(capsys, "calibrate", "--model", "resnet20", "--time", "1d", "--test-samples", "50",
                            "--calib-samples", "32", "--device", "cpu", "--out", str(out), "--quiet", *SAMPLE)
    assert status == 0
    report = json.loads(stdout)
    assert report["time_s"] == 86400.0 and report["calib_samples"] == 32 and report["test_samples"] == 50
    assert 0.0 <= report["gdc_top1"] <= 100.0 and 0.0 <= report["nabn_top1"] <= 100.0
    saved = torch.load(out, weights_only=True)
    assert saved["report"]["nabn_top1"] == report["nabn_top1"] and saved["bn_state"]


def test_sweep_end_to_end(capsys, tmp_path):
    out = tmp_path / "sweep"
    status, stdout, _ = run(capsys, "sweep", "--models", "resnet20", "--chips", "1", "--times", "1d",
                            "--methods", "digital,gdc,nabn", "--test-samples", "40", "--calib-samples", "32",
                            "--device", "cpu", "--out", str(out), "--quiet", *SAMPLE)
    assert status == 0 and "| resnet20 | nabn |" in stdout
    rows = read_rows(out / "rows.csv")
    assert sorted(r["method"] for r in rows) == ["digital", "gdc", "nabn"]
    config = json.loads((out / "sweep_config.json").read_text())
    assert config["command"].startswith("aihwkit-nabn sweep --models resnet20")


def test_reproduce_end_to_end(capsys, tmp_path, tiny_cifar):
    torch.manual_seed(0)
    digital = create_model("resnet20").eval()
    save_checkpoint(tmp_path / "r20.pt", digital, "resnet20", {"accuracy": 10.0})
    save_hwa_checkpoint(tmp_path / "h.pt", to_analog(digital, TorchHWAPreset()), "resnet20", {"seconds": 1.0})
    out = tmp_path / "out"
    models = f'{{r20={{digital="{tmp_path / "r20.pt"}", hwa="{tmp_path / "h.pt"}"}}}}'
    sets = ["data.test_samples=10", "data.calib_samples=10", "data.labeled_samples=10", "data.batch_size=10",
            "hardware.input_range_samples=10", f"models={models}", 'sweep.times=["1d"]', "sweep.chips=1",
            'sweep.methods=["digital","gdc","nabn","hwa"]', "device=\"cpu\"", "retention.models=[]",
            "calib_size.models=[]"]
    argv = ["reproduce", "cifar10", "--parts", "main", "--out", str(out), "--data", str(tiny_cifar), "--quiet"]
    for item in sets:
        argv += ["--set", item]
    status, stdout, err = run(capsys, *argv)
    assert status == 0 and "wall time" in stdout, err
    assert sorted({r["method"] for r in read_rows(out / "main" / "rows.csv")}) == ["digital", "gdc", "hwa", "nabn"]
    assert json.loads((out / "run.json").read_text())["task"] == "cifar10"


def test_demo_end_to_end(capsys, tmp_path):
    status, stdout, _ = run(capsys, "demo", "--chips", "1", "--times", "1y", "--test-samples", "20",
                            "--calib-samples", "16", "--out", str(tmp_path / "demo"), "--quiet")
    assert status == 0 and "| resnet20 | nabn |" in stdout
    assert (tmp_path / "demo" / "sweep.png").stat().st_size > 0


def test_python_dash_m_is_the_same_command(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "aihwkit_nabn", "sweep", "--times", "1s,abc", "--out", "x"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr).endswith("(see `aihwkit-nabn sweep --help`)")
    proc = subprocess.run([sys.executable, "-m", "aihwkit_nabn", "--help"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "reproduce" in proc.stdout


# ----------------------------------------------------------------- bad input: one line, exit 2, nothing read


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--times", "1s,abc", "--out", "x"], "argument --times: cannot read drift time 'abc'"),
    (["sweep", "--times", "1s,1s", "--out", "x"], "--times: ['1.0'] given more than once"),
    (["calibrate", "--time", "-5"], "argument --time: drift time must be a finite number of seconds >= 0"),
    (["reproduce", "cifar10", "--set", "sweep.chips=abc"], "sweep.chips must be an integer, got 'abc'"),
    (["reproduce", "cifar10", "--set", "sweep.chips"], "--set takes key=value"),
    (["reproduce", "cifar10", "--set", "sweep.chip=2"], "unknown key sweep.chip"),
    (["reproduce", "cifar10", "--parts", "main,extra"], "--parts ['extra']"),
    (["reproduce", "cifar10", "--models", "resnet99"], "--models ['resnet99'] are not in the config"),
    (["reproduce", "imagenet"], "argument task: invalid choice: 'imagenet'"),
    (["demo", "--chips", "0"], "argument --chips: must be an integer >= 1, got 0"),
    (["demo", "--test-samples", "5000"], "the shipped sample has 1000 test"),
    (["train", "--arch", "resnet99", "--epochs", "1", "--out", "x"], "--arch 'resnet99' is not a model of task cifar10"),
    (["train", "--arch", "resnet20", "--epochs", "0", "--out", "x"], "argument --epochs: must be an integer >= 1"),
    (["train", "--arch", "resnet20", "--epochs", "1", "--out", "x", "--lr", "-1"], "argument --lr: must be > 0"),
    (["train", "--arch", "resnet20", "--epochs", "1", "--out", "x", "--task", "nope"], "argument --task: invalid choice"),
    (["hwa", "--model", "nope.pt", "--epochs", "1", "--out", "x"], "--model 'nope.pt' is neither a checkpoint file"),
    (["sweep", "--methods", "nabn,bnft", "--out", "x"], "--methods ['bnft']: `sweep` runs"),
    (["sweep", "--digital-layers", "conv9", "--calib-samples", "64", "--out", "x", *SAMPLE], "--digital-layers ['conv9']"),
    (["sweep", "--out", "x", "--data", "/no/such/folder"], "data source '/no/such/folder' does not exist"),
    (["sweep", "--out", "x", "--test-samples", "20000"], "20000 test samples requested"),
    (["sweep", "--out", "x", "--device", "tpu"], "argument --device:"),
    (["frobnicate"], "argument command: invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, message):
    status, stdout, err = run(capsys, *argv)
    assert status == 2, (status, err)
    assert message in one_error_line(err), err
    assert stdout == ""


def test_cuda_asked_for_without_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    status, _, err = run(capsys, "demo", "--device", "cuda")
    assert status == 2 and "CUDA is not available" in one_error_line(err)


def test_a_library_error_during_the_run_is_one_line_and_exit_1(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = run(capsys, "sweep", "--models", "resnet20", "--chips", "1", "--times", "1d", "--out",
                         str(tmp_path / "s"), "--data", str(empty), "--device", "cpu", "--quiet")
    assert status == 1
    assert "no images found in" in one_error_line(err) and "--debug" in err


def test_debug_shows_the_traceback(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = run(capsys, "--debug", "sweep", "--models", "resnet20", "--chips", "1", "--times", "1d",
                         "--out", str(tmp_path / "s"), "--data", str(empty), "--device", "cpu", "--quiet")
    assert status == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("aihwkit-nabn: error:")


def test_help_of_every_subcommand(capsys):
    for command in ("train", "hwa", "calibrate", "sweep", "reproduce", "demo"):
        status, stdout, _ = run(capsys, command, "--help")
        assert status == 0 and "usage: aihwkit-nabn" in stdout, command
    status, stdout, _ = run(capsys, "train", "--help")
    assert "--label-smoothing" in stdout and "--cutout-size" in stdout  # the task's recipe options
