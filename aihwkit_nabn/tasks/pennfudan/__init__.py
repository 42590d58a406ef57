"""Penn-Fudan pedestrian detection, the third task: data, the fixed split, detectors, views, recipes, config.

* :mod:`.data` -- reading and checking the data (boxes from the instance masks), the seeded split, the cache.
* :mod:`.views` -- box-keeping random crop and flip (also the calibration and fine-tuning views).
* :mod:`.models` -- FCOS detectors from torchvision's detection API with BatchNorm backbones.
* :mod:`.recipe` -- training from scratch and HWA fine-tuning, choices on the val split.
* :mod:`.task` -- :class:`PennFudanTask`, lists of images as batches, the detector's own losses for BN fine-tuning.
"""

from .data import load_pennfudan, normalize, split_names
from .models import fcos_resnet18_fpn, fcos_resnet50_fpn
from .recipe import train_detector, train_hwa_pennfudan
from .task import (DetectionBatch, PennFudanTask, detection_batch_of, detections, detector_losses, images_of,
                   sum_of_losses, targets_of)

__all__ = ["PennFudanTask", "load_pennfudan", "split_names", "fcos_resnet18_fpn", "fcos_resnet50_fpn",
           "train_detector", "train_hwa_pennfudan", "DetectionBatch", "detections", "detector_losses", "images_of",
           "normalize", "detection_batch_of", "targets_of", "sum_of_losses"]
