#!/usr/bin/env bash
# The segmentation (CamVid) and detection (Penn-Fudan) pipelines on the lent GPU, in calls of at most 10 min.
#   TASK=camvid|pennfudan STAGE=train   bash examples/reproduce/gpu_dense.sh
#   TASK=camvid|pennfudan STAGE=compare bash examples/reproduce/gpu_dense.sh   (again until "compare done")
# Carry: .gpucarry/aihwkit_site.tar.xz (slim_site.sh) or .whl (aihwkit 1.1.0 cp312), for pennfudan the
# pycocotools cp312 wheel in .whl/, .gpucarry/$TASK.pack.tar or $PACK (made here
# with examples/reproduce/device_pack.py: lossless, the loaders read the unpacked folder) and, for
# compare, runs/$TASK/ (ignored: carry it; chosen.pt 7.8 MB / 13 MB, the journal). Results come back
# as $OUT/<task>_<stage>.tgz.part-* (15 MB pieces): `cat <task>_<stage>.tgz.part-* | tar xz` at the root.
# train:   the candidates ($CANDIDATES: "tag|flags;tag|flags") train in parallel for $EPOCHS epochs each;
#          select_on_val.py picks one by its val score only -> runs/$TASK/chosen.pt (+ .selection.json).
# all:     train, then compare, in one call (TRAIN_SECONDS defaults to 230 there: see the probe below).
# compare: HWA fine-tuning of chosen.pt ($HWA_EPOCHS, once), then `reproduce $TASK` (journaled: a call
#          that runs out of time resumes in the next), then the prediction figure.
# env: PARTS_PARALLEL ("main;retention,calib_size": the groups of parts run side by side), CALL_SECONDS (550), EPOCHS (at most, with TRAIN_SECONDS), TRAIN_SECONDS, MIN_EPOCHS, HWA_SECONDS, CANDIDATES, HWA_EPOCHS, HWA_FLAGS, REPRODUCE_SET, FIGURE_FLAGS, DEVICE,
#      DATA (an unpacked copy), LOCAL=1 (no wheel install)
set -uo pipefail
source examples/reproduce/device_lib.sh
start_clock 550
TASK=${TASK:?TASK=camvid or pennfudan}; STAGE=${STAGE:?STAGE=train, compare or all}
[ "$STAGE" = all ] && TRAIN_SECONDS=${TRAIN_SECONDS:-230}
use_site || exit 1
require_task_modules "$TASK" || exit 1
export PYTHONPATH=$site$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
DEVICE=${DEVICE:-cuda}; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
DATA=${DATA:-/tmp/data/$TASK}
PACK=${PACK:-.gpucarry/$TASK.pack.tar}  # or a thinned pack (device_pack.py thin) for the compare stage
unpack_data "$PACK" "$DATA" || exit 1
cli="python3 -m aihwkit_nabn"
R=runs/$TASK; mkdir -p $R/train $R/logs
case $TASK in
  camvid) key=val_miou; arch_default=unet_small; EPOCHS=${EPOCHS:-120}; HWA_EPOCHS=${HWA_EPOCHS:-15}
          CANDIDATES=${CANDIDATES:-"lr2e-3|--arch unet_small --lr 2e-3;lr5e-3|--arch unet_small --lr 5e-3"}
          figure="examples/reproduce/camvid_figure.py"; fig_out=predictions.png ;;
  pennfudan) key=val_ap50; arch_default=fcos_small; EPOCHS=${EPOCHS:-150}; HWA_EPOCHS=${HWA_EPOCHS:-15}
          CANDIDATES=${CANDIDATES:-"lr0.01|--arch fcos_small --lr 0.01;lr0.02|--arch fcos_small --lr 0.02"}
          figure="examples/reproduce/pennfudan_figure.py"; fig_out=detections.png ;;
  *) echo "unknown TASK $TASK"; exit 2 ;;
esac
command -v nvidia-smi > /dev/null && nvidia-smi -L
python3 -c 'import torch, aihwkit; print("torch", torch.__version__, "aihwkit", aihwkit.__version__)'
export AIHWKIT_NABN_COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
echo "commit $AIHWKIT_NABN_COMMIT" | tee $R/logs/commit_$STAGE.txt

