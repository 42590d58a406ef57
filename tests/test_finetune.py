"""finetune_bn: only BN changes, gradients pass analog tiles, flags/grads/state restored, errors, sweep method."""

import copy

import pytest
import torch
from aihwkit.simulator.tiles.inference import InferenceTileWithPeriphery
from torch import nn

import aihwkit_nabn as nb
from aihwkit_nabn.bn.layers import is_batchnorm

BN_NAMES = ("1", "4", "8")  # the BatchNorm layers of conftest.tiny_net


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than with two contending ones (CI with 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def labels(images):
    """A fixed, learnable rule: 4 classes from the signs of the mean of channels 0 and 1."""
    return (images[:, 0].mean((1, 2)) > 0).long() + 2 * (images[:, 1].mean((1, 2)) > 0).long()


@pytest.fixture
def labeled(images, labels):
    return nb.TensorBatches(images, labels, batch_size=32)


def _flatten(value, prefix, out):
    if isinstance(value, torch.Tensor):
        out[prefix] = value.detach().clone()
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}", out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)


def full_state(model):
    """Every tensor of the model: state_dict (incl. aihwkit tile states), tensor attributes, tile weights."""
    out = {}
    for key, value in model.state_dict().items():
        _flatten(value, f"sd:{key}", out)
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                _flatten(value, f"attr:{name}.{attr}", out)
        if isinstance(module, InferenceTileWithPeriphery):
            _flatten(module.get_weights(), f"tile:{name}", out)
    return out


def is_bn_key(key, stats):
    """Whether a full_state key is a BN affine parameter (or, with ``stats``, a BN statistic)."""
    layer, _, tensor = key.split(":", 1)[1].rpartition(".")
    kinds = ("weight", "bias") + (("running_mean", "running_var", "num_batches_tracked") if stats else ())
    return layer in BN_NAMES and tensor in kinds


@pytest.mark.parametrize("train", ["affine", "both"])
def test_only_bn_parameters_change(analog, labeled, images, train):
    chip = nb.Chip(analog, seed=0).drift_to(86400)
    before = full_state(chip.model)
    assert any(k.startswith("tile:") for k in before) and any("programmed_weights" in k for k in before)
    kwargs = dict(num_samples=64, batch_size=32) if train == "both" else {}
    snap = nb.finetune_bn(chip.model, labeled, steps=4, lr=1e-2, train=train, **kwargs)
    after = full_state(chip.model)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(is_bn_key(k, stats=train == "both") for k in changed), changed
    for name in BN_NAMES:  # every BN affine parameter was trained
        assert f"sd:{name}.weight" in changed and f"sd:{name}.bias" in changed
    assert ("sd:1.running_mean" in changed) == (train == "both")
    info = snap.info
    assert info["steps"] == 4 and info["trained_params"] == 2 * (8 + 16 + 16)
    assert info["labeled_samples"] == 96 and info["labeled_samples_seen"] == 4 * 32
    assert info["unlabeled_samples"] == (64 if train == "both" else 0)
    assert len(info["losses"]) == 4 and info["final_loss"] == info["losses"][-1]


@pytest.mark.parametrize("accelerated", [True, False])
def test_gradients_reach_bn_through_analog_tiles(digital, images, labels, accelerated):
    """The first BN layer feeds two analog layers: it can only learn if gradients pass through them."""
    chip = nb.Chip(nb.to_analog(digital, accelerate=accelerated), seed=0).drift_to(3600)
    before = nb.snapshot_bn(chip.model)
    batch = [(images[:32], labels[:32])]
    snap = nb.finetune_bn(chip.model, batch, steps=15, lr=5e-2, train="affine", layers=["1"])
    after = nb.snapshot_bn(chip.model)
    assert not torch.equal(after.tensors["1"]["weight"], before.tensors["1"]["weight"])
    assert not torch.equal(after.tensors["1"]["bias"], before.tensors["1"]["bias"])
    assert torch.equal(after.tensors["8"]["weight"], before.tensors["8"]["weight"])  # not selected
    losses = snap.info["losses"]
    assert losses[-1] < losses[0] - 0.05, losses
    assert snap.info["trained_params"] == 16 and snap.info["layers"] == ["1"]


