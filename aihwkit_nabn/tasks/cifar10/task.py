"""CIFAR-10 classification as a :class:`~aihwkit_nabn.evaluation.task.Task`: data, metric, view, recipes, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ...errors import ConfigError
from ...evaluation.metrics import Top1Accuracy
from ...evaluation.task import Option, PathLike, Task, check_eval_split, choice_option, float_option, int_option
from ...utils.batches import TensorBatches
from .data import balanced_order, load_cifar10, normalize, split_off_val, stratified_subset
from .recipe import DATASET_NAME, train_baseline, train_hwa_cifar10
from .sample import load_demo_sample
from .views import CUTOUT_SIZE, augment_like_training

__all__ = ["Cifar10Task", "FreshViewBatches", "SHIPPED_SAMPLE"]

#: ``source`` value that reads the small sample shipped in the package (1,000 test, 512 training images).
SHIPPED_SAMPLE = "shipped-sample"


def _compile_mode(text: str) -> Any:
    return True if text in ("", "default", "true") else text


class FreshViewBatches:
    """Labeled batches augmented anew on every pass (the training view, in a new random order).

    Each pass draws its seed from torch's global random stream, which the comparison seeds per chip, time
    and method: the views differ from step to step of fine-tuning yet are the same on a rerun or resume.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, batch_size: int, device: Optional[torch.device] = None):
        self.images, self.labels, self.batch_size, self.device = images, labels, batch_size, device

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        seed = int(torch.randint(0, 2**62, (1,)).item())
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed + 1))
        view = augment_like_training(self.images[order], seed=seed)
        return iter(TensorBatches(view, self.labels[order], batch_size=self.batch_size, transform=normalize,
                                  device=self.device))


