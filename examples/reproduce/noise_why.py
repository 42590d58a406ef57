"""Why calibration recovers little under some noise settings: what the drifted chip does to each layer's signal.

BatchNorm calibration can correct, per channel, a shifted mean and a scaled spread of a layer's output; it cannot
undo noise that scrambles the outputs within a channel. This script measures both on a noise table's model and
hardware (the config's task and its first model: ResNet-32 on CIFAR-10, ``unet_small`` on CamVid, ``fcos_small`` on
Penn-Fudan) for each named noise setting at one drift time, on val images (held out of training; never test
images):

* per analog layer, *isolated* (the digital model's own input fed to the chip's layer): for every output channel the
  correlation rho between the chip's and the digital output over images and positions; ``1 - rho^2`` is the share of
  the digital signal no per-channel affine correction (what BN statistics are) can restore, reported as the signal-
  to-noise ratio after the best such correction, ``10 log10(rho^2 / (1 - rho^2))`` dB; and the statistics that
  calibration does correct: the channel mean's shift (in digital standard deviations) and the spread's ratio;
* per BatchNorm layer, *in the network* (every layer analog): the same correlation of the BN input after drift
  compensation alone (``gdc``) and after calibration (``nabn``, on the table's calibration images); and the same
  for the output of the last analog layer (the logits; per-pixel class scores for segmentation), which no BN
  statistic reaches, with its mean shift.

Usage (CPU is enough; minutes per setting):
    python examples/reproduce/noise_why.py --settings pcm,state_independent --time 1y --chips 5 [--model hwa] \
        --images 500 --out results/noise_models/why
    python examples/reproduce/noise_why.py --config aihwkit_nabn/tasks/camvid/noise.toml --images 16 --device cuda ...
(CamVid's input-range calibration takes its 128 images in one batch, as in the table: more than 23 GB of host
memory on the CPU, so a GPU.)
Writes ``why.json`` (per setting, layer and chip), ``why.md`` (per setting: the medians over layers, the last
BN layer and the logits, mean over chips) and ``why.png`` (isolated SNR per layer, one line per setting).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

import aihwkit_nabn as nb
from aihwkit_nabn._aihwkit.tiles import analog_layers
from aihwkit_nabn.bn.layers import is_batchnorm
from aihwkit_nabn.errors import ConfigError
from aihwkit_nabn.evaluation.comparison import Comparison, load_config
from aihwkit_nabn.evaluation.figures import save_figure
from aihwkit_nabn.evaluation.noise_table import setting_config
from aihwkit_nabn.utils.provenance import code_commit
from aihwkit_nabn.utils.rng import seeded


def channel_stats(digital: torch.Tensor, analog: torch.Tensor) -> dict:
    """Per output channel (dim 1) of two outputs of the same inputs: correlation, mean shift in digital standard
    deviations, spread ratio; returned as the medians over channels (channels with no digital signal skipped)."""
    d = digital.transpose(0, 1).reshape(digital.shape[1], -1).double()
    a = analog.transpose(0, 1).reshape(analog.shape[1], -1).double()
    d_mean, a_mean = d.mean(1, keepdim=True), a.mean(1, keepdim=True)
    d_std, a_std = d.std(1), a.std(1)
    live = (d_std > 1e-8) & (a_std > 1e-8)
    rho = ((d - d_mean) * (a - a_mean)).mean(1) / (d.std(1, unbiased=False) * a.std(1, unbiased=False)).clamp_min(1e-30)
    rho2 = rho[live].clamp(-1, 1) ** 2
    snr_db = 10 * torch.log10(rho2.clamp_min(1e-12) / (1 - rho2).clamp_min(1e-12))
    shift = ((a_mean.squeeze(1) - d_mean.squeeze(1)) / d_std.clamp_min(1e-12))[live].abs()
    ratio = (a_std / d_std.clamp_min(1e-12))[live]
    return {"rho2": rho2.median().item(), "snr_db": snr_db.median().item(), "mean_shift_sd": shift.median().item(),
            "std_ratio": ratio.median().item(), "channels": int(live.sum())}


def capture(model: nn.Module, x: torch.Tensor, names) -> dict:
    """Run ``model`` on ``x`` once; return ``(input, output)`` of each module named in ``names`` (one pass, so that
    a reference with output noise gives each layer's output of that very input)."""
    out, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def hook(module, args, result, name=name):
            out[name] = (args[0].detach(), result.detach())
        hooks.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def isolated(digital: nn.Module, chip_model: nn.Module, x: torch.Tensor) -> dict:
    """Each analog layer of the chip run on the digital model's own input to that layer, against the digital layer."""
    names = [n for n, _ in analog_layers(chip_model)]
    seen = capture(digital, x, names)
    modules = dict(chip_model.named_modules())
    with torch.no_grad():
        return {n: channel_stats(seen[n][1], modules[n](seen[n][0])) for n in names}


def in_network(digital: nn.Module, chip_model: nn.Module, x: torch.Tensor) -> dict:
    """The input of every BatchNorm layer, and the output of the last analog layer (key ``"output"``: the logits,
    which no BN statistic reaches), with the whole network analog, against the digital model's."""
    last = analog_layers(chip_model)[-1][0]
    names = [n for n, m in chip_model.named_modules() if is_batchnorm(m)]
    d, a = capture(digital, x, names + [last]), capture(chip_model, x, names + [last])
    stats = {n: channel_stats(d[n][0], a[n][0]) for n in names}
    stats["output"] = channel_stats(d[last][1], a[last][1])
    return stats


def resumed(path: Path, fresh: dict, chips: int) -> dict:
    """``fresh`` with the settings an earlier run wrote to ``path`` (why.json) with the same task, model, time and
    images and ``chips`` chips each (a long run cut by its time limit goes on where it stopped); ``fresh`` alone
    when there is none. Raises ValueError when ``path`` holds another measurement (it would be overwritten)."""
    if not path.is_file():
        return fresh
    old = json.loads(path.read_text())
    keys = ("task", "arch", "model", "time_s", "images", "input_range_batch")  # the last only where it was set
    if any(old.get(k) != fresh.get(k) for k in keys):
        raise ValueError(f"{path} holds another measurement ({', '.join(f'{k}={old.get(k)!r}' for k in keys)}): "
                         "give another --out")
    done = {n: e for n, e in old.get("settings", {}).items() if len(e.get("chips", ())) == chips}
    return {**fresh, "settings": done}


def replayable(args: argparse.Namespace) -> str:
    """The command line of ``args`` as it can be run again: every option with a value, flags only when set."""
    words = ["python examples/reproduce/noise_why.py"]
    for key, value in vars(args).items():
        option = f"--{key.replace('_', '-')}"
        if value is True:
            words.append(option)
        elif value not in (False, "", None):
            words.append(f"{option} {value}")
    return " ".join(words)


def over_chips(chips, part: str, layer: str, key: str) -> float:
    """The mean over chips of one statistic (``key``) of one layer in one part (isolated, gdc or nabn)."""
    return statistics.fmean(c[part][layer][key] for c in chips)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="aihwkit_nabn/tasks/cifar10/noise.toml")
    p.add_argument("--arch", default="", help="the config's model to deploy (default: its first)")
    p.add_argument("--settings", default="pcm,state_independent")
    p.add_argument("--time", default="1y")
    p.add_argument("--chips", type=int, default=5)
    p.add_argument("--images", type=int, default=500, help="val images (held out of training)")
    p.add_argument("--model", choices=("digital", "hwa"), default="digital",
                   help="the model deployed: the digital one (reference: itself) or the HWA one (reference: the same "
                        "analog model before programming, clean weights through the same periphery)")
    p.add_argument("--data", default="", help="the dataset's archive or folder (default: the config's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/noise_models/why")
    p.add_argument("--ir-batch", type=int, default=0,
                   help="input-range calibration images per batch (default: the table's, one batch of up to 256); "
                        "another deployment of the same images, for a machine the table's batch does not fit")
    p.add_argument("--render", action="store_true", help="only write why.md and why.png from --out's why.json")
    args = p.parse_args()
    if args.ir_batch < 0:
        p.error(f"--ir-batch must be 1 or more (0: the table's batch), got {args.ir_batch}")
    out = Path(args.out)
    if args.render:
        write_summary(json.loads((out / "why.json").read_text()), out)
        return
    out.mkdir(parents=True, exist_ok=True)
    overrides = {**({"data.source": args.data} if args.data else {}),
                 **({"hardware.input_range_batch": args.ir_batch} if args.ir_batch else {})}
    try:
        config = load_config(args.config, overrides or None)
    except ConfigError as err:  # a missing config or a bad value: one line, as for the package's commands
        raise SystemExit(f"noise_why: {err}") from None
    t = nb.parse_time(args.time)
    task = nb.get_task(config.get("noise", {}).get("task", "cifar10"))
    arch = args.arch or next(iter(config["models"]))
    result = {"command": replayable(args), "commit": code_commit(), "time_s": t,
        "model": args.model, "task": task.name, "arch": arch, "settings": {},
        "images": (f"{args.images} val images (the first of the 5,000 held out of training, in order)"
                   if task.name == "cifar10" else f"the first {args.images} val images, in order")}
    if args.ir_batch:
        result["input_range_batch"] = args.ir_batch
    try:
        result = resumed(out / "why.json", result, args.chips)
    except ValueError as err:
        raise SystemExit(f"noise_why: {err}") from None
    start = time.perf_counter()
    for name in [s for s in args.settings.split(",") if s]:
        if name in result["settings"]:
            print(f"{name}: read back from {out / 'why.json'}", flush=True)
            continue
        sub = setting_config(config, name)
        cmp = Comparison(task, sub, base=Path.cwd(), device=args.device, progress=False)
        x = cmp.task.model_inputs("val", args.images, cmp.device)  # never the test split
        seed = int(sub.get("seed", 0))
        # every random draw (input-range calibration, output noise, calibration order) from a stream of its own:
        # the same numbers whatever ran before in the process
        with seeded(seed, "noise_why", name, device=cmp.device):
            spec = cmp.model(arch, needs_hwa=args.model == "hwa")
        source = "hwa" if args.model == "hwa" else "default"
        reference = spec.analog["hwa"].eval() if args.model == "hwa" else spec.digital
        chips = []
        for k in range(args.chips):
            with seeded(seed + k, "noise_why", name, t, device=cmp.device):
                chip = nb.Chip(spec.analog[source], seed + k, device=cmp.device).drift_to(t)
                entry = {"isolated": isolated(reference, chip.model, x),
                         "gdc": in_network(reference, chip.model, x)}
                nb.calibrate_bn(chip.model, cmp.bn_calib, num_samples=cmp.calib_samples,
                                **cmp.method_data.calibrate_kwargs)
                entry["nabn"] = in_network(reference, chip.model, x)
            chips.append(entry)
            print(f"{name} chip {k}: {time.perf_counter() - start:.0f} s", flush=True)
        # the device per setting: a why resumed elsewhere (the GPU's calls end) may finish on another one
        # the commit of the code this process imported at its start (read again now, it would name any commit
        # made while the setting ran)
        result["settings"][name] = {"description": nb.noise_setting(name).description, "commit": result["commit"],
                                    "device": str(cmp.device), "chips": chips}
        result["seconds"] = round(time.perf_counter() - start, 1)
        # after every setting: a run cut by its time limit keeps the settings it finished
        (out / "why.json").write_text(json.dumps(result, indent=1) + "\n")
    write_summary(result, out)


