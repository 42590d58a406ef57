"""The examples run end to end (with --quick) as a user would run them: in a fresh Python process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, cwd):
    """Run ``examples/<name>`` with ``args`` in a subprocess; return its stdout (fails with its output)."""
    # One thread per process: on a busy 2-core machine, two spinning OpenMP threads per process make the
    # run several times slower, while one thread costs next to nothing at --quick sizes.
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        # a guard against a hang, not a speed check: generous, since a busy CPU can make a --quick run slow
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, (
        f"{name} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def test_calibrate_existing_aihwkit_script_quick(tmp_path):
    out = run_example("calibrate_existing_aihwkit_script.py", "--quick", cwd=tmp_path)
    digital = re.search(r"^digital ResNet-20: (\d+\.\d\d)% on 100 test images$", out, re.M)
    assert digital and float(digital[1]) > 70.0, out  # the shipped model, not a toy
    for when in ("1 day", "1 year"):
        line = re.search(rf"^analog, +{when} after programming: +(\d+\.\d\d)% before calibration, +(\d+\.\d\d)% "
                         r"after calibrate_bn \((\d+) unlabeled images\)$", out, re.M)
        assert line, out
        before, after, samples = float(line[1]), float(line[2]), int(line[3])
        assert 0.0 <= before <= 100.0 and 0.0 <= after <= 100.0
        assert samples == 128


def test_calibrate_existing_aihwkit_script_marks_the_added_lines():
    text = (EXAMPLES / "calibrate_existing_aihwkit_script.py").read_text()
    marked = [line.strip() for line in text.splitlines() if line.rstrip().endswith("# <-- aihwkit-nabn")]
    assert len(marked) == 4  # the import and the three added lines
    assert any(line.startswith("import aihwkit_nabn") for line in marked)
    assert any("aihwkit_nabn.calibrate_bn(analog_model, train_loader" in line for line in marked)
    assert any(line.startswith("after = evaluate(analog_model, test_loader)") for line in marked)
    assert any("aihwkit_nabn.restore_bn(analog_model, snapshot)" in line for line in marked)
    # The user's side is plain aihwkit: its own rpu_config and conversion, no aihwkit-nabn deployment helpers.
    assert "convert_to_analog(model, rpu_config" in text and "TorchInferenceRPUConfig()" in text
    assert "to_analog(" not in text.replace("convert_to_analog(", "")


def test_drift_sweep_from_python_quick(tmp_path):
    out_dir = tmp_path / "sweep"
    out = run_example("drift_sweep_from_python.py", "--quick", "--out", str(out_dir), cwd=tmp_path)
    assert re.search(r"^model: (shipped ResNet-20|NO SHIPPED RESNET-20 WEIGHTS.*TRAINED BRIEFLY HERE)", out, re.M), out
    written = ("rows.csv", "rows.json", "summary.csv", "summary.json", "summary.md", "sweep.png", "sweep_config.json")
    for name in written:
        assert (out_dir / name).is_file(), name
    table = (out_dir / "summary.md").read_text()
    assert table in out  # the Markdown table is printed
    assert "| model | method | 1d | 1y |" in table
    for method in ("digital", "analog", "gdc", "nabn"):
        cell = r"\d+\.\d\d ± \d+\.\d\d"
        assert re.search(rf"^\| resnet20 \| {method} \| {cell} \| {cell} \|$", table, re.M), table
    rows = json.loads((out_dir / "rows.json").read_text())
    assert len(rows) == 4 * 2  # 4 methods x 2 times x 1 chip
    assert {r["unlabeled_samples"] for r in rows if r["method"] == "nabn"} == {32}


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "camvid_240x180.tar.gz").exists(), reason="CamVid archive not in ../shared/data")
def test_segmentation_example_quick(tmp_path):
    out = run_example("segmentation_on_a_drifted_chip.py", "--quick", "--data", str(SHARED / "camvid_240x180.tar.gz"),
                      cwd=tmp_path)
    assert re.search(r"^model: a TOY unet_small trained here for 2 epochs on 8 images$", out, re.M), out
    assert re.search(r"^digital: \d+\.\d\d% mIoU on 8 test images$", out, re.M), out
    for when in ("1 day", "1 year"):
        assert re.search(rf"^chip 0, +{when} after programming: gdc +\d+\.\d\d%, nabn +\d+\.\d\d% \(8 unlabeled "
                         r"images\), bnft +\d+\.\d\d% \(8 labeled images\); BN restored exactly: True$", out, re.M), out


@pytest.mark.skipif(not (SHARED / "pennfudan.tar.gz").exists(), reason="Penn-Fudan archive not in ../shared/data")
def test_detection_example_quick(tmp_path):
    out = run_example("detection_on_a_drifted_chip.py", "--quick", "--data", str(SHARED / "pennfudan.tar.gz"),
                      cwd=tmp_path)
    assert re.search(r"^digital: AP50 \d+\.\d\d%, mAP \d+\.\d\d% on 4 test images$", out, re.M), out
    for when in ("1 day", "1 year"):
        assert re.search(rf"^chip 0, +{when} after programming: AP50 gdc +\d+\.\d\d%, nabn +\d+\.\d\d% \(4 unlabeled "
                         r"images\), bnft +\d+\.\d\d% \(4 labeled images\); BN restored exactly: True$", out, re.M), out


def _script(name):
    """Import ``examples/reproduce/<name>`` as a module."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location(Path(name).stem, EXAMPLES / "reproduce" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dense_targets_on_hand_made_rows(tmp_path, capsys):
    """Three chips at 1 y: digital 80; gdc 60; nabn 70 / 75 / 65 -> half the loss recovered (per chip 0.5, 0.75,
    0.25); hwa+nabn - hwa = +1, +2, +3 -> mean +2, t interval 2 -+ 4.303 * 1 / sqrt(3) = [-0.48, +4.48]: not resolved."""
    header = "model,method,source,time_s,time_label,chip,chip_seed,metric,value\n"
    lines = []
    for chip, (nabn, hwa) in enumerate(((70, 60), (75, 61), (65, 62))):
        for method, value in (("digital", 80), ("gdc", 60), ("nabn", nabn), ("hwa", hwa), ("hwa+nabn", hwa + chip + 1)):
            lines.append(f"m,{method},default,31536000.0,1y,{chip},{chip},ap50,{value}")
            lines.append(f"m,{method},default,1.0,1s,{chip},{chip},ap50,0")  # an earlier time: not the last
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "rows.csv").write_text(header + "\n".join(lines) + "\n")
    _script("dense_targets.py").main([str(tmp_path), "--metric", "ap50", "--out", str(tmp_path / "t.json")])
    record = json.loads((tmp_path / "t.json").read_text())
    assert record["time_s"] == 31536000.0 and record["nabn_recovered_of_chip_means"] == pytest.approx(0.5)
    per_chip = record["nabn_recovered_per_chip"]
    half = 4.302652729911275 * 0.25 / 3 ** 0.5  # t(0.975, 2) x sample std of (0.5, 0.75, 0.25) / sqrt(3)
    assert per_chip["mean"] == pytest.approx(0.5) and per_chip["ci95"] == pytest.approx([0.5 - half, 0.5 + half])
    pair = record["hwa+nabn_minus_hwa"]
    assert pair["mean"] == pytest.approx(2.0) and pair["n_chips"] == 3 and not pair["resolved"]
    assert pair["ci_low"] == pytest.approx(2.0 - 4.302652729911275 / 3 ** 0.5)
    assert "nabn recovers 50.0 %" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no rows of metric"):
        _script("dense_targets.py").main([str(tmp_path), "--metric", "map"])


