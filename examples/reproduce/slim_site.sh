#!/usr/bin/env bash
# The aihwkit 1.1.0 cp312 wheel as an xz tarball of its installed files (5.9 MB instead of 13.7 MB), so that
# a dataset pack and checkpoints fit beside it in one device call's 64 MiB. The wheel's files are unzipped
# as `pip install --target` places them (its .data/ folder, C++/CUDA sources only, is left out); on the device
#   mkdir -p /tmp/site && tar xJf .gpucarry/aihwkit_site.tar.xz -C /tmp/site
# Usage (here): bash examples/reproduce/slim_site.sh .whl/aihwkit-1.1.0-cp312-*.whl .gpucarry/aihwkit_site.tar.xz
set -euo pipefail
wheel=${1:?wheel}; out=${2:?output .tar.xz}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
unzip -q "$wheel" -d "$tmp"
rm -rf "$tmp"/*.data
tar cf - -C "$tmp" . | xz -9e > "$out.partial" && mv "$out.partial" "$out"
ls -l "$out"
