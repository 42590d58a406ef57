#!/usr/bin/env bash
# The noise-model table (issue 14) on the lent GPU, in calls of at most 10 minutes; each setting is journaled, so
# the same call again (with runs/noise_models/ carried back) resumes where the last one stopped.
#   here:   bash examples/reproduce/device_tree.sh trim '*resnet32*'   (keeps the ResNet-32 checkpoints)
#   device: COMMIT=<hash> bash examples/reproduce/gpu_noise.sh
#           carry .gpucarry/aihwkit_site.tar.xz, .gpucarry/cifar10_jpg.tar.gz and, from the second call, runs/noise_models
#   here:   bash examples/reproduce/device_tree.sh restore; cat noise.tgz.part-* | tar xz
# PARALLEL workers side by side take the config's unfinished [noise] settings one at a time, each the next one no
# other worker has claimed, and run it as its own process into the same folder (a static split left one part with
# three times the rows of another: Penn-Fudan's reram_wan2022 runs at three times; each setting's process start is
# seconds with the Triton cache warm). Side by side because one process leaves the GPU mostly idle (ResNet-32's batches
# are small; Penn-Fudan's three processes used it 17 %); once all have finished, one
# more run with every setting reads them back and writes the table (a part's own table files, of its settings only,
# are overwritten then). PARALLEL=1: one process for all (use it when NOISE_SET overrides noise.settings).
# Checked end to end on the CPU by examples/reproduce/gpu_noise_dryrun.sh (tiny data and models, PARALLEL=2, the graph
# check, a call cut by its time, a second resuming and writing the table); an earlier dry run found a third call
# reading all 20 settings back in 0.3 s.
# BN fine-tuning's steps (300 per deployment, most of the table's time) are replayed from a CUDA graph only where
# benchmarks/bnft_cuda_graph.py, once per commit, finds them bitwise equal to the eager steps under GRAPH_SETTINGS:
# the settings whose forward pass differs from the PCM one checked for the fair grid (4-bit converters, no output
# noise, more output noise) and one other device model. The other settings change only the programmed and drifted
# weight values, not the operations. All must pass, else every setting fine-tunes eagerly.
# env: DEVICE (cuda), CALL_SECONDS (560), NOISE_CONFIG (default: the CIFAR-10 one), NOISE_SET ("--set k=v ..."
#      overrides, no spaces inside a value), PARALLEL (4), RUNS (runs/noise_models), LOCAL (set: aihwkit is installed
#      already, e.g. a dry run on the CPU), BNFT_GRAPH (check, the default for the CIFAR-10 config; on; off, the
#      default for the others), GRAPH_SETTINGS (converter_4bit out_noise_0 out_noise_0.08 reram_cmo), GRAPH_STEPS (50),
#      AIHWKIT_NABN_DEPLOY_LOCK (the lock file; set but empty: no lock), OMP_NUM_THREADS (cores / PARALLEL)
set -uo pipefail
source examples/reproduce/device_lib.sh
start_clock 560
use_site || exit 1
export PYTHONPATH=$site$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_CIFAR10=${AIHWKIT_NABN_CIFAR10:-$PWD/.gpucarry/cifar10_jpg.tar.gz}
export AIHWKIT_NABN_COMMIT=${COMMIT:-unknown} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}; R=${RUNS:-runs/noise_models}; mkdir -p "$OUT" $R
# the processes take turns at aihwkit's input-range calibration, the deployment's memory peak (aihwkit_nabn/utils/locks.py);
# set but empty: none. Penn-Fudan's deployment peaks at 3.1 GiB, and six processes queueing for its 35-77 s calibrations
# (`model_setup_seconds` of its settings' run.json) would wait about as long as a setting takes
export AIHWKIT_NABN_DEPLOY_LOCK=${AIHWKIT_NABN_DEPLOY_LOCK-${TMPDIR:-/tmp}/aihwkit_nabn_deploy.lock}  # one GPU, one lock
CFG=${NOISE_CONFIG:-aihwkit_nabn/tasks/cifar10/noise.toml}; P=${PARALLEL:-4}
# the machine's cores shared out among the processes (torch's default is every core for each): the GPU runs the
# models; what runs on the CPU is mostly one Python thread per process
n_cpu=$(nproc 2> /dev/null || echo 1); export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( n_cpu / P > 0 ? n_cpu / P : 1 ))}
command -v nvidia-smi > /dev/null && nvidia-smi -L
# shellcheck disable=SC2086
run_noise() {  # the call's time left, less 40 s to bring the results back; none left: rc 124 as for a cut run
  local seconds=$(( $(left) - 40 )); [ $seconds -gt 0 ] || { echo "no time left in this call"; return 124; }
  timeout $seconds python3 -m aihwkit_nabn reproduce noise --device ${DEVICE:-cuda} --config "$CFG" --out $R --quiet \
    ${NOISE_SET:-} "$@"; }
