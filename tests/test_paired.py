"""Paired per-chip differences and their t confidence intervals, by hand."""

import math

import pytest

from aihwkit_nabn.evaluation.paired import paired_differences, paired_markdown, write_paired
from aihwkit_nabn.evaluation.report import write_report


def _rows(values, method, time_s=1.0, metric="acc", model="m"):
    return [{"model": model, "method": method, "time_s": time_s, "metric": metric, "chip": i, "chip_seed": 100 + i,
             "value": v, "method_seconds": 0.0, "eval_seconds": 0.0, "unlabeled_samples": 0, "labeled_samples": 0,
             "peak_mem_mib": ""} for i, v in enumerate(values)]


def test_differences_are_matched_on_the_chip_and_the_interval_is_the_t_interval():
    # chips listed in another order for b: matching must follow chip_seed, not position
    rows = _rows([10.0, 20.0, 30.0], "gdc") + list(reversed(_rows([11.0, 22.0, 33.0], "nabn")))
    (p,) = paired_differences(rows)
    assert (p["a"], p["b"], p["n_chips"]) == ("nabn", "gdc", 3)
    assert p["mean"] == pytest.approx(2.0) and p["std"] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof) * std / sqrt(n)
    assert p["ci_low"] == pytest.approx(2.0 - half) and p["ci_high"] == pytest.approx(2.0 + half)
    assert not p["resolved"] and p["better"] is None  # [-0.48, 4.48] contains zero


def test_a_resolved_pair_names_the_better_method_and_is_bold():
    rows = _rows([10.0, 20.0, 30.0, 40.0, 50.0], "hwa") + _rows([9.0, 18.9, 29.1, 38.8, 49.0], "hwa+nabn")
    (p,) = paired_differences(rows)
    assert p["resolved"] and p["better"] == "hwa" and p["ci_high"] < 0
    assert "**" in paired_markdown([p]) and "hwa+nabn − hwa" in paired_markdown([p])
    assert paired_differences(rows, confidence=0.999999)[0]["ci_low"] < p["ci_low"]


def test_one_chip_has_no_interval_and_bad_input_is_named():
    (p,) = paired_differences(_rows([1.0], "a") + _rows([3.0], "b"))
    assert p["mean"] == 2.0 and p["ci_low"] is None and not p["resolved"]
    with pytest.raises(ValueError, match="two rows for chip"):
        paired_differences(_rows([1.0, 2.0], "a") + _rows([1.5], "a"))
    assert paired_differences(_rows([1.0, 2.0], "a") + _rows([1.0], "a") + _rows([2.0, 2.0], "b"))[0]["n_chips"] == 2
    with pytest.raises(ValueError, match="confidence"):
        paired_differences(_rows([1.0], "a"), confidence=1.0)


def test_pairs_are_per_time_and_metric_and_the_report_writes_them(tmp_path):
    rows = (_rows([90.0, 91.0], "digital") + _rows([80.0, 83.0], "gdc") + _rows([88.0, 89.5], "nabn")
            + _rows([90.0, 91.0], "digital", time_s=3600.0) + _rows([70.0, 72.0], "gdc", time_s=3600.0))
    paired = paired_differences(rows)
    keys = {(p["time_label"], p["a"], p["b"]) for p in paired}
    assert keys == {("1s", "gdc", "digital"), ("1s", "nabn", "digital"), ("1s", "nabn", "gdc"), ("1h", "gdc", "digital")}
    paths = write_report(rows, tmp_path, title="t")
    for name in ("paired.csv", "paired.json", "paired.md", "loss_vs_digital.png"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0
    assert write_paired(_rows([1.0], "a"), tmp_path / "one")["paired.md"].read_text().startswith("No pair")


def test_the_cost_plot_draws_the_t_interval_of_the_mean():
    from aihwkit_nabn.evaluation.costs import _interval

    assert _interval({"value_std": 1.0, "n_chips": 5}) == pytest.approx(2.7764451051977987 / math.sqrt(5))
    assert _interval({"value_std": 1.0, "n_chips": 1}) == 0.0
    assert _interval({"value_std": 0.7}) == 0.7  # tables written before n_chips was recorded


def test_the_cost_plot_keeps_analog_off_its_axis_and_names_it(tmp_path, monkeypatch):
    from aihwkit_nabn.evaluation import costs as costs_module

    drawn = {}
    monkeypatch.setattr(costs_module, "save_figure", lambda fig, path: drawn.setdefault("fig", fig))
    entry = {"model": "m", "metric": "top1", "deploy_seconds": 0.5, "hwa_training_seconds_once": None,
             "value_std": 0.2, "n_chips": 5}
    costs = [dict(entry, method="analog", value_last_time=10.4), dict(entry, method="gdc", value_last_time=84.0),
             dict(entry, method="nabn", value_last_time=88.0)]
    costs_module.plot_accuracy_vs_cost([], costs, tmp_path / "p.png", 3.15e7)
    (ax,) = drawn["fig"].axes
    low, high = ax.get_ylim()
    assert 80 < low < 84 and 88 < high < 92  # the axis spans the methods that matter, not 10-88 %
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["gdc", "nabn"]
    assert any("analog 10.4" in t.get_text() for t in ax.texts)


def test_each_method_looks_the_same_in_every_plot():
    from aihwkit_nabn.evaluation.figures import method_style

    main = ["digital", "analog", "gdc", "nabn", "bnft", "hwa", "hwa+nabn", "hwa+bnft"]
    assert len({method_style(m)["color"] for m in main}) == len(main)
    assert method_style("nabn@1d") == method_style("nabn@1d") and method_style("nabn@1d")["marker"] == "D"
