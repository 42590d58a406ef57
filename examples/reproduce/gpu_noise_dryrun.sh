#!/usr/bin/env bash
# gpu_noise.sh end to end on the CPU, on a tiny CIFAR-10 copy (10 classes x 8 train / 4 test images) with an untrained
# ResNet-32 standing in for the digital and HWA models: the graph check (GRAPH_SETTINGS, default one setting; on the
# CPU it finds nothing replayed, so BN fine-tuning stays eager), two calls in PARALLEL=2 parts (one part with
# SETTINGS), the first cut by its time, the second resuming and writing the table. A check of the driver (check,
# parts, resume, read-back, table), not of any number.
#   bash examples/reproduce/gpu_noise_dryrun.sh [FOLDER] [SETTINGS]   (default /tmp/noise_dryrun; every setting: 40 min
#   on 2 cores, passed; SETTINGS, e.g. '["pcm","reram_wan2022"]', for a quicker one: 6 min, passed, all in the first
#   call). The workers' queue (gpu_noise.sh) on a config of three settings: NOISE_CONFIG=<copy of the CIFAR-10 one with
#   settings = ["pcm", "out_noise_0", "read_noise_x0"]> BNFT_GRAPH=off FIRST_CALL_SECONDS=150: one worker ran one
#   setting, the other two, table written (1 min; the check's json is then absent, so no "dry run complete" line))
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
D=${1:-/tmp/noise_dryrun}; rm -rf "$D"; mkdir -p "$D"
PY=${PYTHON:-python3}
$PY examples/reproduce/dryrun_setup.py "$D/cifar" "$D/resnet32.pt" "$D/resnet32_hwa.pt"
export AIHWKIT_NABN_CACHE=$D/cache AIHWKIT_NABN_CIFAR10=$D/cifar
NS="--set models.resnet32.digital=\"$D/resnet32.pt\" --set models.resnet32.hwa=\"$D/resnet32_hwa.pt\""
NS+=" --set data.batch_size=10 --set hardware.input_range_samples=16 --set data.labeled_samples=16"
NS+=" --set data.calib_samples=16 --set data.val_samples=20 --set data.test_samples=20 --set sweep.chips=2"
NS+=" --set bnft.batch_size=8 --set bnft.steps=2"
P=2; [ -n "${2:-}" ] && { NS+=" --set noise.settings=$2"; P=1; }  # parts split the config's settings, not these
# the first call is cut after the check and part of the settings; the second resumes, finishes and writes the table
for call in 1 2; do
  [ $call = 1 ] && seconds=${FIRST_CALL_SECONDS:-300} || seconds=3000
  LOCAL=1 DEVICE=cpu RUNS=$D/runs OUT=$D/out$call PARALLEL=$P CALL_SECONDS=$seconds GRAPH_STEPS=2 NOISE_SET="$NS" \
    GRAPH_SETTINGS=${GRAPH_SETTINGS:-out_noise_0} \
    COMMIT=dryrun bash examples/reproduce/gpu_noise.sh > "$D/call$call.log" 2>&1 || true
done
grep -E "cuda graph|rc=" "$D/runs/noise.log" || true
grep -q "bnft cuda graph: off" "$D/runs/noise.log" && grep -q "reproduce noise rc=0" "$D/runs/noise.log" \
  && ls "$D"/runs/bnft_graph_check_dryrun/*/bnft_cuda_graph.json > /dev/null && echo "dry run complete: $D/runs"
