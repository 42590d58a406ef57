#!/usr/bin/env bash
# The fair CIFAR-10 comparison's training (issue 13) on the lent GPU, in calls of at most 10 minutes. Every run
# journals and resumes, so the same call again (with runs/fair/ carried back) goes on where the last one stopped:
#   1. the digital baselines ResNet-20/32/56 on 45,000 training images (5,000 held out as val, VAL_SEED), the
#      committed recipe (200 epochs, label smoothing 0.1, Cutout 16, torch.compile with CUDA graphs), in parallel;
#   2. the HWA learning rate, chosen on val: the first PROBE_EPOCHS (5) epochs of ResNet-32's HWA run at each of
#      HWA_LRS (0.005 0.01 0.02) side by side; the best val accuracy after them wins (a tie: the larger lr) ->
#      runs/fair/hwa/lr_probe.json; the chosen probe goes on as ResNet-32's run;
#   3. per model, as soon as its checkpoint and the lr exist: HWA fine-tuning at batch 128 with the plateau
#      schedule on val accuracy (lr halved after 5 epochs without a better val accuracy, stop when the best is 15
#      epochs old, at least HWA_MIN_EPOCHS = 100, at most HWA_EPOCHS = 200), the three side by side.
#   here:   TRIM_RESULTS=1 bash examples/reproduce/device_tree.sh trim
#   device: COMMIT=<hash> bash examples/reproduce/gpu_fair.sh
#           carry .gpucarry/aihwkit_site.tar.xz, .gpucarry/cifar10_jpg.tar.gz and, from the second call, runs/fair
#   here:   bash examples/reproduce/device_tree.sh restore; cat fair.tgz.part-* | tar xz
# Checked end to end on the CPU on a 600-image copy of the archive (MODELS="resnet20 resnet32" VAL_SAMPLES=100
# EPOCHS=2 COMPILE= PROBE_EPOCHS=2 HWA_LRS="0.01 0.02" DEVICE=cpu): baselines, probes, choice, hand-over, resume.
# The graph check's path likewise, on a 600-image copy (MODELS=resnet32 VAL_SAMPLES=100 EPOCHS=1 PROBE_EPOCHS=1
# HWA_EPOCHS=2 HWA_MIN_EPOCHS=1 CUDA_GRAPH=check GRAPH_CHECK_ARGS="--batch-size 8 --steps 6 --iters 2" DEVICE=cpu, two
# calls): no checkpoint yet -> eager; then the check chose "full" and the HWA run logged graph_mode "full".
# env: CALL_SECONDS (555), EPOCHS (200), COMPILE (reduce-overhead; empty: none), HWA_LRS, PROBE_EPOCHS, HWA_EPOCHS (200),
#      HWA_MIN_EPOCHS (100), MODELS, DEVICE (cuda; the digital runs take the default device), VAL_SAMPLES (5000:
#      other values only for a dry run on a small archive), CUDA_GRAPH (check: first benchmarks/hwa_cuda_graph.py on
#      ResNet-32, then the HWA updates replayed from a CUDA graph in the faster mode it finds bitwise equal to the
#      eager update (--cuda-graph on|full), its output in runs/fair/hwa/graph_check_<commit>/; on / full: that mode
#      without the check; empty or off: eager), GRAPH_CHECK_ARGS (more options of the check, e.g. a smaller batch for a
#      dry run)
set -uo pipefail
source examples/reproduce/device_lib.sh
start_clock 555
install_site || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_CIFAR10=$PWD/.gpucarry/cifar10_jpg.tar.gz
export AIHWKIT_NABN_COMMIT=${COMMIT:-unknown} PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}; R=runs/fair; mkdir -p "$OUT" $R/ckpt $R/hwa
MODELS=${MODELS:-resnet20 resnet32 resnet56}; DEVICE=${DEVICE:-cuda}; VAL=${VAL_SAMPLES:-5000}
command -v nvidia-smi > /dev/null && nvidia-smi -L
echo "call at commit $AIHWKIT_NABN_COMMIT, $(date -u +%FT%TZ)" >> $R/calls.txt
wait_for() { until [ -f "$1" ]; do [ "$(left)" -lt 90 ] && return 1; sleep 5; done; }

if [ "${CUDA_GRAPH:-}" = check ]; then
  CUDA_GRAPH=off; gc=$R/hwa/graph_check_$AIHWKIT_NABN_COMMIT; mkdir -p $gc
  # shellcheck disable=SC2086
  [ -f $R/ckpt/resnet32.pt ] && timeout 240 python3 benchmarks/hwa_cuda_graph.py --arch $R/ckpt/resnet32.pt \
    --device $DEVICE --out $gc ${GRAPH_CHECK_ARGS:-} > $gc/log.txt 2>&1
  # the faster of the graph modes found bitwise equal to the eager update ("off": none)
  CUDA_GRAPH=$(json_field $gc/hwa_cuda_graph.json choice 2>/dev/null || echo off)
  echo "graph check: --cuda-graph $CUDA_GRAPH" | tee -a $R/calls.txt
