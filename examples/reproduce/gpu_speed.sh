#!/usr/bin/env bash
# The speed issue's GPU call on the lent H200 (carry .whl and .gpucarry): the fused path's tests on CUDA,
# then benchmarks/bench_speed.py (results/benchmarks/speed_cuda.json). Usage: COMMIT=<hash> bash gpu_speed.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_COMMIT=${COMMIT:-unknown}
R=$OUT/r
mkdir -p "$R"
nvidia-smi --query-gpu=name,driver_version,memory.used,utilization.gpu --format=csv > "$R/nvidia_smi.txt"
timeout "${TEST_SECONDS:-240}" python3 -m pytest -q -p no:warnings tests/test_fused.py tests/test_acceleration.py \
    > "$R/tests_cuda.txt" 2>&1
tail -4 "$R/tests_cuda.txt"
python3 benchmarks/bench_speed.py --device cuda --out "$R" ${BENCH_ARGS:-} > "$R/bench.log" 2>&1
tail -28 "$R/bench.log"
