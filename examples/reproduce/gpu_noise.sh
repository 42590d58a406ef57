#!/usr/bin/env bash
# The noise-model table (issue 14) on the lent GPU, in calls of at most 10 minutes; each setting is journaled, so
# the same call again (with runs/noise_models/ carried back) resumes where the last one stopped.
#   here:   bash examples/reproduce/device_tree.sh trim '*resnet32*'   (keeps the ResNet-32 checkpoints)
#   device: COMMIT=<hash> bash examples/reproduce/gpu_noise.sh
#           carry .gpucarry/aihwkit_site.tar.xz, .gpucarry/cifar10_jpg.tar.gz and, from the second call, runs/noise_models
#   here:   bash examples/reproduce/device_tree.sh restore; cat noise.tgz.part-* | tar xz
# env: DEVICE (cuda), CALL_SECONDS (560), NOISE_CONFIG (default: the CIFAR-10 one), NOISE_SET ("--set k=v ..." overrides)
set -uo pipefail
start=$SECONDS; budget=${CALL_SECONDS:-560}
source examples/reproduce/device_lib.sh
install_site || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_CIFAR10=$PWD/.gpucarry/cifar10_jpg.tar.gz
export AIHWKIT_NABN_COMMIT=${COMMIT:-unknown} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}; R=runs/noise_models; mkdir -p "$OUT" $R
command -v nvidia-smi > /dev/null && nvidia-smi -L
# shellcheck disable=SC2086
timeout $(( budget - (SECONDS - start) - 40 )) python3 -m aihwkit_nabn reproduce noise --device ${DEVICE:-cuda} \
  ${NOISE_CONFIG:+--config "$NOISE_CONFIG"} --out $R --quiet ${NOISE_SET:-} >> $R/noise.log 2>&1
rc=$?; echo "reproduce noise rc=$rc (commit $AIHWKIT_NABN_COMMIT)" | tee -a $R/noise.log
[ $rc = 0 ] && echo "noise table done"
bring_back noise $R
