#!/usr/bin/env bash
# One round on the lent GPU machine (10-minute calls): every step resumes from the state carried in
# .gpucarry/in/*.tar and leaves its state in $OUT, so the same script is simply run again until done.
#   A  train the digital baselines           (examples/reproduce/train_baselines.sh)
#   B  HWA fine-tuning of each baseline      (aihwkit-nabn hwa), as soon as its checkpoint exists
#   C  core drift sweep of each baseline     (aihwkit-nabn sweep), as soon as its checkpoint exists
#   D  benchmarks, with the GPU to themselves (BENCH=1; before everything else)
#   E  the comparison                        (aihwkit-nabn reproduce cifar10; REPRODUCE=1)
# env: CALL_SECONDS (default 540), HWA_MODELS (default all three), HWA_EPOCHS (10), HWA_BATCH (128),
#      HWA_LR (0.02), BENCH, CORE (default 1), REPRODUCE_ARGS (if set: run `reproduce cifar10 $REPRODUCE_ARGS`)
source examples/reproduce/gpu_session.sh
start=$SECONDS; budget=${CALL_SECONDS:-540}
left() { echo $((budget - (SECONDS - start))); }
mkdir -p runs/ckpt runs/hwa runs/core runs/bench results/cifar10
for t in .gpucarry/in/*.tar; do [ -f "$t" ] && tar xf "$t" -C runs; done
nvidia-smi -L; python3 -c 'import torch, aihwkit; print("torch", torch.__version__, "aihwkit", aihwkit.__version__)'
python3 -c "from aihwkit_nabn.data.cifar10 import load_cifar10 as l; l('train', progress=False); l('test', progress=False)"
if [ "${BENCH:-0}" = 1 ]; then
  python3 benchmarks/bench_acceleration.py --device cuda --models resnet20,resnet32,resnet56 --batch-size 512 \
    --iters 10 --out runs/bench > runs/bench/bench.log 2>&1; echo "bench rc=$?" >> runs/bench/bench.log
  tail -n 30 runs/bench/bench.log
fi
(MAX_SECONDS=$(( $(left) - 60 )) bash examples/reproduce/train_baselines.sh runs/ckpt 160 > runs/train.log 2>&1
 echo "train rc=$?" >> runs/train.log) > /dev/null 2>&1 &
train_pid=$!
wait_ckpt() { while [ ! -f runs/ckpt/$1.pt ]; do kill -0 $train_pid 2>/dev/null || return 1; sleep 5; done; }
hwa() {
  wait_ckpt $1 || return 0
  [ -f runs/hwa/$1_hwa.pt ] && return 0
  python3 -m aihwkit_nabn.cli hwa --model runs/ckpt/$1.pt --epochs ${HWA_EPOCHS:-10} --out runs/hwa/$1_hwa.pt \
    --batch-size ${HWA_BATCH:-128} --lr ${HWA_LR:-0.02} --max-seconds $(( $(left) - 75 )) --device cuda --quiet \
    >> runs/hwa/$1.stdout 2>&1
  echo "hwa $1 rc=$?" >> runs/hwa/$1.stdout
}
core() {
  for m in resnet20 resnet32 resnet56; do
    wait_ckpt $m || return 0
    python3 -m aihwkit_nabn.cli sweep --models runs/ckpt/$m.pt --out runs/core/$m --chips 5 --times 1s,1h,1d,30d,1y \
      --methods digital,analog,gdc,nabn --calib-samples 1024 --batch-size 2000 --device cuda --quiet \
      > runs/core/$m.log 2>&1
    echo "sweep $m rc=$?" >> runs/core/$m.log
  done
}
pids=()
for m in ${HWA_MODELS:-resnet20 resnet32 resnet56}; do hwa $m > /dev/null 2>&1 & pids+=($!); done
[ "${CORE:-1}" = 1 ] && { core > /dev/null 2>&1 & pids+=($!); }
if [ -n "${REPRODUCE_ARGS:-}" ]; then
  (python3 -m aihwkit_nabn.cli reproduce cifar10 --out runs/reproduce --quiet $REPRODUCE_ARGS > runs/reproduce.log 2>&1
   echo "reproduce rc=$?" >> runs/reproduce.log) > /dev/null 2>&1 & pids+=($!)
fi
while [ $(left) -gt 15 ]; do
  alive=0; for p in $train_pid "${pids[@]}"; do kill -0 $p 2>/dev/null && alive=1; done
  [ $alive = 1 ] || break; sleep 5
done
# Whatever still runs is stopped here; its journals and resume states are already on disk.
pkill -TERM -f aihwkit_nabn; pkill -TERM -f train_baselines; sleep 3
tail -qn 1 runs/ckpt/*.log.jsonl runs/hwa/*.log.jsonl 2>/dev/null; tail -qn 2 runs/*.log runs/hwa/*.stdout runs/core/*.log 2>/dev/null | tr '\r' '\n' | grep -v decode
cat runs/reproduce/main/summary.md runs/reproduce/*/summary.md 2>/dev/null | tail -n 40
for m in resnet20 resnet32 resnet56; do [ -f runs/ckpt/$m.pt ] && rm -f runs/ckpt/$m.pt.resume.pt; done
tar cf $OUT/ckpt.tar -C runs ckpt train.log
tar cf $OUT/hwa.tar -C runs hwa
tar cf $OUT/core.tar -C runs core
tar cf $OUT/bench_reproduce.tar -C runs bench $( [ -d runs/reproduce ] && echo reproduce reproduce.log )
ls -la $OUT