if [ "$STAGE" = train ] || [ "$STAGE" = all ]; then
  IFS=';' read -ra cands <<< "$CANDIDATES"
  if [ -n "${TRAIN_SECONDS:-}" ] && [ ! -f $R/logs/epochs.json ]; then
    # Epochs from the time budget: every candidate runs 3 epochs in parallel (as they will train), the
    # slowest steady epoch (2 and 3; the first holds the warm-up) sets EPOCHS = TRAIN_SECONDS / epoch,
    # at most $EPOCHS. Nothing of the probe is kept but its timings (no test image is read).
    for c in "${cands[@]}"; do
      tag=${c%%|*}; flags=${c#*|}
      # shellcheck disable=SC2086
      $cli train --task $TASK $flags --epochs "$EPOCHS" --stop-after-epochs 3 --seed 0 --data "$DATA" \
        --out $R/probe/$tag.pt --device $DEVICE --quiet > $R/logs/probe_$tag.log 2>&1 &
    done
    wait
    EPOCHS=$(python3 - "$R" "$TRAIN_SECONDS" "$EPOCHS" "${MIN_EPOCHS:-20}" <<'PY'
import glob, json, sys
r, budget, most, least = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
per = {}
for f in glob.glob(f"{r}/probe/*.log.jsonl"):
    rows = [json.loads(line) for line in open(f) if line.strip()]
    per[f] = sum(x["epoch_seconds"] for x in rows[1:3]) / max(1, len(rows[1:3]))
epoch_s = max(per.values())
epochs = max(least, min(most, int(budget / epoch_s)))
json.dump({"train_seconds": budget, "epoch_seconds": per, "slowest": epoch_s, "epochs": epochs,
           "bounds": [least, most]}, open(f"{r}/logs/epochs.json", "w"), indent=1)
print(epochs)
PY
) || { echo "probe failed"; tail -n 5 $R/logs/probe_*.log; bring_back ${TASK}_probe $R/logs; exit 1; }
    rm -rf $R/probe; echo "epochs from the probe: $EPOCHS ($(cat $R/logs/epochs.json | tr -d '\n '))"
  elif [ -f $R/logs/epochs.json ]; then
    EPOCHS=$(python3 -c "import json; print(json.load(open('$R/logs/epochs.json'))['epochs'])")
  fi
  outs=()
  if [ ! -f $R/chosen.pt ]; then
    for c in "${cands[@]}"; do
      tag=${c%%|*}; flags=${c#*|}
      # shellcheck disable=SC2086
      $cli train --task $TASK $flags --epochs "$EPOCHS" --seed 0 --data "$DATA" --out $R/train/$tag.pt \
        --max-seconds $(( $(left) - 45 )) --device $DEVICE --quiet > $R/logs/train_$tag.log 2>&1 &
      outs+=("$R/train/$tag.pt")
    done
    wait
    python3 examples/reproduce/select_on_val.py --key $key --out $R/chosen.pt "${outs[@]}" 2>&1 | tee $R/logs/select.txt
  fi
  if [ ! -f $R/chosen.pt ]; then
    # unfinished: bring back the candidates' resume states too, to go on in the next call
    bring_back ${TASK}_train $R/logs $R/train; exit 0
  fi
  if [ "$STAGE" = train ]; then
    # the chosen checkpoint, its selection record and every candidate's log (not their weights or resume states)
    bring_back ${TASK}_train $R/chosen.pt $R/chosen.pt.selection.json $R/logs $R/train/*.log.jsonl; exit 0
  fi
fi

[ -f $R/chosen.pt ] || { echo "no $R/chosen.pt: run STAGE=train first"; exit 1; }
if [ ! -f $R/hwa.pt ]; then
  # shellcheck disable=SC2086
  hwa_s=$(( $(left) - 200 )); [ -n "${HWA_SECONDS:-}" ] && [ "$HWA_SECONDS" -lt $hwa_s ] && hwa_s=$HWA_SECONDS
  $cli hwa --task $TASK --model $R/chosen.pt --epochs "$HWA_EPOCHS" ${HWA_FLAGS:-} --seed 0 --data "$DATA" \
    --out $R/hwa.pt --max-seconds $hwa_s --device $DEVICE --quiet > $R/logs/hwa.log 2>&1
  tail -n 3 $R/logs/hwa.log
fi
if [ -f $R/hwa.pt ]; then
  # The parts of the comparison run side by side (one small model leaves the GPU mostly idle), each in its own
  # journaled folder under $R/parts/, merged into $R/reproduce once all have finished.
  IFS=';' read -ra groups <<< "${PARTS_PARALLEL:-main;retention,calib_size}"
  pids=()
  for i in "${!groups[@]}"; do
    # shellcheck disable=SC2086
    timeout $(( $(left) - 60 )) $cli reproduce $TASK --parts "${groups[$i]}" --data "$DATA" --out $R/parts/$i \
      --device $DEVICE --quiet --set "models.$arch_default.digital=\"$R/chosen.pt\"" \
      --set "models.$arch_default.hwa=\"$R/hwa.pt\"" ${REPRODUCE_SET:-} >> $R/logs/reproduce_$i.log 2>&1 &
    pids+=($!)
  done
  rc=0; for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  echo "reproduce rc=$rc" | tee -a $R/logs/reproduce.log
  if [ $rc = 0 ]; then
    python3 examples/reproduce/merge_comparison.py $R/reproduce $(for i in "${!groups[@]}"; do echo $R/parts/$i; done) \
      >> $R/logs/reproduce.log 2>&1 || rc=1
  fi
  if [ $rc = 0 ]; then
    python3 $figure --model $R/chosen.pt --data "$DATA" --device $DEVICE --out $R/reproduce/$fig_out ${FIGURE_FLAGS:-} \
      >> $R/logs/figure.log 2>&1 && echo "compare done"
  fi
fi
[ -f $R/hwa.pt ] && rm -f $R/hwa.pt.resume.pt  # kept (and brought back) only while HWA is unfinished
if [ "$STAGE" = all ]; then  # everything the next call resumes from
  bring_back ${TASK}_all $R/chosen.pt $R/chosen.pt.selection.json $R/train/*.log.jsonl $R/logs $R/parts $R/reproduce $R/hwa.pt*
else
  bring_back ${TASK}_compare $R/logs $R/parts $R/reproduce $R/hwa.pt*
fi
exit 0
