#!/usr/bin/env bash
# The fair CIFAR-10 comparison's choices on val and its clean grid (issue 13) on the lent GPU, in calls of at most
# 10 minutes; every stage journals, so the same call again (runs/fair/ carried back) goes on where the last stopped.
# Needs gpu_fair.sh's models: runs/fair/ckpt/<model>.pt and runs/fair/hwa/<model>_hwa.pt.
#   1. the calibration view and size on val: examples/reproduce/calib_sweep.py on ResNet-32 (VIEWS x SIZES, at
#      1 y, CHOICE_CHIPS chips) -> runs/fair/choices/calib_sweep/;
#   2. the BN fine-tuning recipe on val with the chosen view and size: bnft_sweep.py (STEPS x LRS x SMOOTHING x
#      FRESH; zero steps, calibration alone, is its reference) -> runs/fair/choices/bnft_sweep/;
#   3. the grid on the test split, once, with the chosen settings (--set, recorded in every run.json):
#      `reproduce cifar10 --config aihwkit_nabn/tasks/cifar10/fair.toml`, one process per model for the main part
#      and one for retention + calib_size, side by side -> runs/fair/grid/parts/*, merged into runs/fair/grid/reproduce;
#      the issue's targets from it by fair_targets.py (targets.json / .md).
#   here:   TRIM_RESULTS=1 bash examples/reproduce/device_tree.sh trim
#   device: COMMIT=<hash> bash examples/reproduce/gpu_fair_compare.sh
#           carry .gpucarry/aihwkit_site.tar.xz, .gpucarry/cifar10_jpg.tar.gz, runs/fair (without its resume states)
#   here:   bash examples/reproduce/device_tree.sh restore; cat fair_compare.tgz.part-* | tar xz
# env: CALL_SECONDS (555), BNFT_GRAPH (check: bnft.cuda_graph where benchmarks/bnft_cuda_graph.py finds it bitwise
#      equal at COMMIT, once per commit; on; off), VIEWS, SIZES, STEPS, LRS, SMOOTHING, FRESH, CHOICE_CHIPS (5), CHIPS (the config's 10),
#      MODELS (resnet20 resnet32 resnet56), DEVICE (cuda), VAL_SAMPLES (5000), DATA (the archive), EXTRA_SET
#      (more "--set KEY=VALUE" for every stage, e.g. for a dry run on a small archive), RUNS (runs/fair), LOCAL (set:
#      aihwkit is installed already)
set -uo pipefail
source examples/reproduce/device_lib.sh
start_clock 555
use_site || exit 1
export PYTHONPATH=$site$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export AIHWKIT_NABN_CIFAR10=${DATA:-$PWD/.gpucarry/cifar10_jpg.tar.gz}
export AIHWKIT_NABN_COMMIT=${COMMIT:-unknown} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}; R=${RUNS:-runs/fair}; C=$R/choices; G=$R/grid; mkdir -p "$OUT" $C $G/parts $R/logs
MODELS=${MODELS:-resnet20 resnet32 resnet56}; DEVICE=${DEVICE:-cuda}; VAL=${VAL_SAMPLES:-5000}
CONFIG=aihwkit_nabn/tasks/cifar10/fair.toml
echo "compare call at commit $AIHWKIT_NABN_COMMIT, $(date -u +%FT%TZ)" >> $R/calls.txt
sets=(); for m in $MODELS; do
  sets+=(--set "models.$m.digital=\"$R/ckpt/$m.pt\"" --set "models.$m.hwa=\"$R/hwa/${m}_hwa.pt\"")
done
sets+=(--set "data.val_samples=$VAL")  # the grid holds the same images out: calibration draws from the rest
read -ra extra <<< "${EXTRA_SET:-}"
sets+=("${extra[@]}")
budget_call() { timeout $(( $(left) - 45 )) "$@"; }  # a stage cut by the call's time resumes in the next call

# 1. calibration view and size on val
if [ ! -f $C/calib_sweep/calib_sweep.json ]; then
  budget_call python3 examples/reproduce/calib_sweep.py --out $C/calib_sweep --config $CONFIG "${sets[@]}" \
    --model resnet32 --views "${VIEWS:-train,crop_flip,plain}" --sizes "${SIZES:-256,1024,4096}" --time 1y \
    --chips "${CHOICE_CHIPS:-5}" --val-samples $VAL --device $DEVICE --quiet >> $R/logs/calib_sweep.log 2>&1
  echo "calib_sweep rc=$?" | tee -a $R/calls.txt
