"""CamVid semantic segmentation, the second task: data, networks, the training view, recipes, config.

* :mod:`.data` -- finding, reading, checking and caching CamVid (never shipped); classes and colours.
* :mod:`.views` -- random scale / crop / flip of image and label together (also the calibration view).
* :mod:`.models` -- ``unet_small`` (this project's compact U-Net) and torchvision's ``deeplabv3_resnet50``.
* :mod:`.recipe` -- training from scratch and HWA fine-tuning, model choices on the val split.
* :mod:`.task` -- :class:`CamVidTask`, what the comparison and the command line use.
"""

from .data import CLASSES, COLOURS, VOID, load_camvid, normalize
from .models import UNetSmall, deeplabv3_resnet50, logits_of, unet_small
from .recipe import class_weights, train_hwa_camvid, train_segmenter, weighted_loss
from .task import CamVidTask
from .views import CROP, epoch_batches, fixed_view, training_view

__all__ = ["CamVidTask", "CLASSES", "COLOURS", "VOID", "load_camvid", "normalize", "UNetSmall", "unet_small",
           "deeplabv3_resnet50", "logits_of", "class_weights", "weighted_loss", "train_segmenter",
           "train_hwa_camvid", "CROP", "epoch_batches", "fixed_view", "training_view"]