def test_bn_coverage_counts_the_macs_a_batchnorm_normalises():
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    # conv a (3->4, 3x3 on 8x8, pad 1) -> BN; conv b (4->2, 1x1) -> ReLU, not normalised
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.ReLU()).eval()
    rec = _script("bn_coverage.py").coverage(model, torch.rand(1, 3, 8, 8))
    a, b = 8 * 8 * 4 * 3 * 9, 8 * 8 * 2 * 4
    assert rec["per_layer"]["0"] == {"macs": a, "normalised_by": "1"}
    assert rec["per_layer"]["2"] == {"macs": b, "normalised_by": None}
    assert rec["layers"] == 2 and rec["layers_normalised"] == 1 and rec["share_normalised"] == pytest.approx(a / (a + b))


def test_noise_why_separates_what_a_channel_affine_map_fixes_from_noise():
    import torch  # pylint: disable=import-outside-toplevel

    why = _script("noise_why.py")
    gen = torch.Generator().manual_seed(0)
    digital = torch.randn(4000, 3, 2, 2, generator=gen)
    # an affine change per channel only (scale 2, offset 1 SD): BN statistics can undo all of it
    stats = why.channel_stats(digital, 2 * digital + 1)
    assert stats["rho2"] == pytest.approx(1.0) and stats["snr_db"] > 60
    assert stats["mean_shift_sd"] == pytest.approx(1.0, abs=0.02) and stats["std_ratio"] == pytest.approx(2.0, rel=1e-3)
    # independent noise of the signal's own variance: rho^2 = 1/2, SNR 0 dB after the best affine fit
    noisy = digital + torch.randn(digital.shape, generator=gen)
    stats = why.channel_stats(digital, noisy)
    assert stats["rho2"] == pytest.approx(0.5, abs=0.02) and abs(stats["snr_db"]) < 0.2
    assert stats["std_ratio"] == pytest.approx(2 ** 0.5, rel=0.02) and stats["channels"] == 3
    # capture: each named module's input and output of one pass
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    x = torch.randn(5, 3, generator=gen)
    seen = why.capture(model, x, ["0", "1"])
    assert torch.equal(seen["0"][0], x) and torch.equal(seen["0"][1], seen["1"][0])
    assert torch.equal(seen["1"][1], model(x).detach()) and not model[0]._forward_hooks  # hooks removed


