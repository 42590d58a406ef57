"""``aihwkit-nabn reproduce cifar10``: the comparison of remedies against PCM drift, from a config file.

One command evaluates, for every model of the config, on the same inference hardware configuration
(:class:`~aihwkit_nabn.hwa_preset.TorchHWAPreset` in eval mode by default) and on the same simulated
chips (same seeds), the methods ``digital``, ``analog``, ``gdc``, ``nabn``, ``bnft``, ``hwa``,
``hwa+nabn`` and ``hwa+bnft`` over drift time, and answers two more questions: how long one
calibration holds (``retention``) and how many calibration images are enough (``calib_size``).
Every part is a journaled sweep under ``out/<part>/`` and resumes where it stopped; the cost table,
the plots and ``run.json`` are rewritten from the journals at the end.

The default config is ``aihwkit_nabn/configs/cifar10.toml``; see the comments there.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .batches import TensorBatches
from .checkpoints import load_checkpoint, load_pretrained
from .data.cifar10 import balanced_order, load_cifar10, normalize, stratified_subset
from .deploy import to_analog
from .methods import AnalogUncompensated, BNFineTune, Digital, GlobalDriftCompensated, Method, NoiseAwareBN
from .metrics import Top1Accuracy
from .models import list_models
from .report import summarize, write_report
from .rng import seeded
from .sweep import SweepModel, run_sweep, time_label
from .training import augment_like_training

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIGS = {"cifar10": Path(__file__).resolve().parent / "configs" / "cifar10.toml"}
MAIN_METHODS = ("digital", "analog", "gdc", "nabn", "bnft", "hwa", "hwa+nabn", "hwa+bnft")
_HWA_METHODS = {"hwa", "hwa+nabn", "hwa+bnft"}

PathLike = Union[str, Path]


def load_config(path: PathLike, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Return the TOML config at ``path`` with dotted-key ``overrides`` applied (``{"sweep.chips": 1}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reproduce config {str(path)!r} does not exist")
    config = tomllib.loads(path.read_text())
    for key, value in (overrides or {}).items():
        target = config
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    for section in ("data", "sweep", "models"):
        if section not in config:
            raise ValueError(f"reproduce config {str(path)!r} has no [{section}] section")
    unknown = [m for m in config["sweep"].get("methods", MAIN_METHODS) if m not in MAIN_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown} in [sweep]; choose from {list(MAIN_METHODS)}")
    return config


def _times(values: Sequence[Any]) -> List[float]:
    from .cli import parse_time  # pylint: disable=import-outside-toplevel

    return [parse_time(str(v)) for v in values]


def _resolve(path: str, base: Path) -> Path:
    """Return ``path`` relative to the repository (the config's folder's parents) or as given."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for parent in [base, *base.parents]:
        if (parent / path).exists():
            return parent / path
    return candidate


def _load_digital(spec: str, base: Path) -> "tuple[nn.Module, Dict[str, Any]]":
    if spec in list_models():
        return load_pretrained(spec)
    return load_checkpoint(_resolve(spec, base))


def _inference_config(name: str) -> Any:
    if name == "hwa":
        from .hwa_preset import hwa_inference_config  # pylint: disable=import-outside-toplevel

        return hwa_inference_config()
    if name == "pcm":
        from .presets import PCMInferencePreset  # pylint: disable=import-outside-toplevel

        return PCMInferencePreset()
    raise ValueError(f"unknown [hardware] preset {name!r}; use 'hwa' or 'pcm'")


def _calibrate_input_ranges(analog: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
                            seed: int = 0) -> None:
    """Give a model that was not trained with input ranges aihwkit's data-calibrated ones (in place).

    The calibration forward passes draw aihwkit's noise, so they run in a stream seeded by ``seed``: a
    resumed comparison (a new process) must deploy exactly the model the interrupted one deployed.
    """
    from aihwkit.inference.calibration import (  # pylint: disable=import-outside-toplevel
        InputRangeCalibrationType,
        calibrate_input_ranges,
    )

    batches = TensorBatches(images, batch_size=batch_size, transform=normalize, device=device)
    with seeded(seed, "input_ranges", device=device):
        calibrate_input_ranges(analog, InputRangeCalibrationType.CACHE_QUANTILE, (((x,), {}) for x in batches))