def test_flags_grads_restored_and_tiles_and_bn_stay_in_eval(analog, labeled):
    chip = nb.Chip(analog, seed=0).drift_to(3600)
    model = chip.model
    model.train()
    model[4].eval()  # an unusual mix of training flags...
    model[4].bias.requires_grad_(False)  # ...and of requires_grad flags must come back as it was
    model[9].analog_module.tile.weight.requires_grad_(False)
    old_grad = torch.full_like(model[1].weight, 7.0)
    model[1].weight.grad = old_grad
    flags = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    seen = {"tile": [], "bn": [], "frozen_requires_grad": []}

    def spy(module, _args):
        seen["bn" if is_batchnorm(module) else "tile"].append(module.training)
        seen["frozen_requires_grad"].append(model[0].analog_module.tile.weight.requires_grad)

    hooks = [m.register_forward_pre_hook(spy) for m in model.modules()
             if isinstance(m, InferenceTileWithPeriphery) or is_batchnorm(m)]
    nb.finetune_bn(model, labeled, steps=2, train="affine")
    for h in hooks:
        h.remove()
    assert seen["tile"] and not any(seen["tile"])
    assert seen["bn"] and not any(seen["bn"])  # "affine" normalises with the running statistics
    assert not any(seen["frozen_requires_grad"])
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert model[1].weight.grad is old_grad and torch.equal(old_grad, torch.full_like(old_grad, 7.0))
    assert model[4].bias.grad is None


def test_restore_is_exact_and_context_manager(analog, labeled, images):
    chip = nb.Chip(analog, seed=0).drift_to(86400)
    before = nb.snapshot_bn(chip.model)
    snap = nb.finetune_bn(chip.model, labeled, steps=3, lr=1e-2, calib_data=images, num_samples=64)
    assert snap.equals(before)
    assert not nb.snapshot_bn(chip.model).equals(before)
    nb.restore_bn(chip.model, snap)
    assert nb.snapshot_bn(chip.model).equals(before)
    with nb.finetuned_bn(chip.model, labeled, steps=2, num_samples=32) as inside:
        assert inside.info["unlabeled_samples"] == 32
        assert not nb.snapshot_bn(chip.model).equals(before)
    assert nb.snapshot_bn(chip.model).equals(before)


def test_stats_equals_calibrate_bn(digital, labeled, images):
    other = copy.deepcopy(digital)
    snap = nb.finetune_bn(digital, labeled, train="stats", num_samples=64)
    ref = nb.calibrate_bn(other, labeled, num_samples=64)
    assert nb.snapshot_bn(digital).equals(nb.snapshot_bn(other))
    assert snap.equals(ref)
    assert snap.info["unlabeled_samples"] == 64 and snap.info["trained_params"] == 0 and snap.info["steps"] == 0
    assert not nb.snapshot_bn(digital).equals(snap)


def test_both_calibrates_then_trains_affine(digital, labeled, images):
    """train="both" == calibrate_bn, then train="affine" (BN in eval, so the statistics stay calibrated)."""
    other = copy.deepcopy(digital)
    torch.manual_seed(3)
    nb.finetune_bn(digital, labeled, steps=3, lr=1e-2, num_samples=64)
    nb.calibrate_bn(other, labeled, num_samples=64)
    torch.manual_seed(3)
    nb.finetune_bn(other, labeled, steps=3, lr=1e-2, train="affine")
    assert nb.snapshot_bn(digital).equals(nb.snapshot_bn(other))


@pytest.mark.parametrize("bad", ["non_scalar", "nan_late", "inf", "detached"])
def test_bad_loss_raises_and_restores(analog, labeled, bad):
    chip = nb.Chip(analog, seed=0).drift_to(3600)
    before = nb.snapshot_bn(chip.model)
    grads = {n: p.requires_grad for n, p in chip.model.named_parameters()}
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        loss = nn.functional.cross_entropy(out, y, reduction="none" if bad == "non_scalar" else "mean")
        if bad == "nan_late" and len(calls) == 3:  # after two real updates: restore must undo them
            return loss * float("nan")
        if bad == "inf":
            return loss + float("inf")
        return loss.detach() if bad == "detached" else loss

    with pytest.raises(nb.FineTuneError, match="scalar|non-finite|does not depend"):
        nb.finetune_bn(chip.model, labeled, loss_fn=loss_fn, steps=5, lr=1e-2, num_samples=32)
    assert nb.snapshot_bn(chip.model).equals(before)
    assert {n: p.requires_grad for n, p in chip.model.named_parameters()} == grads
    assert not chip.model.training