def test_noise_why_resumes_only_its_own_measurement(tmp_path):
    import json  # pylint: disable=import-outside-toplevel

    why = _script("noise_why.py")
    fresh = {"task": "camvid", "arch": "unet_small", "model": "digital", "time_s": 1.0, "images": "2", "settings": {}}
    assert why.resumed(tmp_path / "why.json", fresh, 5) is fresh  # nothing written yet
    old = {**fresh, "settings": {"pcm": {"chips": [{}] * 5}, "reram_cmo": {"chips": [{}] * 3}}}
    (tmp_path / "why.json").write_text(json.dumps(old))
    # a setting with all its chips is read back; one with fewer (another --chips) is measured again
    assert list(why.resumed(tmp_path / "why.json", fresh, 5)["settings"]) == ["pcm"]
    with pytest.raises(ValueError, match="another measurement"):
        why.resumed(tmp_path / "why.json", {**fresh, "time_s": 2.0}, 5)
    # input ranges calibrated in other batches are another deployment: not resumed into this one (and back)
    with pytest.raises(ValueError, match="input_range_batch=None"):
        why.resumed(tmp_path / "why.json", {**fresh, "input_range_batch": 16}, 5)
    (tmp_path / "why.json").write_text(json.dumps({**old, "input_range_batch": 16}))
    with pytest.raises(ValueError, match="input_range_batch=16"):
        why.resumed(tmp_path / "why.json", fresh, 5)