class Comparison:
    """Everything the parts of the comparison share: data, models on the device, method factories."""

    def __init__(self, config: Mapping[str, Any], *, base: Path, device: Optional[str] = None, progress: bool = True):
        self.config = config
        self.base = base
        self.progress = progress
        dev = device or config.get("device", "auto")
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else ("cpu" if dev == "auto" else dev))
        data = config["data"]
        self.seed = int(config.get("seed", 0))
        source = data.get("source") or None
        test_x, test_y = load_cifar10("test", source)
        if data.get("test_samples"):
            idx = stratified_subset(test_y, int(data["test_samples"]), seed=self.seed)
            test_x, test_y = test_x[idx], test_y[idx]
        train_x, train_y = load_cifar10("train", source)
        # Calibration and fine-tuning data come only from the training split, as fixed stratified subsets.
        n_calib = max([int(data["calib_samples"])] + [int(n) for n in config.get("calib_size", {}).get("sizes", [])])
        calib_idx = stratified_subset(train_y, n_calib, seed=self.seed)
        labeled_idx = stratified_subset(train_y, int(data["labeled_samples"]), seed=self.seed + 1)
        # stratified_subset returns sorted indices, i.e. grouped by class: reorder them so that every prefix
        # (calibration takes the first num_samples) and every fine-tuning batch holds all classes.
        calib_idx = calib_idx[balanced_order(train_y[calib_idx], seed=self.seed)]
        labeled_idx = labeled_idx[balanced_order(train_y[labeled_idx], seed=self.seed + 1)]
        batch = int(data.get("batch_size", 500))
        self.n_test = len(test_y)
        self.calib_samples = int(data["calib_samples"])
        # ... seen the way the BN statistics were learned: one fixed training-style view of each image.
        calib_x = augment_like_training(train_x[calib_idx], seed=self.seed)
        self.calib = TensorBatches(calib_x, batch_size=min(batch, 256), transform=normalize, device=self.device)
        bnft = config.get("bnft", {})
        self.labeled = TensorBatches(augment_like_training(train_x[labeled_idx], seed=self.seed + 1), train_y[labeled_idx],
                                     batch_size=int(bnft.get("batch_size", 128)), transform=normalize, device=self.device)
        self.metric = Top1Accuracy(TensorBatches(test_x, test_y, batch_size=batch, transform=normalize, device=self.device))
        self.calib_labels = train_y[calib_idx]  # kept to check the order; calibration itself is unlabeled
        self.ir_images = calib_x[: int(config.get("hardware", {}).get("input_range_samples", 1024))]
        self.models: Dict[str, SweepModel] = {}
        self.hwa_meta: Dict[str, Dict[str, Any]] = {}
        self.trained_params: Dict[str, int] = {}

    def model(self, name: str, needs_hwa: bool) -> SweepModel:
        """Return (and cache) the digital model and its analog variants ``default`` and ``hwa``."""
        if name in self.models and (not needs_hwa or "hwa" in self.models[name].analog):
            return self.models[name]
        spec = self.config["models"][name]
        hardware = self.config.get("hardware", {})
        digital, _meta = _load_digital(spec["digital"], self.base)
        self.trained_params[name] = sum(p.numel() for p in digital.parameters())
        rpu = _inference_config(hardware.get("preset", "hwa"))
        analog = to_analog(digital, rpu).to(self.device)
        if rpu.pre_post.input_range.enable if hasattr(rpu, "pre_post") else False:
            _calibrate_input_ranges(analog, self.ir_images, 256, self.device, seed=self.seed)
        variants = {"default": analog}
        if needs_hwa:
            from .hwa_training import load_hwa_model  # pylint: disable=import-outside-toplevel

            hwa_model, meta = load_hwa_model(_resolve(spec["hwa"], self.base), _inference_config(hardware.get("preset", "hwa")))
            variants["hwa"] = hwa_model.to(self.device).eval()
            self.hwa_meta[name] = meta
        self.models[name] = SweepModel(digital.to(self.device).eval(), variants)
        return self.models[name]

    def method(self, name: str) -> Method:
        """Return a fresh method object for a name of :data:`MAIN_METHODS`."""
        bnft = self.config.get("bnft", {})
        source = "hwa" if name in _HWA_METHODS else "default"
        base = name.split("+")[-1] if "+" in name else name
        if base == "digital":
            return Digital()
        if base == "analog":
            return AnalogUncompensated()
        if base in ("gdc", "hwa"):
            return GlobalDriftCompensated().named(name, source)
        if base == "nabn":
            return NoiseAwareBN(self.calib, num_samples=self.calib_samples).named(name, source)
        return BNFineTune(self.calib, self.labeled, num_samples=self.calib_samples,
                          labeled_samples=int(self.config["data"]["labeled_samples"]), steps=int(bnft.get("steps", 200)),
                          lr=float(bnft.get("lr", 1e-3))).named(name, source)

    def sweep(self, part: str, model_names: Sequence[str], methods: Sequence[Method], times: Sequence[float],
              chips: int, out_dir: Path) -> List[Dict[str, Any]]:
        """Run (or resume) one journaled sweep and write its report files; return its rows."""
        needs_hwa = any(m.source == "hwa" for m in methods)
        models = {n: self.model(n, needs_hwa) for n in model_names}
        hardware = self.config.get("hardware", {})
        settings = {"part": part, "test_samples": self.n_test, "calib_samples": self.calib_samples, "calib_split": "train",
                    "calib_order": "class-balanced prefixes (balanced_order)",
                    "calib_view": "training augmentation (pad-4 random crop + flip + cutout 16), seeded",
                    "labeled_samples": int(self.config["data"]["labeled_samples"]),
                    "hardware_preset": hardware.get("preset", "hwa"),
                    "input_ranges_for_non_hwa_models": "aihwkit calibrate_input_ranges (CACHE_QUANTILE) on training images"}
        rows = run_sweep(models, methods, self.metric, out_dir=out_dir, times=times, n_chips=chips, seed=self.seed,
                         device=self.device, progress=self.progress, config=settings)
        write_report(rows, out_dir, title=f"{self.config.get('title', 'CIFAR-10')} — {part}")
        return rows


