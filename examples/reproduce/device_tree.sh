#!/usr/bin/env bash
# The working tree travels to the lent GPU with every call and counts towards its 64 MiB, beside the carried
# data pack and the aihwkit tarball. The committed checkpoints a dense-task call does not read (CIFAR-10
# assets and HWA models, the CamVid checkpoints when the call is for another task) are 47 MB of it.
#   [TRIM_RESULTS=1] bash examples/reproduce/device_tree.sh trim [KEEP_GLOB]   before the `run` call (deletes them)
#   bash examples/reproduce/device_tree.sh restore            right after it (git checkout of the same paths)
# Only tracked, committed files are touched, so `restore` always gives them back exactly; `status` shows the size.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
# TRIM_RESULTS=1: every tracked file under results/ too (the device reads none of them but checkpoints), 3.7 MB more
big() { if [ -n "${TRIM_RESULTS:-}" ]; then git ls-files -- 'aihwkit_nabn/assets/*.pt' 'results/'; \
        else git ls-files -- 'aihwkit_nabn/assets/*.pt' 'results/*.pt'; fi; }
case ${1:-status} in
  trim)   keep=${2:-}; for f in $(big); do [[ -n "$keep" && $f == $keep ]] || rm -f "$f"; done ;;
  restore) TRIM_RESULTS=1; git checkout -- $(big) ;;
  status) ;;
  *) echo "usage: device_tree.sh trim [KEEP_GLOB] | restore | status"; exit 2 ;;
esac
echo "working tree that travels: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes (+ carried paths)"
