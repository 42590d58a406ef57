#!/usr/bin/env bash
# Why calibration misses under some settings of a dense task's noise table (examples/reproduce/noise_why.py: each
# layer's signal after the best per-channel correction, on val images), on the lent GPU. Runs after
# gpu_noise_dense.sh has unpacked the task's data WITH its val split on this machine: give that script
# PACK=.gpucarry/<task>.pack.tar (the thinned packs drop or stub val, which this reads; never the test split).
#   device: TASK=camvid WHY="1y:pcm,read_noise_x4,state_independent,reram_cmo,converter_4bit 2d:reram_wan2022" \
#             COMMIT=<hash> bash examples/reproduce/gpu_noise_why.sh
#   here:   cat why_<task>.tgz.part-* | tar xz   (runs/noise_<task>/why[_hwa]_<time>/: why.json, why.md, why.png, why.log)
# env: TASK, WHY (space-separated TIME:SETTINGS groups, one noise_why.py run each, into $RUNS/why_<time>; SETTINGS
#      "misses": pcm and the settings of $RUNS/table.json that miss the target at TIME), CONFIG
#      (aihwkit_nabn/tasks/$TASK/noise.toml), DATA (/tmp/data/$TASK), RUNS (runs/noise_$TASK), IMAGES (16), CHIPS (5),
#      MODEL (digital, or hwa: the HWA model against itself before programming, into $RUNS/why_hwa_<time>),
#      PACK (unpacked into DATA when DATA is missing: the full pack, .gpucarry/$TASK.pack.tar), DEVICE (cuda),
#      WHY_SECONDS (each group's limit, 240: why.json keeps the settings finished by then), LOCAL (a dry run on the
#      CPU: this environment's aihwkit), NO_BRING_BACK
set -uo pipefail
TASK=${TASK:?TASK=camvid or pennfudan}; WHY=${WHY:?WHY=\"TIME:SETTING,... ...\"}
source examples/reproduce/device_lib.sh
use_site || exit 1
require_task_modules "$TASK" || exit 1
CONFIG=${CONFIG:-aihwkit_nabn/tasks/$TASK/noise.toml}; DATA=${DATA:-/tmp/data/$TASK}; RUNS=${RUNS:-runs/noise_$TASK}
# a machine where the table did not run: the carried full pack unpacked
[ -n "${PACK:-}" ] && { unpack_data "$PACK" "$DATA" || exit 1; }
[ -e "$DATA" ] || { echo "no data at $DATA: give PACK=.gpucarry/$TASK.pack.tar (the full one: this reads val)"; exit 1; }
export AIHWKIT_NABN_COMMIT=${COMMIT:-unknown}
MODEL=${MODEL:-digital}; suffix=; [ "$MODEL" = digital ] || suffix=_$MODEL
misses() {  # misses TIME: pcm (for contrast) and every setting of $RUNS/table.json that misses the target at TIME
  python3 -c "import json, sys; t = json.load(open(sys.argv[1])); print(','.join(dict.fromkeys(['pcm'] + [
e['setting'] for e in t if e.get('target') == 'missed' and e['time_label'] == sys.argv[2]])))" "$RUNS/table.json" "$1"
}
for group in $WHY; do
  t=${group%%:*}; settings=${group#*:}
  if [ "$settings" = misses ]; then settings=$(misses "$t") || { echo "why $t: no $RUNS/table.json to read"; continue; }; fi
  dir=$RUNS/why${suffix}_$t; mkdir -p "$dir"
  PYTHONPATH=$site$PWD timeout "${WHY_SECONDS:-240}" python3 examples/reproduce/noise_why.py --config "$CONFIG" \
    --data "$DATA" --device "${DEVICE:-cuda}" --time "$t" --settings "$settings" --chips "${CHIPS:-5}" \
    --images "${IMAGES:-16}" --model "$MODEL" --out "$dir" > "$dir/why.log" 2>&1
  echo "why $MODEL $t ($settings) rc=$? (commit $AIHWKIT_NABN_COMMIT)"
done
bring_back "why_$TASK" "$RUNS"/why_*
