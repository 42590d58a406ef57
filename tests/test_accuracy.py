"""A real accuracy test: the shipped ResNet-20 on simulated PCM chips one year after programming."""

import pytest
import torch

import aihwkit_nabn as nb
from aihwkit_nabn.training.checkpoints import load_pretrained, pretrained_path
from aihwkit_nabn.tasks.cifar10.data import normalize, stratified_subset
from aihwkit_nabn.tasks.cifar10.sample import load_demo_sample
from aihwkit_nabn.tasks.cifar10.views import augment_like_training

ONE_YEAR = 365 * 86400.0


@pytest.mark.skipif(not pretrained_path("resnet20").is_file(), reason="resnet20 weights not shipped")
def test_nabn_beats_gdc_by_a_wide_margin_at_one_year(tmp_path):
    torch.set_num_threads(2)
    model, _ = load_pretrained("resnet20")
    sample = load_demo_sample()
    idx = stratified_subset(sample["test_labels"], 300, seed=0)
    metric = nb.Top1Accuracy(nb.TensorBatches(sample["test_images"][idx], sample["test_labels"][idx],
                                              batch_size=150, transform=normalize))
    # the sample is ordered by class: take a class-balanced subset, never a prefix
    calib_idx = stratified_subset(sample["calib_labels"], 256, seed=0)
    calib = nb.TensorBatches(augment_like_training(sample["calib_images"][calib_idx]), batch_size=128, transform=normalize)
    methods = [nb.GlobalDriftCompensated(), nb.NoiseAwareBN(calib, num_samples=256)]
    rows = nb.run_sweep({"resnet20": nb.SweepModel(model, {"default": nb.to_analog(model)})}, methods, metric,
                        out_dir=tmp_path, times=(ONE_YEAR,), n_chips=2, device="cpu", progress=False)
    mean = {m: sum(r["value"] for r in rows if r["method"] == m) / 2 for m in ("gdc", "nabn")}
    digital = metric(model)
    # On the full test set and 5 chips (results/core): gdc 30.1%, nabn 84.6% at 1 year, digital 89.9%.
    assert mean["nabn"] > mean["gdc"] + 10.0, mean
    assert mean["nabn"] > digital - 12.0, (mean, digital)
