#!/usr/bin/env bash
# The fair CIFAR-10 comparison's training (issue 13) on the lent GPU, in calls of at most 10 minutes. Every run
# journals and resumes, so the same call again (with runs/fair/ carried back) goes on where the last one stopped:
#   1. the digital baselines ResNet-20/32/56 on 45,000 training images (5,000 held out as val, VAL_SEED), the
#      committed recipe (200 epochs, label smoothing 0.1, Cutout 16, torch.compile with CUDA graphs), in parallel;
#   2. per model, as soon as its checkpoint exists: HWA fine-tuning at batch 128 with the plateau schedule on val
#      accuracy (lr halved after 5 epochs without a better val accuracy, stop when the best is 15 epochs old, at
#      least HWA_MIN_EPOCHS = 100, at most HWA_EPOCHS = 200), the three side by side.
#   here:   TRIM_RESULTS=1 bash examples/reproduce/device_tree.sh trim
#   device: COMMIT=<hash> bash examples/reproduce/gpu_fair.sh
#           carry .gpucarry/aihwkit_site.tar.xz, .gpucarry/cifar10_jpg.tar.gz and, from the second call, runs/fair
#   here:   bash examples/reproduce/device_tree.sh restore; cat fair.tgz.part-* | tar xz
# env: CALL_SECONDS (555), EPOCHS (200), COMPILE (reduce-overhead; empty: none), HWA_LR (0.02), HWA_EPOCHS (200),
#      HWA_MIN_EPOCHS (100), MODELS, DEVICE (cuda; the digital runs take the default device)
set -uo pipefail
start=$SECONDS; budget=${CALL_SECONDS:-555}
left() { echo $((budget - (SECONDS - start))); }
mkdir -p /tmp/site
[ -f .gpucarry/aihwkit_site.tar.xz ] && { tar xJf .gpucarry/aihwkit_site.tar.xz -C /tmp/site || exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_CIFAR10=$PWD/.gpucarry/cifar10_jpg.tar.gz
export AIHWKIT_NABN_COMMIT=${COMMIT:-unknown} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}; R=runs/fair; mkdir -p "$OUT" $R/ckpt $R/hwa
MODELS=${MODELS:-resnet20 resnet32 resnet56}; DEVICE=${DEVICE:-cuda}
command -v nvidia-smi > /dev/null && nvidia-smi -L
echo "call at commit $AIHWKIT_NABN_COMMIT, $(date -u +%FT%TZ)" >> $R/calls.txt
wait_for() { until [ -f "$1" ]; do [ "$(left)" -lt 90 ] && return 1; sleep 5; done; }

# 1. digital baselines (train_baselines.sh skips finished ones; each run resumes from its .resume.pt)
need=0; for m in $MODELS; do [ -f $R/ckpt/$m.pt ] || need=1; done
if [ $need = 1 ]; then
  MAX_SECONDS=$(( $(left) - 75 )) VAL_SAMPLES=5000 COMPILE=${COMPILE-reduce-overhead} \
    bash examples/reproduce/train_baselines.sh $R/ckpt "${EPOCHS:-200}" >> $R/ckpt/train.log 2>&1 &
fi
# 2. HWA per model, as soon as its digital checkpoint exists
for m in $MODELS; do
  ( wait_for $R/ckpt/$m.pt || exit 0
    [ -f $R/hwa/${m}_hwa.pt ] && exit 0
    python3 -m aihwkit_nabn hwa --model $R/ckpt/$m.pt --val-samples 5000 --batch-size 128 --lr "${HWA_LR:-0.02}" \
      --schedule plateau --epochs "${HWA_EPOCHS:-200}" --min-epochs "${HWA_MIN_EPOCHS:-100}" --seed 0 \
      --out $R/hwa/${m}_hwa.pt --max-seconds $(( $(left) - 75 )) --device $DEVICE --quiet >> $R/hwa/$m.stdout 2>&1
    echo "hwa $m rc=$? at $(date -u +%FT%TZ)" >> $R/hwa/$m.stdout ) &
done
wait
for m in $MODELS; do
  printf '%s: digital %s, hwa %s\n' $m "$([ -f $R/ckpt/$m.pt ] && echo done || tail -n 1 $R/ckpt/$m.pt.log.jsonl 2>/dev/null | cut -c1-90)" \
    "$([ -f $R/hwa/${m}_hwa.pt ] && echo done || tail -n 1 $R/hwa/${m}_hwa.pt.log.jsonl 2>/dev/null | cut -c1-120)"
done | tee -a $R/calls.txt
tar czf "$OUT/fair.tgz" $R && split -b 15M -d "$OUT/fair.tgz" "$OUT/fair.tgz.part-" && rm -f "$OUT/fair.tgz"
ls -la "$OUT"
