"""The stand-ins of the GPU drivers' CPU dry runs: a tiny CIFAR-10 copy and an untrained ResNet-32 as both the digital
and the HWA checkpoint (a check of a driver, not of any number).

Usage: python examples/reproduce/dryrun_setup.py CIFAR_FOLDER DIGITAL_CHECKPOINT HWA_CHECKPOINT
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_reproduce import _tiny_cifar  # noqa: E402  pylint: disable=wrong-import-position

from aihwkit_nabn.analog.convert import to_analog  # noqa: E402  pylint: disable=wrong-import-position
from aihwkit_nabn.analog.hwa_preset import TorchHWAPreset  # noqa: E402  pylint: disable=wrong-import-position
from aihwkit_nabn.training.checkpoints import save_checkpoint  # noqa: E402  pylint: disable=wrong-import-position
from aihwkit_nabn.training.hwa_checkpoint import save_hwa_checkpoint  # noqa: E402  pylint: disable=wrong-import-position
from aihwkit_nabn.training.registry import create_model  # noqa: E402  pylint: disable=wrong-import-position


def main(argv):
    if len(argv) != 3:
        raise SystemExit(__doc__)
    cifar, digital, hwa = (Path(a) for a in argv)
    _tiny_cifar(cifar)  # 10 classes x 8 train / 4 test images
    for path in (digital, hwa):
        path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model("resnet32").eval()
    save_checkpoint(digital, model, "resnet32", {"accuracy": 10.0})
    save_hwa_checkpoint(hwa, to_analog(model, TorchHWAPreset()), "resnet32", {"seconds": 1.0, "accuracy": 10.0})


if __name__ == "__main__":
    main(sys.argv[1:])