def test_bad_input_errors(digital, images, labels, labeled):
    with pytest.raises(nb.CalibrationDataError, match="no labeled samples"):
        nb.finetune_bn(digital, [], train="affine")
    with pytest.raises(nb.CalibrationDataError):
        nb.finetune_bn(digital, [], train="both")
    with pytest.raises(nb.CalibrationDataError, match="target"):
        nb.finetune_bn(digital, [images[:16]], train="affine")  # unlabeled batches
    for steps in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps"):
            nb.finetune_bn(digital, labeled, steps=steps)
    with pytest.raises(ValueError, match="train"):
        nb.finetune_bn(digital, labeled, train="gamma")
    with pytest.raises(ValueError, match="lr"):
        nb.finetune_bn(digital, labeled, lr=0.0)
    with pytest.raises(ValueError, match="optimizer"):
        nb.finetune_bn(digital, labeled, optimizer="lbfgs2")
    with pytest.raises(TypeError, match="num_sample"):
        nb.finetune_bn(digital, labeled, num_sample=10)
    with pytest.raises(nb.NoBatchNormError):
        nb.finetune_bn(nn.Sequential(nn.Flatten(), nn.Linear(192, 4)), labeled)
    no_affine = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.Flatten(), nn.LazyLinear(4))
    with pytest.raises(nb.BatchNormConfigError, match="affine"):
        nb.finetune_bn(no_affine, labeled, train="affine")
    assert nb.snapshot_bn(digital).equals(nb.snapshot_bn(copy.deepcopy(digital)))


def test_cycles_data_one_shot_iterators_and_limits(digital, images, labels):
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, 48, 16)]
    snap = nb.finetune_bn(digital, iter(batches), steps=7, train="affine", optimizer="sgd")
    assert snap.info["labeled_samples"] == 48 and snap.info["labeled_samples_seen"] == 7 * 16
    nb.restore_bn(digital, snap)
    snap = nb.finetune_bn(digital, batches, steps=4, train="affine", labeled_samples=20)
    # batches 16 + 4 (cut), cycled: 16 + 4 + 16 + 4
    assert snap.info["labeled_samples"] == 20 and snap.info["labeled_samples_seen"] == 40
    nb.restore_bn(digital, snap)
    dicts = [{"image": x, "label": y} for x, y in batches]
    factory = lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)  # noqa: E731
    snap = nb.finetune_bn(digital, dicts, steps=2, train="affine", optimizer=factory)
    assert snap.info["labeled_samples"] == 32


def test_freeze_all_but_bn_and_bn_optimizer(analog):
    model = analog
    model.train()
    model[0].analog_module.tile.weight.requires_grad_(False)
    model[8].bias.requires_grad_(False)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    flags = {n: m.training for n, m in model.named_modules()}
    with nb.freeze_all_but_bn(model) as frozen:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {f"{n}.{k}" for n in BN_NAMES for k in ("weight", "bias")}
        assert not any(m.training for m in model.modules())
        opt = nb.bn_optimizer(model, lr=1e-2)
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in frozen.parameters}
        assert [g["name"] for g in frozen.param_groups] == ["bn_weight", "bn_bias"]
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert {n: m.training for n, m in model.named_modules()} == flags
    handle = nb.freeze_all_but_bn(model, layers=["4"], train="bias", eval_mode=False)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"4.bias"}
    assert {n: m.training for n, m in model.named_modules()} == flags  # eval_mode=False leaves them
    handle.remove()
    handle.remove()  # idempotent
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    with pytest.raises(ValueError, match="calibrate_bn"):
        nb.bn_parameters(model, train="stats")


def test_bnft_method_in_sweep(tmp_path, digital, analog, images, labels, labeled):
    metric = nb.Top1Accuracy(labeled)
    models = {"tiny": nb.SweepModel(digital, {"default": analog})}
    kwargs = dict(times=(86400.0,), n_chips=1, device="cpu", progress=False)
    bnft = nb.BNFineTune(images, labeled, num_samples=48, labeled_samples=64, steps=3, lr=1e-2)
    # bnft runs before gdc on the same chip: gdc must see the chip unchanged
    rows = nb.run_sweep(models, [bnft, nb.GlobalDriftCompensated()], metric, out_dir=tmp_path / "a", **kwargs)
    alone = nb.run_sweep(models, [nb.GlobalDriftCompensated()], metric, out_dir=tmp_path / "b", **kwargs)
    by_method = {r["method"]: r for r in rows}
    assert by_method["bnft"]["labeled_samples"] == 64
    assert by_method["bnft"]["unlabeled_samples"] == 48
    assert by_method["bnft"]["trained_params"] == 80
    assert by_method["gdc"]["trained_params"] == 0
    assert by_method["gdc"]["value"] == alone[0]["value"]
    assert bnft.describe()["steps"] == 3 and bnft.describe()["name"] == "bnft"


