# Sourced by the gpu_*.sh drivers: what every call on the lent GPU does first (start the call's clock, install
# aihwkit), the checks they share, and what they do last (bring the results back under the device tool's 16 MiB-per-file
# return limit).

start_clock() {  # start_clock DEFAULT: the call's budget is CALL_SECONDS (else DEFAULT) seconds from now; see left
  start=$SECONDS; budget=${CALL_SECONDS:-$1}
}
left() {  # seconds left of the budget set by start_clock
  echo $((budget - (SECONDS - start)))
}

install_site() {  # aihwkit into /tmp/site: the slim tarball if carried (slim_site.sh), then any carried wheels
  # once per machine and wheel: a second driver started beside the first must not unpack over files the first
  # imports, but a wheel carried by a later call to the same machine (pycocotools for detection) is still installed
  mkdir -p /tmp/site
  if [ ! -f /tmp/site/.nabn_installed ] && [ -f .gpucarry/aihwkit_site.tar.xz ]; then
    tar xJf .gpucarry/aihwkit_site.tar.xz -C /tmp/site || return 1
  fi
  touch /tmp/site/.nabn_installed
  # a Triton kernel cache an earlier call brought back (save_triton_cache): a fresh machine compiles the fused analog
  # kernels again for every shape otherwise, minutes of CPU at each process's start while the GPU waits
  if [ ! -f /tmp/site/.triton_cache ] && [ -f .gpucarry/triton_cache.tar.gz ]; then
    mkdir -p ~/.triton && tar xzf .gpucarry/triton_cache.tar.gz -C ~/.triton && touch /tmp/site/.triton_cache
  fi
  local whl
  for whl in .whl/*.whl; do
    [ -f "$whl" ] || continue
    grep -qxF "$(basename "$whl")" /tmp/site/.nabn_installed && continue
    python3 -m pip install -q --no-index --no-deps --target /tmp/site "$whl" || return 1
    basename "$whl" >> /tmp/site/.nabn_installed
  done
}

use_site() {  # aihwkit for the driver: install_site and site=/tmp/site: (a PYTHONPATH prefix); LOCAL set: the
  # environment's own aihwkit (a dry run on the CPU), nothing installed and site empty
  site=/tmp/site:
  if [ -n "${LOCAL:-}" ]; then site=; else install_site || return 1; fi
}

unpack_data() {  # unpack_data PACK DATA: after use_site, the data pack PACK (device_pack.py) unpacked into DATA,
  # once per machine (DATA already there: nothing)
  [ -e "$2" ] || PYTHONPATH=$site$PWD python3 examples/reproduce/device_pack.py unpack "$1" "$2"
}

require_task_modules() {  # require_task_modules TASK: after use_site, fail with one line if TASK's metric cannot import
  # (Penn-Fudan's mAP needs pycocotools, which the GPU machine lacks): said before any data is unpacked
  [ "$1" = pennfudan ] || return 0
  PYTHONPATH=$site$PWD python3 -c "import pycocotools" 2> /dev/null && return 0
  echo "pycocotools is not importable: carry its cp312 wheel in .whl/ (pip download --no-deps" \
       "--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .whl pycocotools)"
  return 1
}

graph_choice() {  # graph_choice FILE...: "on" if every bnft/hwa CUDA-graph check FILE (json) chose the graph, else "off"
  # (a missing or unreadable file is a failed check: replaying unchecked graphs could change the results)
  local f
  for f in "$@"; do [ "$(json_field "$f" choice 2>/dev/null)" = graph ] || { echo off; return 0; }; done
  echo on
}

json_field() {  # json_field FILE KEY: the top-level value KEY of the JSON file FILE (fails if either is missing)
  python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"
}
save_triton_cache() {  # the machine's Triton kernel cache into $OUT/triton_cache.tar.gz; here, keep it as
  # .gpucarry/triton_cache.tar.gz and carry it, so that the next fresh machine starts with the kernels compiled
  [ -d ~/.triton/cache ] && tar czf "$OUT/triton_cache.tar.gz" -C ~/.triton cache && ls -la "$OUT/triton_cache.tar.gz"
}

bring_back() {  # bring_back NAME PATH...: one gzipped tar of PATHs in $OUT, in 15 MB pieces NAME.tgz.part-*
  # NO_BRING_BACK set: nothing (a caller running two drivers side by side packs once, after both)
  [ -n "${NO_BRING_BACK:-}" ] && return 0
  local name=$1; shift
  tar czf "$OUT/$name.tgz" "$@" 2>/dev/null
  split -b 15M -d "$OUT/$name.tgz" "$OUT/$name.tgz.part-" && rm -f "$OUT/$name.tgz"; ls -la "$OUT"
}
