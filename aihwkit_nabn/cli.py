"""The ``aihwkit-nabn`` command: train, calibrate, sweep, demo."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .errors import DriftTimeError

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "y": 365 * 86400.0}


def parse_time(text: str) -> float:
    """Return seconds for ``"3600"``, ``"1s"``, ``"1h"``, ``"1d"``, ``"30d"``, ``"1y"``, ``"2.5min"``."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(s|min|h|d|y)?\s*", text)
    if not match:
        raise DriftTimeError(f"cannot read drift time {text!r}: use seconds or a unit, e.g. 1s, 1h, 1d, 30d, 1y")
    from .chips import check_drift_time  # pylint: disable=import-outside-toplevel

    return check_drift_time(float(match.group(1)) * _UNITS[match.group(2) or "s"])


def parse_times(text: str) -> List[float]:
    """Return the drift times of a comma-separated list such as ``"1s,1h,1d,30d,1y"``."""
    return [parse_time(t) for t in text.split(",") if t.strip()]


def _split(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _command_line(argv: Optional[Sequence[str]]) -> str:
    return "aihwkit-nabn " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a digital CIFAR-10 baseline and save its checkpoint."""
    from .training import train_baseline  # pylint: disable=import-outside-toplevel

    hparams = {k: getattr(args, k) for k in ("batch_size", "lr", "weight_decay", "label_smoothing", "cutout_size",
                                             "max_seconds", "compile")
               if getattr(args, k) is not None}
    result = train_baseline(args.arch, epochs=args.epochs, out_path=args.out, data_source=args.data, seed=args.seed,
                            device=args.device, progress=not args.quiet, **hparams)
    print(json.dumps({"arch": args.arch, "top1": result["top1"], "seconds": result["seconds"], "out": result["out_path"],
                      "epochs_done": result["epochs_done"], "finished": result["finished"]}, indent=1))
    return 0


def cmd_hwa(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    """HWA-fine-tune a digital CIFAR-10 checkpoint on aihwkit torch tiles and save the HWA checkpoint."""
    from .hwa_training import train_hwa_cifar10  # pylint: disable=import-outside-toplevel

    hparams = {k: getattr(args, k) for k in ("batch_size", "lr", "cutout_size", "max_seconds")
               if getattr(args, k) is not None}
    result = train_hwa_cifar10(args.model, epochs=args.epochs, out_path=args.out, data_source=args.data,
                               seed=args.seed, device=args.device, progress=not args.quiet,
                               command=_command_line(argv), **hparams)
    print(json.dumps({"model": args.model, "top1": result["top1"], "seconds": result["seconds"],
                      "out": result["out_path"], "epochs_done": result["epochs_done"],
                      "finished": result["finished"], "input_range_fix": result["input_range_fix"]}, indent=1))
    return 0


def _cifar_split(args: argparse.Namespace):
    """Return (test images, test labels, calibration images) for the sweep/calibrate commands."""
    from .data.cifar10 import load_cifar10, stratified_subset  # pylint: disable=import-outside-toplevel

    test_x, test_y = load_cifar10("test", args.data)
    if args.test_samples:
        idx = stratified_subset(test_y, args.test_samples, seed=args.seed)
        test_x, test_y = test_x[idx], test_y[idx]
    train_x, train_y = load_cifar10("train", args.data)
    calib_idx = stratified_subset(train_y, args.calib_samples, seed=args.seed)
    return test_x, test_y, train_x[calib_idx]


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Deploy one model on one chip, drift it, calibrate BN, report accuracy before/after, save the BN state."""
    import torch  # pylint: disable=import-outside-toplevel

    from .batches import TensorBatches  # pylint: disable=import-outside-toplevel
    from .calibration import calibrate_bn  # pylint: disable=import-outside-toplevel
    from .chips import Chip  # pylint: disable=import-outside-toplevel
    from .cifar10_sweep import load_classifier  # pylint: disable=import-outside-toplevel
    from .data.cifar10 import normalize  # pylint: disable=import-outside-toplevel
    from .deploy import to_analog  # pylint: disable=import-outside-toplevel
    from .metrics import Top1Accuracy  # pylint: disable=import-outside-toplevel

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name, model, _ = load_classifier(args.model)
    test_x, test_y, calib_x = _cifar_split(args)
    metric = Top1Accuracy(TensorBatches(test_x, test_y, batch_size=500, transform=normalize, device=device))
    chip = Chip(to_analog(model, digital_layers=_split(args.digital_layers)), args.chip_seed, device=device)
    chip.drift_to(parse_time(args.time))
    before = metric(chip.model)
    from .training import augment_like_training  # pylint: disable=import-outside-toplevel

    calib_x = augment_like_training(calib_x, seed=args.seed)  # the view the BN statistics were trained on
    snapshot = calibrate_bn(chip.model, TensorBatches(calib_x, batch_size=256, transform=normalize, device=device),
                            num_samples=args.calib_samples, progress=not args.quiet)
    after = metric(chip.model)
    report = {"model": name, "time_s": chip.t, "chip_seed": chip.seed, "gdc_top1": before, "nabn_top1": after,
              "calib_samples": snapshot.info["samples"], "test_samples": len(test_y)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"bn_state": chip.save_bn_state().to_state_dict(), "report": report}, args.out)
        report["out"] = args.out
    print(json.dumps(report, indent=1))
    return 0