fi
[ "${CUDA_GRAPH:-off}" = off ] && CUDA_GRAPH=
# 1. digital baselines (train_baselines.sh skips finished ones; each run resumes from its .resume.pt)
need=0; for m in $MODELS; do [ -f $R/ckpt/$m.pt ] || need=1; done
if [ $need = 1 ]; then
  MAX_SECONDS=$(( $(left) - 75 )) VAL_SAMPLES=$VAL COMPILE=${COMPILE-reduce-overhead} \
    bash examples/reproduce/train_baselines.sh $R/ckpt "${EPOCHS:-200}" >> $R/ckpt/train.log 2>&1 &
fi
# 2. the HWA learning rate from short ResNet-32 probes on val: each probe is the first PROBE_EPOCHS epochs of
#    the real run at that lr (same settings, stopped early: no checkpoint, so no test image is read); the chosen
#    probe's state and log become ResNet-32's run, which resumes from them
probe=$R/hwa/lr_probe.json; P=${PROBE_EPOCHS:-5}
hwa_args() {  # hwa_args MODEL LR: the real run's settings (the probes share them)
  echo "--model $R/ckpt/$1.pt --val-samples $VAL --batch-size 128 --lr $2 --schedule plateau" \
       "--epochs ${HWA_EPOCHS:-200} --min-epochs ${HWA_MIN_EPOCHS:-100} --seed 0 --device $DEVICE --quiet" \
       "${CUDA_GRAPH:+--cuda-graph $CUDA_GRAPH}"
}
if [ ! -f $probe ]; then
  ( wait_for $R/ckpt/resnet32.pt || exit 0
    for lr in ${HWA_LRS:-0.005 0.01 0.02}; do
      d=$R/hwa/probe/lr$lr; mkdir -p $d
      done_=$(cat $d/resnet32_hwa.pt.log.jsonl 2>/dev/null | grep -c . || true)
      [ "$done_" -ge "$P" ] && continue
      # shellcheck disable=SC2046
      python3 -m aihwkit_nabn hwa $(hwa_args resnet32 $lr) --out $d/resnet32_hwa.pt --stop-after-epochs $((P - done_)) \
        --max-seconds $(( $(left) - 75 )) >> $d/stdout 2>&1 &
    done
    wait
    python3 - "$R/hwa/probe" "$P" "$probe.tmp" <<'PY' || exit 0
import glob, json, os, sys
folder, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = {}
for log in glob.glob(f"{folder}/lr*/resnet32_hwa.pt.log.jsonl"):
    rows = [json.loads(line) for line in open(log) if line.strip()]
    if len(rows) < epochs:
        sys.exit(f"{log}: {len(rows)} of {epochs} epochs: the probes go on in the next call")
    runs[os.path.basename(os.path.dirname(log))[2:]] = rows[epochs - 1]["val_acc"]
best = max(runs.items(), key=lambda kv: (kv[1], float(kv[0])))[0]  # best val accuracy; a tie: the larger lr
json.dump({"rule": f"ResNet-32 HWA: the first {epochs} epochs of the real run at each lr; the best val accuracy "
                   "after them (a tie: the larger lr)", "val_acc": dict(sorted(runs.items())), "chosen_lr": best},
          open(out, "w"), indent=1)
print("HWA lr chosen on val:", best, runs)
PY
    lr=$(json_field $probe.tmp chosen_lr)
    cp $R/hwa/probe/lr$lr/resnet32_hwa.pt.log.jsonl $R/hwa/resnet32_hwa.pt.log.jsonl
    cp $R/hwa/probe/lr$lr/resnet32_hwa.pt.resume.pt $R/hwa/resnet32_hwa.pt.resume.pt
    mv $probe.tmp $probe  # only now may step 3 start (ResNet-32 resumes from the chosen probe)
    rm -f $R/hwa/probe/lr*/*.resume.pt ) &  # the probes' logs stay, their states go
fi
# 3. HWA per model, as soon as its digital checkpoint and the lr exist
for m in $MODELS; do
  ( wait_for $R/ckpt/$m.pt || exit 0
    wait_for $probe || exit 0
    [ -f $R/hwa/${m}_hwa.pt ] && exit 0
    lr=$(json_field $probe chosen_lr)
    # shellcheck disable=SC2046
    python3 -m aihwkit_nabn hwa $(hwa_args $m $lr) --out $R/hwa/${m}_hwa.pt --max-seconds $(( $(left) - 75 )) \
      >> $R/hwa/$m.stdout 2>&1
    echo "hwa $m rc=$? at $(date -u +%FT%TZ)" >> $R/hwa/$m.stdout ) &
done
wait
for m in $MODELS; do
  printf '%s: digital %s, hwa %s\n' $m "$([ -f $R/ckpt/$m.pt ] && echo done || tail -n 1 $R/ckpt/$m.pt.log.jsonl 2>/dev/null | cut -c1-90)" \
    "$([ -f $R/hwa/${m}_hwa.pt ] && echo done || tail -n 1 $R/hwa/${m}_hwa.pt.log.jsonl 2>/dev/null | cut -c1-120)"
done | tee -a $R/calls.txt
bring_back fair $R
