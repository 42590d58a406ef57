"""``aihwkit-nabn reproduce <task>``: the comparison of remedies against drift, for any task, from a config file.

One command evaluates, for every model of the config, on the same inference hardware configuration
(:class:`~aihwkit_nabn.analog.hwa_preset.TorchHWAPreset` in eval mode by default) and on the same
simulated chips (same seeds), the methods ``digital``, ``analog``, ``gdc``, ``nabn``, ``bnft``, ``hwa``,
``hwa+nabn`` and ``hwa+bnft`` over drift time, and answers two more questions: how long one calibration
holds (``retention``) and how many calibration images are enough (``calib_size``). Every part is a
journaled sweep under ``out/<part>/`` and resumes where it stopped; the cost table, the plots and
``run.json`` are rewritten from the journals at the end. The task supplies data, models and metric
(:class:`~aihwkit_nabn.evaluation.task.Task`); each task ships its default config.

:func:`load_config` reads a TOML config, applies ``--set`` overrides and checks every value against
:data:`SCHEMA` before anything else happens, so a typo or a bad value is one clear error, not a traceback
after the data are loaded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._aihwkit.input_ranges import calibrate_input_ranges
from ..analog.convert import to_analog
from ..analog.hwa_preset import hwa_inference_config
from ..analog.noise_settings import list_noise_settings, noise_setting
from ..analog.presets import PCMInferencePreset
from ..analog.times import parse_time, time_label
from ..errors import ConfigError, DriftTimeError
from ..utils.checks import check_choice, check_float, check_int, check_list, check_str, check_unique
from ..utils.devices import device_name, release_cached_memory, resolve_device
from ..utils.locks import DEPLOY_LOCK_ENV, exclusive
from ..utils.provenance import code_commit
from .costs import method_costs, plot_accuracy_vs_cost, write_costs
from .methods import (HWA_METHODS, LAUNCH_KWARGS, METHOD_NAMES, Method, MethodData, NoiseAwareBN, build_method,
                      check_method_names)
from .report import write_report
from .sweep import SweepModel, run_sweep
from .task import EVAL_SPLITS, Task

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_config", "check_config", "parse_overrides", "Comparison", "run_comparison", "finished", "PARTS", "SCHEMA"]

PathLike = Union[str, Path]
PARTS = ("main", "retention", "calib_size")
MAIN_METHODS = METHOD_NAMES


def _times(name: str, value: Any) -> List[float]:
    try:
        times = [parse_time(v if isinstance(v, str) else check_float(name, v, minimum=0.0))
                 for v in check_list(name, value)]
    except DriftTimeError as err:
        raise ConfigError(f"{name}: {err}") from None
    return check_unique(name, times)


def _time(name: str, value: Any) -> float:
    return _times(name, [value])[0]


def _int(minimum: int) -> Callable[[str, Any], int]:
    return lambda name, value: check_int(name, value, minimum)


def _positive_float(name: str, value: Any) -> float:
    return check_float(name, value, positive=True)


def _int_list(name: str, value: Any) -> List[int]:
    return check_unique(name, [check_int(f"{name}[{i}]", v, 1) for i, v in enumerate(check_list(name, value))])


def _str_list(name: str, value: Any, nonempty: bool = True) -> List[str]:
    items = check_list(name, value, nonempty=nonempty)
    return check_unique(name, [check_str(f"{name}[{i}]", v) for i, v in enumerate(items)])


def _part_models(name: str, value: Any) -> List[str]:
    """The models of the retention / calibration-size part; an empty list skips the part."""
    return _str_list(name, value, nonempty=False)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def _methods(name: str, value: Any) -> List[str]:
    try:
        return check_method_names(_str_list(name, value))
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None


#: Every key a comparison config may hold, with the check of its value (unknown keys are errors).
SCHEMA: Dict[str, Dict[str, Callable[[str, Any], Any]]] = {
    "": {"title": check_str, "seed": _int(0), "device": check_str},
    "data": {"source": check_str, "test_samples": _int(0), "calib_samples": _int(2), "labeled_samples": _int(1),
             "batch_size": _int(1), "val_samples": _int(0), "calib_view": check_str,
             "eval_split": lambda n, v: check_choice(n, v, EVAL_SPLITS)},
    "hardware": {"preset": lambda n, v: check_choice(n, v, ("hwa", "pcm")), "input_range_samples": _int(1),
                 "input_range_batch": _int(1),
                 "noise": lambda n, v: check_choice(n, v, list_noise_settings())},
    "sweep": {"times": _times, "chips": _int(1), "methods": _methods},
    "bnft": {"steps": _int(1), "lr": _positive_float, "batch_size": _int(1), "fresh_views": _bool,
             "label_smoothing": lambda n, v: check_float(n, v, minimum=0.0), "cuda_graph": _bool},
    "retention": {"models": _part_models, "calibrate_at": _times, "times": _times, "chips": _int(1)},
    "calib_size": {"models": _part_models, "sizes": _int_list, "time": _time, "chips": _int(1)},
    "noise": {"settings": lambda n, v: [check_choice(n, x, list_noise_settings()) for x in _str_list(n, v)],
              "task": check_str, "target_loss": lambda n, v: check_float(n, v, minimum=0.0),
              "target_share": lambda n, v: check_float(n, v, minimum=0.0)},
}
_MODEL_KEYS = {"digital": check_str, "hwa": check_str}
_REQUIRED = {"data": ("calib_samples", "labeled_samples"), "sweep": ("times", "chips")}


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """Return ``{dotted key: value}`` for ``--set key=value`` items (values in TOML syntax, else a bare string)."""
    overrides: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value (a dotted key and a TOML value), got {item!r}")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = value  # a bare string
    return overrides


def load_config(path: PathLike, overrides: Optional[Mapping[str, Any]] = None, *,
                base: Optional[Path] = None) -> Dict[str, Any]:
    """Return the TOML config at ``path`` with dotted-key ``overrides`` applied and every value checked.

    Raises:
        ConfigError: a missing or unreadable file, an unknown key, a bad value (see :func:`check_config`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reproduce config {str(path)!r} does not exist")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"reproduce config {str(path)!r} is not valid TOML: {err}") from None
    for key, value in (overrides or {}).items():
        target = config
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section of the config")
        target[leaf] = value
    check_config(config, where=str(path), base=base)
    return config


def check_config(config: Mapping[str, Any], *, where: str = "config", base: Optional[Path] = None) -> None:
    """Check every key and value of a comparison config; raise :class:`ConfigError` naming the first problem.

    Checks types and ranges (:data:`SCHEMA`), that model files exist (relative to ``base`` or its parents),
    that every method has what it needs (``hwa`` checkpoints for the ``hwa`` methods) and that the
    retention / calibration-size parts name models of the config.
    """
    for section in ("data", "sweep", "models"):
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"{where} has no [{section}] section")
    for key, value in config.items():
        if isinstance(value, dict) and key != "":
            if key == "models":
                continue
            if key not in SCHEMA:
                raise ConfigError(f"{where}: unknown section [{key}]; known: {sorted(k for k in SCHEMA if k)} and [models.<name>]")
            for sub, item in value.items():
                if sub not in SCHEMA[key]:
                    raise ConfigError(f"{where}: unknown key {key}.{sub}; [{key}] has {sorted(SCHEMA[key])}")
                SCHEMA[key][sub](f"{key}.{sub}", item)
        elif key not in SCHEMA[""]:
            raise ConfigError(f"{where}: unknown key {key!r}; top-level keys are {sorted(SCHEMA[''])}")
        else:
            SCHEMA[""][key](key, value)
    for section, keys in _REQUIRED.items():
        missing = [k for k in keys if k not in config[section]]
        if missing:
            raise ConfigError(f"{where}: [{section}] needs {missing}")
    models = config["models"]
    if not models:
        raise ConfigError(f"{where}: [models] is empty; add e.g. [models.resnet20] digital = \"resnet20\"")
    methods = config["sweep"].get("methods", list(MAIN_METHODS))
    needs_hwa = any(m in HWA_METHODS for m in methods)
    for name, spec in models.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: models.{name} must be a table with 'digital' (and 'hwa')")
        for sub, item in spec.items():
            if sub not in _MODEL_KEYS:
                raise ConfigError(f"{where}: unknown key models.{name}.{sub}; a model has {sorted(_MODEL_KEYS)}")
            _MODEL_KEYS[sub](f"models.{name}.{sub}", item)
        if "digital" not in spec:
            raise ConfigError(f"{where}: models.{name} needs 'digital' (a shipped model name or a checkpoint path)")
        if needs_hwa and "hwa" not in spec:
            raise ConfigError(f"{where}: models.{name} needs 'hwa' (an HWA checkpoint) for the methods "
                              f"{[m for m in methods if m in HWA_METHODS]}")
        if "hwa" in spec and needs_hwa and not resolve_path(spec["hwa"], base or Path.cwd()).is_file():
            raise ConfigError(f"{where}: models.{name}.hwa = {spec['hwa']!r} does not exist "
                              "(train it with `aihwkit-nabn hwa`)")
    for part in ("retention", "calib_size"):
        unknown = [m for m in config.get(part, {}).get("models", []) if m not in models]
        if unknown:
            raise ConfigError(f"{where}: {part}.models {unknown} are not in [models] ({list(models)})")
    noise = config.get("hardware", {}).get("noise")
    if noise:
        setting = noise_setting(noise)
        times = [parse_time(t) for t in config["sweep"]["times"]]
        for part in ("retention", "calib_size"):
            if config.get(part, {}).get("models", list(models)):
                section = config.get(part, {})
                times += [parse_time(t) for t in section.get("times", []) + section.get("calibrate_at", [])]
                if part == "calib_size" and section:
                    times.append(parse_time(section.get("time", "1y")))  # the part's default time
        try:
            setting.check_times(times)
        except DriftTimeError as err:
            raise ConfigError(f"{where}: hardware.noise: {err}") from None


