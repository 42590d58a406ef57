"""Tests of the CUDA-graph training step (training/cuda_graph.py) that run without a GPU: off CUDA it is the
eager step, bit for bit (also through fit_hwa and the CLI flag); the re-binding that keeps the tensors a graph
reads at their recorded storage after aihwkit replaces them; and the bad-input lines. The replay itself is checked
on the GPU by benchmarks/hwa_cuda_graph.py (results/benchmarks/hwa_cuda_graph_h200.json)."""

# pylint: disable=missing-function-docstring, protected-access

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aihwkit_nabn import cli
from aihwkit_nabn._aihwkit.state import analog_state
from aihwkit_nabn.analog.hwa_preset import hwa_inference_config
from aihwkit_nabn.errors import ConfigError
from aihwkit_nabn.evaluation.task import bool_option
from aihwkit_nabn.tasks.cifar10.recipe import train_hwa
from aihwkit_nabn.training.cuda_graph import GraphedStep, eager_step

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
        la, _ = eager_step(step_a, opt_a, x, y)
        opt_a.step()
        lb, _ = graphed(x, y)
        opt_b.step()
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


def test_fit_hwa_with_cuda_graph_on_the_cpu_trains_as_without():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    kw = dict(epochs=1, batch_size=8, lr=0.05, seed=2, device="cpu", progress=False, cutout_size=4,
              rpu_config=hwa_inference_config(pre_post__input_range__init_from_data=2))
    plain = train_hwa(tiny_net(), x, y, x[:8], y[:8], **kw)
    graphed = train_hwa(tiny_net(), x, y, x[:8], y[:8], cuda_graph=True, **kw)
    a, b = analog_state(plain["model"]), analog_state(graphed["model"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "graph_replays" not in plain["history"][0]
    assert graphed["history"][0]["graph_replays"] == 0 and graphed["history"][0]["graph_failure"] is None


def test_cuda_graph_flag(monkeypatch, tmp_path, capsys):
    parse = bool_option()
    assert parse("on") is True and parse("OFF") is False and parse("1") is True
    with pytest.raises(ConfigError, match="expected on or off, got 'maybe'"):
        parse("maybe")
    seen = {}

    def fake(model, **kwargs):
        seen.update(kwargs)
        return {"top1": 1.0, "seconds": 1.0, "out_path": None, "epochs_done": 1, "finished": False,
                "input_range_fix": {}}

    monkeypatch.setattr("aihwkit_nabn.tasks.cifar10.task.train_hwa_cifar10", fake)
    base = ["hwa", "--model", "resnet20", "--epochs", "1", "--out", str(tmp_path / "h.pt"), "--quiet"]
    assert cli.main(base + ["--cuda-graph"]) == 0 and seen["cuda_graph"] is True
    seen.clear()
    assert cli.main(base + ["--cuda-graph", "off"]) == 0 and seen["cuda_graph"] is False
    seen.clear()
    assert cli.main(base) == 0 and "cuda_graph" not in seen  # not given: the recipe's default (off)
    capsys.readouterr()
    assert cli.main(base + ["--cuda-graph", "maybe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cuda-graph" in err and "expected on or off" in err
