"""Adding noise-aware BatchNorm calibration to an aihwkit inference script you already have.

Everything below is an ordinary aihwkit inference script: the user's own small CNN, trained
digitally, converted with aihwkit's ``convert_to_analog`` (a copy: the digital model stays as it
is) under the user's own ``TorchInferenceRPUConfig`` (PCM noise and drift, global drift
compensation), programmed once, drifted to 1 day and 1 year, and evaluated with the user's own
DataLoader loop.

aihwkit-nabn adds its import and three lines, marked ``# <-- aihwkit-nabn``:

    snapshot = aihwkit_nabn.calibrate_bn(analog_model, train_loader, num_samples=...)
    after = evaluate(analog_model, test_loader)
    aihwkit_nabn.restore_bn(analog_model, snapshot)

``calibrate_bn`` runs a few training images (any DataLoader of them; labels are ignored) through
the programmed, drifted analog model and re-estimates the BatchNorm running statistics from what
the chip actually computes; no weight is touched and nothing about the noise model needs to be
known. ``restore_bn`` puts the previous statistics back bit for bit (here, before the next drift
time, so each time starts from the trained statistics).

Data: the CIFAR-10 (JPEG q75 copy) sample shipped with aihwkit-nabn, 512 training images (to train
the toy model, and unlabeled to calibrate) and 1,000 test images. Trained on 512 images, the model
reaches only about 45 %; the point is the before/after difference on the same drifted chip.

    python examples/calibrate_existing_aihwkit_script.py            # about 30 s on 2 idle CPU cores
    python examples/calibrate_existing_aihwkit_script.py --quick    # a few seconds (smoke test)
"""

import argparse
import time

import torch
from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters import MappingParameter
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import aihwkit_nabn  # <-- aihwkit-nabn
from aihwkit_nabn.data import load_demo_sample, normalize, stratified_subset  # the data (a user would bring theirs)

ONE_DAY = 86400.0
ONE_YEAR = 365 * ONE_DAY


# --------------------------------------------------------------------------- the user's own model

class SmallCNN(nn.Module):
    """A small VGG-style CIFAR-10 classifier with BatchNorm after every convolution."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, width), nn.MaxPool2d(2),                # 16x16
            *block(width, 2 * width), nn.MaxPool2d(2),        # 8x8
            *block(2 * width, 4 * width), nn.MaxPool2d(2),    # 4x4
        )
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def train(model, loader, epochs, lr=2e-3):
    """Plain digital training with Adam and a cosine schedule."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            images = torch.where(torch.rand(len(images), 1, 1, 1) < 0.5, images.flip(3), images)  # h-flip
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()


@torch.no_grad()
def evaluate(model, loader):
    """Top-1 accuracy in percent."""
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += (model(images).argmax(dim=1) == labels).sum().item()
        total += len(labels)
    return 100.0 * correct / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--epochs", type=int, default=None, help="digital training epochs (default 30; --quick 2)")
    parser.add_argument("--calib-samples", type=int, default=None,
                        help="training images for calibrate_bn (default 512; --quick 128)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 30)
    calib_samples = args.calib_samples or (128 if args.quick else 512)
    width = 8 if args.quick else 32
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    # ----- data: the user's own DataLoaders
    sample = load_demo_sample()
    test = stratified_subset(sample["test_labels"], 100 if args.quick else 1000)  # class-balanced subset
    train_set = TensorDataset(normalize(sample["calib_images"]), sample["calib_labels"])
    test_set = TensorDataset(normalize(sample["test_images"][test]), sample["test_labels"][test])
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True, drop_last=True)
    test_loader = DataLoader(test_set, batch_size=250)

    # ----- the user's trained digital model
    model = SmallCNN(width)
    train(model, train_loader, epochs)
    digital_acc = evaluate(model, test_loader)
    print(f"digital SmallCNN(width={width}), {epochs} epochs on {len(train_set)} images: "
          f"{digital_acc:.2f}% on {len(test_set)} test images")

    # ----- the user's aihwkit inference setup
    rpu_config = TorchInferenceRPUConfig()
    rpu_config.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu_config.drift_compensation = GlobalDriftCompensation()
    rpu_config.mapping = MappingParameter(weight_scaling_omega=1.0)
    analog_model = convert_to_analog(model, rpu_config, inplace=False)  # a converted copy; `model` stays digital
    analog_model.eval()
    analog_model.program_analog_weights()

    for name, t in (("1 day", ONE_DAY), ("1 year", ONE_YEAR)):
        analog_model.drift_analog_weights(t)
        before = evaluate(analog_model, test_loader)

        snapshot = aihwkit_nabn.calibrate_bn(analog_model, train_loader, num_samples=calib_samples)  # <-- aihwkit-nabn
        after = evaluate(analog_model, test_loader)  # <-- aihwkit-nabn
        aihwkit_nabn.restore_bn(analog_model, snapshot)  # <-- aihwkit-nabn

        print(f"analog, {name:>6} after programming: {before:6.2f}% before calibration, "
              f"{after:6.2f}% after calibrate_bn ({snapshot.info['samples']} unlabeled images)")

    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
