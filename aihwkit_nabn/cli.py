"""The ``aihwkit-nabn`` command (also ``python -m aihwkit_nabn``): train, hwa, calibrate, sweep, reproduce, demo.

A thin layer: every argument, ``--set`` value and config is checked first (:func:`main` turns a bad one
into one line ``aihwkit-nabn: error: ...`` on stderr and exit status 2, before any data is read); then the
task's data and the library do the work; an error raised while working ends as one line too (exit 1).
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence

import torch

from .analog.chips import Chip
from .analog.convert import to_analog
from .analog.noise_settings import list_noise_settings, noise_setting
from .analog.presets import PCMInferencePreset
from .analog.times import parse_time, parse_times
from .bn.calibrate import calibrate_bn
from .errors import ConfigError, DriftTimeError, NABNError
from .evaluation.comparison import PARTS, load_config, parse_overrides, run_comparison
from .evaluation.noise_table import check_noise_table, run_noise_table
from .evaluation.task import Option, Task
from .evaluation.task_sweep import SWEEP_METHODS, sweep_task
from .tasks import get_task, list_tasks
from .training.distributed import init_from_env
from .tasks.cifar10.demo import run_demo
from .utils.checks import check_unique
from .utils.devices import resolve_device

PROG = "aihwkit-nabn"
DEFAULT_TASK = "cifar10"


class UsageError(Exception):
    """A command-line argument is invalid (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``aihwkit-nabn: error: ...``, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a value parser so argparse reports its own message (not 'invalid <name> value')."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise ConfigError(f"must be an integer >= {minimum}, got {value}")
        return value

    return _typed(parse)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"must be a finite number > 0, got {text!r}")
    return value


