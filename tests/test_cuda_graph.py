"""Tests of the CUDA-graph update (utils/cuda_graph.py, training/cuda_graph.py) and of the in-place post-update it needs for
``mode="full"`` (_aihwkit/post_update.py) that run without a GPU: the in-place clipping, remapping and gradient hook
give aihwkit's numbers bit for bit over AnalogSGD steps; off CUDA the graphed update is the eager one (also
through fit_hwa and the CLI flag); the re-binding that keeps the tensors a graph reads at their recorded storage
after aihwkit replaces them; and the bad-input lines. The replay itself is checked on the GPU by
benchmarks/hwa_cuda_graph.py (results/benchmarks/hwa_cuda_graph_h200.json)."""

# pylint: disable=missing-function-docstring, protected-access

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aihwkit.optim import AnalogSGD
from aihwkit.simulator.parameters.enums import WeightClipType
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile

from aihwkit_nabn import cli
from aihwkit_nabn._aihwkit import post_update
from aihwkit_nabn._aihwkit.input_range_fix import input_range_fix
from aihwkit_nabn._aihwkit.input_ranges import init_batches_needed, init_input_ranges
from aihwkit_nabn._aihwkit.post_update import (
    inplace_post_update_reason,
    install_inplace_post_update,
    uninstall_inplace_post_update,
)
from aihwkit_nabn._aihwkit.state import analog_state
from aihwkit_nabn.analog.convert import to_analog
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset, hwa_inference_config
from aihwkit_nabn.tasks.cifar10.recipe import train_hwa
from aihwkit_nabn.training.cuda_graph import AnalogGraphedStep
from aihwkit_nabn.utils.cuda_graph import GraphedStep, eager_update
from aihwkit_nabn.training.hwa import _param_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_net  # noqa: E402  pylint: disable=wrong-import-position


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).train()


