#!/usr/bin/env bash
# Train the three digital CIFAR-10 baselines (ResNet-20/32/56) on one GPU, in parallel.
# Usage: bash examples/reproduce/train_baselines.sh OUT_DIR [EPOCHS]
# Each run journals one JSON line per epoch and a resumable state beside its checkpoint, so
# re-running the same command after an interruption continues where it stopped.
set -euo pipefail
out=${1:?usage: train_baselines.sh OUT_DIR [EPOCHS]}
epochs=${2:-160}
mkdir -p "$out"
# Decode the JPEG archive once into the tensor cache before the parallel runs read it.
python3 -c "from aihwkit_nabn.data.cifar10 import load_cifar10; load_cifar10('train'); load_cifar10('test')"
pids=()
for arch in resnet20 resnet32 resnet56; do
  python3 -m aihwkit_nabn.cli train --arch "$arch" --epochs "$epochs" --seed 0 --out "$out/$arch.pt" --quiet \
    > "$out/$arch.stdout" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
