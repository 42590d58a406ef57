"""Choose the BN fine-tuning recipe on the validation split: a grid of steps x lr x label smoothing x views.

Usage (GPU; issue 13):
    python examples/reproduce/bnft_sweep.py --out results/cifar10_fair/bnft_sweep \
        --set 'models.resnet32.digital="runs/fair/resnet32.pt"' --steps 20,50,100,300 --lrs 1e-4,1e-3 \
        --smoothing 0,0.1 --fresh 0,1 --time 1y --chips 5

Every setting is one `reproduce cifar10` main part on the **val** split (``data.val_samples`` held out of the
training split, ``data.eval_split = "val"``: rows named ``val_top1``; calibration and fine-tuning draw from the
other training images) with the method ``bnft``, journaled per setting (an interrupted sweep resumes); the
zero-step reference ``nabn``, which no fine-tuning setting changes, runs once on the same chips (``reference/``).
Writes ``bnft_sweep.json`` / ``.md``: per setting the val mean ± std over chips and the paired per-chip difference
``bnft - nabn`` with its 95 % t interval, and the chosen setting (highest val mean). The test split is never read.

Step counts run in ascending order and a recipe (lr, smoothing, views) is dropped from the larger counts once it has
fallen to or below calibration alone on val at ``--prune-after`` consecutive counts (default 2; 0 runs the whole
grid): successive halving on val, so that 300-step runs are not spent on a learning rate that only ever lost.
The dropped settings are listed in the record with the reason.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

from aihwkit_nabn.evaluation.paired import paired_differences
from aihwkit_nabn.evaluation.report import summarize
from aihwkit_nabn.tasks import get_task
from aihwkit_nabn.utils.provenance import code_commit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/reproduce/, for val_sweep
from val_sweep import add_common_args, run_setting, val_overrides  # noqa: E402  pylint: disable=wrong-import-position


def _floats(text):
    return [float(v) for v in text.split(",") if v]


def _setting_name(steps, lr, smoothing, fresh):
    return f"steps{steps}_lr{lr:g}_ls{smoothing:g}_{'fresh' if fresh else 'fixed'}"


def prune_reason(history, recipe, steps, prune_after):
    """Why ``recipe`` is not run at ``steps``, or None: it lost to nabn on val (``bnft - nabn <= 0``, or was dropped)
    at each of the ``prune_after`` step counts before ``steps``. ``history`` maps (recipe, steps) to that difference
    (None: dropped) for the counts already passed, in ascending order of steps."""
    if prune_after <= 0:
        return None
    earlier = sorted(s for r, s in history if r == recipe and s < steps)[-prune_after:]
    if len(earlier) < prune_after or any(history[recipe, s] is not None and history[recipe, s] > 0 for s in earlier):
        return None
    return f"bnft - nabn <= 0 on val at steps {', '.join(map(str, earlier))}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--steps", default="20,50,100,300")
    parser.add_argument("--lrs", default="1e-4,1e-3")
    parser.add_argument("--smoothing", default="0,0.1")
    parser.add_argument("--fresh", default="0,1", help="0: one fixed view per image, 1: fresh views every pass")
    parser.add_argument("--prune-after", type=int, default=2,
                        help="drop a recipe from larger step counts after it lost to nabn at this many (0: never)")
    args = parser.parse_args(argv)

    task = get_task("cifar10")
    grid = list(itertools.product(sorted(int(s) for s in args.steps.split(",")), _floats(args.lrs),
                                  _floats(args.smoothing), [bool(int(f)) for f in args.fresh.split(",")]))
    common = {**val_overrides(args), "sweep.times": [args.time], "calib_size.models": []}

    def run(name, overrides):
        """One main part into ``<out>/<name>``; its rows."""
        return run_setting(task, args, name, {**common, **overrides}, "main", "bnft_sweep")

    reference = run("reference", {"sweep.methods": ["nabn"]})
    results, skipped, history = [], [], {}
    for steps, lr, smoothing, fresh in grid:
        name, recipe = _setting_name(steps, lr, smoothing, fresh), (lr, smoothing, fresh)
        reason = prune_reason(history, recipe, steps, args.prune_after)
        if reason:
            history[recipe, steps] = None
            skipped.append({"setting": name, "reason": reason})
            print(f"{name}: skipped ({reason})")
            continue
        rows = reference + run(name, {"sweep.methods": ["bnft"], "bnft.steps": steps, "bnft.lr": lr,
                                      "bnft.label_smoothing": smoothing, "bnft.fresh_views": fresh})
        stats = {s["method"]: s for s in summarize(rows)}
        (diff,) = paired_differences(rows, pairs=[("bnft", "nabn")])
        results.append({"setting": name, "steps": steps, "lr": lr, "label_smoothing": smoothing, "fresh_views": fresh,
                        "nabn_mean": stats["nabn"]["mean"], "bnft_mean": stats["bnft"]["mean"],
                        "bnft_std": stats["bnft"]["std"], "n_chips": stats["bnft"]["n_chips"],
                        "bnft_minus_nabn": diff["mean"], "ci_low": diff["ci_low"], "ci_high": diff["ci_high"],
                        "resolved": diff["resolved"]})
        history[recipe, steps] = diff["mean"]
        print(f"{name}: bnft {stats['bnft']['mean']:.2f} vs nabn {stats['nabn']['mean']:.2f} (val)")
    best = max(results, key=lambda r: r["bnft_mean"])
    record = {"model": args.model, "time": args.time, "val_samples": args.val_samples, "commit": code_commit(),
              "split": "val (held out of the training split; the test split is not read)",
              "settings": results, "skipped": skipped, "prune_after": args.prune_after, "chosen": best["setting"],
              "chosen_beats_nabn": bool(best["resolved"] and best["bnft_minus_nabn"] > 0)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bnft_sweep.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["| setting | bnft (val) | bnft − nabn, 95 % CI |", "| --- | --- | --- |"]
    for r in results:
        ci = "" if r["ci_low"] is None else f" [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        lines.append(f"| {r['setting']} | {r['bnft_mean']:.2f} ± {r['bnft_std']:.2f} | {r['bnft_minus_nabn']:+.2f}{ci} |")
    lines += [f"| {r['setting']} | skipped: {r['reason']} | |" for r in skipped]
    lines += ["", f"{args.model}, {args.time}, {best['n_chips']} chips, val split of {args.val_samples} training images. "
              f"Chosen: {best['setting']} (highest val mean); "
              + ("it beats calibration alone (interval above zero)." if record["chosen_beats_nabn"]
                 else "no setting is resolved better than calibration alone on val.")]
    (args.out / "bnft_sweep.md").write_text("\n".join(lines) + "\n")
    print((args.out / "bnft_sweep.md").read_text())


if __name__ == "__main__":
    main()