class DictOutput(nn.Module):
    """A model called as ``model(x, scale)`` that returns ``{"out": logits}`` (torchvision segmentation style)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, scale):
        return {"out": self.net(x * scale)}


def test_forward_fn_fine_tunes_a_model_called_its_own_way(digital, images, labels):
    plain = copy.deepcopy(digital)
    wrapped = DictOutput(copy.deepcopy(digital))
    data = nb.TensorBatches(images, labels, batch_size=32)
    calls = []

    def forward_fn(model, x):
        calls.append(len(x))
        return model(x, 2.0)["out"]

    info = nb.finetune_bn(wrapped, data, forward_fn=forward_fn, steps=3, train="both", num_samples=64).info
    assert info["steps"] == 3 and info["unlabeled_samples"] == 64
    assert len(calls) == 2 + 3  # two calibration batches of 32, then one forward per step
    # the same as fine-tuning the plain network on the scaled images
    scaled = nb.TensorBatches(images * 2.0, labels, batch_size=32)
    nb.finetune_bn(plain, scaled, steps=3, train="both", num_samples=64)
    for name in BN_NAMES:
        got, want = dict(wrapped.net.named_modules())[name], dict(plain.named_modules())[name]
        for key in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(got, key), getattr(want, key)), (name, key)


def test_calib_forward_fn_calls_the_model_its_inference_way_for_calibration(digital, images, labels):
    wrapped = DictOutput(copy.deepcopy(digital))
    data = nb.TensorBatches(images, labels, batch_size=32)
    train_calls, calib_calls = [], []

    def forward_fn(model, x):
        train_calls.append(len(x))
        return model(x, 1.0)["out"]

    def calib_forward_fn(model, x):
        calib_calls.append(len(x))
        return model(x, 1.0)

    nb.finetune_bn(wrapped, data, forward_fn=forward_fn, calib_forward_fn=calib_forward_fn, steps=2, train="both",
                   num_samples=64)
    assert calib_calls == [32, 32] and len(train_calls) == 2


def test_cuda_graph_flag_off_cuda_fine_tunes_exactly_as_without(analog, labeled):
    """cuda_graph=True on the CPU: the eager steps (nothing to replay), the same numbers, and the record says so."""
    chip = nb.Chip(analog, seed=0).drift_to(86400)
    torch.manual_seed(5)
    plain = nb.finetune_bn(chip.model, labeled, steps=4, lr=1e-2, num_samples=64)
    after_plain = full_state(chip.model)
    plain.restore(chip.model)
    torch.manual_seed(5)
    graphed = nb.finetune_bn(chip.model, labeled, steps=4, lr=1e-2, num_samples=64, cuda_graph=True)
    after_graphed = full_state(chip.model)
    assert after_plain.keys() == after_graphed.keys()
    for key, value in after_plain.items():
        assert torch.equal(value, after_graphed[key]), key
    assert graphed.info["losses"] == plain.info["losses"]
    assert graphed.info["graph"] == {"replays": 0, "eager_calls": 4, "failure": "not on CUDA"}
    assert "graph" not in plain.info
    with pytest.raises(ValueError, match="cuda_graph must be True or False"):
        nb.finetune_bn(chip.model, labeled, steps=1, cuda_graph="yes")


def test_cuda_graph_flag_keeps_the_checks(analog, labeled):
    """A non-finite loss still raises (from the check between backward and step) and restores the BN state."""
    chip = nb.Chip(analog, seed=0).drift_to(3600)
    before = nb.snapshot_bn(chip.model)

    def loss_fn(out, y):
        return nn.functional.cross_entropy(out, y) * float("nan")

    with pytest.raises(nb.FineTuneError, match="non-finite loss at fine-tuning step 0"):
        nb.finetune_bn(chip.model, labeled, loss_fn=loss_fn, steps=3, lr=1e-2, num_samples=32, cuda_graph=True)
    assert nb.snapshot_bn(chip.model).equals(before)
