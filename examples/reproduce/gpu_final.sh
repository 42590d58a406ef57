#!/usr/bin/env bash
# Last GPU round (one 10-minute call): HWA fine-tuning of ResNet-32, then the comparison's main grid
# for ResNet-32 as soon as its HWA checkpoint exists; meanwhile the remaining core sweep (ResNet-56)
# and the comparison's retention and calibration-size parts. Always packs what exists into $OUT.
source examples/reproduce/gpu_session.sh
set +e +o pipefail
start=$SECONDS; budget=${CALL_SECONDS:-520}
left() { echo $((budget - (SECONDS - start))); }
mkdir -p runs/ckpt runs/hwa runs/core runs/reproduce runs/reproduce_rc
for t in .gpucarry/in/*.tar; do [ -f "$t" ] && tar xf "$t" -C runs; done
nvidia-smi -L; python3 -c 'import torch, aihwkit; print("torch", torch.__version__, "aihwkit", aihwkit.__version__)'
python3 -c "from aihwkit_nabn.data.cifar10 import load_cifar10 as l; l('train', progress=False); l('test', progress=False)"
cli="python3 -m aihwkit_nabn.cli"
( $cli hwa --model runs/ckpt/resnet32.pt --epochs ${HWA_EPOCHS:-6} --batch-size 512 --lr 0.04 \
    --out runs/hwa/resnet32_hwa.pt --max-seconds 330 --device cuda --quiet > runs/hwa/resnet32.stdout 2>&1
  echo "hwa rc=$?" >> runs/hwa/resnet32.stdout
  [ -f runs/hwa/resnet32_hwa.pt ] && $cli reproduce cifar10 --parts main --models resnet32 --out runs/reproduce \
    --set models.resnet32.hwa='"runs/hwa/resnet32_hwa.pt"' --set bnft.steps=${BNFT_STEPS:-40} --set data.batch_size=2500 --quiet \
    > runs/reproduce/log.txt 2>&1
  echo "reproduce main rc=$?" >> runs/reproduce/log.txt ) > /dev/null 2>&1 &
( $cli sweep --models runs/ckpt/resnet56.pt --out runs/core/resnet56 --chips 5 --times 1s,1h,1d,30d,1y \
    --methods digital,analog,gdc,nabn --calib-samples 1024 --batch-size 2000 --device cuda --quiet \
    > runs/core/resnet56.log 2>&1; echo "sweep rc=$?" >> runs/core/resnet56.log
  $cli reproduce cifar10 --parts retention,calib_size --models resnet32 --out runs/reproduce_rc --quiet \
    > runs/reproduce_rc/log.txt 2>&1; echo "reproduce rc rc=$?" >> runs/reproduce_rc/log.txt ) > /dev/null 2>&1 &
while [ $(left) -gt 12 ] && [ -n "$(jobs -r)" ]; do sleep 5; done
pkill -TERM -f aihwkit_nabn || true; sleep 3
tail -n 3 runs/hwa/*.log.jsonl runs/hwa/*.stdout runs/core/resnet56.log runs/reproduce*/log.txt 2>&1 | tr '\r' '\n' | grep -v decode
cat runs/reproduce/main/summary.md runs/reproduce/costs.md 2>/dev/null
tar cf $OUT/hwa.tar -C runs hwa || true
tar cf $OUT/core.tar -C runs core || true
tar cf $OUT/reproduce.tar -C runs reproduce reproduce_rc || true
ls -la $OUT
exit 0