def resolve_path(path: str, base: Path) -> Path:
    """Return ``path`` relative to ``base`` or one of its parents (the repository), or as given."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for parent in [base, *base.parents]:
        if (parent / path).exists():
            return parent / path
    return candidate


def _inference_config(name: str, noise: Optional[str] = None) -> Any:
    """The inference hardware of a comparison: the preset (``hwa`` or ``pcm``), with the named noise setting."""
    config = hwa_inference_config() if name == "hwa" else PCMInferencePreset()
    return noise_setting(noise).apply(config) if noise else config


class _SmoothedCrossEntropy(torch.nn.CrossEntropyLoss):
    """Cross-entropy with label smoothing whose repr names the smoothing (the sweep records it)."""

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class _OnVal:
    """A task's metric evaluated on the val split, its values named ``val_<name>`` so that rows measured on
    validation images can never pass for test numbers."""

    def __init__(self, metric: Any):
        self._metric = metric
        self.name = f"val_{metric.name}"
        names = getattr(metric, "names", None)
        self.names = tuple(f"val_{n}" for n in names) if names else None
        self.samples = getattr(metric, "samples", None)

    def __call__(self, model: torch.nn.Module) -> Any:
        result = self._metric(model)
        return {f"val_{k}": v for k, v in result.items()} if self.names else result


class Comparison:
    """Everything the parts of a comparison share: the task's data, models on the device, method data."""

    def __init__(self, task: Task, config: Mapping[str, Any], *, base: Path, device: Optional[str] = None,
                 progress: bool = True, ray: Optional[Any] = None):
        # data.calib_view: another view for the BN calibration only (checked before any data is read); the input
        # ranges of non-HWA models keep coming from the task's own view, so a view comparison changes nothing else
        self.calib_view = config["data"].get("calib_view", "")
        if self.calib_view:
            task.check_calib_view(self.calib_view, "data.calib_view")
        if task.source is None and config["data"].get("source"):
            task = type(task)(resolve_path(config["data"]["source"], base))  # the config's data, unless given
        if int(config["data"].get("val_samples", 0)):
            # Held out of the training split: the calibration and fine-tuning subsets come from the rest.
            task = task.with_val_split(int(config["data"]["val_samples"]))
        self.task = task
        self.config = config
        self.base = base
        self.progress = progress
        self.ray = ray  # run_sweep's Ray option: the sweeps' units as Ray tasks
        self.device = resolve_device(device or config.get("device", "auto"))
        data = config["data"]
        self.seed = int(config.get("seed", 0))
        batch = int(data.get("batch_size", 500))
        # data.eval_split = "val": the whole comparison on the validation split, where choices are made
        self.eval_split = data.get("eval_split", "test")
        self.metric = task.test_metric(int(data.get("test_samples", 0)), seed=self.seed, batch_size=batch,
                                       device=self.device, split=self.eval_split)
        if self.eval_split == "val":
            self.metric = _OnVal(self.metric)
        # Calibration and fine-tuning data come only from the training split, as fixed class-balanced subsets
        # seen in the training view; calibration takes prefixes of the largest set any part needs.
        self.calib_samples = int(data["calib_samples"])
        sizes = config.get("calib_size", {})
        n_calib = max([self.calib_samples] + ([int(n) for n in sizes.get("sizes", [])]
                                              if sizes.get("models", list(config["models"])) else []))
        self.calib = task.calibration_data(n_calib, seed=self.seed, batch_size=min(batch, 256), device=self.device)
        self.bn_calib = self.calib
        if self.calib_view and task.calib_views[self.calib_view] != task.calib_view:  # the task's own view: as is
            self.bn_calib = task.calibration_data(n_calib, seed=self.seed, batch_size=min(batch, 256),
                                                  device=self.device, view=self.calib_view)
        bnft = config.get("bnft", {})
        self.labeled_samples = int(data["labeled_samples"])
        fresh = bool(bnft.get("fresh_views", False))
        if fresh and not task.supports_fresh_views:
            raise ConfigError(f"bnft.fresh_views: task {task.name} has fixed labeled views only")
        self.labeled = task.labeled_data(self.labeled_samples, seed=self.seed + 1,
                                         batch_size=int(bnft.get("batch_size", 128)), device=self.device,
                                         **({"fresh_views": True} if fresh else {}))
        bnft_loss = task.bnft_loss()
        smoothing = float(bnft.get("label_smoothing", 0.0))
        if smoothing:
            if bnft_loss is not None:
                raise ConfigError(f"bnft.label_smoothing: task {task.name} fine-tunes on its own loss")
            bnft_loss = _SmoothedCrossEntropy(label_smoothing=smoothing)
        self.method_data = MethodData(
            calib=self.bn_calib, calib_samples=self.calib_samples, labeled=self.labeled,
            labeled_samples=self.labeled_samples, bnft_steps=int(bnft.get("steps", 200)),
            bnft_lr=float(bnft.get("lr", 1e-3)), bnft_loss=bnft_loss,
            calibrate_kwargs=task.calibrate_kwargs(),
            finetune_kwargs={**task.finetune_kwargs(), **({"cuda_graph": True} if bnft.get("cuda_graph") else {})},
        )
        self.n_test = getattr(self.metric, "samples", None)
        hardware = config.get("hardware", {})
        # the batching is part of the deployment (aihwkit draws its cached rows anew per batch): set only to fit
        # memory (CamVid's 128 crops in one batch pass 23 GB on the CPU)
        self.ir_batches = task.input_range_batches(
            self.calib, int(hardware.get("input_range_samples", 1024)), hardware.get("input_range_batch"))
        self.models: Dict[str, SweepModel] = {}
        self.hwa_meta: Dict[str, Dict[str, Any]] = {}
        self.trained_params: Dict[str, int] = {}
        #: per model: seconds of setting it up in this process (loading, conversion, input ranges, the HWA model),
        #: and of them the input-range calibration and the wait for the deployment lock before it
        self.setup_seconds: Dict[str, Dict[str, float]] = {}

    def model(self, name: str, needs_hwa: bool) -> SweepModel:
        """Return (and cache) the digital model and its analog variants ``default`` and ``hwa``."""
        if name in self.models and (not needs_hwa or "hwa" in self.models[name].analog):
            return self.models[name]
        start = time.perf_counter()
        digital, analog = self.analog_model(name)
        variants = {"default": analog}
        if needs_hwa:
            hwa_model, meta = self.task.load_hwa_model(resolve_path(self.config["models"][name]["hwa"], self.base),
                                                       self.inference_config())
            variants["hwa"] = hwa_model.to(self.device).eval()
            self.hwa_meta[name] = meta
        self.models[name] = SweepModel(digital.to(self.device).eval(), variants)
        self.setup_seconds.setdefault(name, {})["seconds"] = round(time.perf_counter() - start, 2)
        return self.models[name]

    def inference_config(self) -> Any:
        """Return a fresh inference RPU config of the config's ``[hardware]`` preset and noise setting."""
        hardware = self.config.get("hardware", {})
        return _inference_config(hardware.get("preset", "hwa"), hardware.get("noise"))

    def analog_model(self, name: str, lean_cache: bool = True) -> Tuple[nn.Module, nn.Module]:
        """Return the digital model ``name`` of the config and its analog version on the comparison's device,
        given aihwkit's data-calibrated input ranges when the preset uses them (``lean_cache``: see
        :func:`~aihwkit_nabn._aihwkit.input_ranges.calibrate_input_ranges`)."""
        spec = self.config["models"][name]
        digital_spec = spec["digital"] if self.task.has_model(spec["digital"]) \
            else resolve_path(spec["digital"], self.base)
        _, digital, _meta = self.task.load_model(digital_spec)
        self.trained_params[name] = sum(p.numel() for p in digital.parameters())
        rpu = self.inference_config()
        analog = to_analog(digital, rpu).to(self.device)
        if rpu.pre_post.input_range.enable:
            # the calibration caches layer inputs; processes sharing a GPU take turns (when the driver names a lock)
            # and give the memory back after, instead of all peaking at once
            asked = time.perf_counter()
            with exclusive(os.environ.get(DEPLOY_LOCK_ENV)):
                got = time.perf_counter()
                calibrate_input_ranges(analog, self.ir_batches, seed=self.seed, device=self.device,
                                       lean=lean_cache)
                release_cached_memory(self.device)
                self.setup_seconds[name] = {"input_range_seconds": round(time.perf_counter() - got, 2),
                                             "input_range_lock_wait_seconds": round(got - asked, 2)}
        return digital, analog

    def method(self, name: str) -> Method:
        """Return a fresh method object for a name of :data:`~aihwkit_nabn.evaluation.methods.METHOD_NAMES`."""
        return build_method(name, self.method_data)

    def sweep(self, part: str, model_names: Sequence[str], methods: Sequence[Method], times: Sequence[float],
              chips: int, out_dir: Path) -> List[Dict[str, Any]]:
        """Run (or resume) one journaled sweep and write its report files; return its rows."""
        needs_hwa = any(m.source == "hwa" for m in methods)
        models = {n: self.model(n, needs_hwa) for n in model_names}
        hardware = self.config.get("hardware", {})
        settings = {"part": part, "test_samples": self.n_test, "calib_samples": self.calib_samples, "calib_split": "train",
                    "calib_order": "class-balanced prefixes (balanced_order)",
                    "calib_view": self.task.calib_views[self.calib_view] if self.calib_view else self.task.calib_view,
                    "labeled_samples": self.labeled_samples,
                    "hardware_preset": hardware.get("preset", "hwa"),
                    "input_ranges_for_non_hwa_models": "aihwkit calibrate_input_ranges (CACHE_QUANTILE) on training images"}
        # recorded only when used, so that journals written before these options existed still resume
        data, bnft = self.config["data"], self.config.get("bnft", {})
        if data.get("val_samples"):
            settings["val_samples_held_out"] = int(data["val_samples"])
        if self.eval_split != "test":
            settings["eval_split"] = self.eval_split
        if bnft.get("fresh_views"):
            settings["labeled_views"] = "augmented anew on every pass (FreshViewBatches)"
        if hardware.get("input_range_batch"):
            settings["input_range_batch"] = int(hardware["input_range_batch"])
        if hardware.get("noise"):
            settings["noise_setting"] = f"{hardware['noise']}: {noise_setting(hardware['noise']).description}"
        rows = run_sweep(models, methods, self.metric, out_dir=out_dir, times=times, n_chips=chips, seed=self.seed,
                         device=self.device, progress=self.progress, config=settings, ray=self.ray)
        write_report(rows, out_dir, title=f"{self.config.get('title', self.task.title)} — {part}")
        return rows