def run_comparison(config: Mapping[str, Any], out_dir: PathLike, *, base: Optional[Path] = None,
                   device: Optional[str] = None, progress: bool = True, parts: Sequence[str] = ("main", "retention", "calib_size"),
                   models: Optional[Sequence[str]] = None, command: str = "") -> Dict[str, Any]:
    """Run every part of the comparison into ``out_dir``; return ``run.json``'s content.

    ``models`` restricts every part to these models of the config (default: all the config names).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmp = Comparison(config, base=base or Path.cwd(), device=device, progress=progress)
    sweep_cfg = config["sweep"]
    model_names = list(config["models"])
    if models is not None:
        unknown = [m for m in models if m not in model_names]
        if unknown:
            raise ValueError(f"models {unknown} are not in the config; it has {model_names}")
        model_names = [m for m in model_names if m in models]

    def only(names: Sequence[str]) -> List[str]:
        return [n for n in names if n in model_names]
    timings: Dict[str, float] = {}
    rows: Dict[str, List[Dict[str, Any]]] = {}
    if "main" in parts:
        t0 = time.perf_counter()
        methods = [cmp.method(m) for m in sweep_cfg.get("methods", MAIN_METHODS)]
        rows["main"] = cmp.sweep("main", model_names, methods, _times(sweep_cfg["times"]), int(sweep_cfg["chips"]),
                                 out_dir / "main")
        timings["main"] = time.perf_counter() - t0
    retention = config.get("retention")
    if retention and "retention" in parts and only(retention.get("models", model_names)):
        t0 = time.perf_counter()
        methods = [cmp.method("gdc"), cmp.method("nabn")]
        for t_c in _times(retention["calibrate_at"]):
            methods.append(NoiseAwareBN(cmp.calib, num_samples=cmp.calib_samples, calibrate_at=t_c)
                           .named(f"nabn@{time_label(t_c)}"))
        rows["retention"] = cmp.sweep("retention", only(retention.get("models", model_names)), methods,
                                      _times(retention.get("times", sweep_cfg["times"])),
                                      int(retention.get("chips", sweep_cfg["chips"])), out_dir / "retention")
        timings["retention"] = time.perf_counter() - t0
    sizes = config.get("calib_size")
    if sizes and "calib_size" in parts and only(sizes.get("models", model_names)):
        t0 = time.perf_counter()
        methods = [cmp.method("gdc")] + [NoiseAwareBN(cmp.calib, num_samples=int(n)).named(f"nabn[{int(n)}]")
                                         for n in sizes["sizes"]]
        rows["calib_size"] = cmp.sweep("calib_size", only(sizes.get("models", model_names)), methods,
                                       _times([sizes.get("time", "1y")]), int(sizes.get("chips", sweep_cfg["chips"])),
                                       out_dir / "calib_size")
        timings["calib_size"] = time.perf_counter() - t0
    costs = method_costs(rows.get("main", []), cmp.hwa_meta, cmp.trained_params)
    write_costs(costs, out_dir)
    if rows.get("main"):
        plot_accuracy_vs_cost(rows["main"], costs, out_dir / "accuracy_vs_cost.png", _times(sweep_cfg["times"])[-1])
    run = {
        "command": command, "wall_seconds": round(time.perf_counter() - start, 1), "part_seconds": timings,
        "device": torch.cuda.get_device_name(cmp.device) if cmp.device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "config": config,
        "hwa_training": {n: {k: m.get(k) for k in ("seconds", "epochs", "accuracy", "device", "command")}
                         for n, m in cmp.hwa_meta.items()},
    }
    (out_dir / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    return run


def method_costs(rows: Sequence[Mapping[str, Any]], hwa_meta: Mapping[str, Mapping[str, Any]],
                 model_params: Mapping[str, int]) -> List[Dict[str, Any]]:
    """Return one cost entry per (model, method): GPU seconds per deployment, samples, trained parameters,
    peak memory, and HWA training once per model (its seconds and all its parameters)."""
    entries = []
    for s in summarize(rows):
        if s["time_s"] != max(r["time_s"] for r in rows if r["model"] == s["model"]):
            continue
        hwa = s["method"] in _HWA_METHODS
        meta = hwa_meta.get(s["model"], {})
        entries.append({
            "model": s["model"], "method": s["method"], "top1_last_time": s["mean"], "top1_std": s["std"],
            "time_label": s["time_label"], "deploy_seconds": s["method_seconds"], "eval_seconds": s["eval_seconds"],
            "unlabeled_samples": s["unlabeled_samples"], "labeled_samples": s["labeled_samples"],
            "trained_params_per_chip": s["trained_params"], "peak_mem_mib": s["peak_mem_mib"],
            "hwa_training_seconds_once": meta.get("seconds") if hwa else None,
            "hwa_training_labeled_samples_once": meta.get("n_train", 50000) if hwa else None,
            "hwa_trained_params_once": model_params.get(s["model"]) if hwa else None,
        })
    return entries


def write_costs(costs: Sequence[Mapping[str, Any]], out_dir: Path) -> None:
    """Write ``costs.json`` and ``costs.md``."""
    (out_dir / "costs.json").write_text(json.dumps(list(costs), indent=1) + "\n")
    lines = ["| model | method | top-1 at last time | device s per deployment | unlabeled | labeled | params trained per chip "
             "| HWA training (once per model) | peak MiB |", "|" + " --- |" * 9]

    def fmt(v: Any, spec: str = "") -> str:
        return "" if v is None else format(v, spec)

    for c in costs:
        hwa = (f"{c['hwa_training_seconds_once']:.0f} s, {c['hwa_trained_params_once']:,} params, "
               f"{c['hwa_training_labeled_samples_once']:,} labeled" if c["hwa_training_seconds_once"] is not None else "")
        lines.append(f"| {c['model']} | {c['method']} | {c['top1_last_time']:.2f} ± {c['top1_std']:.2f} | "
                     f"{c['deploy_seconds']:.2f} | {c['unlabeled_samples']} | {c['labeled_samples']} | "
                     f"{c['trained_params_per_chip']} | {hwa} | {fmt(c['peak_mem_mib'], '.0f')} |")
    (out_dir / "costs.md").write_text("\n".join(lines) + "\n")


def plot_accuracy_vs_cost(rows: Sequence[Mapping[str, Any]], costs: Sequence[Mapping[str, Any]], path: Path,
                          t_last: float) -> Path:
    """Plot top-1 at the last drift time against device seconds per deployment (+ HWA training), per model."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    models = list(dict.fromkeys(c["model"] for c in costs))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        for c in (c for c in costs if c["model"] == model):
            cost = c["deploy_seconds"] + (c["hwa_training_seconds_once"] or 0.0)
            ax.errorbar([max(cost, 1e-3)], [c["top1_last_time"]], yerr=[c["top1_std"]], marker="o", capsize=3,
                        label=c["method"])
        ax.set_xscale("log")
        ax.set_xlabel("device seconds (deployment on one chip + HWA training)")
        ax.set_title(f"{model}, {time_label(t_last)} after programming")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("top-1 (%)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
