"""Drift sweep: output files, interrupted + resumed == uninterrupted, resume refuses other settings."""

import json

import pytest
import torch

import aihwkit_nabn as nb
from aihwkit_nabn.evaluation.journal import read_rows
from aihwkit_nabn.utils.modes import preserved_training_flags
from aihwkit_nabn.utils.rng import seeded


def _setup(digital, analog, images):
    labels = (images.mean((1, 2, 3)) > 0).long()  # a learnable-looking label, any will do here
    metric = nb.Top1Accuracy(nb.TensorBatches(images, labels, batch_size=32))
    models = {"tiny": nb.SweepModel(digital, {"default": analog})}
    return models, nb.standard_methods(images, num_samples=48), metric


def _comparable(rows):
    return sorted((r["model"], r["method"], r["time_s"], r["chip"], r["value"], r["unlabeled_samples"]) for r in rows)


def test_resumed_sweep_equals_uninterrupted(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    kwargs = dict(times=(1.0, 86400.0), n_chips=2, device="cpu", progress=False)
    full = nb.run_sweep(models, methods, metric, out_dir=tmp_path / "full", **kwargs)
    assert len(full) == 4 * 2 * 2
    part = nb.run_sweep(models, methods, metric, out_dir=tmp_path / "part", stop_after=5, **kwargs)
    assert len(part) == 5
    # simulate a crash in the middle of writing a row: a partial trailing line is dropped on resume
    with open(tmp_path / "part" / "rows.csv", "a") as f:
        f.write("tiny,nabn,default,86400.0,1d,1")
    resumed = nb.run_sweep(models, methods, metric, out_dir=tmp_path / "part", **kwargs)
    assert _comparable(resumed) == _comparable(full)
    assert len(read_rows(tmp_path / "part" / "rows.csv")) == 16


def test_resume_refuses_changed_settings(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    nb.run_sweep(models, methods, metric, out_dir=tmp_path, times=(1.0,), n_chips=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="different settings"):
        nb.run_sweep(models, methods, metric, out_dir=tmp_path, times=(1.0,), n_chips=2, device="cpu", progress=False)
    with pytest.raises(FileExistsError):
        nb.run_sweep(models, methods, metric, out_dir=tmp_path, times=(1.0,), n_chips=1, device="cpu",
                     progress=False, resume=False)


def test_report_files(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    rows = nb.run_sweep(models, methods, metric, out_dir=tmp_path, times=(1.0, 3600.0), n_chips=2, device="cpu", progress=False)
    paths = nb.write_report(rows, tmp_path)
    for path in paths.values():
        assert path.exists() and path.stat().st_size > 0
    summary = json.loads(paths["summary.json"].read_text())
    assert len(summary) == 4 * 2 and all(s["n_chips"] == 2 for s in summary)
    md = paths["summary.md"].read_text()
    assert "| tiny | nabn |" in md and "1h" in md
    assert paths["sweep.png"].read_bytes()[:4] == b"\x89PNG"
    nabn = [r for r in rows if r["method"] == "nabn"]
    assert all(r["unlabeled_samples"] == 48 for r in nabn)


def test_sweep_rejects_bad_setup(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    with pytest.raises(nb.DriftTimeError):
        nb.run_sweep(models, methods, metric, out_dir=tmp_path, times=(-1.0,), n_chips=1, device="cpu")
    with pytest.raises(ValueError, match="unique"):
        nb.run_sweep(models, methods + [nb.Digital()], metric, out_dir=tmp_path, times=(1.0,), n_chips=1, device="cpu")
    with pytest.raises(ValueError, match="no analog variant"):
        nb.run_sweep({"tiny": nb.SweepModel(digital, {})}, methods, metric, out_dir=tmp_path, times=(1.0,), n_chips=1, device="cpu")


def test_calibrate_once_holds_state_and_skips_earlier_times(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    once = nb.NoiseAwareBN(images, num_samples=48, calibrate_at=3600.0).named("nabn@1h")
    rows = nb.run_sweep(models, [methods[3], once], metric, out_dir=tmp_path, times=(1.0, 3600.0, 86400.0),
                        n_chips=1, device="cpu", progress=False)
    by = {(r["method"], r["time_s"]): r for r in rows}
    assert ("nabn@1h", 1.0) not in by  # not calibrated yet at 1 s
    # at t_c both methods did the same thing: calibrate at 1 h
    assert by[("nabn@1h", 3600.0)]["value"] == by[("nabn", 3600.0)]["value"]
    assert by[("nabn@1h", 86400.0)]["unlabeled_samples"] == 48
    # the state calibrated at 1 h is the one kept for 1 d: compare with a direct computation
    chip = nb.Chip(analog, 0)
    chip.drift_to(3600.0)
    nb.calibrate_bn(chip.model, images, num_samples=48)
    calibrated = nb.snapshot_bn(chip.model)
    chip.drift_to(86400.0)
    with preserved_training_flags(chip.model):
        with seeded(0, "evaluate", 86400.0, "nabn@1h"):
            calibrated.restore(chip.model)
            direct = metric(chip.model)
    assert by[("nabn@1h", 86400.0)]["value"] == direct


def test_old_journal_without_peak_memory_is_upgraded(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    kwargs = dict(times=(1.0,), n_chips=1, device="cpu", progress=False)
    nb.run_sweep(models, methods, metric, out_dir=tmp_path, stop_after=2, **kwargs)
    journal = tmp_path / "rows.csv"
    lines = journal.read_text().splitlines()
    header = lines[0].split(",")
    cut = header.index("peak_mem_mib")
    journal.write_text("\n".join(",".join(line.split(",")[:cut]) for line in lines) + "\n")
    rows = nb.run_sweep(models, methods, metric, out_dir=tmp_path, **kwargs)
    assert len(rows) == 4
    assert journal.read_text().splitlines()[0].split(",")[-1] == "peak_mem_mib"


class CountingMetric:
    """A metric that counts how often it is evaluated, per model kind (digital or analog)."""

    name = "top1"

    def __init__(self, metric):
        self.metric, self.calls = metric, {"digital": 0, "analog": 0}

    def __call__(self, model):
        self.calls["analog" if nb.is_accelerated(model) else "digital"] += 1
        return self.metric(model)


def test_digital_baseline_is_evaluated_once_per_model(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    counting = CountingMetric(metric)
    kwargs = dict(times=(1.0, 86400.0, 3e7), n_chips=2, device="cpu", progress=False)
    rows = nb.run_sweep(models, methods, counting, out_dir=tmp_path / "a", stop_after=7, **kwargs)
    assert counting.calls["digital"] == 1
    rows = nb.run_sweep(models, methods, counting, out_dir=tmp_path / "a", **kwargs)  # resumed: still once
    assert counting.calls["digital"] == 1 and counting.calls["analog"] == 3 * 3 * 2
    digital_rows = [r for r in rows if r["method"] == "digital"]
    assert len(digital_rows) == 3 * 2 and len({r["value"] for r in digital_rows}) == 1
    assert {(r["time_s"], r["chip"]) for r in digital_rows} == {(t, c) for t in kwargs["times"] for c in range(2)}
    assert digital_rows[0]["value"] == metric(digital)


class TwoValues:
    """A metric returning two values per evaluation (as detection's AP50 and mAP)."""

    names = ("first", "second")

    def __init__(self, metric):
        self.metric = metric

    def __call__(self, model):
        value = self.metric(model)
        return {"first": value, "second": value / 2}


def test_a_metric_with_several_values_writes_a_row_per_value_and_resumes(tmp_path, digital, analog, images):
    models, methods, metric = _setup(digital, analog, images)
    two = TwoValues(metric)
    kwargs = dict(times=(1.0, 86400.0), n_chips=1, device="cpu", progress=False)
    part = nb.run_sweep(models, methods, two, out_dir=tmp_path, stop_after=3, **kwargs)
    assert len(part) == 3 * 2
    rows = nb.run_sweep(models, methods, two, out_dir=tmp_path, **kwargs)
    assert len(rows) == 4 * 2 * 2 and {r["metric"] for r in rows} == {"first", "second"}
    by = {(r["method"], r["time_s"], r["metric"]): r["value"] for r in rows}
    assert all(by[(m, t, "second")] == by[(m, t, "first")] / 2 for m, t, _ in by)
    paths = nb.write_report(rows, tmp_path / "report")
    table = paths["summary.md"].read_text()
    assert "| model | method | metric | 1s | 1d |" in table and "| tiny | nabn | second |" in table
    assert len(nb.summarize(rows)) == 4 * 2 * 2
