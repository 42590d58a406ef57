"""calibrate_bn under torch.distributed: SyncBatchNorm statistics pooled over every process (gloo, 2 CPUs)."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

N_PER_RANK = (24, 40)  # unequal: pooling must weight by samples, not average the ranks


def _data(rank: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(N_PER_RANK[rank], 3, 5, 5, generator=gen) * (1.0 + rank) + rank


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import aihwkit_nabn as nb  # pylint: disable=import-outside-toplevel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # torch runs SyncBatchNorm's synchronised forward only on GPUs; on the CPU each process normalises
        # with its own batch (plain BatchNorm's forward). What is tested is calibrate_bn's own pooling of
        # the statistics, which uses an all_reduce of the moments and runs on gloo.
        nn.SyncBatchNorm.forward = nn.BatchNorm2d.forward
        torch.manual_seed(0)
        model = nn.Sequential(nn.SyncBatchNorm(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        snapshot = nb.calibrate_bn(model, _data(rank), num_samples=None, batch_size=8)
        torch.save({"mean": model[0].running_mean, "var": model[0].running_var,
                    "local_mean": model[2].running_mean, "samples": snapshot.info["samples"]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_statistics_pool_over_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    everything = torch.cat([_data(0), _data(1)]).transpose(0, 1).reshape(3, -1).double()
    for rank, result in enumerate(ranks):
        assert result["samples"] == N_PER_RANK[rank]
        # the SyncBatchNorm layer: the statistics of all samples of both processes, on every process
        assert torch.allclose(result["mean"].double(), everything.mean(1), atol=1e-6)
        assert torch.allclose(result["var"].double(), everything.var(1), rtol=1e-5)
    assert torch.equal(ranks[0]["mean"], ranks[1]["mean"]) and torch.equal(ranks[0]["var"], ranks[1]["var"])
    # a plain BatchNorm layer keeps per-process statistics
    assert not torch.equal(ranks[0]["local_mean"], ranks[1]["local_mean"])
