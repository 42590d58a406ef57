#!/usr/bin/env bash
# The whole GPU pipeline of the committed CIFAR-10 results, as one resumable driver for calls of at
# most 10 minutes: run it again (with the previous call's runs.tar unpacked from .gpucarry/in/) until
# everything exists. Every step journals and resumes (see examples/reproduce/README.md):
#   1. the three digital baselines, in parallel (train_baselines.sh; torch.compile with CUDA graphs);
#   2. per model, as soon as its checkpoint exists: the core drift sweep (PCM preset), and
#      HWA fine-tuning followed by the comparison's main grid (reproduce --parts main, one folder per model);
#   3. ResNet-32's retention and calibration-size parts.
# Packs runs/ into $OUT/runs_<folder>.tar before the call's time is up.
# env: CALL_SECONDS (default 550), EPOCHS (200), HWA_EPOCHS (8; HWA_EPOCHS_<model> for one model),
#      BNFT_STEPS (40), TEST_SAMPLES (main grid's stratified test subset; default 0 = all 10,000),
#      EVAL_BATCH (main grid's evaluation batch, default 2500)
source examples/reproduce/gpu_session.sh
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # many processes share the GPU
set +e +o pipefail
start=$SECONDS; budget=${CALL_SECONDS:-550}
left() { echo $((budget - (SECONDS - start))); }
mkdir -p runs/ckpt runs/hwa runs/core runs/reproduce
for t in .gpucarry/in/*.tar; do [ -f "$t" ] && tar xf "$t"; done
nvidia-smi -L; python3 -c 'import torch, aihwkit; print("torch", torch.__version__, "aihwkit", aihwkit.__version__)'
python3 -c "from aihwkit_nabn.data.cifar10 import load_cifar10 as l; l('train', progress=False); l('test', progress=False)"
cli="python3 -m aihwkit_nabn.cli"
wait_for() { until [ -f "$1" ]; do [ "$(left)" -lt 60 ] && return 1; sleep 5; done; }

MAX_SECONDS=$(( $(left) - 70 )) COMPILE=${COMPILE:-reduce-overhead} \
  bash examples/reproduce/train_baselines.sh runs/ckpt "${EPOCHS:-200}" > runs/ckpt/train.log 2>&1 &
for m in resnet20 resnet32 resnet56; do
  ( wait_for runs/ckpt/$m.pt || exit 0
    $cli sweep --models runs/ckpt/$m.pt --out runs/core/$m --chips 5 --times 1s,1h,1d,30d,1y \
      --methods digital,analog,gdc,nabn --calib-samples 1024 --batch-size 2000 --device cuda --quiet \
      >> runs/core/$m.log 2>&1; echo "sweep rc=$?" >> runs/core/$m.log ) > /dev/null 2>&1 &
  ( wait_for runs/ckpt/$m.pt || exit 0
    hwa_epochs=$(eval echo "\${HWA_EPOCHS_$m:-${HWA_EPOCHS:-8}}")
    [ -f runs/hwa/${m}_hwa.pt ] || $cli hwa --model runs/ckpt/$m.pt --epochs "$hwa_epochs" --batch-size 512 \
      --lr 0.04 --out runs/hwa/${m}_hwa.pt --max-seconds $(( $(left) - 60 )) --device cuda --quiet \
      >> runs/hwa/$m.stdout 2>&1
    wait_for runs/hwa/${m}_hwa.pt || exit 0
    $cli reproduce cifar10 --parts main --models $m --out runs/reproduce/$m \
      --set models.$m.digital="\"runs/ckpt/$m.pt\"" --set models.$m.hwa="\"runs/hwa/${m}_hwa.pt\"" \
      --set bnft.steps="${BNFT_STEPS:-40}" --set data.test_samples="${TEST_SAMPLES:-0}" --set data.batch_size="${EVAL_BATCH:-2500}" \
      --quiet >> runs/reproduce/$m.log 2>&1
    echo "reproduce main rc=$?" >> runs/reproduce/$m.log ) > /dev/null 2>&1 &
done
( wait_for runs/ckpt/resnet32.pt || exit 0
  $cli reproduce cifar10 --parts retention,calib_size --models resnet32 --out runs/reproduce/resnet32_rc \
    --set models.resnet32.digital='"runs/ckpt/resnet32.pt"' --set data.batch_size=2500 --quiet \
    >> runs/reproduce/resnet32_rc.log 2>&1; echo "reproduce rc rc=$?" >> runs/reproduce/resnet32_rc.log ) > /dev/null 2>&1 &

while [ "$(left)" -gt 15 ] && [ -n "$(jobs -r)" ]; do sleep 5; done
pkill -TERM -f aihwkit_nabn || true; sleep 4
for f in runs/ckpt/*.log.jsonl; do echo "== $f"; tail -n 2 "$f"; done
tail -n 4 runs/ckpt/*.stdout runs/hwa/*.stdout runs/hwa/*.log.jsonl runs/core/*.log runs/reproduce/*.log 2>&1 \
  | tr '\r' '\n' | grep -v -e decode -e '^\s*$' | tail -n 80
cat runs/core/*/summary.md runs/reproduce/*/main/summary.md 2>/dev/null | grep -e "1y\|31536000" | head -40
# resume states of finished runs are not needed any more (and the carry limit is 64 MiB)
for f in runs/ckpt/*.resume.pt runs/hwa/*.resume.pt; do [ -f "${f%.resume.pt}" ] && rm -f "$f"; done
# one tar per folder: a single file over the device's return limit (about 16 MB) would not come back
for d in ckpt hwa core reproduce; do tar cf $OUT/runs_$d.tar runs/$d; done
ls -la $OUT
exit 0
