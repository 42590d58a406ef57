"""Choose the calibration view and size on the validation split: nabn at one time, views x sizes, paired per chip.

Usage (GPU; issue 13):
    python examples/reproduce/calib_sweep.py --out results/cifar10_fair/calib_sweep \
        --set 'models.resnet32.digital="runs/fair/ckpt/resnet32.pt"' --views train,crop_flip,plain \
        --sizes 128,256,512,1024,2048,4096 --time 1y --chips 5

Per view, one `reproduce cifar10` ``calib_size`` part on the **val** split (``data.val_samples`` held out of
the training split, ``data.eval_split = "val"``: rows named ``val_top1``), with ``data.calib_view`` set: ``gdc``
and ``nabn[N]`` for every size N, on the same chips, journaled per view (an interrupted sweep resumes). Every
view calibrates on prefixes of the same fixed, class-balanced training subset, and the input ranges of the
digital model come from the task's own view in every run, so only the BN calibration differs. Writes
``calib_sweep.json`` / ``.md``: per (view, size) the val mean ± std over chips and the paired per-chip difference
against the reference setting
(``--reference``, default the task's own view at the config's calib_samples) with its 95 % t interval; the
chosen setting is the highest val mean (a tie: the smaller size). The test split is never read.
"""

import argparse
import json
import sys
from pathlib import Path

from aihwkit_nabn.evaluation.comparison import load_config
from aihwkit_nabn.evaluation.paired import paired_differences
from aihwkit_nabn.evaluation.report import summarize
from aihwkit_nabn.tasks import get_task
from aihwkit_nabn.utils.provenance import code_commit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/reproduce/, for val_sweep
from val_sweep import add_common_args, run_setting, val_overrides  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--views", default="train,crop_flip,plain")
    parser.add_argument("--sizes", default="128,256,512,1024,2048,4096")
    parser.add_argument("--reference", default=None, help="VIEW:SIZE to pair against (default train:<calib_samples>)")
    args = parser.parse_args(argv)

    task = get_task("cifar10")
    views = [v for v in args.views.split(",") if v]
    sizes = [int(n) for n in args.sizes.split(",") if n]
    unknown = [v for v in views if v not in task.calib_views]
    if unknown:
        parser.error(f"--views {unknown}: choose from {sorted(task.calib_views)}")
    common = {**val_overrides(args), "sweep.methods": ["nabn"], "calib_size.models": [args.model],
              "calib_size.sizes": sizes, "calib_size.time": args.time, "calib_size.chips": args.chips}
    calib_samples = int(load_config(args.config or task.default_config, common)["data"]["calib_samples"])
    ref_view, _, ref_size = (args.reference or f"train:{calib_samples}").partition(":")
    ref_size = int(ref_size)
    if ref_view not in views or ref_size not in sizes:
        parser.error(f"--reference {ref_view}:{ref_size} must be one of the views and sizes swept")

    rows = []
    for view in views:
        for r in run_setting(task, args, view, {**common, "data.calib_view": view}, "calib_size", "calib_sweep"):
            if r["method"] == "gdc" and view != ref_view:
                continue  # the same gdc rows in every view: keep one copy
            rows.append({**r, "method": r["method"] if r["method"] == "gdc" else f"{view}:{r['method'][5:-1]}"})
    stats = {s["method"]: s for s in summarize(rows)}
    reference = f"{ref_view}:{ref_size}"
    settings = []
    for view in views:
        for size in sizes:
            name = f"{view}:{size}"
            s = stats[name]
            entry = {"setting": name, "view": view, "size": size, "val_mean": s["mean"], "val_std": s["std"],
                     "n_chips": s["n_chips"]}
            if name != reference:
                (diff,) = paired_differences(rows, pairs=[(name, reference)])
                entry.update(minus_reference=diff["mean"], ci_low=diff["ci_low"], ci_high=diff["ci_high"],
                             resolved=diff["resolved"])
            settings.append(entry)
    best = max(settings, key=lambda e: (e["val_mean"], -e["size"]))
    record = {"model": args.model, "time": args.time, "val_samples": args.val_samples, "commit": code_commit(),
              "split": "val (held out of the training split; the test split is not read)",
              "views": {v: task.calib_views[v] for v in views}, "reference": reference,
              "gdc_val_mean": stats["gdc"]["mean"], "settings": settings, "chosen": best["setting"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calib_sweep.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"| view | size | nabn (val) | − {reference}, 95 % CI |", "| --- | --- | --- | --- |"]
    for e in settings:
        diff = "reference" if e["setting"] == reference else (
            f"{e['minus_reference']:+.2f}"
            + ("" if e["ci_low"] is None else f" [{e['ci_low']:+.2f}, {e['ci_high']:+.2f}]"))
        lines.append(f"| {e['view']} | {e['size']} | {e['val_mean']:.2f} ± {e['val_std']:.2f} | {diff} |")
    lines += ["", f"{args.model}, {args.time}, {best['n_chips']} chips, val split of {args.val_samples} training "
              f"images; gdc {stats['gdc']['mean']:.2f}. Chosen: {best['setting']} (highest val mean)."]
    (args.out / "calib_sweep.md").write_text("\n".join(lines) + "\n")
    print((args.out / "calib_sweep.md").read_text())


if __name__ == "__main__":
    main()