def _trainer(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    return opt, step


def test_off_cuda_the_graphed_step_is_the_eager_step():
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(5)]
    a, b = _mlp(), _mlp()
    (opt_a, step_a), (opt_b, step_b) = _trainer(a), _trainer(b)
    graphed = GraphedStep(b, step_b, opt_b, warmup=1)
    for x, y in batches:
        la, _ = eager_update(step_a, opt_a, x, y)
        lb, _ = graphed(x, y)
        assert torch.equal(la, lb)
    assert not graphed.captured and graphed.eager_calls == 5 and graphed.replays == 0 and graphed.failure is None
    for (k, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(u, v), k


def _recorded():
    model = _mlp()
    opt, step = _trainer(model)
    graphed = GraphedStep(model, step, opt)
    loss, _ = step(torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
    loss.backward()  # gradients exist, as after a capture
    graphed._record()
    return model, graphed


def test_rebind_copies_replaced_storage_back_to_the_recorded_one():
    model, graphed = _recorded()
    lin, bn = model[0], model[1]
    w_ptr, grad = lin.weight.data_ptr(), lin.weight.grad
    lin.weight.data = torch.clamp(lin.weight, -0.1, 0.1)  # as aihwkit's clip_weights: new storage
    new_w = lin.weight.detach().clone()
    assert lin.weight.data_ptr() != w_ptr
    mean = bn.running_mean
    bn.running_mean = torch.full_like(mean, 7.0)  # a buffer replaced by another tensor object
    lin.weight.grad = None  # e.g. an eager step in between set the gradients to None
    graphed._rebind()
    assert lin.weight.data_ptr() == w_ptr and torch.equal(lin.weight.detach(), new_w)
    assert bn.running_mean is mean and torch.equal(mean, torch.full_like(mean, 7.0))
    assert lin.weight.grad is grad


def test_rebind_refuses_a_changed_shape():
    model, graphed = _recorded()
    model[0].weight.data = torch.zeros(2, 2)
    with pytest.raises(RuntimeError, match=r"Linear\.weight changed shape"):
        graphed._rebind()


@pytest.mark.parametrize("mode", [True, "full"])
def test_fit_hwa_with_cuda_graph_on_the_cpu_trains_as_without(mode):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    kw = dict(epochs=1, batch_size=8, lr=0.05, seed=2, device="cpu", progress=False, cutout_size=4,
              rpu_config=hwa_inference_config(pre_post__input_range__init_from_data=2))
    plain = train_hwa(tiny_net(), x, y, x[:8], y[:8], **kw)
    graphed = train_hwa(tiny_net(), x, y, x[:8], y[:8], cuda_graph=mode, **kw)
    a, b = analog_state(plain["model"]), analog_state(graphed["model"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "graph_replays" not in plain["history"][0]
    record = graphed["history"][0]
    assert record["graph_mode"] == ("on" if mode is True else "full")
    assert record["graph_replays"] == record["graph_captures"] == 0 and record["graph_failure"] is None
    # the returned model has aihwkit's own post-update back
    assert not any("post_update_step" in vars(t) for t in graphed["model"].modules())
    with pytest.raises(ValueError, match="cuda_graph must be one of off, on, full"):
        train_hwa(tiny_net(), x, y, x[:8], y[:8], cuda_graph="fast", **kw)


def test_cuda_graph_flag(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake(model, **kwargs):
        seen.update(kwargs)
        return {"top1": 1.0, "seconds": 1.0, "out_path": None, "epochs_done": 1, "finished": False,
                "input_range_fix": {}}

    monkeypatch.setattr("aihwkit_nabn.tasks.cifar10.task.train_hwa_cifar10", fake)
    base = ["hwa", "--model", "resnet20", "--epochs", "1", "--out", str(tmp_path / "h.pt"), "--quiet"]
    for extra, want in ((["--cuda-graph"], "on"), (["--cuda-graph", "full"], "full"), (["--cuda-graph", "off"], "off")):
        seen.clear()
        assert cli.main(base + extra) == 0 and seen["cuda_graph"] == want
    seen.clear()
    assert cli.main(base) == 0 and "cuda_graph" not in seen  # not given: the recipe's default (off)
    capsys.readouterr()
    assert cli.main(base + ["--cuda-graph", "maybe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cuda-graph" in err and "expected one of off, on, full" in err


# ----------------------------------------------------------------- the in-place post-update


def _hwa_model():
    with input_range_fix():
        torch.manual_seed(0)
        model = to_analog(tiny_net(), TorchHWAPreset())
        init_input_ranges(model, (torch.randn(8, 3, 8, 8) for _ in range(init_batches_needed(model))))
    return model


def _train(model, batches, steps_between=None):
    """AnalogSGD steps as fit_hwa takes them; every state after each step."""
    opt = AnalogSGD(_param_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
    torch.manual_seed(5)
    states = []
    with input_range_fix():
        for i, (x, y) in enumerate(batches):
            if steps_between is not None and i == steps_between[0]:
                model = steps_between[1](model, opt)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            states.append({k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)})
    return model, states


def _batches(n=4):
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(n)]


def test_inplace_post_update_gives_aihwkits_numbers(monkeypatch):
    base, batches = _hwa_model(), _batches()
    _, stock = _train(copy.deepcopy(base), batches)
    inplace = copy.deepcopy(base)
    report = install_inplace_post_update(inplace)
    assert len(report) == 3 and all(v is None for v in report.values())
    tiles = [t for t in inplace.modules() if isinstance(t, TorchInferenceTile)]
    ids = [(id(t.tile.weight.data.untyped_storage()), id(t.mapping_scales)) for t in tiles]
    _, mine = _train(inplace, batches)
    for i, (a, b) in enumerate(zip(stock, mine)):
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, (i, differ)
    # the same tensors throughout (nothing for a CUDA graph to lose) and one gradient hook per tile weight
    assert [id(t.mapping_scales) for t in tiles] == [i for _, i in ids]
    assert all(len(t.tile.weight._backward_hooks) == 1 for t in tiles)
    # and it can fail: without the gradient hook the second step differs
    broken = copy.deepcopy(base)
    install_inplace_post_update(broken)
    monkeypatch.setattr(post_update, "_set_scale_hook", lambda *_: None)
    _, wrong = _train(broken, batches)
    assert any(not torch.equal(stock[1][k], wrong[1][k]) for k in stock[1])


def test_inplace_post_update_survives_a_deepcopy_mid_training():
    base, batches = _hwa_model(), _batches(5)
    deep = (2, lambda model, opt: copy.deepcopy(model))  # a copy whose weights have lost their hooks
    _, stock = _train(copy.deepcopy(base), batches)
    inplace = copy.deepcopy(base)
    install_inplace_post_update(inplace)
    _, mine = _train(inplace, batches)
    assert all(torch.equal(stock[-1][k], mine[-1][k]) for k in stock[-1])
    _, stock_copied = _train(copy.deepcopy(base), batches, deep)
    inplace = copy.deepcopy(base)
    install_inplace_post_update(inplace)
    _, mine_copied = _train(inplace, batches, deep)
    for a, b in zip(stock_copied, mine_copied):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_inplace_post_update_refusals_and_uninstall():
    model = _hwa_model()
    tile = next(t for t in model.modules() if isinstance(t, TorchInferenceTile))
    assert inplace_post_update_reason(tile) is None
    gaussian = copy.deepcopy(model)
    for t in gaussian.modules():
        if isinstance(t, TorchInferenceTile):
            t.rpu_config = copy.deepcopy(t.rpu_config)
            t.rpu_config.clip.type = WeightClipType.LAYER_GAUSSIAN
    report = install_inplace_post_update(gaussian)
    assert set(report.values()) == {"clip type LAYER_GAUSSIAN"}
    assert not any("post_update_step" in vars(t) for t in gaussian.modules())
    hooked = copy.deepcopy(model)
    t0 = next(t for t in hooked.modules() if isinstance(t, TorchInferenceTile))
    t0.tile.weight.register_hook(lambda g: g)
    assert inplace_post_update_reason(t0) == "other gradient hooks on the tile weight"
    # AnalogGraphedStep(mode="full") falls back to "on", naming the tile
    opt = AnalogSGD(_param_groups(gaussian, 5e-4), lr=0.01)
    g = AnalogGraphedStep(gaussian, lambda x, y: (gaussian(x).sum(), None), opt, mode="full")
    assert g.mode == "on" and "clip type LAYER_GAUSSIAN" in g.mode_reason
    with pytest.raises(ValueError, match="mode must be one of"):
        AnalogGraphedStep(gaussian, lambda x, y: None, opt, mode="all")
    install_inplace_post_update(model)
    uninstall_inplace_post_update(model)
    assert not any("post_update_step" in vars(t) for t in model.modules())


def test_before_step_runs_between_backward_and_step_eager_and_replayed():
    """before_step(loss) sees the gradients of this batch and the parameters before the update, both in the eager
    update and after a replay (the replay's graph is stood in for on the CPU: its outputs are set by hand)."""
    model = _mlp()
    opt, step = _trainer(model)
    seen = []

    def before(loss):
        seen.append((float(loss), model[0].weight.grad.clone(), model[0].weight.detach().clone()))

    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    graphed = GraphedStep(model, step, opt, before_step=before)
    w0 = model[0].weight.detach().clone()
    loss, _ = graphed(x, y)  # off CUDA: eager
    assert len(seen) == 1 and seen[0][0] == float(loss) and torch.equal(seen[0][2], w0)
    assert not torch.equal(model[0].weight.detach(), w0)  # the step came after
    # a replay: the recorded graph's outputs (static loss and gradients) are what before_step sees, then the step
    graphed._record()
    graphed._static = {"x": torch.empty_like(x), "y": torch.empty_like(y), "loss": torch.tensor(0.25), "logits": None}

    class _Graph:
        def replay(self):
            pass

    graphed.graph = _Graph()
    w1 = model[0].weight.detach().clone()
    graphed._replay(x, y)
    assert len(seen) == 2 and seen[1][0] == 0.25 and torch.equal(seen[1][2], w1)
    assert not torch.equal(model[0].weight.detach(), w1)
    with pytest.raises(ValueError, match="before_step needs mode='on'"):
        GraphedStep(model, step, opt, mode="full", before_step=before)
