#!/usr/bin/env bash
# The noise-model table of a dense task (issue 14: CamVid segmentation or Penn-Fudan detection, at one year, every
# [noise] setting of aihwkit_nabn/tasks/$TASK/noise.toml) on the lent GPU: unpack the carried data pack, then run
# gpu_noise.sh with the task's config and the unpacked data. Journaled and resumable as gpu_noise.sh is.
#   here:   python examples/reproduce/device_pack.py pack ../shared/data/camvid_240x180.tar.gz .gpucarry/camvid.pack.tar
#           python examples/reproduce/device_pack.py thin .gpucarry/camvid.pack.tar .gpucarry/camvid_notval.pack.tar \
#             --drop camvid/val/ --drop camvid/valannot/      (Penn-Fudan: pennfudan.tar.gz, --stub-pennfudan-val)
#           TRIM_RESULTS=1 bash examples/reproduce/device_tree.sh trim '*camvid*.pt'   (keeps the task's checkpoints only: 64 MiB)
#   device: TASK=camvid COMMIT=<hash> bash examples/reproduce/gpu_noise_dense.sh
#           carry .gpucarry/aihwkit_site.tar.xz, .gpucarry/camvid_notval.pack.tar and, from the second call,
#           runs/noise_camvid; for pennfudan also the pycocotools cp312 wheel in .whl/ (checked before anything runs)
#   here:   bash examples/reproduce/device_tree.sh restore; cat noise.tgz.part-* | tar xz
# The table never reads the val split (the comparison's main part only), so the thinned pack is enough.
# env: TASK (camvid or pennfudan), PACK (.gpucarry/${TASK}_notval.pack.tar), DATA (/tmp/data/$TASK: unpacked once per
#      machine), RUNS (runs/noise_$TASK), NOISE_SET (more "--set k=v"), and every variable of gpu_noise.sh
#      (CALL_SECONDS, PARALLEL: 1 unless set, DEVICE, LOCAL, BNFT_GRAPH: off unless set); IR_BENCH (set: first
#      benchmarks/input_range_cache.py on this device, into $RUNS/input_range_cache_$COMMIT.json, at most
#      IR_BENCH_SECONDS, 150; IR_BENCH_FLAGS: more of its options, e.g. "--samples 4" in a CPU dry run); CALL_SECONDS
#      counts from this script's start
# One process by default: on the H100 (79 GiB) four CamVid processes ran out of memory at once, each deploying a
# setting's model (aihwkit's input-range calibration caches 128 full-size images' layer inputs: 16 GiB asked for on
# top of 6-31 GiB per process; results/noise_models/camvid/noise_part*.log). Since then the processes take turns at
# that calibration and give its memory back after (AIHWKIT_NABN_DEPLOY_LOCK, set by gpu_noise.sh): CamVid ran with
# PARALLEL=2 and 3 on the H100 without a memory error (peaks 59.2 and 46.1 GiB in nvidia-smi:
# results/noise_models/camvid/gpu_mem_stop30_call3.csv, _call2.csv); Penn-Fudan's deployment peaks at 3.1 GiB
# (PARALLEL=3 fits).
set -uo pipefail
TASK=${TASK:?TASK=camvid or pennfudan}
source examples/reproduce/device_lib.sh
use_site || exit 1
require_task_modules "$TASK" || exit 1
DATA=${DATA:-/tmp/data/$TASK}; PACK=${PACK:-.gpucarry/${TASK}_notval.pack.tar}
unpack_data "$PACK" "$DATA" || exit 1
export PARALLEL=${PARALLEL:-1} NOISE_CONFIG=aihwkit_nabn/tasks/$TASK/noise.toml RUNS=${RUNS:-runs/noise_$TASK}
export NOISE_SET="--set data.source=\"$DATA\" ${NOISE_SET:-}"
if [ -n "${IR_BENCH:-}" ]; then  # aihwkit's input-range cache hook against the lean one, on this GPU, before the table
  mkdir -p "$RUNS"
  PYTHONPATH=$site$PWD timeout "${IR_BENCH_SECONDS:-150}" python3 benchmarks/input_range_cache.py --task "$TASK" \
    --data "$DATA" --device "${DEVICE:-cuda}" --out "$RUNS/input_range_cache_${COMMIT:-unknown}.json" \
    ${IR_BENCH_FLAGS:-} > "$RUNS/input_range_cache.log" 2>&1; echo "input-range cache benchmark rc=$?"
fi
# the table's clock starts now: take off what unpacking (and the benchmark) used of the call
export CALL_SECONDS=$(( ${CALL_SECONDS:-560} - SECONDS ))
exec bash examples/reproduce/gpu_noise.sh
