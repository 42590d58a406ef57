"""What the choose-on-val sweeps (``bnft_sweep.py``, ``calib_sweep.py``) share: their common options, the overrides
that put a comparison on the val split, and one setting's journaled run."""

import argparse
from pathlib import Path

from aihwkit_nabn.evaluation.comparison import finished, load_config, parse_overrides, run_comparison
from aihwkit_nabn.evaluation.journal import read_rows


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options every val sweep takes (output, config and overrides, model, time, chips, val size, device)."""
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--config", default=None, help="comparison config (default: the cifar10 one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (TOML value)")
    parser.add_argument("--model", default="resnet32", help="the config's model to choose on")
    parser.add_argument("--time", default="1y")
    parser.add_argument("--chips", type=int, default=5)
    parser.add_argument("--val-samples", type=int, default=5000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--quiet", action="store_true")


def val_overrides(args: argparse.Namespace) -> dict:
    """``--set`` plus what makes the comparison measure on val only: ``val_samples`` training images held out and
    measured (rows named ``val_top1``), the test split not read, ``--chips`` chips, no retention part."""
    return {**parse_overrides(args.set), "data.val_samples": args.val_samples, "data.eval_split": "val",
            "data.test_samples": 0, "sweep.chips": args.chips, "retention.models": []}


def run_setting(task, args: argparse.Namespace, name: str, overrides: dict, part: str, script: str) -> list:
    """One setting's comparison ``part`` into ``<out>/<name>`` (skipped if finished with this config), recorded
    as the command ``<script> <name>``; its rows."""
    config = load_config(args.config or task.default_config, overrides)
    if not finished(args.out / name, config):
        run_comparison(task, config, args.out / name, parts=(part,), models=[args.model], device=args.device,
                       progress=not args.quiet, command=f"{script} {name}")
    return read_rows(args.out / name / part / "rows.csv")
