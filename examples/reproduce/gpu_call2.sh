#!/usr/bin/env bash
# GPU call 2: resume the three baseline trainings (state carried back from call 1) and, as soon as
# a checkpoint is final, start the core drift sweep of that model (5 chips x 5 times x
# digital/analog/gdc/nabn, full 10k test set, 1,024 calibration images from the training split).
# Everything lands under $OUT as tarballs; sweeps resume where they stopped if cut off.
source examples/reproduce/gpu_session.sh
mkdir -p runs/core
tar xf .gpucarry/call1/train_state.tar -C runs
nvidia-smi -L; python3 -c 'import torch, aihwkit; print("torch", torch.__version__, "aihwkit", aihwkit.__version__)'
(MAX_SECONDS=${TRAIN_SECONDS:-520} bash examples/reproduce/train_baselines.sh runs/ckpt 160 > runs/train.log 2>&1; echo "train rc=$?" >> runs/train.log) &
train_pid=$!
sweep() {  # $1 = arch
  while [ ! -f runs/ckpt/$1.pt ]; do kill -0 $train_pid 2>/dev/null || return 0; sleep 5; done
  python3 -m aihwkit_nabn.cli sweep --models runs/ckpt/$1.pt --out runs/core/$1 --chips 5 \
    --times 1s,1h,1d,30d,1y --methods digital,analog,gdc,nabn --calib-samples 1024 --device cuda \
    > runs/core/$1.log 2>&1
  echo "sweep $1 rc=$?" >> runs/core/$1.log
}
mkdir -p runs/core
sweep resnet20 & s20=$!
sweep resnet32 & s32=$!
deadline=$((SECONDS + ${CALL_SECONDS:-560}))
while [ $SECONDS -lt $deadline ] && { kill -0 $train_pid 2>/dev/null || kill -0 $s20 2>/dev/null || kill -0 $s32 2>/dev/null; }; do sleep 5; done
tail -n 1 runs/ckpt/*.log.jsonl; tail -n 3 runs/train.log runs/core/*.log 2>/dev/null
tar cf $OUT/ckpt.tar -C runs ckpt train.log
tar cf $OUT/core.tar -C runs core
ls -la runs/ckpt runs/core
