"""A drift sweep from Python with the aihwkit-nabn API: models x methods x drift times x chips.

What it does, step by step:

1. Gets a CIFAR-10 ResNet-20: the weights shipped with aihwkit-nabn
   (``aihwkit_nabn.load_pretrained("resnet20")``) when the package has them, a checkpoint
   you pass with ``--checkpoint``, or else a registry ResNet-20 TRAINED BRIEFLY HERE on the 512
   training images of the shipped sample (a toy model, about 35 % top-1; it is saved in ``--out``
   and reused on the next run). The script prints which one it uses.
2. Converts it with ``nb.to_analog`` (aihwkit analog layers, PCM noise and drift, global drift
   compensation: ``nb.PCMInferencePreset``).
3. Runs ``nb.run_sweep`` with ``nb.standard_methods``: digital, analog (no drift compensation),
   gdc (aihwkit's global drift compensation) and nabn (gdc + ``calibrate_bn`` on each chip at each
   time), on ``--chips`` independently programmed chips at each ``--times``, scored with
   ``nb.Top1Accuracy`` on the 1,000 test images of the shipped CIFAR-10 (JPEG q75 copy) sample.
   Rows are journaled to ``<out>/rows.csv`` as they finish; running the same command again resumes.
4. Writes the report with ``nb.write_report`` (CSV, JSON, Markdown, PNG) and prints the Markdown table.

    python examples/drift_sweep_from_python.py --out sweep-out            # ~3 min on 2 idle CPU cores
    python examples/drift_sweep_from_python.py --out sweep-quick --quick  # ~10 s: a smoke test
    python examples/drift_sweep_from_python.py --out sweep-5x5 --chips 5 --times 1s,1h,1d,30d,1y

Chips and models run on the GPU when there is one (``run_sweep``'s default device). Running the same
command again resumes the journal in ``--out`` (finished rows are skipped); a run with other settings
needs another ``--out``.
"""

import argparse
import time
from pathlib import Path

import torch

import aihwkit_nabn as nb
from aihwkit_nabn.analog.times import parse_times
from aihwkit_nabn.tasks.cifar10 import (
    augment_like_training,
    create_model,
    load_demo_sample,
    normalize,
    stratified_subset,
    train_classifier,
)
from aihwkit_nabn.training.checkpoints import (
    load_checkpoint,
    load_model_spec,
    load_pretrained,
    pretrained_path,
    save_checkpoint,
)


