#!/usr/bin/env bash
# The comparison grid timed on the lent H200 (carry .whl and .gpucarry with cifar10_jpg.tar.gz):
# MODELS="resnet20" COMMIT=<hash> bash gpu_grid.sh -> $OUT/grid/<model>/ (rows, summaries, run.json)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_CIFAR10=$PWD/.gpucarry/cifar10_jpg.tar.gz
for model in ${MODELS:-resnet20}; do
  start=$(date +%s.%N)
  python3 -m aihwkit_nabn reproduce cifar10 --parts main --models "$model" --out "$OUT/grid/$model" --quiet \
      --device cuda > "$OUT/grid_$model.log" 2>&1
  status=$?
  echo "$model: exit $status in $(awk "BEGIN{print $(date +%s.%N) - $start}") s (commit ${COMMIT:-unknown})" \
      | tee -a "$OUT/grid_times.txt"
done
tar czf "$OUT/grid.tgz" -C "$OUT" grid && rm -rf "$OUT/grid"