class Cifar10Task(Task):
    """CIFAR-10 (the project's JPEG q75 copy): ResNet-20/32/56, top-1, the pad-crop-flip-Cutout view.

    ``source``: the CIFAR-10 archive or folder (default: ``../shared/data/cifar10_jpg.tar.gz`` or
    ``$AIHWKIT_NABN_CIFAR10``), or :data:`SHIPPED_SAMPLE` for the sample shipped in the package (its
    512 training images stand in for the training split).
    """

    name = "cifar10"
    title = DATASET_NAME
    metric_name = "top1"
    default_config = Path(__file__).resolve().with_name("config.toml")
    calib_view = "training augmentation (pad-4 random crop + flip + cutout 16), seeded"
    calib_views = {"train": calib_view, "crop_flip": "pad-4 random crop + flip, seeded (no cutout)",
                   "plain": "the training images as they are (no augmentation)"}
    train_options = (
        Option("batch_size", int_option(1), "images per step (default 256)"),
        Option("lr", float_option(positive=True), "peak learning rate (default 0.2)"),
        Option("weight_decay", float_option(minimum=0.0), "SGD weight decay (default 5e-4)"),
        Option("label_smoothing", float_option(minimum=0.0), "label smoothing of the loss (default 0)"),
        Option("cutout_size", int_option(0), "side of the Cutout square (default 16; 0 = none)"),
        Option("val_samples", int_option(0), "hold out this many training images (stratified, seeded) as a "
                                             "validation split: evaluated every epoch, the test split read once "
                                             "at the end (default 0: test every epoch)"),
        Option("compile", _compile_mode, "torch.compile the training forward, optionally with a mode (e.g. "
                                          "reduce-overhead); falls back to eager if compiling fails",
               metavar="MODE", const=True),
    )
    hwa_options = (
        Option("batch_size", int_option(1), "images per step (default 128)"),
        Option("lr", float_option(positive=True), "peak learning rate of AnalogSGD (default 0.02)"),
        Option("cutout_size", int_option(0), "side of the Cutout square (default 16, as the shipped models; 0 = none)"),
        Option("val_samples", int_option(0), "hold out this many training images as a validation split, as for "
                                             "train (default 0)"),
        Option("schedule", choice_option("cosine", "plateau"),
               "cosine: to 0 over --epochs (default); plateau: lr halved after --patience epochs without a better "
               "val accuracy, stop when the best is --stop-patience epochs old (needs --val-samples)"),
        Option("patience", int_option(1), "plateau: epochs without improvement before the lr is halved (default 5)"),
        Option("stop_patience", int_option(1), "plateau: stop when the best val accuracy is this many epochs old "
                                               "(default 15)"),
        Option("min_epochs", int_option(0), "plateau: never stop before this epoch (default 0)"),
        Option("cuda_graph", choice_option("off", "on", "full"),
               "on CUDA, replay each update from a CUDA graph, the eager update's numbers with fewer kernel launches: "
               "on (the flag alone): forward and backward; full: the optimizer step too; default off",
               metavar="on|full|off", const="on"),
    )

    def __init__(self, source: Optional[PathLike] = None, val_samples: int = 0):
        super().__init__(source)
        if val_samples and source == SHIPPED_SAMPLE:
            raise ConfigError("the shipped sample has no images to hold out as a val split (data.val_samples)")
        self.val_samples = int(val_samples)
        self._splits: Dict[str, Tuple[Tensor, Tensor]] = {}

    def with_val_split(self, samples: int) -> "Cifar10Task":
        """This task with ``samples`` training images held out as ``val`` (:func:`~.data.split_off_val`:
        stratified, seeded with ``VAL_SEED``); ``train`` is the rest."""
        return type(self)(self.source, val_samples=samples)

    def split(self, name: str) -> Tuple[Tensor, Tensor]:
        """Return ``(uint8 images [N, 3, 32, 32], int64 labels [N])`` of ``"train"``, ``"test"`` or, with a
        held-out validation split (``val_samples``), ``"val"`` (read once)."""
        if name == "val" and not self.val_samples:
            raise ConfigError("CIFAR-10 has no val split unless one is held out of the training split: "
                              "set data.val_samples (e.g. 5000)")
        if name not in self._splits:
            if self.source == SHIPPED_SAMPLE:
                sample = load_demo_sample()
                key = "test" if name == "test" else "calib"
                self._splits[name] = (sample[f"{key}_images"], sample[f"{key}_labels"])
            elif name == "test":
                self._splits[name] = load_cifar10("test", self.source)
            else:
                images, labels = load_cifar10("train", self.source)
                if self.val_samples:
                    keep, val = split_off_val(labels, self.val_samples)
                    self._splits["val"] = (images[val], labels[val])
                    images, labels = images[keep], labels[keep]
                self._splits["train"] = (images, labels)
        return self._splits[name]

    def check_source(self) -> None:
        if self.source != SHIPPED_SAMPLE:
            super().check_source()

    def model_inputs(self, split: str, samples: int, device: Any = None) -> Tensor:
        return normalize(self.split(split)[0][:samples]).to(device)

    def sizes(self) -> Dict[str, int]:
        if self.source == SHIPPED_SAMPLE:
            return {"test": 1000, "train": 512}
        if self.source is None:
            return {"test": 10000, "train": 50000 - self.val_samples,
                    **({"val": self.val_samples} if self.val_samples else {})}
        return {}  # another copy: its size is known once it is read

    def test_metric(self, samples: int = 0, *, seed: int = 0, batch_size: int = 500,
                    device: Optional[torch.device] = None, split: str = "test") -> Top1Accuracy:
        test_x, test_y = self.split(check_eval_split(split))
        if samples:
            idx = stratified_subset(test_y, samples, seed=seed)
            test_x, test_y = test_x[idx], test_y[idx]
        batches = TensorBatches(test_x, test_y, batch_size=batch_size, transform=normalize, device=device)
        return Top1Accuracy(batches, samples=len(test_y))

    def training_subset(self, samples: int, *, seed: int, balanced: bool = True) -> Tensor:
        """Return the indices of a fixed, seeded, class-stratified subset of the training split.

        ``balanced``: ordered so that every prefix holds all classes evenly (:func:`~.data.balanced_order`);
        otherwise sorted, i.e. grouped by class.
        """
        _, train_y = self.split("train")
        idx = stratified_subset(train_y, samples, seed=seed)
        if balanced:
            # stratified_subset returns sorted indices, i.e. grouped by class: reorder them so that every prefix
            # (calibration takes the first num_samples) and every batch holds all classes.
            idx = idx[balanced_order(train_y[idx], seed=seed)]
        return idx

    def calibration_data(self, samples: int, *, seed: int = 0, batch_size: int = 256,
                         device: Optional[torch.device] = None, balanced: bool = True,
                         view: str = "train") -> TensorBatches:
        """``samples`` unlabeled training images in ``view`` (a key of :attr:`calib_views`; default the training
        augmentation, the way the BN statistics were learned), one fixed seeded view of each image."""
        self.check_calib_view(view)
        train_x, _ = self.split("train")
        images = train_x[self.training_subset(samples, seed=seed, balanced=balanced)]
        if view != "plain":
            images = augment_like_training(images, seed=seed, cutout_size=CUTOUT_SIZE if view == "train" else 0)
        return TensorBatches(images, batch_size=batch_size, transform=normalize, device=device)

    supports_fresh_views = True

    def labeled_data(self, samples: int, *, seed: int = 1, batch_size: int = 128,
                     device: Optional[torch.device] = None, fresh_views: bool = False) -> Any:
        train_x, train_y = self.split("train")
        idx = self.training_subset(samples, seed=seed)
        if fresh_views:
            return FreshViewBatches(train_x[idx], train_y[idx], batch_size=batch_size, device=device)
        return TensorBatches(augment_like_training(train_x[idx], seed=seed), train_y[idx], batch_size=batch_size,
                             transform=normalize, device=device)

    def _data_source(self) -> Optional[PathLike]:
        if self.source == SHIPPED_SAMPLE:
            raise ConfigError("training needs a CIFAR-10 copy (--data PATH), not the shipped sample")
        return self.source

    def train(self, *, arch: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
              progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        result = train_baseline(arch, epochs=epochs, out_path=out, data_source=self._data_source(), seed=seed,
                                device=device, progress=progress, **options)
        return {"arch": arch, "top1": result["top1"], "seconds": result["seconds"], "out": result["out_path"],
                "test_top1": (result["meta"] or {}).get("accuracy"),
                "epochs_done": result["epochs_done"], "finished": result["finished"]}

    def train_hwa(self, *, model: str, epochs: int, out: PathLike, seed: int = 0, device: Any = None,
                  progress: bool = True, command: str = "", **options: Any) -> Dict[str, Any]:
        result = train_hwa_cifar10(model, epochs=epochs, out_path=out, data_source=self._data_source(), seed=seed,
                                   device=device, progress=progress, command=command or None, **options)
        return {"model": model, "top1": result["top1"], "seconds": result["seconds"], "out": result["out_path"],
                "epochs_done": result["epochs_done"], "finished": result["finished"],
                "stopped": result.get("stopped", False), "input_range_fix": result["input_range_fix"]}
