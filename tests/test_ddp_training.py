"""fit_classifier under DDP (torchrun's setting): two gloo processes equal one process with the same global batch."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

STEPS, BATCH = 3, 8


def _model():
    torch.manual_seed(0)
    # no BatchNorm: per-rank batch statistics would differ from the global batch's by design (see the module)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _data():
    gen = torch.Generator().manual_seed(5)
    return torch.randn(STEPS * BATCH, 3, 6, 6, generator=gen), torch.randint(0, 3, (STEPS * BATCH,), generator=gen)


def _batches(epoch, device):
    """The same STEPS global batches every epoch."""
    x, y = _data()
    for i in range(STEPS):
        yield x[i * BATCH:(i + 1) * BATCH].to(device), y[i * BATCH:(i + 1) * BATCH].to(device)


def _counting_loss(seen):
    """Cross-entropy that records in ``seen`` how many samples this process trained on in each step."""
    def loss_fn(logits, target):
        seen.append(len(target))
        return nn.functional.cross_entropy(logits, target)
    return loss_fn


def _train(out_dir: Path, epochs: int = 1, stop=None):
    from aihwkit_nabn.training.digital import fit_classifier  # pylint: disable=import-outside-toplevel

    model = _model()
    seen = []
    result = fit_classifier(model, epoch_batches=_batches, n_train=STEPS * BATCH, evaluate=lambda m, d: 0.0, epochs=epochs,
                            batch_size=BATCH, lr=0.1, warmup_epochs=0.0, device="cpu", progress=False,
                            log_path=out_dir / "log.jsonl", resume_path=out_dir / "resume.pt",
                            loss_fn=_counting_loss(seen), stop_after_epochs=stop)
    return model, {**result, "seen": seen}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model, result = _train(Path(out_dir) / f"rank{rank}")
        torch.save({"weights": {k: v.detach() for k, v in model.state_dict().items()}, "seen": result["seen"]},
                   Path(out_dir) / f"weights{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    torch.set_num_threads(1)
    single, result = _train(tmp_path / "single")
    assert result["seen"] == [BATCH] * STEPS
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    reference = single.state_dict()
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"weights{rank}.pt", weights_only=True)
        weights = saved["weights"]
        assert saved["seen"] == [BATCH // 2] * STEPS  # each process trains on its half of every global batch
        for key, value in reference.items():
            # float tolerance: the gradient average of two half-batches sums in another order
            assert torch.allclose(weights[key], value, atol=1e-6, rtol=1e-5), (rank, key)
    # only rank 0 wrote its log and resume state
    assert (tmp_path / "rank0" / "log.jsonl").exists() and (tmp_path / "rank0" / "resume.pt").exists()
    assert not (tmp_path / "rank1" / "log.jsonl").exists() and not (tmp_path / "rank1" / "resume.pt").exists()
    assert json.loads((tmp_path / "rank0" / "log.jsonl").read_text().splitlines()[0])["epoch"] == 1


def test_a_batch_that_does_not_split_evenly_is_refused(monkeypatch):
    from aihwkit_nabn.errors import ConfigError
    from aihwkit_nabn.training import distributed

    monkeypatch.setattr(distributed, "world", lambda: (0, 3))
    assert distributed.shard(torch.zeros(6), torch.zeros(6))[0].shape == (2,)
    with pytest.raises(ConfigError, match="does not split evenly over 3"):
        distributed.shard(torch.zeros(8), torch.zeros(8))


def _train_hwa(out_dir: Path):
    import aihwkit_nabn as nb  # pylint: disable=import-outside-toplevel
    from aihwkit_nabn.training.hwa import fit_hwa  # pylint: disable=import-outside-toplevel

    config = nb.TorchHWAPreset()
    # a noise-free configuration, so that one and two processes can be compared number for number
    config.forward.out_noise = 0.0
    config.modifier.std_dev = 0.0
    x, _ = _data()

    def init(device):
        while True:
            yield x[:BATCH].to(device)

    seen = []
    result = fit_hwa(_model(), epoch_batches=_batches, range_init_batches=init, n_train=STEPS * BATCH,
                     evaluate=lambda m, d: 0.0, epochs=1, batch_size=BATCH, lr=0.05, rpu_config=config, device="cpu",
                     progress=False, log_path=out_dir / "log.jsonl", resume_path=out_dir / "resume.pt",
                     loss_fn=_counting_loss(seen))
    from aihwkit_nabn._aihwkit.state import analog_state  # pylint: disable=import-outside-toplevel
    return {**analog_state(result["model"]), "seen": torch.tensor(seen)}


def _hwa_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        torch.save(_train_hwa(Path(out_dir) / f"hwa{rank}"), Path(out_dir) / f"hwa{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_hwa_under_two_processes_equals_one_without_noise(tmp_path):
    torch.set_num_threads(1)
    reference = _train_hwa(tmp_path / "single")
    assert reference.pop("seen").tolist() == [BATCH] * STEPS
    mp.spawn(_hwa_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        state = torch.load(tmp_path / f"hwa{rank}.pt", weights_only=True)
        assert state.pop("seen").tolist() == [BATCH // 2] * STEPS
        assert state.keys() == reference.keys()
        for key, value in reference.items():
            if value.is_floating_point():
                assert torch.allclose(state[key], value, atol=1e-5, rtol=1e-4), (rank, key)


def _resume_worker(rank: int, world: int, init_file: str, out_dir: str, stop) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model, result = _train(Path(out_dir), epochs=2, stop=stop)  # the same paths on every rank, as torchrun's
        if stop is None:
            torch.save({"weights": {k: v.detach() for k, v in model.state_dict().items()},
                        "resumed": result["resumed_from_epoch"]}, Path(out_dir) / f"final{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_rank_resumes_from_rank_0s_state(tmp_path):
    torch.set_num_threads(1)
    single, _ = _train(tmp_path / "single", epochs=2)
    run = tmp_path / "run"
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "init1"), str(run), 1), nprocs=2, join=True)  # epoch 1, stop
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "init2"), str(run), None), nprocs=2, join=True)  # resume
    for rank in (0, 1):
        saved = torch.load(run / f"final{rank}.pt", weights_only=True)
        assert saved["resumed"] == 1
        for key, value in single.state_dict().items():
            assert torch.allclose(saved["weights"][key], value, atol=1e-6, rtol=1e-5), (rank, key)
