"""Where torch.compile breaks the HWA training forward: graphs, breaks, reasons and source lines.

HWA fine-tuning at batch 128 is launch-bound on a GPU (one ResNet-32 epoch: 55 s on the H200 with three runs
sharing it, against 2.5 s for the digital training). Compiling the training forward (CUDA graphs) would need it
captured in few graphs; this counts what `torch._dynamo.explain` finds on the accelerated analog model in
training mode on the CPU, where the layers take aihwkit's stock torch path (on CUDA the accelerated layers run
the fused Triton kernels under autograd instead, whose breaks this does not count: see profile_hwa_step.py). Dynamo stops recompiling a function
after its cache limit and runs it eagerly from then on, so the counts are a lower bound: the same few source lines
break in every analog layer.

    python benchmarks/hwa_graph_breaks.py --arch resnet32 --out results/benchmarks/hwa_graph_breaks.json
"""

import argparse
import collections
import json
import logging
import warnings
from pathlib import Path

import torch
import torch._dynamo as dynamo

import aihwkit_nabn as nb
from aihwkit_nabn.utils.provenance import code_commit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    model = nb.to_analog(nb.create_model(args.arch).eval(), nb.TorchHWAPreset(), accelerate=True)
    model.train()  # HWA trains with the tiles in training mode (weight noise on, ranges learned)
    explained = dynamo.explain(model)(torch.randn(args.batch_size, 3, 32, 32))
    reasons = collections.Counter(str(b.reason).splitlines()[0][:120] for b in explained.break_reasons)
    where = collections.Counter(
        f"{Path(b.user_stack[-1].filename).name}:{b.user_stack[-1].lineno} ({b.user_stack[-1].name})"
        if b.user_stack else "?" for b in explained.break_reasons)
    out = {"commit": code_commit(), "torch": torch.__version__, "arch": args.arch,
           "graphs": explained.graph_count, "graph_breaks": explained.graph_break_count,
           "break_reasons_recorded": len(explained.break_reasons),
           "reasons": dict(reasons.most_common()), "where": dict(where.most_common())}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