def _device(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {text!r}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {text!r}: use cpu, cuda or cuda:N")
    return text


def _names(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _command_line(argv: Sequence[str]) -> str:
    return PROG + " " + " ".join(shlex.quote(a) for a in argv)


# --------------------------------------------------------------------------- parser


def _add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Offer a task's recipe options as ``--name-with-dashes`` flags (default: the recipe's own)."""
    for option in options:
        extra: Dict[str, Any] = {"nargs": "?", "const": option.const} if option.const is not None else {}
        parser.add_argument("--" + option.name.replace("_", "-"), dest=option.name, type=_typed(option.type),
                            default=None, help=option.help, metavar=option.metavar, **extra)


def _common(p: argparse.ArgumentParser, *, task: bool = True) -> None:
    if task:
        p.add_argument("--task", default=DEFAULT_TASK, choices=list_tasks(), help=f"the task (default {DEFAULT_TASK})")
    p.add_argument("--data", default=None, help="the task's data (default: ../shared/data/, or the task's "
                                                "environment variable; cifar10: also 'shipped-sample')")
    p.add_argument("--device", type=_typed(_device), default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _ray_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the work units (one model x chip each) as Ray tasks: alone, a local Ray; with an "
                        "address ('auto', 'ray://host:10001'), that cluster (pip install \"aihwkit-nabn[ray]\")")


def _ray(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """run_sweep's ray option from --ray (None: in this process)."""
    if args.ray is None:
        return None
    return {} if args.ray == "local" else {"address": args.ray}


def build_parser(task: Optional[Task] = None) -> argparse.ArgumentParser:
    """Return the argument parser of the ``aihwkit-nabn`` command (``task``'s recipe options on train/hwa)."""
    task = task or get_task(DEFAULT_TASK)
    parser = _Parser(prog=PROG, description="Noise-aware BatchNorm calibration for analog (PCM) inference with IBM aihwkit.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a digital baseline of a task (GPU recommended)",
                       description="Train a registered model on the task's training split and save a checkpoint "
                                   "loadable with torch.load(weights_only=True). Resumes an interrupted run. "
                                   f"Recipe options shown are those of --task {task.name}.")
    p.add_argument("--arch", required=True, help=f"registered model, e.g. {', '.join(task.model_names())}")
    p.add_argument("--epochs", type=_int(1), required=True)
    p.add_argument("--out", required=True, help="checkpoint path (.pt); a .log.jsonl and .resume.pt go beside it")
    p.add_argument("--seed", type=_int(0), default=0)
    p.add_argument("--max-seconds", type=_typed(_positive_float), default=None,
                   help="stop after the epoch that ends past this many seconds; re-run the same command to resume")
    p.add_argument("--stop-after-epochs", type=_int(1), default=None,
                   help="stop after this many epochs of this call (e.g. to time an epoch); re-run to resume")
    _add_options(p, task.train_options)
    _common(p)

    p = sub.add_parser("hwa", help="hardware-aware fine-tuning of a digital model on analog tiles (GPU recommended)",
                       description="Convert a trained digital model to aihwkit torch tiles with TorchHWAPreset "
                                   "(aihwkit's StandardHWATrainingPreset as far as the torch tile supports it), "
                                   "fine-tune it hardware-aware and save an HWA checkpoint (before any programming) "
                                   "loadable with torch.load(weights_only=True). Resumes an interrupted run.")
    p.add_argument("--model", default=(task.model_names() or [""])[0],
                   help="checkpoint path or shipped model name (default: the task's first)")
    p.add_argument("--epochs", type=_int(1), required=True)
    p.add_argument("--out", required=True, help="HWA checkpoint path (.pt); a .log.jsonl and .resume.pt go beside it")
    p.add_argument("--seed", type=_int(0), default=0)
    p.add_argument("--max-seconds", type=_typed(_positive_float), default=None,
                   help="stop after the epoch that ends past this many seconds; re-run the same command to resume")
    p.add_argument("--stop-after-epochs", type=_int(1), default=None,
                   help="stop after this many epochs of this call (e.g. to time an epoch); re-run to resume")
    _add_options(p, task.hwa_options)
    _common(p)

    def deployment(p: argparse.ArgumentParser) -> None:
        p.add_argument("--calib-samples", type=_int(2), default=1024, help="training images for calibration (default 1024)")
        p.add_argument("--test-samples", type=_int(0), default=0, help="stratified test subset (default 0: all)")
        p.add_argument("--digital-layers", type=_names, default=[], help="comma-separated layer names kept digital, e.g. conv1,fc")
        p.add_argument("--seed", type=_int(0), default=0, help="base seed of chips and data subsets")
        _common(p)

    p = sub.add_parser("calibrate", help="calibrate BN on one drifted chip and save the calibrated BN state",
                       description="Deploy a model on one simulated PCM chip, drift it to --time, re-estimate BN "
                                   "statistics on training images, report the metric before/after, save the BN state.")
    p.add_argument("--model", default=(task.model_names() or [""])[0], help="checkpoint path or shipped model name")
    p.add_argument("--time", type=_typed(parse_time), default=parse_time("1y"),
                   help="drift time: seconds or 1s/1h/1d/30d/1y (default 1y)")
    p.add_argument("--chip-seed", type=_int(0), default=0)
    p.add_argument("--out", default=None, help="where to save the calibrated BN state (.pt)")
    deployment(p)

    p = sub.add_parser("sweep", help="drift sweep: models x methods x times x chips, with report files",
                       description="Evaluate models on independent simulated PCM chips over drift time. Rows are "
                                   "journaled to OUT/rows.csv as they finish; re-running resumes.")
    p.add_argument("--models", type=_names, default=["resnet20"], help="comma-separated checkpoint paths or shipped model names")
    p.add_argument("--methods", type=_names, default=list(SWEEP_METHODS), help=f"any of {','.join(SWEEP_METHODS)}")
    p.add_argument("--times", type=_typed(parse_times), default=parse_times("1s,1h,1d,30d,1y"))
    p.add_argument("--chips", type=_int(1), default=5)
    p.add_argument("--batch-size", type=_int(1), default=500, help="evaluation batch size (default 500)")
    p.add_argument("--out", required=True, help="output folder (rows.csv, summary.*, sweep.png)")
    p.add_argument("--noise", choices=list_noise_settings(), default=None, metavar="SETTING",
                   help="a named noise setting instead of the PCM preset's (aihwkit-nabn reproduce noise lists them)")
    _ray_option(p)
    deployment(p)

    p = sub.add_parser("reproduce", help="the full comparison of remedies (nabn, bnft, hwa, ...) from a config file",
                       description="Evaluate digital, analog, gdc, nabn, bnft, hwa, hwa+nabn and hwa+bnft over drift time on "
                                   "independent simulated chips, plus calibration retention and calibration-set size, "
                                   "with costs and plots. Every part is journaled and resumes where it stopped.")
    p.add_argument("task", choices=list_tasks() + ["noise"],
                   help="which comparison (its config ships with the task); 'noise': the noise-model table "
                        "(aihwkit_nabn/tasks/cifar10/noise.toml: every [noise] setting x the main methods)")
    p.add_argument("--config", default=None, help="another TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set sweep.chips=1 --set 'sweep.times=[\"1s\",\"1y\"]'")
    p.add_argument("--parts", type=_names, default=list(PARTS), help=f"which parts to run (default: {','.join(PARTS)})")
    p.add_argument("--models", type=_names, default=None, help="only these models of the config (default: all)")
    p.add_argument("--noise", choices=list_noise_settings(), default=None, metavar="SETTING",
                   help="run the comparison under this noise setting (sets hardware.noise)")
    _ray_option(p)
    p.add_argument("--out", default=None, help="output folder (default results/<task>)")
    _common(p, task=False)

    p = sub.add_parser("demo", help="offline demo on the shipped ResNet-20 and CIFAR-10 sample (CPU, minutes)",
                       description="Load the shipped ResNet-20 checkpoint and CIFAR-10 sample (1,000 test and 512 "
                                   "training images), run a reduced drift sweep on class-balanced subsets of it, print "
                                   "the table and write the plot.")
    p.add_argument("--out", default="aihwkit-nabn-demo", help="output folder (default ./aihwkit-nabn-demo)")
    p.add_argument("--times", type=_typed(parse_times), default=parse_times("1s,1d,1y"))
    p.add_argument("--chips", type=_int(1), default=2)
    p.add_argument("--test-samples", type=_int(1), default=500, help="test images of the sample to use (max 1000)")
    p.add_argument("--calib-samples", type=_int(2), default=256, help="training images for calibration (max 512)")
    p.add_argument("--device", type=_typed(_device), default=None)
    p.add_argument("--quiet", action="store_true")
    return parser


# --------------------------------------------------------------------------- commands
# Each ``prepare_*`` checks everything it can without reading data and returns the work to do.

Work = Callable[[], int]


def _options(args: argparse.Namespace, options: Sequence[Option]) -> Dict[str, Any]:
    values = {o.name: getattr(args, o.name) for o in options if getattr(args, o.name) is not None}
    if args.max_seconds is not None:
        values["max_seconds"] = args.max_seconds
    if args.stop_after_epochs is not None:
        values["stop_after_epochs"] = args.stop_after_epochs
    return values


def prepare_train(args: argparse.Namespace, task: Task, argv: Sequence[str]) -> Work:
    """Check ``train``'s arguments; return the work."""
    if not task.has_model(args.arch):
        raise ConfigError(f"--arch {args.arch!r} is not a model of task {task.name}; choose from {task.model_names()}")
    options = _options(args, task.train_options)

    def work() -> int:
        result = task.train(arch=args.arch, epochs=args.epochs, out=args.out, seed=args.seed, device=args.device,
                            progress=not args.quiet, command=_command_line(argv), **options)
        print(json.dumps(result, indent=1))
        return 0

    return work


def _check_model_spec(task: Task, spec: str, flag: str) -> None:
    if not Path(spec).is_file() and not task.has_model(spec):
        raise ConfigError(f"{flag} {spec!r} is neither a checkpoint file nor a model of task {task.name} "
                          f"({', '.join(task.model_names())})")


def prepare_hwa(args: argparse.Namespace, task: Task, argv: Sequence[str]) -> Work:
    """Check ``hwa``'s arguments; return the work."""
    _check_model_spec(task, args.model, "--model")
    options = _options(args, task.hwa_options)

    def work() -> int:
        result = task.train_hwa(model=args.model, epochs=args.epochs, out=args.out, seed=args.seed, device=args.device,
                                progress=not args.quiet, command=_command_line(argv), **options)
        print(json.dumps(result, indent=1))
        return 0

    return work


def _check_digital_layers(model: torch.nn.Module, names: Sequence[str]) -> None:
    known = dict(model.named_modules())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--digital-layers {unknown} are not layers of the model")


def prepare_calibrate(args: argparse.Namespace, task: Task, argv: Sequence[str]) -> Work:
    """Check ``calibrate``'s arguments (and load the model); return the work."""
    _check_model_spec(task, args.model, "--model")
    task.check_sizes(test=args.test_samples, train=args.calib_samples)
    name, model, _ = task.load_model(args.model)
    _check_digital_layers(model, args.digital_layers)

    def work() -> int:
        device = resolve_device(args.device)
        metric = task.test_metric(args.test_samples, seed=args.seed, batch_size=500, device=device)
        calib = task.calibration_data(args.calib_samples, seed=args.seed, batch_size=256, device=device,
                                      balanced=False)
        chip = Chip(to_analog(model, digital_layers=args.digital_layers), args.chip_seed, device=device)
        chip.drift_to(args.time)
        before = metric(chip.model)
        snapshot = calibrate_bn(chip.model, calib, num_samples=args.calib_samples, progress=not args.quiet)
        after = metric(chip.model)
        report = {"model": name, "time_s": chip.t, "chip_seed": chip.seed, f"gdc_{task.metric_name}": before,
                  f"nabn_{task.metric_name}": after, "calib_samples": snapshot.info["samples"],
                  "test_samples": metric.samples}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            torch.save({"bn_state": chip.save_bn_state().to_state_dict(), "report": report}, args.out)
            report["out"] = args.out
        print(json.dumps(report, indent=1))
        return 0

    return work


def prepare_sweep(args: argparse.Namespace, task: Task, argv: Sequence[str]) -> Work:
    """Check ``sweep``'s arguments (and load the models); return the work."""
    unknown = [m for m in args.methods if m not in SWEEP_METHODS]
    if unknown:
        raise ConfigError(f"--methods {unknown}: `sweep` runs {list(SWEEP_METHODS)} "
                          "(BN fine-tuning and HWA: `aihwkit-nabn reproduce`)")
    check_unique("--methods", args.methods)
    check_unique("--times", args.times)
    if not args.models:
        raise ConfigError("--models is empty")
    for spec in args.models:
        _check_model_spec(task, spec, "--models")
    task.check_sizes(test=args.test_samples, train=args.calib_samples)
    rpu_config = None
    if args.noise:
        setting = noise_setting(args.noise)
        try:
            setting.check_times(args.times)
        except DriftTimeError as err:
            raise ConfigError(f"--noise {args.noise}: {err}") from None
        rpu_config = setting.apply(PCMInferencePreset())
    models = {}
    for spec in args.models:
        name, model, _ = task.load_model(spec)
        if name in models:
            raise ConfigError(f"--models: two models are named {name!r}")
        _check_digital_layers(model, args.digital_layers)
        models[name] = model

    def work() -> int:
        out = sweep_task(
            task, models, out_dir=args.out, times=args.times, n_chips=args.chips, methods=args.methods,
            test_samples=args.test_samples, calib_samples=args.calib_samples, digital_layers=args.digital_layers,
            device=args.device, seed=args.seed, progress=not args.quiet, title=task.title,
            config={"command": _command_line(argv), **({"noise_setting": args.noise} if args.noise else {})},
            batch_size=args.batch_size, **({"rpu_config": rpu_config} if rpu_config is not None else {}),
            ray=_ray(args),
        )
        print(out["paths"]["summary.md"].read_text())
        print("wrote", ", ".join(str(p) for p in out["paths"].values()))
        return 0

    return work


def prepare_reproduce(args: argparse.Namespace, task: Task, argv: Sequence[str]) -> Work:
    """Check ``reproduce``'s arguments and config (every ``--set`` value); return the work."""
    noise_table = args.task == "noise"
    config_path = Path(args.config) if args.config else (
        task.default_config.with_name("noise.toml") if noise_table else task.default_config)
    overrides = parse_overrides(args.set)
    if args.noise:
        overrides["hardware.noise"] = args.noise
    config = load_config(config_path, overrides, base=Path.cwd())
    if noise_table:
        named = config.get("noise", {}).get("task", task.name)
        if named != task.name:  # a noise table of another task (e.g. tasks/camvid/noise.toml)
            if named not in list_tasks():
                raise ConfigError(f"{config_path}: noise.task {named!r} is not a task ({', '.join(list_tasks())})")
            task = get_task(named, getattr(args, "data", None))
            task.check_source()
        check_noise_table(config, base=Path.cwd())  # every setting (its times too), before anything runs

        def noise_work() -> int:
            out = Path(args.out or "results/noise_models")
            run = run_noise_table(task, config, out, device=args.device, progress=not args.quiet,
                                  command=_command_line(argv), ray=_ray(args))
            print((out / "table.md").read_text())
            print(f"wall time {run['wall_seconds']:.0f} s; wrote {out}")
            return 0

        return noise_work
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"--parts {unknown}; choose from {list(PARTS)}")
    if args.models is not None:
        missing = [m for m in args.models if m not in config["models"]]
        if missing:
            raise ConfigError(f"--models {missing} are not in the config; it has {list(config['models'])}")
    def work() -> int:
        out = Path(args.out or f"results/{task.name}")
        run = run_comparison(task, config, out, device=args.device, progress=not args.quiet, parts=args.parts,
                             models=args.models, command=_command_line(argv), ray=_ray(args))
        for name in (out / "main" / "summary.md", out / "costs.md"):
            if name.exists():
                print(name.read_text())
        print(f"wall time {run['wall_seconds']:.0f} s on {run['device']}; wrote {out}")
        return 0

    return work


