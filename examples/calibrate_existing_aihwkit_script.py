"""Adding noise-aware BatchNorm calibration to an aihwkit inference script you already have.

Everything below is an ordinary aihwkit inference script: a trained ResNet-20 (a plain ``nn.Module``;
here the CIFAR-10 weights shipped with aihwkit-nabn stand in for your own), converted with aihwkit's
``convert_to_analog`` (a copy: the digital model stays as it is) under the user's own
``TorchInferenceRPUConfig`` (PCM noise and drift, global drift compensation), programmed once, drifted to
1 day and 1 year, and evaluated with the user's own DataLoader loop.

aihwkit-nabn adds its import and three lines, marked ``# <-- aihwkit-nabn``:

    snapshot = aihwkit_nabn.calibrate_bn(analog_model, train_loader, num_samples=...)
    after = evaluate(analog_model, test_loader)
    aihwkit_nabn.restore_bn(analog_model, snapshot)

``calibrate_bn`` runs a few training images (any shuffled DataLoader of them; labels are ignored) through
the programmed, drifted analog model and re-estimates the BatchNorm running statistics from what the chip
actually computes; no weight is touched and nothing about the noise model needs to be known.
``restore_bn`` puts the previous statistics back bit for bit (here, before the next drift time, so each
time starts from the trained statistics). Two things matter for the calibration data: the loader is
shuffled (an unshuffled, class-sorted loader gives a few classes only, and calibrate_bn warns), and the
images look like the training images the statistics were learned from (the training augmentation).

Data: the CIFAR-10 (JPEG q75 copy) sample shipped with aihwkit-nabn, 512 training images (unlabeled, to
calibrate) and 1,000 test images.

    python examples/calibrate_existing_aihwkit_script.py            # about a minute on 2 idle CPU cores
    python examples/calibrate_existing_aihwkit_script.py --quick    # a few seconds (smoke test)
"""

import argparse
import time

import torch
from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.configs import TorchInferenceRPUConfig
from aihwkit.simulator.parameters import MappingParameter
from torch.utils.data import DataLoader, TensorDataset

import aihwkit_nabn  # <-- aihwkit-nabn
# the model and data (a user would bring their own): a ResNet-20 builder and its trained weights, the sample
from aihwkit_nabn.tasks.cifar10 import augment_like_training, load_demo_sample, normalize, resnet20, stratified_subset
from aihwkit_nabn.training.checkpoints import pretrained_path

ONE_DAY = 86400.0
ONE_YEAR = 365 * ONE_DAY


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
    parser.add_argument("--calib-samples", type=int, default=None,
                        help="training images for calibrate_bn (default 512; --quick 128)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    calib_samples = args.calib_samples or (128 if args.quick else 512)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    # ----- the user's trained digital model
    model = resnet20()
    model.load_state_dict(torch.load(pretrained_path("resnet20"), weights_only=True)["state_dict"])
    model.eval()

    # ----- the user's DataLoaders; the training loader applies the training augmentation, as in training
    sample = load_demo_sample()
    test = stratified_subset(sample["test_labels"], 100 if args.quick else 1000)  # class-balanced subset
    train_images = normalize(augment_like_training(sample["calib_images"], seed=args.seed))
    train_loader = DataLoader(TensorDataset(train_images, sample["calib_labels"]), batch_size=64, shuffle=True)
    test_loader = DataLoader(TensorDataset(normalize(sample["test_images"][test]), sample["test_labels"][test]),
                             batch_size=250)
    print(f"digital ResNet-20: {evaluate(model, test_loader):.2f}% on {len(test)} test images")

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
