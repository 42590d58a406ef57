#!/usr/bin/env bash
# Train the three digital CIFAR-10 baselines (ResNet-20/32/56) on one GPU, in parallel.
# Usage: bash examples/reproduce/train_baselines.sh OUT_DIR [EPOCHS]
#   env DATA=path/to/cifar10_jpg.tar.gz  (default: ../shared/data/cifar10_jpg.tar.gz)
#   env MAX_SECONDS=N  stop each run after the epoch that ends past N seconds (for time-limited jobs)
#   env COMPILE=MODE   torch.compile the training forward (e.g. reduce-overhead: CUDA graphs)
#   env VAL_SAMPLES=N  hold N training images out as the val split (issue 13: 5000), test read once at the end
#   env MODELS="resnet20 ..."  which baselines (default all three)
# Each run journals one JSON line per epoch and a resumable state beside its checkpoint, so
# re-running the same command after an interruption (or a MAX_SECONDS stop) continues where it stopped.
set -euo pipefail
out=${1:?usage: train_baselines.sh OUT_DIR [EPOCHS]}
epochs=${2:-160}
data_args=()
[ -n "${DATA:-}" ] && data_args=(--data "$DATA")
time_args=()
[ -n "${MAX_SECONDS:-}" ] && time_args=(--max-seconds "$MAX_SECONDS")
[ -n "${COMPILE:-}" ] && time_args+=(--compile "$COMPILE")
[ -n "${VAL_SAMPLES:-}" ] && time_args+=(--val-samples "$VAL_SAMPLES")
mkdir -p "$out"
# Decode the JPEG archive once into the tensor cache before the parallel runs read it.
python3 -c "import sys; from aihwkit_nabn.tasks.cifar10 import load_cifar10; load_cifar10('train', sys.argv[1] or None); load_cifar10('test', sys.argv[1] or None)" "${DATA:-}"
pids=()
for arch in ${MODELS:-resnet20 resnet32 resnet56}; do
  [ -f "$out/$arch.pt" ] && continue  # finished earlier
  python3 -m aihwkit_nabn.cli train --arch "$arch" --epochs "$epochs" --seed 0 --label-smoothing 0.1 \
    --out "$out/$arch.pt" --quiet "${data_args[@]}" "${time_args[@]}" >> "$out/$arch.stdout" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
