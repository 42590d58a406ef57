#!/usr/bin/env bash
# gpu_fair_compare.sh end to end on the CPU, on a tiny CIFAR-10 copy (10 classes x 8 train / 4 test images) with an
# untrained ResNet-32 standing in for every model: two calls, the second finding everything done. A check of the
# driver (stages, choices handed on, resume, merge), not of any number.
#   bash examples/reproduce/gpu_fair_compare_dryrun.sh [FOLDER]     (default /tmp/fair_dryrun; about 4 min on 2 cores)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
D=${1:-/tmp/fair_dryrun}; rm -rf "$D"; mkdir -p "$D"
PY=${PYTHON:-python3}
$PY examples/reproduce/dryrun_setup.py "$D/cifar" "$D/runs/ckpt/resnet32.pt" "$D/runs/hwa/resnet32_hwa.pt"
export AIHWKIT_NABN_CACHE=$D/cache
stand_in=""; for m in resnet20 resnet56; do  # fair.toml names three models; the dry run runs ResNet-32 only
  stand_in+=" --set models.$m.digital=\"$D/runs/ckpt/resnet32.pt\" --set models.$m.hwa=\"$D/runs/hwa/resnet32_hwa.pt\""
done
EX="--set data.batch_size=10 --set hardware.input_range_samples=16 --set data.labeled_samples=16"
EX+=" --set data.calib_samples=16 --set sweep.times=[\"1s\",\"1y\"] --set retention.calibrate_at=[\"1s\"]"
EX+=" --set calib_size.sizes=[8,16] --set bnft.batch_size=8$stand_in"
for call in 1 2; do
  LOCAL=1 DEVICE=cpu RUNS=$D/runs OUT=$D/out$call DATA=$D/cifar MODELS=resnet32 VAL_SAMPLES=20 VIEWS=train,plain \
    BNFT_GRAPH_STEPS=2 SIZES=8,16 STEPS=1,2 LRS=1e-3 SMOOTHING=0 FRESH=0,1 CHOICE_CHIPS=2 CHIPS=2 CALL_SECONDS=3000 EXTRA_SET="$EX" \
    COMMIT=dryrun bash examples/reproduce/gpu_fair_compare.sh > "$D/call$call.log" 2>&1
done
cat "$D/runs/calls.txt"
grep -q "grid done" "$D/runs/calls.txt" && [ -f "$D/runs/grid/reproduce/main/rows.csv" ] && echo "dry run complete: $D/runs"