def finished(out_dir: PathLike, config: Mapping[str, Any]) -> bool:
    """Whether ``out_dir`` holds a finished comparison of exactly ``config`` (its ``run.json``, written last).

    A sweep of many comparisons skips the finished ones on a rerun instead of re-entering each (data, models,
    input ranges: seconds each) only to find its journals complete."""
    run = Path(out_dir) / "run.json"
    if not run.is_file():
        return False
    return _computed(json.loads(run.read_text()).get("config") or {}) == _computed(
        json.loads(json.dumps(config, default=str)))


#: Config keys that choose how the work is launched, not what it computes (the ``[bnft]`` keys of the fine-tuning
#: launch options): a comparison finished with another value of them counts as finished.
_LAUNCH_KEYS = tuple(("bnft", key) for key in sorted(LAUNCH_KWARGS))


def _computed(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` without :data:`_LAUNCH_KEYS`."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    for section, key in _LAUNCH_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


def run_comparison(task: Task, config: Mapping[str, Any], out_dir: PathLike, *, base: Optional[Path] = None,
                   device: Optional[str] = None, progress: bool = True, parts: Sequence[str] = PARTS,
                   models: Optional[Sequence[str]] = None, command: str = "",
                   ray: Optional[Any] = None) -> Dict[str, Any]:
    """Run every part of the comparison into ``out_dir``; return ``run.json``'s content.

    ``config`` is a checked config (:func:`load_config`); ``models`` restricts every part to these models
    of the config (default: all the config names); ``parts`` is a subset of :data:`PARTS`; ``ray``: run the
    sweeps' work units as Ray tasks (see :func:`~.sweep.run_sweep`).
    """
    model_names = list(config["models"])
    unknown_parts = [p for p in parts if p not in PARTS]
    if unknown_parts:
        raise ConfigError(f"unknown parts {unknown_parts}; choose from {list(PARTS)}")
    if models is not None:
        unknown = [m for m in models if m not in model_names]
        if unknown:
            raise ConfigError(f"models {unknown} are not in the config; it has {model_names}")
        model_names = [m for m in model_names if m in models]
    start = time.perf_counter()
    commit = code_commit()  # before anything is written: a rerun into a committed folder must not read dirty
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmp = Comparison(task, config, base=base or Path.cwd(), device=device, progress=progress, ray=ray)
    sweep_cfg = config["sweep"]
    times = [parse_time(t) for t in sweep_cfg["times"]]

    def only(names: Sequence[str]) -> List[str]:
        return [n for n in names if n in model_names]

    timings: Dict[str, float] = {}
    rows: Dict[str, List[Dict[str, Any]]] = {}
    if "main" in parts:
        t0 = time.perf_counter()
        methods = [cmp.method(m) for m in sweep_cfg.get("methods", MAIN_METHODS)]
        rows["main"] = cmp.sweep("main", model_names, methods, times, int(sweep_cfg["chips"]), out_dir / "main")
        timings["main"] = time.perf_counter() - t0
    retention = config.get("retention")
    if retention and "retention" in parts and only(retention.get("models", model_names)):
        t0 = time.perf_counter()
        methods = [cmp.method("gdc"), cmp.method("nabn")]
        for t_c in [parse_time(t) for t in retention["calibrate_at"]]:
            methods.append(NoiseAwareBN(cmp.bn_calib, num_samples=cmp.calib_samples, calibrate_at=t_c,
                                        **cmp.method_data.calibrate_kwargs)
                           .named(f"nabn@{time_label(t_c)}"))
        rows["retention"] = cmp.sweep("retention", only(retention.get("models", model_names)), methods,
                                      [parse_time(t) for t in retention.get("times", sweep_cfg["times"])],
                                      int(retention.get("chips", sweep_cfg["chips"])), out_dir / "retention")
        timings["retention"] = time.perf_counter() - t0
    sizes = config.get("calib_size")
    if sizes and "calib_size" in parts and only(sizes.get("models", model_names)):
        t0 = time.perf_counter()
        methods = [cmp.method("gdc")] + [
            NoiseAwareBN(cmp.bn_calib, num_samples=int(n), **cmp.method_data.calibrate_kwargs).named(f"nabn[{int(n)}]")
            for n in sizes["sizes"]]
        rows["calib_size"] = cmp.sweep("calib_size", only(sizes.get("models", model_names)), methods,
                                       [parse_time(sizes.get("time", "1y"))], int(sizes.get("chips", sweep_cfg["chips"])),
                                       out_dir / "calib_size")
        timings["calib_size"] = time.perf_counter() - t0
    costs = method_costs(rows.get("main", []), cmp.hwa_meta, cmp.trained_params)
    write_costs(costs, out_dir)
    if rows.get("main"):
        plot_accuracy_vs_cost(rows["main"], costs, out_dir / "accuracy_vs_cost.png", times[-1])
    run = {
        "command": command, "commit": commit, "task": task.name, "wall_seconds": round(time.perf_counter() - start, 1),
        "part_seconds": timings, "device": device_name(cmp.device), "torch": torch.__version__, "config": config,
        "hwa_training": {n: {k: m.get(k) for k in ("seconds", "epochs", "accuracy", "device", "command")}
                         for n, m in cmp.hwa_meta.items()},
        "model_setup_seconds": cmp.setup_seconds,  # of this process: a resumed run sets them up again
    }
    (out_dir / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    return run