def cmd_sweep(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    """Run the drift sweep over models x methods x times x chips and write the report files."""
    from .cifar10_sweep import cifar10_sweep, load_classifier  # pylint: disable=import-outside-toplevel

    models = {}
    for spec in _split(args.models):
        name, model, _ = load_classifier(spec)
        models[name] = model
    test_x, test_y, calib_x = _cifar_split(args)
    out = cifar10_sweep(
        models, test_images=test_x, test_labels=test_y, calib_images=calib_x, out_dir=args.out,
        times=parse_times(args.times), n_chips=args.chips, methods=_split(args.methods), calib_samples=args.calib_samples,
        digital_layers=_split(args.digital_layers), device=args.device, seed=args.seed, progress=not args.quiet,
        title="CIFAR-10 (JPEG q75 copy)", config={"command": _command_line(argv)}, batch_size=args.batch_size,
    )
    print(out["paths"]["summary.md"].read_text())
    print("wrote", ", ".join(str(p) for p in out["paths"].values()))
    return 0


def cmd_reproduce(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    """Run the config-driven comparison (``reproduce cifar10``) and print its main table."""
    from .reproduce import tomllib  # pylint: disable=import-outside-toplevel

    from .reproduce import DEFAULT_CONFIGS, load_config, run_comparison  # pylint: disable=import-outside-toplevel

    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value (a dotted key and a TOML value), got {item!r}")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = value  # a bare string
    config_path = Path(args.config) if args.config else DEFAULT_CONFIGS[args.task]
    config = load_config(config_path, overrides)
    parts = _split(args.parts)
    out = Path(args.out or f"results/{args.task}")
    run = run_comparison(config, out, device=args.device, progress=not args.quiet, parts=parts,
                         models=_split(args.models) if args.models else None, command=_command_line(argv))
    if (out / "main" / "summary.md").exists():
        print((out / "main" / "summary.md").read_text())
    if (out / "costs.md").exists():
        print((out / "costs.md").read_text())
    print(f"wall time {run['wall_seconds']:.0f} s on {run['device']}; wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the offline demo on the shipped ResNet-20 and CIFAR-10 sample."""
    from .demo import run_demo  # pylint: disable=import-outside-toplevel

    run_demo(out_dir=args.out, times=parse_times(args.times), n_chips=args.chips, device=args.device,
             progress=not args.quiet, test_samples=args.test_samples, calib_samples=args.calib_samples)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``aihwkit-nabn`` command."""
    parser = argparse.ArgumentParser(
        prog="aihwkit-nabn",
        description="Noise-aware BatchNorm calibration for analog (PCM) inference with IBM aihwkit.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a digital CIFAR-10 ResNet baseline (GPU recommended)",
                       description="Train ResNet-20/32/56 on CIFAR-10 (JPEG q75 copy) and save a checkpoint "
                                   "loadable with torch.load(weights_only=True). Resumes an interrupted run.")
    p.add_argument("--arch", required=True, help="resnet20, resnet32 or resnet56")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="checkpoint path (.pt); a .log.jsonl and .resume.pt go beside it")
    p.add_argument("--data", default=None, help="CIFAR-10 archive/folder (default ../shared/data/cifar10_jpg.tar.gz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--cutout-size", type=int, default=None, help="side of the Cutout square (default 16; 0 = none)")
    p.add_argument("--compile", nargs="?", const=True, default=None, metavar="MODE",
                   help="torch.compile the training forward (optionally a mode, e.g. reduce-overhead); "
                        "falls back to eager if compiling fails")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop after the epoch that ends past this many seconds; re-run the same command to resume")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("hwa", help="hardware-aware fine-tuning of a digital model on analog tiles (GPU recommended)",
                       description="Convert a trained digital CIFAR-10 model to aihwkit torch tiles with TorchHWAPreset "
                                   "(aihwkit's StandardHWATrainingPreset as far as the torch tile supports it), "
                                   "fine-tune it hardware-aware and save an HWA checkpoint (before any programming) "
                                   "loadable with torch.load(weights_only=True). Resumes an interrupted run.")
    p.add_argument("--model", default="resnet20", help="checkpoint path or shipped model name (default resnet20)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, help="HWA checkpoint path (.pt); a .log.jsonl and .resume.pt go beside it")
    p.add_argument("--data", default=None, help="CIFAR-10 archive/folder (default ../shared/data/cifar10_jpg.tar.gz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="default 128")
    p.add_argument("--cutout-size", type=int, default=None,
                   help="side of the Cutout square (default 16, as the shipped digital models; 0 = none)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of AnalogSGD (default 0.02)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop after the epoch that ends past this many seconds; re-run the same command to resume")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", default=None, help="CIFAR-10 archive/folder (default ../shared/data/cifar10_jpg.tar.gz)")
        p.add_argument("--calib-samples", type=int, default=1024, help="training images for calibration (default 1024)")
        p.add_argument("--test-samples", type=int, default=0, help="stratified test subset (default 0: all 10,000)")
        p.add_argument("--digital-layers", default="", help="comma-separated layer names kept digital, e.g. conv1,fc")
        p.add_argument("--seed", type=int, default=0, help="base seed of chips and data subsets")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
        p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("calibrate", help="calibrate BN on one drifted chip and save the calibrated BN state",
                       description="Deploy a model on one simulated PCM chip, drift it to --time, re-estimate BN "
                                   "statistics on training images, report top-1 before/after, save the BN state.")
    p.add_argument("--model", default="resnet20", help="checkpoint path or shipped model name (default resnet20)")
    p.add_argument("--time", default="1y", help="drift time: seconds or 1s/1h/1d/30d/1y (default 1y)")
    p.add_argument("--chip-seed", type=int, default=0)
    p.add_argument("--out", default=None, help="where to save the calibrated BN state (.pt)")
    common(p)

    p = sub.add_parser("sweep", help="drift sweep: models x methods x times x chips, with report files",
                       description="Evaluate models on independent simulated PCM chips over drift time. Rows are "
                                   "journaled to OUT/rows.csv as they finish; re-running resumes.")
    p.add_argument("--models", default="resnet20", help="comma-separated checkpoint paths or shipped model names")
    p.add_argument("--methods", default="digital,analog,gdc,nabn")
    p.add_argument("--times", default="1s,1h,1d,30d,1y")
    p.add_argument("--chips", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=500, help="evaluation batch size (default 500)")
    p.add_argument("--out", required=True, help="output folder (rows.csv, summary.*, sweep.png)")
    common(p)

    p = sub.add_parser("reproduce", help="the full comparison of remedies (nabn, bnft, hwa, ...) from a config file",
                       description="Evaluate digital, analog, gdc, nabn, bnft, hwa, hwa+nabn and hwa+bnft over drift time on "
                                   "independent simulated chips, plus calibration retention and calibration-set size, "
                                   "with costs and plots. Every part is journaled and resumes where it stopped.")
    p.add_argument("task", choices=["cifar10"], help="which comparison (its config: aihwkit_nabn/configs/<task>.toml)")
    p.add_argument("--config", default=None, help="another TOML config file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set sweep.chips=1 --set 'sweep.times=[\"1s\",\"1y\"]'")
    p.add_argument("--parts", default="main,retention,calib_size", help="which parts to run (default: all)")
    p.add_argument("--models", default=None, help="only these models of the config, comma-separated (default: all)")
    p.add_argument("--out", default=None, help="output folder (default results/<task>)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the config's, else cuda if available)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("demo", help="offline demo on the shipped ResNet-20 and CIFAR-10 sample (CPU, minutes)",
                       description="Load the shipped ResNet-20 checkpoint and CIFAR-10 sample (1,000 test and 512 "
                                   "training images), run a reduced drift sweep on class-balanced subsets of it, print "
                                   "the table and write the plot.")
    p.add_argument("--out", default="aihwkit-nabn-demo", help="output folder (default ./aihwkit-nabn-demo)")
    p.add_argument("--times", default="1s,1d,1y")
    p.add_argument("--chips", type=int, default=2)
    p.add_argument("--test-samples", type=int, default=500, help="test images of the sample to use (max 1000)")
    p.add_argument("--calib-samples", type=int, default=256, help="training images for calibration (max 512)")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``aihwkit-nabn`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    if args.command == "calibrate":
        return cmd_calibrate(args)
    if args.command == "sweep":
        return cmd_sweep(args, argv)
    if args.command == "reproduce":
        return cmd_reproduce(args, argv)
    if args.command == "hwa":
        return cmd_hwa(args, argv)
    return cmd_demo(args)


if __name__ == "__main__":
    sys.exit(main())