def prepare_demo(args: argparse.Namespace, task: Task, argv: Sequence[str]) -> Work:
    """Check ``demo``'s arguments; return the work."""
    if args.test_samples > 1000 or args.calib_samples > 512:
        raise ConfigError(f"the shipped sample has 1000 test and 512 training images; got --test-samples "
                          f"{args.test_samples} and --calib-samples {args.calib_samples}")
    check_unique("--times", args.times)

    def work() -> int:
        run_demo(out_dir=args.out, times=args.times, n_chips=args.chips, device=args.device,
                 progress=not args.quiet, test_samples=args.test_samples, calib_samples=args.calib_samples)
        return 0

    return work


PREPARE = {"train": prepare_train, "hwa": prepare_hwa, "calibrate": prepare_calibrate, "sweep": prepare_sweep,
           "reproduce": prepare_reproduce, "demo": prepare_demo}


def _chosen_task(argv: Sequence[str]) -> str:
    """The task named on the command line (``--task X`` or ``reproduce X``), before the full parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default=None)
    known, rest = pre.parse_known_args(argv)
    if known.task:
        return known.task
    if "reproduce" in rest:
        after = rest[rest.index("reproduce") + 1:]
        positional = [a for a in after if not a.startswith("-")]
        if positional and positional[0] in list_tasks():
            return positional[0]
    return DEFAULT_TASK


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``aihwkit-nabn`` console script; returns the exit status.

    0 on success, 2 for an invalid argument or config (nothing was read or run), 1 for an error
    during the work, 130 when interrupted (journaled runs resume where they stopped).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    stage = "arguments"
    try:
        name = _chosen_task(argv)
        task_name = name if name in list_tasks() else DEFAULT_TASK
        args = build_parser(get_task(task_name)).parse_args(argv)
        chosen = getattr(args, "task", None)
        # `reproduce noise` is the noise-model table of the default task (its noise.toml)
        task = get_task(task_name if chosen in (None, "noise") else chosen, getattr(args, "data", None))
        task.check_source()
        if args.command in ("train", "hwa"):
            # under torchrun (WORLD_SIZE > 1): join the process group, one GPU per local rank
            args.device = init_from_env(args.device)
        work = PREPARE[args.command](args, task, argv)
        stage = "work"
        return work()
    except SystemExit as exc:  # --help, or argparse exiting by itself
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
    except KeyboardInterrupt:
        _error("interrupted (journaled sweeps and training resume when the same command is run again)")
        return 130
    except Exception as exc:  # pylint: disable=broad-except
        if debug:
            traceback.print_exc()
        kind = "" if isinstance(exc, (NABNError, UsageError, OSError, ValueError)) else f"{type(exc).__name__}: "
        hint = "" if debug or isinstance(exc, UsageError) else " (--debug shows the traceback)"
        _error(f"{kind}{exc}{hint}")
        return 2 if stage == "arguments" else 1


if __name__ == "__main__":
    sys.exit(main())
