"""Sweeps on a local Ray instance: the same rows as one process, also after a kill and a unit that fails once."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import aihwkit_nabn as nb
from aihwkit_nabn.evaluation.journal import read_rows
from aihwkit_nabn.evaluation.methods import GlobalDriftCompensated
from aihwkit_nabn.evaluation.ray_sweep import UnitsFailedError

ray = pytest.importorskip("ray", reason='Ray is the optional extra "aihwkit-nabn[ray]"')
# the workers cannot import this test module: send its classes by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class FailsOnce(GlobalDriftCompensated):
    """gdc that raises in the first process to deploy it on chip 1 (a flag file marks the first attempt)."""

    def __init__(self, flag: str, always: bool = False):
        super().__init__()
        self.flag, self.always = flag, always

    @contextmanager
    def deploy(self, chip, t, digital):
        if chip is not None and chip.seed == 1 and (self.always or not os.path.exists(self.flag)):
            Path(self.flag).touch()
            raise RuntimeError("a flaky worker")
        with super().deploy(chip, t, digital) as deployed:
            yield deployed


def _setup(digital, analog, images, extra=()):
    labels = (images.mean((1, 2, 3)) > 0).long()
    metric = nb.Top1Accuracy(nb.TensorBatches(images, labels, batch_size=32))
    models = {"tiny": nb.SweepModel(digital, {"default": analog})}
    return models, nb.standard_methods(images, num_samples=48) + list(extra), metric


def _values(rows):
    # everything but the seconds, the peak memory and the arrival order
    keep = ("model", "method", "source", "time_s", "chip", "chip_seed", "metric", "value", "unlabeled_samples",
            "labeled_samples", "trained_params")
    return sorted(tuple(r[k] for k in keep) for r in rows)


def test_ray_rows_equal_one_process_also_after_a_kill(tmp_path, digital, analog, images, local_ray):
    models, methods, metric = _setup(digital, analog, images)
    kwargs = dict(times=(1.0, 86400.0), n_chips=3, device="cpu", progress=False)
    reference = nb.run_sweep(models, methods, metric, out_dir=tmp_path / "one", **kwargs)
    on_ray = nb.run_sweep(models, methods, metric, out_dir=tmp_path / "ray", ray=True, **kwargs)
    assert len(on_ray) == len(reference) == 4 * 2 * 3 and _values(on_ray) == _values(reference)
    # killed after 5 rows (in one process), resumed on Ray: nothing repeated, nothing lost
    nb.run_sweep(models, methods, metric, out_dir=tmp_path / "kill", stop_after=5, **kwargs)
    resumed = nb.run_sweep(models, methods, metric, out_dir=tmp_path / "kill", ray=True, **kwargs)
    assert _values(resumed) == _values(reference) and len(read_rows(tmp_path / "kill" / "rows.csv")) == 24


def test_a_unit_that_fails_once_is_retried_and_one_that_always_fails_is_reported(tmp_path, digital, analog,
                                                                                  images, local_ray):
    kwargs = dict(times=(1.0,), n_chips=2, device="cpu", progress=False)
    flaky = FailsOnce(str(tmp_path / "flag")).named("flaky")
    models, methods, metric = _setup(digital, analog, images, [flaky])
    rows = nb.run_sweep(models, methods, metric, out_dir=tmp_path / "flaky", ray={"max_retries": 2}, **kwargs)
    assert (tmp_path / "flag").exists() and len(rows) == 5 * 2
    broken = FailsOnce(str(tmp_path / "flag2"), always=True).named("broken")
    models, methods, metric = _setup(digital, analog, images, [broken])
    with pytest.raises(UnitsFailedError, match="1 sweep unit.*tiny chip 1.*a flaky worker"):
        nb.run_sweep(models, methods, metric, out_dir=tmp_path / "broken", ray={"max_retries": 1}, **kwargs)
    kept = read_rows(tmp_path / "broken" / "rows.csv")
    assert {r["chip"] for r in kept} == {0} and len(kept) == 5  # chip 0's unit is journaled


def test_sweep_from_the_command_line_with_ray(tmp_path, local_ray):
    from aihwkit_nabn import cli

    argv = ["sweep", "--models", "resnet20", "--times", "1s", "--chips", "2", "--methods", "gdc,nabn",
            "--test-samples", "40", "--calib-samples", "32", "--data", "shipped-sample", "--quiet", "--device", "cpu"]
    assert cli.main(argv + ["--out", str(tmp_path / "one")]) == 0
    assert cli.main(argv + ["--out", str(tmp_path / "ray"), "--ray"]) == 0
    assert _values(read_rows(tmp_path / "ray" / "rows.csv")) == _values(read_rows(tmp_path / "one" / "rows.csv"))
