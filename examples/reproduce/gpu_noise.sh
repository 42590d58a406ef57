#!/usr/bin/env bash
# The noise-model table (issue 14) on the lent GPU, in calls of at most 10 minutes; each setting is journaled, so
# the same call again (with runs/noise_models/ carried back) resumes where the last one stopped.
#   here:   bash examples/reproduce/device_tree.sh trim '*resnet32*'   (keeps the ResNet-32 checkpoints)
#   device: COMMIT=<hash> bash examples/reproduce/gpu_noise.sh
#           carry .gpucarry/aihwkit_site.tar.xz, .gpucarry/cifar10_jpg.tar.gz and, from the second call, runs/noise_models
#   here:   bash examples/reproduce/device_tree.sh restore; cat noise.tgz.part-* | tar xz
# PARALLEL processes side by side each run every PARALLEL-th setting of the config's [noise] settings into the same
# folder (ResNet-32's batches are small, so one process leaves the GPU idle between kernels; how much the sharing
# gains is not measured: the rows' method_seconds and each setting's wall time tell); once all have finished, one
# more run with every setting reads them back and writes the table (a part's own table files, of its settings only,
# are overwritten then). PARALLEL=1: one process for all (use it when NOISE_SET overrides noise.settings).
# Checked end to end on the CPU (LOCAL=1 DEVICE=cpu PARALLEL=2, tiny folder data and models through NOISE_SET, 20
# settings): two calls, the first cut by its time, the second resuming; a third call read all back in 0.3 s.
# env: DEVICE (cuda), CALL_SECONDS (560), NOISE_CONFIG (default: the CIFAR-10 one), NOISE_SET ("--set k=v ..."
#      overrides, no spaces inside a value), PARALLEL (4), RUNS (runs/noise_models), LOCAL (set: aihwkit is installed
#      already, e.g. a dry run on the CPU)
set -uo pipefail
start=$SECONDS; budget=${CALL_SECONDS:-560}
left() { echo $((budget - (SECONDS - start))); }
source examples/reproduce/device_lib.sh
site=/tmp/site:; [ -n "${LOCAL:-}" ] && site=
[ -n "${LOCAL:-}" ] || install_site || exit 1
export PYTHONPATH=$site$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_CIFAR10=${AIHWKIT_NABN_CIFAR10:-$PWD/.gpucarry/cifar10_jpg.tar.gz}
export AIHWKIT_NABN_COMMIT=${COMMIT:-unknown} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}; R=${RUNS:-runs/noise_models}; mkdir -p "$OUT" $R
CFG=${NOISE_CONFIG:-aihwkit_nabn/tasks/cifar10/noise.toml}; P=${PARALLEL:-4}
command -v nvidia-smi > /dev/null && nvidia-smi -L
# shellcheck disable=SC2086
run_noise() { timeout $(( $(left) - 40 )) python3 -m aihwkit_nabn reproduce noise --device ${DEVICE:-cuda} \
  --config "$CFG" --out $R --quiet ${NOISE_SET:-} "$@"; }
split_settings() {  # every P-th setting of the config, one TOML list per line
  python3 -c 'import json, sys, tomllib
names, p = tomllib.load(open(sys.argv[1], "rb"))["noise"]["settings"], int(sys.argv[2])
print("\n".join(json.dumps(names[k::p]) for k in range(p) if names[k::p]))' "$CFG" "$P"
}
rc=0
if [ "$P" -gt 1 ]; then
  pids=(); k=0
  while read -r subset; do
    run_noise --set "noise.settings=$subset" >> $R/noise_part$k.log 2>&1 & pids+=($!); k=$((k + 1))
  done < <(split_settings)
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  echo "noise parts rc=$rc (commit $AIHWKIT_NABN_COMMIT)" | tee -a $R/noise.log
fi
if [ $rc = 0 ]; then  # every setting: the finished ones are read back (PARALLEL=1: this one runs them all)
  run_noise >> $R/noise.log 2>&1; rc=$?
  echo "reproduce noise rc=$rc (commit $AIHWKIT_NABN_COMMIT)" | tee -a $R/noise.log
  [ $rc = 0 ] && echo "noise table done"
fi
bring_back noise $R