def test_noise_why_says_a_bad_config_in_one_line(tmp_path, monkeypatch):
    why = _script("noise_why.py")
    monkeypatch.setattr("sys.argv", ["noise_why.py", "--config", str(tmp_path / "none.toml"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^noise_why: reproduce config .*none\.toml' does not exist$"):
        why.main()


def test_noise_why_records_a_command_that_runs_again():
    import argparse  # pylint: disable=import-outside-toplevel

    why = _script("noise_why.py")
    args = argparse.Namespace(config="c.toml", arch="", settings="pcm", time="2d", chips=5, ir_batch=0, render=False)
    assert why.replayable(args) == ("python examples/reproduce/noise_why.py --config c.toml --settings pcm "
                                    "--time 2d --chips 5")
    args.ir_batch, args.render = 16, True
    assert why.replayable(args).endswith("--chips 5 --ir-batch 16 --render")


def test_device_daemon_outlives_its_call_and_reports_its_exit_status(tmp_path):
    script = EXAMPLES / "reproduce" / "device_daemon.sh"

    def daemon(*args):
        proc = subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout.strip()

    # the job runs in a session of its own: the shell that started it has returned before the job ends
    assert daemon("start", "job", "bash", "-c", "sleep 1; echo journal > out.txt; exit 3")[1].startswith(
        "daemon job: running")
    rc, said = daemon("start", "job", "true")
    assert rc == 1 and "already running" in said  # never two of one job
    assert daemon("wait", "job", "30") == (0, "daemon job: ended, rc=3")
    assert (tmp_path / "out.txt").read_text() == "journal\n" and (tmp_path / "runs" / "daemon_job.rc").is_file()
    assert daemon("status", "other") == (0, "daemon other: never started here")
    # a live process under the recorded pid that started at another time is not the job (a pid reused)
    daemon("start", "long", "sleep", "30")
    pid_file = tmp_path / "runs" / "daemon_long.pid"
    pid, tick = pid_file.read_text().split()
    pid_file.write_text(f"{pid} {int(tick) + 1}\n")
    assert daemon("status", "long")[1].startswith("daemon long: gone without an exit status")
    os.killpg(int(pid), 9)  # the job's whole process group: its session leader and the sleep
    assert daemon("start", "bad name", "true")[0] == 2 and daemon("start", "job")[0] == 2


def test_why_compare_reports_medians_and_the_largest_layer_difference():
    compare = _script("why_compare.py").compare

    def why(snr, rho2, device):
        layer = lambda s, r: {"snr_db": s, "mean_shift_sd": 0.1, "rho2": r}  # noqa: E731
        chip = {"isolated": {"c1": layer(snr, 0), "c2": layer(snr + 2, 0)},
                **{part: {"bn1": layer(0, rho2), "output": layer(0, rho2 / 2)} for part in ("gdc", "nabn")}}
        return {"settings": {"pcm": {"device": device, "chips": [chip, chip]}}}

    out = compare(why(10.0, 0.8, "cuda"), {**why(10.5, 0.6, "cpu"), "input_range_batch": 16}, "pcm")
    assert out["devices"] == ["cuda", "cpu"] and out["input_range_batch"] == [None, 16]
    snr = out["statistics"]["isolated.snr_db"]
    assert snr["median"] == [11.0, 11.5] and snr["max_abs_diff"] == pytest.approx(0.5)
    rho = out["statistics"]["nabn.rho2"]
    assert rho["last_bn"] == "bn1" and rho["at_last_bn"] == [0.8, 0.6] and rho["at_output"] == [0.4, 0.3]


_FAKE_PYTHON = """#!{python}
# python3 for gpu_noise.sh: `-m aihwkit_nabn ...` (a setting's run) is recorded, not run; anything else is the real one
import json, os, sys, time
from pathlib import Path
if sys.argv[1:3] != ["-m", "aihwkit_nabn"]:
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
args = sys.argv[3:]
out = Path(args[args.index("--out") + 1])
chosen = [json.loads(a.split("=", 1)[1]) for a in args if a.startswith("noise.settings=")]
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps(chosen[-1] if chosen else "all") + "\\n")
time.sleep(0.3)  # long enough for the other worker to claim settings meanwhile
for name in chosen[-1] if chosen else []:
    if name == os.environ.get("FAKE_FAIL"):
        sys.exit(1)
    (out / "settings" / name).mkdir(parents=True, exist_ok=True)
    (out / "settings" / name / "run.json").write_text("{{}}")
"""


@pytest.mark.parametrize("fail", ["", "c"])
def test_gpu_noise_workers_run_each_unfinished_setting_once(tmp_path, fail):
    # gpu_noise.sh's queue: two workers, four settings, one finished already; python3 is a stand-in that records
    # which settings each run was given (the real runs are the dry run's: gpu_noise_dryrun.sh)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(_FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    config = tmp_path / "noise.toml"
    config.write_text('[noise]\nsettings = ["a", "b", "c", "d"]\n')
    runs = tmp_path / "runs"
    (runs / "settings" / "b").mkdir(parents=True)
    (runs / "settings" / "b" / "run.json").write_text("{}")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CALLS": str(tmp_path / "calls.txt"),
           "FAKE_FAIL": fail, "LOCAL": "1", "DEVICE": "cpu", "PARALLEL": "2", "NOISE_CONFIG": str(config),
           "RUNS": str(runs), "OUT": str(tmp_path / "out"), "NO_BRING_BACK": "1", "COMMIT": "test"}
    proc = subprocess.run(["bash", str(EXAMPLES / "reproduce" / "gpu_noise.sh")], cwd=EXAMPLES.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    calls = [json.loads(line) for line in (tmp_path / "calls.txt").read_text().splitlines()]
    assert sorted(map(str, calls)) == sorted(map(str, [["a"], ["c"], ["d"]] + ([] if fail else ["all"])))
    assert calls[-1] == "all" if not fail else "all" not in calls
    logs = "".join(p.read_text() for p in runs.glob("noise_part*.log"))
    assert sorted(re.findall(r"setting (\w) rc=(\d+)", logs)) == [("a", "0"), ("c", "1" if fail else "0"), ("d", "0")]
    assert ("noise table done" in proc.stdout) == (not fail)
    assert f"noise parts rc={1 if fail else 0}" in proc.stdout