def get_model(args, train_images, train_labels, test_images, test_labels, out_dir: Path):
    """Return ``(name, model, source)``: the given checkpoint, the shipped weights, or a briefly trained ResNet-20.

    ``source`` says where the weights come from; it is printed and recorded in the sweep settings.
    """
    if args.checkpoint:
        name, model, _ = load_model_spec(args.checkpoint)
        return name, model, f"checkpoint {args.checkpoint}"
    if pretrained_path("resnet20").is_file():
        model, meta = load_pretrained("resnet20")
        accuracy = meta.get("accuracy", float("nan"))
        return "resnet20", model, f"shipped ResNet-20 weights ({accuracy:.2f}% on the full CIFAR-10 JPEG q75 test set)"
    source = (f"NO SHIPPED RESNET-20 WEIGHTS ({pretrained_path('resnet20')} is absent): a registry ResNet-20 "
              f"TRAINED BRIEFLY HERE, {args.epochs} epoch(s) on {len(train_images)} training images of the shipped "
              f"sample (seed {args.seed}). A toy model: the numbers show the methods, not ResNet-20's real accuracy.")
    path = out_dir / f"resnet20_briefly_trained_n{len(train_images)}_e{args.epochs}_s{args.seed}.pt"
    if path.is_file():
        print(f"reusing {path}")
        model, _ = load_checkpoint(path)
        return "resnet20", model, source
    print(source, "Training ...", flush=True)
    torch.manual_seed(args.seed)
    model = create_model("resnet20")
    result = train_classifier(
        model, train_images, train_labels, test_images, test_labels,
        epochs=args.epochs, batch_size=64, lr=0.1, warmup_epochs=1, seed=args.seed, progress=False,
    )
    save_checkpoint(path, model, "resnet20", {"accuracy": result["top1"], "epochs": args.epochs, "seed": args.seed,
                                              "n_train": len(train_images),
                                              "note": "trained briefly by examples/drift_sweep_from_python.py"})
    print(f"trained in {result['seconds']:.0f} s: {result['top1']:.2f}% on the {len(test_labels)} test images; "
          f"saved to {path} (reused next time)")
    return "resnet20", model.eval(), source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="drift-sweep-out", help="output folder (journal, report, plot)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--chips", type=int, default=None, help="independent chips (default 2; --quick 1)")
    parser.add_argument("--times", default=None,
                        help="drift times after programming, e.g. 1s,1h,1d,30d,1y (default 1d,1y)")
    parser.add_argument("--checkpoint", default=None, help="an aihwkit-nabn checkpoint to sweep instead of ResNet-20")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs when ResNet-20 has to be trained here (default 15; --quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.epochs = args.epochs if args.epochs is not None else (1 if args.quick else 15)
    n_chips = args.chips if args.chips is not None else (1 if args.quick else 2)
    times = parse_times(args.times or "1d,1y")
    n_test, n_calib, n_train = (50, 32, 128) if args.quick else (1000, 512, 512)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # Data: the shipped CIFAR-10 (JPEG q75 copy) sample, uint8. It is ordered by class, so subsets are
    # class-balanced (stratified_subset), never the first n images.
    sample = load_demo_sample()
    test_idx = stratified_subset(sample["test_labels"], n_test, args.seed)
    test_images, test_labels = sample["test_images"][test_idx], sample["test_labels"][test_idx]
    train_idx = stratified_subset(sample["calib_labels"], n_train, args.seed)  # the sample's training-split images
    calib_images = sample["calib_images"][stratified_subset(sample["calib_labels"], n_calib, args.seed)]

    name, model, source = get_model(args, sample["calib_images"][train_idx], sample["calib_labels"][train_idx],
                                    test_images, test_labels, out_dir)
    print("model:", source, flush=True)

    # The sweep: one model with one analog variant ("default": converted, not yet programmed), the four
    # standard methods, top-1 accuracy on the test images (normalised batch by batch).
    models = {name: nb.SweepModel(digital=model, analog={"default": nb.to_analog(model)})}
    # Unlabeled training-split images, seen the way the BN statistics were learned (random crop + flip):
    # plain images shift the first BN layer's statistics (see aihwkit_nabn.tasks.cifar10.augment_like_training).
    calib_images = augment_like_training(calib_images, seed=args.seed)
    calib_data = nb.TensorBatches(calib_images, batch_size=256, transform=normalize)
    methods = nb.standard_methods(calib_data, num_samples=len(calib_images))
    metric = nb.Top1Accuracy(nb.TensorBatches(test_images, test_labels, batch_size=500, transform=normalize))
    rows = nb.run_sweep(
        models, methods, metric, out_dir=out_dir, times=times, n_chips=n_chips, seed=args.seed,
        config={"model_source": source, "test_samples": len(test_images), "calib_samples": len(calib_images)},
    )
    paths = nb.write_report(rows, out_dir, title="aihwkit-nabn drift sweep from Python (CIFAR-10 JPEG q75 sample)")

    print(f"\n{len(test_images)} test images, {len(calib_images)} unlabeled training images for nabn, "
          f"{n_chips} chip(s), PCM noise + drift (nb.PCMInferencePreset)\n")
    print(paths["summary.md"].read_text())
    print("wrote", ", ".join(str(p) for p in [out_dir / "rows.csv", *paths.values()]))
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