fi
if [ -f $C/calib_sweep/calib_sweep.json ]; then
  calib=$(json_field $C/calib_sweep/calib_sweep.json chosen); view=${calib%%:*}; size=${calib#*:}
  sets+=(--set "data.calib_view=\"$view\"" --set "data.calib_samples=$size")
  # BN fine-tuning's steps replayed from a CUDA graph (bnft.cuda_graph) only where they were found bitwise equal to
  # the eager steps at this commit (benchmarks/bnft_cuda_graph.py: fresh views, label smoothing, 2 chips at 1 y)
  gc=$C/bnft_graph_check_$AIHWKIT_NABN_COMMIT; bnft_graph=${BNFT_GRAPH:-check}
  if [ $bnft_graph = check ] && [ ! -f $gc/bnft_cuda_graph.json ] && [ "$(left)" -gt 360 ]; then
    timeout 300 python3 benchmarks/bnft_cuda_graph.py --config $CONFIG "${sets[@]}" --set bnft.steps=${BNFT_GRAPH_STEPS:-50} \
      --set bnft.fresh_views=true --set bnft.label_smoothing=0.1 --model resnet32 --chips 2 --device $DEVICE \
      --out $gc > $R/logs/bnft_graph_check.log 2>&1
    echo "bnft graph check rc=$?" | tee -a $R/calls.txt
  fi
  if [ $bnft_graph = check ]; then  # on only where the check at this commit found the replay bitwise equal
    bnft_graph=$(graph_choice $gc/bnft_cuda_graph.json)
  fi
  [ $bnft_graph = on ] && sets+=(--set "bnft.cuda_graph=true")
  echo "bnft cuda graph: $bnft_graph" | tee -a $R/calls.txt
  # 2. the BN fine-tuning recipe on val, after calibrating as chosen
  if [ ! -f $C/bnft_sweep/bnft_sweep.json ]; then
    budget_call python3 examples/reproduce/bnft_sweep.py --out $C/bnft_sweep --config $CONFIG "${sets[@]}" \
      --model resnet32 --steps "${STEPS:-20,50,100,300}" --lrs "${LRS:-1e-4,1e-3}" --smoothing "${SMOOTHING:-0,0.1}" \
      --fresh "${FRESH:-0,1}" --time 1y --chips "${CHOICE_CHIPS:-5}" --val-samples $VAL --device $DEVICE --quiet \
      >> $R/logs/bnft_sweep.log 2>&1
    echo "bnft_sweep rc=$?" | tee -a $R/calls.txt
  fi
fi
# 3. the grid on test, with the chosen settings, once every HWA model exists (stages 1 and 2 need none: they can run
#    beside gpu_fair.sh's HWA training, NO_BRING_BACK=1 for both and one bring_back after them)
hwa_ready=1; for m in $MODELS; do [ -f $R/hwa/${m}_hwa.pt ] || hwa_ready=0; done
[ -f $C/bnft_sweep/bnft_sweep.json ] && [ $hwa_ready = 0 ] && echo "grid waits for the HWA models" | tee -a $R/calls.txt
if [ -f $C/bnft_sweep/bnft_sweep.json ] && [ $hwa_ready = 1 ] && [ ! -f $G/reproduce/run.json ]; then
  recipe=$(python3 - $C/bnft_sweep/bnft_sweep.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = next(x for x in r["settings"] if x["setting"] == r["chosen"])
print(f'bnft.steps={s["steps"]} bnft.lr={s["lr"]} bnft.label_smoothing={s["label_smoothing"]} '
      f'bnft.fresh_views={str(s["fresh_views"]).lower()}')
PY
)
  for item in $recipe; do sets+=(--set "$item"); done
  [ -n "${CHIPS:-}" ] && sets+=(--set "sweep.chips=$CHIPS" --set "retention.chips=$CHIPS" --set "calib_size.chips=$CHIPS")
  printf '%s\n' "${sets[@]}" > $G/settings.txt
  pids=(); i=0
  for m in $MODELS; do
    budget_call python3 -m aihwkit_nabn reproduce cifar10 --config $CONFIG --parts main --models $m \
      --out $G/parts/main_$m --device $DEVICE --quiet "${sets[@]}" >> $R/logs/grid_main_$m.log 2>&1 & pids+=($!)
  done
  budget_call python3 -m aihwkit_nabn reproduce cifar10 --config $CONFIG --parts retention,calib_size \
    --out $G/parts/side --device $DEVICE --quiet "${sets[@]}" >> $R/logs/grid_side.log 2>&1 & pids+=($!)
  rc=0; for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  echo "grid rc=$rc" | tee -a $R/calls.txt
  if [ $rc = 0 ]; then
    if python3 examples/reproduce/merge_comparison.py $G/reproduce $(for m in $MODELS; do echo $G/parts/main_$m; done) \
         $G/parts/side >> $R/logs/grid_merge.log 2>&1; then
      echo "grid done" | tee -a $R/calls.txt
      # the issue's targets (paired at 1 y on ResNet-32; unprogrammed HWA against digital) -> $G/reproduce/targets.*
      python3 examples/reproduce/fair_targets.py $G/reproduce --digital $R/ckpt --hwa $R/hwa >> $R/logs/grid_merge.log 2>&1
      echo "targets rc=$?" | tee -a $R/calls.txt
    fi
  fi
fi
bring_back fair_compare $R/calls.txt $R/logs $C $G
exit 0
