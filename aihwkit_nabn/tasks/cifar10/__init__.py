"""CIFAR-10 classification, the first task: data, ResNet-20/32/56, the training view, recipes, demo, config.

* :mod:`.data` -- finding, decoding and caching the data; normalisation; class-balanced subsets.
* :mod:`.dataset` -- the images as a torch ``Dataset`` / ``DataLoader``.
* :mod:`.sample` -- the small sample shipped in the package (demo, tests).
* :mod:`.views` -- the training augmentation (pad-crop, flip, Cutout), also the calibration view.
* :mod:`.models` -- ResNet-20/32/56, registered with their shipped weights.
* :mod:`.recipe` -- digital and HWA training recipes, top-1 on image tensors.
* :mod:`.task` -- :class:`Cifar10Task`, what the comparison and the command line use.
* :mod:`.demo` -- the offline demo.
"""

from .data import CIFAR10_MEAN, CIFAR10_STD, CLASSES, balanced_order, load_cifar10, normalize, stratified_subset
from .dataset import TensorImageDataset, make_loader
from .demo import run_demo
from .models import ResNetCIFAR, resnet20, resnet32, resnet56
from .recipe import evaluate_top1, train_baseline, train_classifier, train_hwa, train_hwa_cifar10
from .sample import load_demo_sample, make_demo_sample
from .task import SHIPPED_SAMPLE, Cifar10Task
from .views import CUTOUT_SIZE, augment_like_training, training_view
from ...training.registry import create_model, list_models

__all__ = [
    "Cifar10Task", "SHIPPED_SAMPLE",
    "load_cifar10", "normalize", "stratified_subset", "balanced_order", "CLASSES", "CIFAR10_MEAN", "CIFAR10_STD",
    "TensorImageDataset", "make_loader", "load_demo_sample", "make_demo_sample",
    "augment_like_training", "training_view", "CUTOUT_SIZE",
    "ResNetCIFAR", "resnet20", "resnet32", "resnet56", "create_model", "list_models",
    "evaluate_top1", "train_classifier", "train_baseline", "train_hwa", "train_hwa_cifar10", "run_demo",
]