pending_settings() {  # the config's settings without a finished run.json in $R, one a line, in the config's order
  python3 -c 'import sys, tomllib
from pathlib import Path
names = tomllib.load(open(sys.argv[1], "rb"))["noise"]["settings"]
print("\n".join(n for n in names if not (Path(sys.argv[2]) / "settings" / n / "run.json").exists()))' "$CFG" "$R"
}
worker() {  # worker K QUEUE: claims the next setting no other worker has (mkdir is atomic) and runs it alone, until
  # none is left or the call's time is up; rc: the first failure's
  local k=$1 queue=$2 s rc=0 r
  while read -r s; do
    mkdir "$queue/$s" 2> /dev/null || continue
    run_noise "${graph_set[@]}" --set "noise.settings=[\"$s\"]" >> $R/noise_part$k.log 2>&1; r=$?
    echo "setting $s rc=$r (worker $k)" >> $R/noise_part$k.log
    [ $r = 0 ] || { [ $rc = 0 ] && rc=$r; }
    [ $r = 124 ] && break  # the call's time is up: no other setting can start either
  done < <(pending_settings)
  return $rc
}
gc=$R/bnft_graph_check_$AIHWKIT_NABN_COMMIT; cifar=aihwkit_nabn/tasks/cifar10/noise.toml
bnft_graph=${BNFT_GRAPH:-$([ "$CFG" = $cifar ] && echo check || echo off)}  # the check fine-tunes ResNet-32
graph_settings=${GRAPH_SETTINGS:-converter_4bit out_noise_0 out_noise_0.08 reram_cmo}
if [ $bnft_graph = check ]; then
  for s in $graph_settings; do  # side by side: each is two chips' fine-tuning, twice, on a mostly idle GPU
    # shellcheck disable=SC2086
    [ -f $gc/$s/bnft_cuda_graph.json ] || timeout 300 python3 benchmarks/bnft_cuda_graph.py --config "$CFG" \
      ${NOISE_SET:-} --set "hardware.noise=\"$s\"" --set bnft.steps=${GRAPH_STEPS:-50} --model resnet32 --chips 2 \
      --device ${DEVICE:-cuda} --out $gc/$s > $R/bnft_graph_check_$s.log 2>&1 &
  done
  wait
  bnft_graph=$(graph_choice $(for s in $graph_settings; do echo $gc/$s/bnft_cuda_graph.json; done))
fi
graph_set=(); [ $bnft_graph = on ] && graph_set=(--set bnft.cuda_graph=true)
echo "bnft cuda graph: $bnft_graph (commit $AIHWKIT_NABN_COMMIT)" | tee -a $R/noise.log
rc=0
if [ "$P" -gt 1 ]; then
  queue=$(mktemp -d)  # the claims: outside $R, which is brought back
  pids=(); for k in $(seq 0 $((P - 1))); do worker $k "$queue" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  rm -rf "$queue"
  echo "noise parts rc=$rc (commit $AIHWKIT_NABN_COMMIT)" | tee -a $R/noise.log
fi
if [ $rc = 0 ]; then  # every setting: the finished ones are read back (PARALLEL=1: this one runs them all)
  run_noise "${graph_set[@]}" >> $R/noise.log 2>&1; rc=$?
  echo "reproduce noise rc=$rc (commit $AIHWKIT_NABN_COMMIT)" | tee -a $R/noise.log
  [ $rc = 0 ] && echo "noise table done"
fi
bring_back noise $R