def write_summary(result: dict, out: Path) -> None:
    """why.md: per setting, medians over layers (mean over chips); why.png: isolated SNR per layer."""
    lines = [f"Time {nb.time_label(result['time_s'])}, {result['images']}; commit {result['commit']}. Medians over "
             "channels, then over layers (\"all\") or the last BN layer, mean over chips.", "",
             "| setting | isolated SNR after per-channel affine fit, dB (all layers) | isolated mean shift, SD | "
             "isolated spread ratio | in-network rho^2 at the last BN: gdc | nabn | at the logits: gdc | nabn | "
             "logits' mean shift after nabn, SD |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for name, entry in result["settings"].items():
        chips = entry["chips"]
        layers = list(chips[0]["isolated"])
        per_layer = {k: [over_chips(chips, "isolated", n, k) for n in layers]
                     for k in ("snr_db", "mean_shift_sd", "std_ratio")}
        median = {k: statistics.median(v) for k, v in per_layer.items()}
        last_bn = [n for n in chips[0]["gdc"] if n != "output"][-1]
        lines.append(f"| {name} | {median['snr_db']:.1f} | {median['mean_shift_sd']:.2f} | {median['std_ratio']:.2f} | "
                     f"{over_chips(chips, 'gdc', last_bn, 'rho2'):.3f} | "
                     f"{over_chips(chips, 'nabn', last_bn, 'rho2'):.3f} | "
                     f"{over_chips(chips, 'gdc', 'output', 'rho2'):.3f} | "
                     f"{over_chips(chips, 'nabn', 'output', 'rho2'):.3f} | "
                     f"{over_chips(chips, 'nabn', 'output', 'mean_shift_sd'):.2f} |")
        ax.plot(range(len(layers)), per_layer["snr_db"], marker="o", markersize=3, label=name)
    ax.set_xlabel("analog layer (input to output)")
    ax.set_ylabel("SNR after per-channel affine fit (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    # files written before the task and arch were recorded are ResNet-32's
    save_figure(fig, out / "why.png",
                f"{result.get('arch', 'ResNet-32')}, {nb.time_label(result['time_s'])} after programming, each layer alone")
    (out / "why.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
